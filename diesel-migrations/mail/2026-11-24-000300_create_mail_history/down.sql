DROP TABLE mail_history;

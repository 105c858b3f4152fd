DROP TABLE gateway_calls;
DROP TABLE payments;

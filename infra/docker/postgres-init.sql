-- infra/docker-compose.yml: the two service databases (the services migrate them).
CREATE DATABASE orders;
CREATE DATABASE payments;

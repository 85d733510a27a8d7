-- docker-compose: the postgres image creates the platform database (POSTGRES_DB=webhooks);
-- the people demo producer keeps its tables and outbox in a database of its own.
CREATE DATABASE webhooks_producer OWNER webhooks;

-- First start of the compose PostgreSQL only (docker-entrypoint-initdb.d runs it as the
-- superuser, with an empty data directory). One server, two databases, two owners:
--   airflow  Airflow's metadata database (and the Celery result backend)
--   textclf  the project data: schema `textclf`, created by `textclf db upgrade`
-- Passwords come from the container environment (docker/.env); psql's \getenv needs psql >= 15.

\set ON_ERROR_STOP on
\getenv airflow_password AIRFLOW_DB_PASSWORD
\getenv textclf_password TEXTCLF_DB_PASSWORD

CREATE ROLE airflow LOGIN PASSWORD :'airflow_password';
CREATE DATABASE airflow OWNER airflow;

CREATE ROLE textclf LOGIN PASSWORD :'textclf_password';
CREATE DATABASE textclf OWNER textclf;

-- Read-only role for downstream consumers of textclf.predictions / latest_predictions. The
-- migration grants to it but cannot create it: `textclf` has no CREATEROLE. Give it to a
-- login role with: CREATE ROLE reporting LOGIN PASSWORD '...' IN ROLE textclf_reader;
CREATE ROLE textclf_reader NOLOGIN;
GRANT CONNECT ON DATABASE textclf TO textclf_reader;

# shellcheck shell=bash
# Sourced by the postgres image's entrypoint on the first start (empty volume) only.
# Creates the read-only login Grafana uses; the migrate Job grants it SELECT on the dashboard tables.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v role="$REPORTING_DB_USER" -v password="$REPORTING_DB_PASSWORD" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password' NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
ALTER ROLE :"role" SET default_transaction_read_only = on;
ALTER ROLE :"role" SET statement_timeout = '30s';
SQL

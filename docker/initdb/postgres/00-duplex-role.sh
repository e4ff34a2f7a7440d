#!/bin/sh
# Creates the `duplex` PostgreSQL role. The postgres image runs this once, when it initialises
# an empty data directory (before any CRM schema placed next to it, which is why the table
# grants are also made the default for tables created later by the same owner).
# The entrypoint runs it when executable and sources it otherwise, so it sets no shell options;
# it aborts the initialisation only when DUPLEX_PG_PASSWORD is missing.
#
# CONNECT, CREATE, TEMPORARY on the database: log in, create duplex's own schema
#   (`duplex setup`), and the session-local staging tables used for COPY batches.
# SELECT, INSERT, UPDATE, DELETE on the CRM tables, USAGE on their sequences (serial defaults).
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v pw="${DUPLEX_PG_PASSWORD:?DUPLEX_PG_PASSWORD is not set}" -v db="$POSTGRES_DB" <<'SQL'
CREATE ROLE duplex LOGIN PASSWORD :'pw';
GRANT CONNECT, CREATE, TEMPORARY ON DATABASE :"db" TO duplex;
GRANT USAGE ON SCHEMA public TO duplex;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO duplex;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO duplex;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO duplex;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO duplex;
SQL

#!/bin/sh
# Creates the `duplex` PostgreSQL role. The postgres image runs this once, when it initialises
# an empty data directory (before any CRM schema placed next to it, which is why the table
# grants are also made the default for tables created later by the same owner).
# The entrypoint runs it when executable and sources it otherwise, so it sets no shell options;
# it aborts the initialisation only when DUPLEX_PG_PASSWORD is missing.
#
# LOGIN REPLICATION    log in; open the replication connection of the way back (PostgreSQL →
#                      MySQL: the shipped set sends the CRM's order status back)
# CREATE on the database: `duplex setup` creates duplex's own schema and the publication
# TEMPORARY            the session-local staging tables used for COPY batches
# SELECT, INSERT, UPDATE, DELETE on the CRM tables, USAGE on their sequences (serial defaults).
# The tables published for the way back must be owned by duplex: 30-duplex-owner.sh.
#
# DUPLEX_PG_ROLE       the role's name (default duplex)
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v pw="${DUPLEX_PG_PASSWORD:?DUPLEX_PG_PASSWORD is not set}" -v db="$POSTGRES_DB" \
     -v role="${DUPLEX_PG_ROLE:-duplex}" <<'SQL'
CREATE ROLE :"role" LOGIN REPLICATION PASSWORD :'pw';
GRANT CONNECT, CREATE, TEMPORARY ON DATABASE :"db" TO :"role";
GRANT USAGE ON SCHEMA public TO :"role";
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO :"role";
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO :"role";
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"role";
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO :"role";
SQL

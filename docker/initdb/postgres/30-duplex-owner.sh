#!/bin/sh
# The CRM tables the way back reads are published by `duplex setup`, which also gives a table
# with columns going both ways REPLICA IDENTITY FULL; both are the table owner's to do. In the
# shipped set that is `orders` (its status and cancellation go back to Bitrix): hand it to the
# duplex role once the CRM schema (10-…) exists.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v role="${DUPLEX_PG_ROLE:-duplex}" <<'SQL'
SELECT format('ALTER TABLE public.orders OWNER TO %I', :'role')
WHERE to_regclass('public.orders') IS NOT NULL \gexec
SQL

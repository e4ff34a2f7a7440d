#!/bin/sh
# Creates the CRM schema the shipped mapping set writes (mappings/bitrix/crm.sql, mounted at
# /duplex/crm.sql by compose.yaml), as the database owner, on the first start of an empty
# data volume. A CRM that already has its tables skips this: its CREATE TABLEs are IF NOT EXISTS.
crm="${DUPLEX_CRM_SQL:-/duplex/crm.sql}"
if [ -f "$crm" ]; then
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -f "$crm"
fi

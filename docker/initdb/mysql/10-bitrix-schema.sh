#!/bin/sh
# The Bitrix tables the shipped mapping set reads (examples/shop/bitrix.sql, mounted at
# /duplex/bitrix.sql by compose.yaml), empty, so that the stack starts without a shop: created
# only when the database has no b_sale_order yet. To start from a real shop instead, put its
# dump here under a name that sorts before this one (05-bitrix.sql.gz): its tables win.
my="${DUPLEX_INITDB_MYSQL:---protocol=socket --socket=/var/run/mysqld/mysqld.sock -uroot -p$MYSQL_ROOT_PASSWORD}"
have=$(mysql $my -N -e "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '${MYSQL_DATABASE}' AND TABLE_NAME = 'b_sale_order'")
if [ "$have" = "0" ] && [ -f "${DUPLEX_BITRIX_SQL:-/duplex/bitrix.sql}" ]; then
    # Bitrix's tables carry zero-date defaults: they load under Bitrix's own empty sql_mode.
    { echo "SET SESSION sql_mode = '';"; cat "${DUPLEX_BITRIX_SQL:-/duplex/bitrix.sql}"; } \
        | mysql $my "${MYSQL_DATABASE}"
fi

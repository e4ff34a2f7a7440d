#!/bin/sh
# What the way back (PostgreSQL → MySQL) writes in the shipped mapping set: the CRM's order
# status and cancellation go back into b_sale_order with reverse_write = "update", which needs
# UPDATE on that table only. Table-level grants need the table, so this runs after the schema
# or dump (10-…, or an earlier-sorting dump). A mapping set that writes more tables back needs
# more: `duplex check` prints each missing GRANT.
my="${DUPLEX_INITDB_MYSQL:---protocol=socket --socket=/var/run/mysqld/mysqld.sock -uroot -p$MYSQL_ROOT_PASSWORD}"
user="${DUPLEX_MYSQL_USER:-duplex}"
mysql $my -e "GRANT UPDATE ON \`${MYSQL_DATABASE}\`.\`b_sale_order\` TO '$user'@'%'"

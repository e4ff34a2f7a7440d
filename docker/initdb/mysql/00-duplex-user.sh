#!/bin/sh
# Creates the `duplex` MySQL user with what the shipped mapping set needs (see the README's
# privilege table; `duplex check` tests each). The mysql image runs this once, when it
# initialises an empty data directory, before the Bitrix schema or dump (10-…) and the table
# grants (20-…). The entrypoint runs it when executable and sources it otherwise, so it sets no
# shell options; it aborts the initialisation only when DUPLEX_MYSQL_PASSWORD is missing.
#
# REPLICATION SLAVE     read the binlog as a replica
# REPLICATION CLIENT    read the binlog position (SHOW MASTER STATUS); MariaDB: BINLOG MONITOR
# BACKUP_ADMIN          MySQL 8 only: LOCK INSTANCE FOR BACKUP and performance_schema.log_status,
#                       which give the copy's binlog position (MariaDB needs nothing extra)
# SELECT on bitrix.*    the tables the mappings read (and their columns in information_schema)
# duplex.*              duplex's own database: setup creates (and on upgrades alters) its tables,
#                       both directions keep their checkpoints and dead letters there
#
# DUPLEX_INITDB_MYSQL   the client's connection options (the image's socket by default; the
#                       tests point it at their own server)
# DUPLEX_MYSQL_USER     the account's name (default duplex)
my="${DUPLEX_INITDB_MYSQL:---protocol=socket --socket=/var/run/mysqld/mysqld.sock -uroot -p$MYSQL_ROOT_PASSWORD}"
user="${DUPLEX_MYSQL_USER:-duplex}"
if mysql $my -N -e "SELECT VERSION()" | grep -qi mariadb; then
    position="BINLOG MONITOR"
    backup=""
else
    position="REPLICATION CLIENT"
    backup="GRANT BACKUP_ADMIN ON *.* TO '$user'@'%';"
fi
mysql $my <<SQL
CREATE USER IF NOT EXISTS '$user'@'%' IDENTIFIED BY '${DUPLEX_MYSQL_PASSWORD:?DUPLEX_MYSQL_PASSWORD is not set}';
GRANT REPLICATION SLAVE, $position ON *.* TO '$user'@'%';
$backup
GRANT SELECT ON \`${MYSQL_DATABASE}\`.* TO '$user'@'%';
GRANT CREATE, ALTER, SELECT, INSERT, UPDATE, DELETE ON \`duplex\`.* TO '$user'@'%';
SQL

#!/bin/sh
# Creates the `duplex` MySQL user with what reading the binlog needs. The mysql image runs this
# once, when it initialises an empty data directory (before any *.sql dump placed next to it).
# The entrypoint runs it when executable and sources it otherwise, so it sets no shell options;
# it aborts the initialisation only when DUPLEX_MYSQL_PASSWORD is missing.
#
# REPLICATION SLAVE   read the binlog as a replica
# REPLICATION CLIENT  read the binlog position (SHOW MASTER STATUS); on MariaDB: BINLOG MONITOR
# SELECT              the Bitrix tables' column metadata in information_schema, and snapshots
# BACKUP_ADMIN        MySQL 8 only: LOCK INSTANCE FOR BACKUP and performance_schema.log_status,
#                     which give the snapshot's binlog position (MariaDB needs nothing extra)
mysql --protocol=socket --socket=/var/run/mysqld/mysqld.sock -uroot -p"$MYSQL_ROOT_PASSWORD" <<SQL
CREATE USER IF NOT EXISTS 'duplex'@'%' IDENTIFIED BY '${DUPLEX_MYSQL_PASSWORD:?DUPLEX_MYSQL_PASSWORD is not set}';
GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'duplex'@'%';
GRANT SELECT ON \`${MYSQL_DATABASE}\`.* TO 'duplex'@'%';
GRANT BACKUP_ADMIN ON *.* TO 'duplex'@'%';
SQL

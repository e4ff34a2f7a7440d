//! Everything duplex keeps of its own, in its schema on PostgreSQL (`[postgres] duplex_schema`)
//! and its database on MySQL/MariaDB (`[mysql] duplex_database`): the names of those tables,
//! their DDL in both dialects, and the reads and writes of them.
//!
//! - [`checkpoint`]: the source position per pipeline and direction, written in the same target
//!   transaction as the changes it covers; never moves backward. On MySQL it is also the echo
//!   marker, and on PostgreSQL under the marker rule.
//! - [`heartbeat`]: one row per pipeline on each source, stamped every second, for the lag.
//! - [`progress`]: snapshot progress, one row per pipeline, direction and source table.
//! - [`dead_letter`]: rows that could not be applied, with the reason.
//! - `pivot` (PostgreSQL): the values of pivoted EAV properties by priority.
//!
//! This module may use the model, the config and the error type only; sources, sinks, the
//! snapshot, telemetry and the commands use it.

pub mod checkpoint;
pub mod dead_letter;
pub mod heartbeat;
pub mod progress;

use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::model::pg_ident;

/// Creates duplex's database and tables on MySQL/MariaDB if they do not exist.
pub async fn setup_mysql(conn: &mut mysql_async::Conn, database: &str) -> Result<()> {
    use mysql_async::prelude::Queryable;
    let db = crate::model::my_ident(database);
    let ddl = format!(
        "CREATE DATABASE IF NOT EXISTS {db} CHARACTER SET utf8mb4;
         CREATE TABLE IF NOT EXISTS {db}.checkpoint (
             pipeline   varchar(64) NOT NULL,
             direction  varchar(32) NOT NULL,
             position   varchar(2000) NOT NULL,
             ord_major  bigint NOT NULL,
             ord_minor  bigint NOT NULL,
             epoch      bigint NOT NULL DEFAULT 0,
             updated_at timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
             PRIMARY KEY (pipeline, direction)
         ) ENGINE=InnoDB;
         CREATE TABLE IF NOT EXISTS {db}.dead_letter (
             id            bigint NOT NULL AUTO_INCREMENT PRIMARY KEY,
             pipeline      varchar(64) NOT NULL,
             direction     varchar(32) NOT NULL,
             source_table  varchar(255) NOT NULL,
             target_table  varchar(255) NOT NULL,
             op            varchar(16) NOT NULL,
             position      varchar(2000) NOT NULL,
             txn_id        varchar(255) NOT NULL,
             row_data      json NOT NULL,
             reason        text NOT NULL,
             first_attempt timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
             last_attempt  timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
             attempts      int NOT NULL DEFAULT 1,
             resolved      tinyint(1) NOT NULL DEFAULT 0,
             KEY dead_letter_unresolved (pipeline, resolved)
         ) ENGINE=InnoDB;
         {};
         {}",
        heartbeat::mysql_ddl(database),
        progress::my_ddl(database)
    );
    conn.query_drop(ddl).await.map_err(|e| {
        Error::from_mysql(
            e,
            true,
            &format!("creating duplex's tables in MySQL database {database}"),
        )
    })
}

/// Creates duplex's schema and tables if they do not exist.
pub async fn setup_postgres(client: &Client, schema: &str) -> Result<()> {
    let s = pg_ident(schema);
    let ddl = format!(
        "CREATE SCHEMA IF NOT EXISTS {s};
         CREATE TABLE IF NOT EXISTS {s}.checkpoint (
             pipeline   text NOT NULL,
             direction  text NOT NULL,
             position   text NOT NULL,
             ord_major  bigint NOT NULL,
             ord_minor  bigint NOT NULL,
             updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
             PRIMARY KEY (pipeline, direction)
         );
         CREATE TABLE IF NOT EXISTS {s}.dead_letter (
             id            bigserial PRIMARY KEY,
             pipeline      text NOT NULL,
             direction     text NOT NULL,
             source_table  text NOT NULL,
             target_table  text NOT NULL,
             op            text NOT NULL,
             position      text NOT NULL,
             txn_id        text NOT NULL,
             row_data      jsonb NOT NULL,
             reason        text NOT NULL,
             first_attempt timestamptz NOT NULL DEFAULT clock_timestamp(),
             last_attempt  timestamptz NOT NULL DEFAULT clock_timestamp(),
             attempts      integer NOT NULL DEFAULT 1,
             resolved      boolean NOT NULL DEFAULT false
         );
         CREATE INDEX IF NOT EXISTS dead_letter_unresolved ON {s}.dead_letter (pipeline, resolved);
         CREATE TABLE IF NOT EXISTS {s}.pivot (
             pipeline text NOT NULL,
             target text NOT NULL,
             key text NOT NULL,
             col text NOT NULL,
             priority integer NOT NULL,
             value text,
             PRIMARY KEY (pipeline, target, key, col, priority)
         );
         ALTER TABLE {s}.pivot ALTER COLUMN value DROP NOT NULL;
         {};
         {}",
        heartbeat::pg_ddl(schema),
        progress::pg_ddl(schema)
    );
    client.batch_execute(&ddl).await.map_err(|e| {
        Error::from_pg(
            e,
            true,
            &format!("creating duplex's tables in schema {schema}"),
        )
    })
}

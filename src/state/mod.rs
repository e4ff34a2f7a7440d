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
//! - [`conflict`]: conflicts on `both` columns, how they were resolved.
//! - [`newest`]: per column under the `newest` policy, each source's last change and its time.
//! - `pivot` (PostgreSQL): the values of pivoted EAV properties by priority.
//! - [`verify`] (PostgreSQL): verify runs and the repair log.
//!
//! This module may use the model, the config and the error type only; sources, sinks, the
//! snapshot, telemetry and the commands use it.

pub mod checkpoint;
pub mod conflict;
pub mod dead_letter;
pub mod heartbeat;
pub mod newest;
pub mod progress;
pub mod verify;

use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::model::{my_ident, pg_ident};

/// Creates duplex's database and tables on MySQL/MariaDB if they do not exist.
pub async fn setup_mysql(conn: &mut mysql_async::Conn, database: &str) -> Result<()> {
    use mysql_async::prelude::Queryable;
    let ddl = format!(
        "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET utf8mb4;
         {};
         {};
         {};
         {};
         {};
         {}",
        my_ident(database),
        checkpoint::my_ddl(database),
        conflict::my_ddl(database),
        newest::my_ddl(database),
        dead_letter::my_ddl(database),
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

/// The pivot table's key columns compare bytes (`COLLATE "C"`): they are only ever looked up by
/// equality, and under the database's collation every comparison of its five-column primary
/// key went through the locale's strcoll (12 % of the writer backend's time in the mapped copy
/// of a shop, with `C.UTF-8`; a `en_US.UTF-8` database costs more). A table made by an
/// earlier version is altered once (its index rebuilt).
fn pivot_keys_in_c(schema: &str) -> String {
    let s = pg_ident(schema);
    let literal = format!("{s}.pivot").replace('\'', "''");
    format!(
        "DO $pivot$ BEGIN
           IF EXISTS (SELECT 1 FROM pg_attribute
                      WHERE attrelid = '{literal}'::regclass
                        AND attname IN ('pipeline', 'target', 'key', 'col')
                        AND attcollation <> 'pg_catalog.\"C\"'::regcollation) THEN
             ALTER TABLE {s}.pivot
               ALTER COLUMN pipeline TYPE text COLLATE \"C\",
               ALTER COLUMN target TYPE text COLLATE \"C\",
               ALTER COLUMN key TYPE text COLLATE \"C\",
               ALTER COLUMN col TYPE text COLLATE \"C\";
           END IF;
         END $pivot$"
    )
}

/// Creates duplex's schema and tables if they do not exist.
pub async fn setup_postgres(client: &Client, schema: &str) -> Result<()> {
    let s = pg_ident(schema);
    let ddl = format!(
        "CREATE SCHEMA IF NOT EXISTS {s};
         {};
         {};
         CREATE TABLE IF NOT EXISTS {s}.pivot (
             pipeline text COLLATE \"C\" NOT NULL,
             target text COLLATE \"C\" NOT NULL,
             key text COLLATE \"C\" NOT NULL,
             col text COLLATE \"C\" NOT NULL,
             priority integer NOT NULL,
             value text,
             PRIMARY KEY (pipeline, target, key, col, priority)
         );
         ALTER TABLE {s}.pivot ALTER COLUMN value DROP NOT NULL;
         {};
         {};
         {};
         {};
         {};
         {}",
        checkpoint::pg_ddl(schema),
        conflict::pg_ddl(schema),
        pivot_keys_in_c(schema),
        newest::pg_ddl(schema),
        dead_letter::pg_ddl(schema),
        heartbeat::pg_ddl(schema),
        progress::pg_ddl(schema),
        verify::pg_ddl(schema)
    );
    client.batch_execute(&ddl).await.map_err(|e| {
        Error::from_pg(
            e,
            true,
            &format!("creating duplex's tables in schema {schema}"),
        )
    })
}

//! duplex's own tables on PostgreSQL: the checkpoint (source position per pipeline and
//! direction) and the dead-letter table.
//!
//! Invariant: a checkpoint is written in the same transaction as the changes it covers, and it
//! never moves backward — the update carries a guard on the stored order key and fails the
//! transaction when the new position is behind the stored one.

use tokio_postgres::Client;

use crate::error::{Error, ErrorKind, Result};
use crate::model::{pg_ident, Position};

/// The direction label stored with a checkpoint.
pub const FORWARD: &str = "mysql_to_pg";
/// The direction label of PostgreSQL → MySQL.
pub const REVERSE: &str = "pg_to_mysql";
/// The checkpoint table's name, in duplex's schema on PostgreSQL and duplex's database on MySQL.
/// On MySQL it is also the echo marker: every transaction duplex applies there writes it first.
pub const TABLE: &str = "checkpoint";

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
        crate::heartbeat::mysql_ddl(database),
        crate::snapshot::state::my_ddl(database)
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
        crate::heartbeat::pg_ddl(schema),
        crate::snapshot::state::pg_ddl(schema)
    );
    client.batch_execute(&ddl).await.map_err(|e| {
        Error::from_pg(
            e,
            true,
            &format!("creating duplex's tables in schema {schema}"),
        )
    })
}

/// The totally ordered key stored next to a position, for the never-backward guard.
pub fn order_key(p: &Position) -> (i64, i64) {
    match p {
        Position::Mysql(m) => (m.file.sequence() as i64, m.pos as i64),
        Position::Postgres(l) => (0, l.0 as i64),
    }
}

/// Reads the stored position of a pipeline direction.
pub async fn load(
    client: &Client,
    schema: &str,
    pipeline: &str,
    direction: &str,
) -> Result<Option<Position>> {
    let sql = format!(
        "SELECT position FROM {}.checkpoint WHERE pipeline = $1 AND direction = $2",
        pg_ident(schema)
    );
    let row = client
        .query_opt(&sql, &[&pipeline, &direction])
        .await
        .map_err(|e| Error::from_pg(e, true, "reading the checkpoint"))?;
    row.map(|r| r.get::<_, String>(0).parse::<Position>())
        .transpose()
}

/// The echo marker on PostgreSQL (when replication origins are not available): touches the
/// pipeline's checkpoint row as the first change of a transaction. Parameters: pipeline,
/// direction. The row exists from `duplex setup` on.
pub fn marker_sql(schema: &str) -> String {
    format!(
        "UPDATE {}.checkpoint SET updated_at = clock_timestamp() WHERE pipeline = $1 AND direction = $2",
        pg_ident(schema)
    )
}

/// The statement that stores a checkpoint; parameters: pipeline, direction, position, major, minor.
pub fn store_sql(schema: &str) -> String {
    format!(
        "INSERT INTO {s}.checkpoint AS c (pipeline, direction, position, ord_major, ord_minor) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (pipeline, direction) DO UPDATE \
         SET position = EXCLUDED.position, ord_major = EXCLUDED.ord_major, \
             ord_minor = EXCLUDED.ord_minor, updated_at = clock_timestamp() \
         WHERE (c.ord_major, c.ord_minor) <= (EXCLUDED.ord_major, EXCLUDED.ord_minor)",
        s = pg_ident(schema)
    )
}

/// Stores a checkpoint inside the caller's open transaction.
pub async fn store(
    client: &Client,
    stmt: &tokio_postgres::Statement,
    pipeline: &str,
    direction: &str,
    position: &Position,
) -> Result<()> {
    let (major, minor) = order_key(position);
    let n = client
        .execute(
            stmt,
            &[&pipeline, &direction, &position.to_string(), &major, &minor],
        )
        .await
        .map_err(|e| Error::from_pg(e, true, "writing the checkpoint"))?;
    if n != 1 {
        return Err(Error::new(
            ErrorKind::Invariant,
            format!(
                "checkpoint of pipeline {pipeline} would move backward to {position}; refusing"
            ),
        ));
    }
    Ok(())
}

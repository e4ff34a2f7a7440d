//! The dead-letter tables: rows that could not be applied, one table on each target side —
//! `<duplex_schema>.dead_letter` on PostgreSQL for MySQL → PostgreSQL, `<duplex_database>
//! .dead_letter` on MySQL for the way back — with the row, the source position, the tables, the
//! reason, the first and last attempt and the attempt count. The sinks insert them (inside the
//! target transaction of the changes around them); `duplex dlq` reads, updates and drops them.

use mysql_async::prelude::Queryable;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::{my_ident, pg_ident, FORWARD, REVERSE};

/// One dead letter.
#[derive(Debug, Clone, Serialize)]
pub struct Letter {
    pub id: i64,
    pub direction: String,
    pub source_table: String,
    pub target_table: String,
    pub op: String,
    pub position: String,
    pub txn_id: String,
    pub row: serde_json::Value,
    pub reason: String,
    pub first_attempt: String,
    pub last_attempt: String,
    pub attempts: i64,
    pub resolved: bool,
}

/// DDL of the dead-letter table on PostgreSQL.
pub fn pg_ddl(schema: &str) -> String {
    let s = pg_ident(schema);
    format!(
        "CREATE TABLE IF NOT EXISTS {s}.dead_letter (
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
         CREATE INDEX IF NOT EXISTS dead_letter_unresolved ON {s}.dead_letter (pipeline, resolved)"
    )
}

/// DDL of the dead-letter table on MySQL/MariaDB.
pub fn my_ddl(database: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {}.dead_letter (
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
         ) ENGINE=InnoDB",
        my_ident(database)
    )
}

/// The statement that records a dead letter on PostgreSQL; parameters: pipeline, direction,
/// source table, target table, op, position, transaction id, row (jsonb), reason.
pub fn pg_insert_sql(schema: &str) -> String {
    format!(
        "INSERT INTO {}.dead_letter (pipeline, direction, source_table, target_table, op, position, txn_id, row_data, reason) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        pg_ident(schema)
    )
}

/// The statement that records a dead letter on MySQL; parameters as [`pg_insert_sql`].
pub fn my_insert_sql(database: &str) -> String {
    format!(
        "INSERT INTO {}.dead_letter (pipeline, direction, source_table, target_table, op, position, txn_id, row_data, reason) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        my_ident(database)
    )
}

/// The forward direction's letters of `pipeline` on PostgreSQL, newest first.
pub async fn pg_read(
    client: &tokio_postgres::Client,
    schema: &str,
    pipeline: &str,
) -> Result<Vec<Letter>> {
    let sql = format!(
        "SELECT id, direction, source_table, target_table, op, position, txn_id, row_data, reason, \
         first_attempt::text, last_attempt::text, attempts::int8, resolved \
         FROM {}.dead_letter WHERE pipeline = $1 AND direction = $2 ORDER BY id DESC",
        pg_ident(schema)
    );
    let rows = client
        .query(&sql, &[&pipeline, &FORWARD])
        .await
        .map_err(|e| {
            Error::from_pg(
                e,
                true,
                "reading the dead letters (did `duplex setup` run?)",
            )
        })?;
    Ok(rows
        .iter()
        .map(|r| Letter {
            id: r.get(0),
            direction: r.get(1),
            source_table: r.get(2),
            target_table: r.get(3),
            op: r.get(4),
            position: r.get(5),
            txn_id: r.get(6),
            row: r.get(7),
            reason: r.get(8),
            first_attempt: r.get(9),
            last_attempt: r.get(10),
            attempts: r.get(11),
            resolved: r.get(12),
        })
        .collect())
}

/// The reverse direction's letters of `pipeline` on MySQL, newest first (none when duplex's
/// tables were never set up there).
pub async fn my_read(
    conn: &mut mysql_async::Conn,
    database: &str,
    pipeline: &str,
) -> Result<Vec<Letter>> {
    // The times as text: the binary protocol sends TIMESTAMP as a date value, which does not
    // convert to a String (`dlq list` used to panic on the first MySQL letter).
    let sql = format!(
        "SELECT id, direction, source_table, target_table, op, position, txn_id, row_data, reason, \
         CAST(first_attempt AS CHAR), CAST(last_attempt AS CHAR), attempts, resolved \
         FROM {}.dead_letter WHERE pipeline = ? AND direction = ? ORDER BY id DESC",
        my_ident(database)
    );
    let rows: Vec<mysql_async::Row> = match conn.exec(sql, (pipeline, REVERSE)).await {
        Ok(rows) => rows,
        // 1146: no such table — duplex's MySQL tables were never set up, so no letters.
        Err(mysql_async::Error::Server(e)) if e.code == 1146 || e.code == 1049 => Vec::new(),
        Err(e) => return Err(Error::from_mysql(e, true, "reading the dead letters")),
    };
    rows.into_iter()
        .map(|mut r| {
            let text = |r: &mut mysql_async::Row, i: usize| -> String {
                r.take::<Option<String>, _>(i).flatten().unwrap_or_default()
            };
            let row_json = text(&mut r, 7);
            Ok(Letter {
                id: r.take(0).unwrap_or_default(),
                direction: text(&mut r, 1),
                source_table: text(&mut r, 2),
                target_table: text(&mut r, 3),
                op: text(&mut r, 4),
                position: text(&mut r, 5),
                txn_id: text(&mut r, 6),
                row: serde_json::from_str(&row_json).unwrap_or(serde_json::Value::String(row_json)),
                reason: text(&mut r, 8),
                first_attempt: text(&mut r, 9),
                last_attempt: text(&mut r, 10),
                attempts: r.take(11).unwrap_or_default(),
                resolved: r.take::<i64, _>(12).unwrap_or_default() != 0,
            })
        })
        .collect()
}

/// After a retry on PostgreSQL: an applied letter is resolved; a failed one gets the new reason.
/// Either way one more attempt is counted.
pub async fn pg_record(
    client: &tokio_postgres::Client,
    schema: &str,
    id: i64,
    applied: bool,
    detail: &str,
) -> Result<()> {
    let sql = format!(
        "UPDATE {}.dead_letter SET resolved = $2, reason = CASE WHEN $2 THEN reason ELSE $3 END, \
         attempts = attempts + 1, last_attempt = clock_timestamp() WHERE id = $1",
        pg_ident(schema)
    );
    client
        .execute(&sql, &[&id, &applied, &detail])
        .await
        .map_err(|e| Error::from_pg(e, true, "updating a dead letter"))?;
    Ok(())
}

/// [`pg_record`] on MySQL.
pub async fn my_record(
    conn: &mut mysql_async::Conn,
    database: &str,
    id: i64,
    applied: bool,
    detail: &str,
) -> Result<()> {
    let sql = format!(
        "UPDATE {}.dead_letter SET resolved = ?, reason = IF(?, reason, ?), \
         attempts = attempts + 1, last_attempt = CURRENT_TIMESTAMP(6) WHERE id = ?",
        my_ident(database)
    );
    conn.exec_drop(&sql, (applied, applied, detail, id))
        .await
        .map_err(|e| Error::from_mysql(e, true, "updating a dead letter"))
}

/// What a fresh copy of a table notes on the letters of that table it supersedes.
const SUPERSEDED: &str = " (superseded: the table was copied again, which set aside its rows anew)";

/// A fresh copy of `source_table` reads every row again and sets the bad ones aside anew: the
/// table's earlier unresolved letters of the forward direction are resolved with a note, so a
/// re-copy does not double them. Returns how many.
pub async fn pg_supersede(
    client: &tokio_postgres::Client,
    schema: &str,
    pipeline: &str,
    source_table: &str,
) -> Result<u64> {
    let sql = format!(
        "UPDATE {}.dead_letter SET resolved = true, reason = reason || $4 \
         WHERE pipeline = $1 AND direction = $2 AND source_table = $3 AND NOT resolved",
        pg_ident(schema)
    );
    client
        .execute(&sql, &[&pipeline, &FORWARD, &source_table, &SUPERSEDED])
        .await
        .map_err(|e| Error::from_pg(e, true, "resolving the letters a copy supersedes"))
}

/// [`pg_supersede`] for the reverse direction's letters on MySQL.
pub async fn my_supersede(
    conn: &mut mysql_async::Conn,
    database: &str,
    pipeline: &str,
    source_table: &str,
) -> Result<u64> {
    let sql = format!(
        "UPDATE {}.dead_letter SET resolved = 1, reason = CONCAT(reason, ?) \
         WHERE pipeline = ? AND direction = ? AND source_table = ? AND resolved = 0",
        my_ident(database)
    );
    match conn
        .exec_drop(&sql, (SUPERSEDED, pipeline, REVERSE, source_table))
        .await
    {
        Ok(()) => Ok(conn.affected_rows()),
        // No dead-letter table yet: nothing to supersede.
        Err(mysql_async::Error::Server(e)) if e.code == 1146 => Ok(0),
        Err(e) => Err(Error::from_mysql(
            e,
            true,
            "resolving the letters a copy supersedes",
        )),
    }
}

/// Deletes letters of `pipeline` on PostgreSQL by id; returns how many.
pub async fn pg_drop(
    client: &tokio_postgres::Client,
    schema: &str,
    pipeline: &str,
    ids: &[i64],
) -> Result<usize> {
    let sql = format!(
        "DELETE FROM {}.dead_letter WHERE pipeline = $1 AND id = ANY($2)",
        pg_ident(schema)
    );
    Ok(client
        .execute(&sql, &[&pipeline, &ids])
        .await
        .map_err(|e| Error::from_pg(e, true, "dropping dead letters"))? as usize)
}

/// Deletes letters of `pipeline` on MySQL by id; returns how many.
pub async fn my_drop(
    conn: &mut mysql_async::Conn,
    database: &str,
    pipeline: &str,
    ids: &[i64],
) -> Result<usize> {
    let list: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    let sql = format!(
        "DELETE FROM {}.dead_letter WHERE pipeline = ? AND id IN ({})",
        my_ident(database),
        list.join(", ")
    );
    conn.exec_drop(sql, (pipeline,))
        .await
        .map_err(|e| Error::from_mysql(e, true, "dropping dead letters"))?;
    Ok(conn.affected_rows() as usize)
}

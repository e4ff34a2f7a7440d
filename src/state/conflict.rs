//! The conflict log: one row per conflict a direction resolved — a change to a `both` column
//! whose before value was not the target's current value — in `<duplex_schema>.conflict` on
//! PostgreSQL (found while applying MySQL's changes) and `<duplex_database>.conflict` on MySQL
//! (found while applying PostgreSQL's). Each row holds the table, key and column, the change's
//! before and new value, the value the target held, the policy and the winner, and the source
//! transaction with its commit time. The sinks insert them in the target transaction that
//! resolved them; `duplex status` counts them.

use mysql_async::prelude::Queryable;

use crate::error::{Error, Result};
use crate::model::{my_ident, pg_ident};

/// One conflict, as a sink found and resolved it.
#[derive(Debug, Clone)]
pub struct Conflict {
    pub target_table: String,
    /// The row's key on the target, as text (columns joined by `,`).
    pub key: String,
    pub column: String,
    /// The column's value before the source change (mapped to the target), `None`: NULL or an
    /// insert.
    pub before: Option<String>,
    /// The value the source change brought.
    pub incoming: Option<String>,
    /// The value the target held.
    pub current: Option<String>,
    pub policy: &'static str,
    /// `bitrix` or `crm`: whose value both sides keep.
    pub winner: &'static str,
    pub txn_id: String,
    /// The source transaction's commit time (µs since the epoch; 0 when unknown).
    pub commit_time_us: i64,
    /// Under `newest`: the commit time of the other side's change it was weighed against (µs
    /// since the epoch; 0 when not known).
    pub other_commit_us: i64,
}

/// DDL of the conflict table on PostgreSQL.
pub fn pg_ddl(schema: &str) -> String {
    let s = pg_ident(schema);
    format!(
        "CREATE TABLE IF NOT EXISTS {s}.conflict (
             id             bigserial PRIMARY KEY,
             pipeline       text NOT NULL,
             direction      text NOT NULL,
             target_table   text NOT NULL,
             row_key        text NOT NULL,
             col            text NOT NULL,
             before_value   text,
             incoming_value text,
             current_value  text,
             policy         text NOT NULL,
             winner         text NOT NULL,
             position       text NOT NULL,
             txn_id         text NOT NULL,
             source_commit  timestamptz,
             resolved_at    timestamptz NOT NULL DEFAULT clock_timestamp()
         );
         ALTER TABLE {s}.conflict ADD COLUMN IF NOT EXISTS other_commit timestamptz;
         CREATE INDEX IF NOT EXISTS conflict_recent ON {s}.conflict (pipeline, resolved_at)"
    )
}

/// DDL of the conflict table on MySQL/MariaDB.
pub fn my_ddl(database: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {0}.conflict (
             id             bigint NOT NULL AUTO_INCREMENT PRIMARY KEY,
             pipeline       varchar(64) NOT NULL,
             direction      varchar(32) NOT NULL,
             target_table   varchar(255) NOT NULL,
             row_key        varchar(1000) NOT NULL,
             col            varchar(255) NOT NULL,
             before_value   text,
             incoming_value text,
             current_value  text,
             policy         varchar(16) NOT NULL,
             winner         varchar(16) NOT NULL,
             position       varchar(2000) NOT NULL,
             txn_id         varchar(255) NOT NULL,
             source_commit  timestamp(6) NULL,
             resolved_at    timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
             KEY conflict_recent (pipeline, resolved_at)
         ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
         ALTER TABLE {0}.conflict ADD COLUMN IF NOT EXISTS other_commit timestamp(6) NULL",
        my_ident(database)
    )
}

/// Inserts one conflict on PostgreSQL: `$1` pipeline, `$2` direction, then the fields of
/// [`Conflict`] in order, the batch's position, and the commit time as µs since the epoch.
pub fn pg_insert_sql(schema: &str) -> String {
    format!(
        "INSERT INTO {}.conflict (pipeline, direction, target_table, row_key, col, before_value, incoming_value, current_value, policy, winner, txn_id, position, source_commit, other_commit)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
                 CASE WHEN $13::bigint > 0 THEN to_timestamp($13::bigint / 1e6) END,
                 CASE WHEN $14::bigint > 0 THEN to_timestamp($14::bigint / 1e6) END)",
        pg_ident(schema)
    )
}

/// Writes conflicts inside the open MySQL transaction (the session's zone is UTC).
pub async fn my_insert(
    conn: &mut mysql_async::Conn,
    database: &str,
    pipeline: &str,
    direction: &str,
    position: &str,
    conflicts: &[Conflict],
) -> Result<()> {
    if conflicts.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO {}.conflict (pipeline, direction, target_table, row_key, col, before_value, incoming_value, current_value, policy, winner, txn_id, position, source_commit, other_commit)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, IF(? > 0, FROM_UNIXTIME(? / 1000000), NULL),
                 IF(? > 0, FROM_UNIXTIME(? / 1000000), NULL))",
        my_ident(database)
    );
    let params = conflicts.iter().map(|c| {
        let v: Vec<mysql_async::Value> = vec![
            pipeline.into(),
            direction.into(),
            c.target_table.clone().into(),
            c.key.clone().into(),
            c.column.clone().into(),
            c.before.clone().into(),
            c.incoming.clone().into(),
            c.current.clone().into(),
            c.policy.into(),
            c.winner.into(),
            c.txn_id.clone().into(),
            position.into(),
            c.commit_time_us.into(),
            c.commit_time_us.into(),
            c.other_commit_us.into(),
            c.other_commit_us.into(),
        ];
        v
    });
    conn.exec_batch(sql, params)
        .await
        .map_err(|e| Error::from_mysql(e, true, "writing the conflict log"))
}

/// Counts a pipeline's conflicts on PostgreSQL: all of them, and those of the last hour.
pub fn pg_count_sql(schema: &str) -> String {
    format!(
        "SELECT count(*), count(*) FILTER (WHERE resolved_at > now() - interval '1 hour') FROM {}.conflict WHERE pipeline = $1",
        pg_ident(schema)
    )
}

/// Counts a pipeline's conflicts on MySQL: all of them, and those of the last hour.
pub fn my_count_sql(database: &str) -> String {
    format!(
        "SELECT COUNT(*), CAST(COALESCE(SUM(resolved_at > NOW(6) - INTERVAL 1 HOUR), 0) AS SIGNED) FROM {}.conflict WHERE pipeline = ?",
        my_ident(database)
    )
}

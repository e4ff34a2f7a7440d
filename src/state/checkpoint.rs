//! The checkpoint: the source position per pipeline and direction, kept in the target database
//! (PostgreSQL for the forward direction, MySQL for the reverse one). On MySQL the sink writes
//! the row first in every transaction: it is also the echo marker.
//!
//! Invariant: a checkpoint is written in the same transaction as the changes it covers, and it
//! never moves backward — the update carries a guard on the stored order key and fails the
//! transaction when the new position is behind the stored one.

use tokio_postgres::Client;

use crate::error::{Error, ErrorKind, Result};
use crate::model::{my_ident, pg_ident, Position};

/// The checkpoint table's name, in duplex's schema on PostgreSQL and duplex's database on MySQL.
/// On MySQL it is also the echo marker: every transaction duplex applies there writes it first.
pub const TABLE: &str = "checkpoint";

/// DDL of the checkpoint table on PostgreSQL.
pub fn pg_ddl(schema: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {}.checkpoint (
             pipeline   text NOT NULL,
             direction  text NOT NULL,
             position   text NOT NULL,
             ord_major  bigint NOT NULL,
             ord_minor  bigint NOT NULL,
             updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
             PRIMARY KEY (pipeline, direction)
         )",
        pg_ident(schema)
    )
}

/// DDL of the checkpoint table on MySQL/MariaDB; `epoch` counts the marker writes.
pub fn my_ddl(database: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {}.checkpoint (
             pipeline   varchar(64) NOT NULL,
             direction  varchar(32) NOT NULL,
             position   varchar(2000) NOT NULL,
             ord_major  bigint NOT NULL,
             ord_minor  bigint NOT NULL,
             epoch      bigint NOT NULL DEFAULT 0,
             updated_at timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
             PRIMARY KEY (pipeline, direction)
         ) ENGINE=InnoDB",
        my_ident(database)
    )
}

/// The totally ordered key stored next to a position, for the never-backward guard. A MySQL
/// position with a GTID state is keyed by the state's weight (it grows with every transaction)
/// above every file-numbered key, so a promoted replica, `RESET MASTER` with the state carried
/// over, or a new `log_bin` name, which number their files anew, do not read as going
/// backward; positions of one state (idle between two transactions) share a key, whatever
/// their file.
pub fn order_key(p: &Position) -> (i64, i64) {
    match p {
        Position::Mysql(m) => match &m.gtid {
            Some(g) => (GTID_KEYS + g.weight().min(GTID_KEYS as u64 - 1) as i64, 0),
            None => (m.file.sequence() as i64, m.pos as i64),
        },
        Position::Postgres(l) => (0, l.0 as i64),
    }
}

/// Where the keys of positions with a GTID state begin (file sequence numbers stay far below).
const GTID_KEYS: i64 = 1 << 50;

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

/// The statement that reads a pipeline direction's position on MySQL; parameters: pipeline,
/// direction. An empty position is the marker row of a pipeline that has none yet.
pub fn my_load_sql(database: &str) -> String {
    format!(
        "SELECT position FROM {}.checkpoint WHERE pipeline = ? AND direction = ?",
        my_ident(database)
    )
}

/// Reads the stored position of a pipeline direction on MySQL (the marker row of a pipeline
/// without one yet has an empty position: `None`).
pub async fn my_load(
    conn: &mut mysql_async::Conn,
    database: &str,
    pipeline: &str,
    direction: &str,
) -> Result<Option<Position>> {
    use mysql_async::prelude::Queryable;
    let row: Option<String> = conn
        .exec_first(my_load_sql(database), (pipeline, direction))
        .await
        .map_err(|e| {
            Error::from_mysql(
                e,
                true,
                "reading the MySQL checkpoint (did `duplex setup` run?)",
            )
        })?;
    row.filter(|p| !p.is_empty()).map(|p| p.parse()).transpose()
}

/// The echo marker on MySQL, sent with the transaction start in one round trip: the first row
/// event of every transaction duplex applies there. `pipeline` is a-z, 0-9 and _ only (checked
/// with the configuration), so it is written into the text.
pub fn my_marker_sql(database: &str, pipeline: &str, direction: &str) -> String {
    format!(
        "START TRANSACTION; \
         INSERT INTO {}.checkpoint (pipeline, direction, position, ord_major, ord_minor, epoch) \
         VALUES ('{pipeline}', '{direction}', '', 0, 0, 1) ON DUPLICATE KEY UPDATE epoch = epoch + 1",
        my_ident(database)
    )
}

/// The statement that moves a checkpoint forward on MySQL inside the open transaction, never
/// backward (0 rows affected when the new position is behind); parameters: position, major,
/// minor, pipeline, direction, major, minor.
pub fn my_store_sql(database: &str) -> String {
    format!(
        "UPDATE {}.checkpoint SET position = ?, ord_major = ?, ord_minor = ? \
         WHERE pipeline = ? AND direction = ? AND (ord_major, ord_minor) <= (?, ?)",
        my_ident(database)
    )
}

/// The statement that forgets a pipeline direction's checkpoint (`duplex setup --start-over`,
/// a new slot). Parameters: pipeline, direction; `$n` placeholders for PostgreSQL, `?` for MySQL.
pub fn forget_sql(table: &str, pg: bool) -> String {
    let (p1, p2) = if pg { ("$1", "$2") } else { ("?", "?") };
    format!("DELETE FROM {table} WHERE pipeline = {p1} AND direction = {p2}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_keys_go_on_with_gtids_when_files_are_numbered_anew() {
        let k = |s: &str| order_key(&s.parse::<Position>().unwrap());
        let old = k("mysql:binlog.000006:751@0-1-14356");
        assert!(k("mysql:binlog.000001:342@0-1-14357") > old);
        assert_eq!(
            k("mysql:binlog.000001:900@0-1-14356"),
            old,
            "idle: one key per state"
        );
        assert!(k("mysql:binlog.000001:342@0-1-14355") < old);
        // A checkpoint stored before GTID keys (file:pos) is behind any GTID key.
        assert!(k("mysql:binlog.000006:751") < k("mysql:binlog.000001:4@0-1-1"));
        assert!(k("pg:0/16B374D8") < k("pg:1/0"));
    }
}

//! Snapshot progress, kept in the target database next to the checkpoint: one row per pipeline,
//! direction and source table. A chunk's rows and the progress row that counts them commit in
//! one target transaction, so after a crash the copy resumes exactly after the last chunk that
//! committed.

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::model::{my_ident, pg_ident, Position, Value};

/// A key value as stored in the progress row (the last key copied, segment boundaries).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum KeyValue {
    /// A signed integer.
    I(i64),
    /// An unsigned integer.
    U(u64),
    /// Binary bytes (compared bytewise by both databases).
    B(Vec<u8>),
    /// Any other value in its text form (text, decimal, date); the database compares it with
    /// its own collation, so duplex never orders these itself.
    S(String),
}

impl KeyValue {
    pub fn of(v: &Value) -> Result<KeyValue> {
        Ok(match v {
            Value::Int(i) => KeyValue::I(*i),
            Value::UInt(u) => KeyValue::U(*u),
            Value::Bool(b) => KeyValue::I(*b as i64),
            Value::Bytes(b) => KeyValue::B(b.clone()),
            Value::Uuid(_) => KeyValue::S(v.to_string()),
            Value::Text(_)
            | Value::Decimal(_)
            | Value::Date(_)
            | Value::DateTime(_)
            | Value::Time(_) => KeyValue::S(v.to_string()),
            other => {
                return Err(Error::new(
                    ErrorKind::SourceDefinite,
                    format!(
                        "a key value of kind {} cannot bound a snapshot chunk",
                        other.type_name()
                    ),
                ))
            }
        })
    }

    /// Orders a key value against a row's value when duplex can do so exactly as the database
    /// does (integers, bytes); `None` otherwise.
    pub fn cmp_value(&self, v: &Value) -> Option<std::cmp::Ordering> {
        let as_i128 = |v: &Value| match v {
            Value::Int(i) => Some(*i as i128),
            Value::UInt(u) => Some(*u as i128),
            _ => None,
        };
        match self {
            KeyValue::I(a) => as_i128(v).map(|b| (*a as i128).cmp(&b)),
            KeyValue::U(a) => as_i128(v).map(|b| (*a as i128).cmp(&b)),
            KeyValue::B(a) => match v {
                Value::Bytes(b) => Some(a.as_slice().cmp(b.as_slice())),
                _ => None,
            },
            KeyValue::S(_) => None,
        }
    }
}

/// Compares a stored key with a row's key column by column; `None` when some column cannot be
/// ordered by duplex.
pub fn cmp_key(stored: &[KeyValue], row: &[Value]) -> Option<std::cmp::Ordering> {
    for (a, b) in stored.iter().zip(row) {
        match a.cmp_value(b)? {
            std::cmp::Ordering::Equal => continue,
            other => return Some(other),
        }
    }
    Some(std::cmp::Ordering::Equal)
}

/// Rows with keys from `from_key` (exclusive; `None`: from the first row) up to the next
/// segment's `from_key` (inclusive) were copied from a snapshot taken at `upto`: source
/// transactions before `upto` are in the copy and must not be applied again to those rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub from_key: Option<Vec<KeyValue>>,
    pub upto: String,
}

impl Segment {
    pub fn upto(&self) -> Result<Position> {
        self.upto.parse()
    }
}

/// Where the copy of one table stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Copying,
    Done,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Copying => "copying",
            State::Done => "done",
        }
    }
}

/// One table's progress row.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// The source table, `schema.table` / `database.table`.
    pub table: String,
    pub state: State,
    /// The source columns chunks are ordered by (its primary key).
    pub key_columns: Vec<String>,
    /// The key of the last row copied (chunks go in key order).
    pub last_key: Option<Vec<KeyValue>>,
    pub rows_copied: i64,
    pub rows_dead: i64,
    pub segments: Vec<Segment>,
    /// A resync (`duplex snapshot --table`): the copy also removes the target rows the source no
    /// longer has, chunk by chunk.
    pub prune: bool,
}

impl Progress {
    /// A copy starting from the first row, from a snapshot at `at`.
    pub fn fresh(table: String, key_columns: Vec<String>, at: &Position) -> Progress {
        Progress {
            table,
            key_columns,
            state: State::Copying,
            last_key: None,
            rows_copied: 0,
            rows_dead: 0,
            segments: vec![Segment {
                from_key: None,
                upto: at.to_string(),
            }],
            prune: false,
        }
    }

    /// Continues an interrupted copy from a new snapshot at `at`: rows after `last_key` will
    /// come from it.
    /// A copy from the first row that has written nothing yet.
    pub fn is_fresh(&self) -> bool {
        self.last_key.is_none() && self.rows_copied == 0 && self.rows_dead == 0
    }

    pub fn resume_at(&mut self, at: &Position) {
        self.segments.push(Segment {
            from_key: self.last_key.clone(),
            upto: at.to_string(),
        });
    }

    /// How rows of this copy are named in dead letters and logs: `snapshot <position>`.
    pub fn label(&self) -> String {
        format!(
            "snapshot {}",
            self.segments.last().map(|s| s.upto.as_str()).unwrap_or("")
        )
    }

    fn encode(&self) -> (Option<String>, String) {
        let key = self
            .last_key
            .as_ref()
            .map(|k| serde_json::to_string(k).expect("keys serialize"));
        let segments = serde_json::to_string(&Stored {
            key_columns: self.key_columns.clone(),
            segments: self.segments.clone(),
            prune: self.prune,
        })
        .expect("segments serialize");
        (key, segments)
    }

    fn decode(
        table: String,
        state: &str,
        last_key: Option<String>,
        rows_copied: i64,
        rows_dead: i64,
        segments: &str,
    ) -> Result<Progress> {
        let bad = |what: &str, e: serde_json::Error| {
            Error::new(
                ErrorKind::Invariant,
                format!("snapshot progress of {table}: unreadable {what}: {e}"),
            )
        };
        let stored: Stored = serde_json::from_str(segments).map_err(|e| bad("segments", e))?;
        Ok(Progress {
            state: if state == "done" {
                State::Done
            } else {
                State::Copying
            },
            last_key: last_key
                .map(|k| serde_json::from_str(&k))
                .transpose()
                .map_err(|e| bad("last key", e))?,
            rows_copied,
            rows_dead,
            key_columns: stored.key_columns,
            segments: stored.segments,
            prune: stored.prune,
            table,
        })
    }
}

/// The `segments` column: the chunk key and the segments.
#[derive(Serialize, Deserialize)]
struct Stored {
    key_columns: Vec<String>,
    segments: Vec<Segment>,
    #[serde(default)]
    prune: bool,
}

/// The statement that turns a pipeline direction's copies into pending resyncs: each is copied
/// again from its first row at the next start, removing the rows its source no longer has
/// (`duplex setup --start-over`, a new slot). Parameters: pipeline, direction; `$n` placeholders
/// for PostgreSQL, `?` for MySQL.
pub fn resync_pending_sql(table: &str, pg: bool) -> String {
    let segments = serde_json::to_string(&Stored {
        key_columns: Vec::new(),
        segments: Vec::new(),
        prune: true,
    })
    .expect("segments serialize");
    let (p1, p2) = if pg { ("$1", "$2") } else { ("?", "?") };
    format!(
        "UPDATE {table} SET state = 'copying', last_key = NULL, segments = '{segments}', finished_at = NULL \
         WHERE pipeline = {p1} AND direction = {p2}"
    )
}

/// DDL of the progress table on PostgreSQL.
pub fn pg_ddl(schema: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {}.snapshot (
             pipeline     text NOT NULL,
             direction    text NOT NULL,
             source_table text NOT NULL,
             state        text NOT NULL,
             last_key     text,
             rows_copied  bigint NOT NULL DEFAULT 0,
             rows_dead    bigint NOT NULL DEFAULT 0,
             segments     text NOT NULL DEFAULT '[]',
             started_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
             updated_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
             finished_at  timestamptz,
             PRIMARY KEY (pipeline, direction, source_table)
         );",
        pg_ident(schema)
    )
}

/// DDL of the progress table on MySQL/MariaDB.
pub fn my_ddl(db: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {}.snapshot (
             pipeline     varchar(64) NOT NULL,
             direction    varchar(32) NOT NULL,
             source_table varchar(255) NOT NULL,
             state        varchar(16) NOT NULL,
             last_key     longtext,
             rows_copied  bigint NOT NULL DEFAULT 0,
             rows_dead    bigint NOT NULL DEFAULT 0,
             segments     longtext NOT NULL,
             started_at   timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
             updated_at   timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
             finished_at  timestamp(6) NULL,
             PRIMARY KEY (pipeline, direction, source_table)
         ) ENGINE=InnoDB",
        my_ident(db)
    )
}

/// Stores a progress row on PostgreSQL (inside the caller's transaction, if one is open).
pub async fn pg_store(
    client: &tokio_postgres::Client,
    schema: &str,
    pipeline: &str,
    direction: &str,
    p: &Progress,
) -> Result<()> {
    let sql = format!(
        "INSERT INTO {}.snapshot AS s (pipeline, direction, source_table, state, last_key, rows_copied, rows_dead, segments, finished_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, CASE WHEN $4 = 'done' THEN clock_timestamp() END) \
         ON CONFLICT (pipeline, direction, source_table) DO UPDATE SET \
             state = EXCLUDED.state, last_key = EXCLUDED.last_key, rows_copied = EXCLUDED.rows_copied, \
             rows_dead = EXCLUDED.rows_dead, segments = EXCLUDED.segments, \
             started_at = CASE WHEN EXCLUDED.rows_copied = 0 AND EXCLUDED.last_key IS NULL THEN clock_timestamp() ELSE s.started_at END, \
             updated_at = clock_timestamp(), finished_at = EXCLUDED.finished_at",
        pg_ident(schema)
    );
    let (key, segments) = p.encode();
    client
        .execute(
            &sql,
            &[
                &pipeline,
                &direction,
                &p.table,
                &p.state.as_str(),
                &key,
                &p.rows_copied,
                &p.rows_dead,
                &segments,
            ],
        )
        .await
        .map_err(|e| Error::from_pg(e, true, "writing snapshot progress"))?;
    Ok(())
}

/// Reads the progress rows of a pipeline direction on PostgreSQL.
pub async fn pg_load(
    client: &tokio_postgres::Client,
    schema: &str,
    pipeline: &str,
    direction: &str,
) -> Result<Vec<Progress>> {
    let sql = format!(
        "SELECT source_table, state, last_key, rows_copied, rows_dead, segments FROM {}.snapshot \
         WHERE pipeline = $1 AND direction = $2 ORDER BY source_table",
        pg_ident(schema)
    );
    let rows = client
        .query(&sql, &[&pipeline, &direction])
        .await
        .map_err(|e| {
            Error::from_pg(
                e,
                true,
                "reading snapshot progress (did `duplex setup` run?)",
            )
        })?;
    rows.into_iter()
        .map(|r| {
            Progress::decode(
                r.get(0),
                r.get::<_, String>(1).as_str(),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get::<_, String>(5).as_str(),
            )
        })
        .collect()
}

/// Stores a progress row on MySQL (inside the caller's transaction, if one is open).
pub async fn my_store(
    conn: &mut mysql_async::Conn,
    db: &str,
    pipeline: &str,
    direction: &str,
    p: &Progress,
) -> Result<()> {
    use mysql_async::prelude::Queryable;
    let sql = format!(
        "INSERT INTO {}.snapshot (pipeline, direction, source_table, state, last_key, rows_copied, rows_dead, segments, finished_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, IF(? = 'done', CURRENT_TIMESTAMP(6), NULL)) \
         ON DUPLICATE KEY UPDATE \
             started_at = IF(VALUES(rows_copied) = 0 AND VALUES(last_key) IS NULL, CURRENT_TIMESTAMP(6), started_at), \
             state = VALUES(state), last_key = VALUES(last_key), rows_copied = VALUES(rows_copied), \
             rows_dead = VALUES(rows_dead), segments = VALUES(segments), \
             updated_at = CURRENT_TIMESTAMP(6), finished_at = VALUES(finished_at)",
        my_ident(db)
    );
    let (key, segments) = p.encode();
    let params: Vec<mysql_async::Value> = vec![
        pipeline.into(),
        direction.into(),
        p.table.as_str().into(),
        p.state.as_str().into(),
        key.into(),
        p.rows_copied.into(),
        p.rows_dead.into(),
        segments.into(),
        p.state.as_str().into(),
    ];
    conn.exec_drop(sql, params)
        .await
        .map_err(|e| Error::from_mysql(e, true, "writing snapshot progress"))
}

/// Reads the progress rows of a pipeline direction on MySQL.
pub async fn my_load(
    conn: &mut mysql_async::Conn,
    db: &str,
    pipeline: &str,
    direction: &str,
) -> Result<Vec<Progress>> {
    use mysql_async::prelude::Queryable;
    let sql = format!(
        "SELECT source_table, state, last_key, rows_copied, rows_dead, segments FROM {}.snapshot \
         WHERE pipeline = ? AND direction = ? ORDER BY source_table",
        my_ident(db)
    );
    let rows: Vec<(String, String, Option<String>, i64, i64, String)> =
        conn.exec(sql, (pipeline, direction)).await.map_err(|e| {
            Error::from_mysql(
                e,
                true,
                "reading snapshot progress (did `duplex setup` run?)",
            )
        })?;
    rows.into_iter()
        .map(|(t, s, k, c, d, seg)| Progress::decode(t, &s, k, c, d, &seg))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_resync_reads_as_a_fresh_pruning_copy() {
        let sql = resync_pending_sql("duplex.snapshot", false);
        let json = r#"{"key_columns":[],"segments":[],"prune":true}"#;
        assert!(sql.contains(&format!("segments = '{json}'")), "{sql}");
        assert!(
            sql.ends_with("WHERE pipeline = ? AND direction = ?"),
            "{sql}"
        );
        let p = Progress::decode("t".into(), "copying", None, 0, 0, json).unwrap();
        assert!(p.prune && p.state == State::Copying && p.last_key.is_none());
        assert!(
            resync_pending_sql("s.snapshot", true).ends_with("pipeline = $1 AND direction = $2")
        );
    }

    #[test]
    fn keys_order_like_the_database_or_not_at_all() {
        use std::cmp::Ordering::*;
        let k = vec![KeyValue::I(10), KeyValue::U(5)];
        assert_eq!(
            cmp_key(&k, &[Value::Int(10), Value::UInt(4)]),
            Some(Greater)
        );
        assert_eq!(cmp_key(&k, &[Value::UInt(11), Value::Int(0)]), Some(Less));
        assert_eq!(cmp_key(&k, &[Value::Int(10), Value::UInt(5)]), Some(Equal));
        assert_eq!(
            cmp_key(&[KeyValue::S("a".into())], &[Value::Text("a".into())]),
            None
        );
        assert_eq!(
            cmp_key(&[KeyValue::B(vec![1, 2])], &[Value::Bytes(vec![1, 3])]),
            Some(Less)
        );
    }

    #[test]
    fn progress_round_trips() {
        let at: Position = "mysql:mysql-bin.000003:1234".parse().unwrap();
        let mut p = Progress::fresh("shop.b_sale_order".into(), vec!["ID".into()], &at);
        p.last_key = Some(vec![KeyValue::I(42), KeyValue::S("x".into())]);
        p.resume_at(&at);
        let (k, s) = p.encode();
        let back = Progress::decode(p.table.clone(), "copying", k, 0, 0, &s).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.segments[1].upto().unwrap(), at);
    }
}

//! Reading a consistent copy of MySQL/MariaDB tables, in primary-key chunks, together with the
//! binlog position the copy corresponds to.
//!
//! - MariaDB: `START TRANSACTION WITH CONSISTENT SNAPSHOT`, then the status variables
//!   `binlog_snapshot_file` / `binlog_snapshot_position`, which the server fixes at the moment
//!   the snapshot is taken (no lock), and `BINLOG_GTID_POS()` of them.
//! - MySQL 8: `LOCK INSTANCE FOR BACKUP` (blocks DDL, not DML), the snapshot, then
//!   `performance_schema.log_status`, and the lock is released at once.
//!
//! Values are selected so that they arrive in the forms the binlog decoder already knows:
//! TIMESTAMP as `UNIX_TIMESTAMP()` (no session time-zone in between), ENUM and SET as their
//! numbers, text in the column's own charset (`character_set_results = NULL`).

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Statement};

use crate::config::MysqlConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::model::{
    my_ident, GtidState, MariaGtidList, MysqlGtidSet, MysqlPosition, SourceType, TableSchema, Value,
};
use crate::source::mysql::{self as my, decode::decode_value};

use super::ReadRow;
use crate::state::progress::KeyValue;

/// A consistent read view of the source database and its binlog position.
pub struct MysqlSnapshot {
    conn: Conn,
    pub position: MysqlPosition,
    statements: std::collections::HashMap<(String, bool), Statement>,
}

fn err(e: mysql_async::Error, what: &str) -> Error {
    Error::from_mysql(e, false, what)
}

impl MysqlSnapshot {
    /// Opens the read view. Holds no lock on MariaDB; on MySQL a backup lock for a moment.
    pub async fn open(cfg: &MysqlConfig) -> Result<MysqlSnapshot> {
        Self::open_with(cfg, true).await
    }

    /// [`MysqlSnapshot::open`] whose MariaDB position is the binlog file and offset only:
    /// `BINLOG_GTID_POS()` reads the binlog file from its start, which costs a noticeable
    /// part of a second in a large file, and a file:pos orders against the checkpoints of
    /// the same server all the same (`duplex verify` opens one per table and re-check round).
    pub async fn open_light(cfg: &MysqlConfig) -> Result<MysqlSnapshot> {
        Self::open_with(cfg, false).await
    }

    async fn open_with(cfg: &MysqlConfig, with_gtid: bool) -> Result<MysqlSnapshot> {
        let mut conn = crate::connect::mysql(cfg, None, false).await?;
        let mariadb = my::is_mariadb(&mut conn).await?;
        conn.query_drop(
            "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ; \
             SET time_zone = '+00:00', character_set_results = NULL, \
             net_write_timeout = 600, wait_timeout = 86400",
        )
        .await
        .map_err(|e| err(e, "preparing the snapshot session"))?;
        let position = if mariadb {
            conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                .await
                .map_err(|e| err(e, "starting the snapshot transaction"))?;
            let status: Vec<(String, String)> = conn
                .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
                .await
                .map_err(|e| err(e, "reading the snapshot's binlog position"))?;
            let get = |n: &str| {
                status
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(n))
                    .map(|(_, v)| v.clone())
            };
            let (Some(file), Some(pos)) = (
                get("binlog_snapshot_file").filter(|f| !f.is_empty()),
                get("binlog_snapshot_position").and_then(|p| p.parse::<u64>().ok()),
            ) else {
                return Err(Error::new(
                    ErrorKind::ServerSetting,
                    "the server reports no binlog_snapshot_file: binary logging is off; start it with log_bin",
                ));
            };
            let mut position = MysqlPosition::new(file.clone(), pos);
            if !with_gtid {
                return Ok(MysqlSnapshot {
                    conn,
                    position,
                    statements: Default::default(),
                });
            }
            let gtid: Option<Option<String>> = conn
                .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (file, pos))
                .await
                .map_err(|e| err(e, "reading the snapshot's GTID position"))?;
            if let Some(Some(g)) = gtid.filter(|g| g.as_ref().is_some_and(|g| !g.is_empty())) {
                position.gtid = Some(GtidState::Maria(g.parse::<MariaGtidList>()?));
            }
            position
        } else {
            conn.query_drop("LOCK INSTANCE FOR BACKUP")
                .await
                .map_err(|e| {
                    err(
                        e,
                        "LOCK INSTANCE FOR BACKUP (needs the BACKUP_ADMIN privilege)",
                    )
                })?;
            // The backup lock keeps DDL out but lets commits through, so the read view and the
            // position cannot be taken at one instant: the position is read first. A commit
            // between the two is then in the copy and in the stream, applied again as the same
            // full row (upserts and deletes are idempotent), never in neither (it was, with the
            // position read after the read view).
            let taken = async {
                let local: Option<String> = conn
                    .query_first("SELECT CAST(LOCAL AS CHAR) FROM performance_schema.log_status")
                    .await
                    .map_err(|e| {
                        err(
                            e,
                            "reading performance_schema.log_status (needs BACKUP_ADMIN)",
                        )
                    })?;
                conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                    .await
                    .map_err(|e| err(e, "starting the snapshot transaction"))?;
                Ok::<_, Error>(local)
            }
            .await;
            let _ = conn.query_drop("UNLOCK INSTANCE").await;
            let local = taken?.unwrap_or_default();
            mysql_log_status(&local)?
        };
        Ok(MysqlSnapshot {
            conn,
            position,
            statements: Default::default(),
        })
    }

    /// About how many rows a table has (the statistics' estimate).
    pub async fn estimate(&mut self, table: &TableSchema) -> u64 {
        let n: Option<Option<u64>> = self
            .conn
            .exec_first(
                "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (&table.name.schema, &table.name.name),
            )
            .await
            .ok()
            .flatten();
        n.flatten().unwrap_or(0)
    }

    /// The next chunk of `table` in key order after `after`: full rows in the table's column
    /// order, at most `limit`.
    pub async fn chunk(
        &mut self,
        table: &TableSchema,
        after: Option<&[KeyValue]>,
        limit: usize,
    ) -> Result<Vec<ReadRow>> {
        let key = (table.name.to_string(), after.is_some());
        let stmt = match self.statements.get(&key) {
            Some(s) => s.clone(),
            None => {
                let sql = chunk_sql(table, after.is_some())?;
                let s = self.conn.prep(sql).await.map_err(|e| {
                    err(
                        e,
                        &format!("preparing the snapshot query of {}", table.name),
                    )
                })?;
                self.statements.insert(key, s.clone());
                s
            }
        };
        let mut params: Vec<mysql_async::Value> = Vec::new();
        if let Some(after) = after {
            // (k1 > ?) OR (k1 = ? AND k2 > ?) OR …
            for i in 0..after.len() {
                for k in &after[..i] {
                    params.push(param(k));
                }
                params.push(param(&after[i]));
            }
        }
        params.push((limit as u64).into());
        let what = format!("reading a snapshot chunk of {}", table.name);
        let mut result = self
            .conn
            .exec_iter(stmt, params)
            .await
            .map_err(|e| err(e, &what))?;
        let mut rows = Vec::with_capacity(limit);
        while let Some(row) = result.next().await.map_err(|e| err(e, &what))? {
            rows.push(read_row(row, table));
        }
        Ok(rows)
    }

    /// The row of `table` with primary key `key`, if there is one (`duplex dlq retry`).
    pub async fn row(&mut self, table: &TableSchema, key: &[KeyValue]) -> Result<Option<ReadRow>> {
        let columns: Vec<String> = table
            .primary_key
            .iter()
            .map(|&i| table.columns[i].name.clone())
            .collect();
        let mut rows = self.rows_where(table, &columns, &[key.to_vec()]).await?;
        Ok(rows.pop())
    }

    /// Every row of `table` in key order, in one streamed query (the server reads its index
    /// without stopping between chunks), sent on in chunks of `chunk` rows; stops early when
    /// the receiver is gone. `duplex verify` reads with it.
    pub async fn scan(
        &mut self,
        table: &TableSchema,
        chunk: usize,
        tx: tokio::sync::mpsc::Sender<Result<Vec<ReadRow>>>,
    ) {
        let sql = select_sql(table)
            .map(|(select, keys)| format!("{select} ORDER BY {}", keys.join(", ")));
        self.stream(table, sql, (chunk, None), tx).await
    }

    /// The rows of `table` whose `column` is not NULL, ordered by it (then the primary key),
    /// in one streamed query, sent on in chunks of at least `chunk` rows that end where the
    /// column's value changes (a value's rows are never split); stops early when the receiver
    /// is gone. `duplex verify` reads a pivot's rows grouped by its key with it.
    pub async fn scan_by(
        &mut self,
        table: &TableSchema,
        column: &str,
        chunk: usize,
        tx: tokio::sync::mpsc::Sender<Result<Vec<ReadRow>>>,
    ) {
        let Some(at) = table.column_index(column) else {
            let e = Error::new(
                ErrorKind::Mapping,
                format!("{} has no column {column}", table.name),
            );
            let _ = tx.send(Err(e)).await;
            return;
        };
        let sql = select_sql(table).map(|(select, keys)| {
            let col = my_ident(column);
            format!(
                "{select} WHERE {col} IS NOT NULL ORDER BY {col}, {}",
                keys.join(", ")
            )
        });
        self.stream(table, sql, (chunk, Some(at)), tx).await
    }

    /// Runs `sql` and sends its rows on in chunks of `chunk` rows (with `split_at`: of at least
    /// `chunk` rows, cut only where that column's value changes), or the error.
    async fn stream(
        &mut self,
        table: &TableSchema,
        sql: Result<String>,
        (chunk, split_at): (usize, Option<usize>),
        tx: tokio::sync::mpsc::Sender<Result<Vec<ReadRow>>>,
    ) {
        let what = format!("reading {}", table.name);
        let sql = match sql {
            Ok(sql) => sql,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        let mut result = match self.conn.exec_iter(sql, ()).await {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.send(Err(err(e, &what))).await;
                return;
            }
        };
        let mut rows: Vec<ReadRow> = Vec::with_capacity(chunk);
        loop {
            match result.next().await {
                Ok(Some(row)) => {
                    let row = read_row(row, table);
                    let cut = rows.len() >= chunk
                        && split_at.is_none_or(|at| {
                            rows.last().map(|r| &r.values[at]) != Some(&row.values[at])
                        });
                    if cut {
                        let full = std::mem::replace(&mut rows, Vec::with_capacity(chunk));
                        if tx.send(Ok(full)).await.is_err() {
                            return;
                        }
                    }
                    rows.push(row);
                }
                Ok(None) => {
                    if !rows.is_empty() {
                        let _ = tx.send(Ok(rows)).await;
                    }
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Err(err(e, &what))).await;
                    return;
                }
            }
        }
    }

    /// The rows of `table` whose `columns` hold one of `keys` (a tuple per key), in key order
    /// of the table (`duplex verify` reads rows by a target's key).
    pub async fn rows_where(
        &mut self,
        table: &TableSchema,
        columns: &[String],
        keys: &[Vec<KeyValue>],
    ) -> Result<Vec<ReadRow>> {
        let (select, pk) = select_sql(table)?;
        let mut out = Vec::new();
        if keys.is_empty() || columns.is_empty() {
            return Ok(out);
        }
        let cols: Vec<String> = columns.iter().map(|c| my_ident(c)).collect();
        let one = format!("({})", vec!["?"; cols.len()].join(", "));
        for part in keys.chunks(500) {
            let sql = format!(
                "{select} WHERE ({}) IN ({}) ORDER BY {}",
                cols.join(", "),
                vec![one.as_str(); part.len()].join(", "),
                pk.join(", ")
            );
            let params: Vec<mysql_async::Value> = part.iter().flatten().map(param).collect();
            let what = format!("reading rows of {} by key", table.name);
            let mut result = self
                .conn
                .exec_iter(sql, params)
                .await
                .map_err(|e| err(e, &what))?;
            while let Some(row) = result.next().await.map_err(|e| err(e, &what))? {
                out.push(read_row(row, table));
            }
        }
        Ok(out)
    }

    /// Ends the read view.
    pub async fn close(mut self) {
        let _ = self.conn.query_drop("COMMIT").await;
        let _ = self.conn.disconnect().await;
    }
}

fn read_row(row: mysql_async::Row, table: &TableSchema) -> ReadRow {
    let raw = row.unwrap_raw();
    let mut values = Vec::with_capacity(table.columns.len());
    let mut unreadable = None;
    for (v, col) in raw.into_iter().zip(&table.columns) {
        match decode_value(v.unwrap_or(mysql_async::Value::NULL), col) {
            Ok(v) => values.push(v),
            Err(e) => {
                unreadable.get_or_insert_with(|| e.to_string());
                values.push(Value::Null);
            }
        }
    }
    ReadRow { values, unreadable }
}

/// A key value as a statement parameter.
pub fn param(k: &KeyValue) -> mysql_async::Value {
    match k {
        KeyValue::I(i) => (*i).into(),
        KeyValue::U(u) => (*u).into(),
        KeyValue::B(b) => mysql_async::Value::Bytes(b.clone()),
        KeyValue::S(s) => mysql_async::Value::Bytes(s.clone().into_bytes()),
    }
}

/// The chunk query of a table: every column (in a form [`decode_value`] reads), ordered by the
/// primary key, after a key when `after`.
fn chunk_sql(table: &TableSchema, after: bool) -> Result<String> {
    let (mut sql, keys) = select_sql(table)?;
    if after {
        let ors: Vec<String> = (0..keys.len())
            .map(|i| {
                let mut parts: Vec<String> = keys[..i].iter().map(|k| format!("{k} = ?")).collect();
                parts.push(format!("{} > ?", keys[i]));
                format!("({})", parts.join(" AND "))
            })
            .collect();
        sql.push_str(&format!(" WHERE {}", ors.join(" OR ")));
    }
    sql.push_str(&format!(" ORDER BY {} LIMIT ?", keys.join(", ")));
    Ok(sql)
}

/// `SELECT <every column> FROM <table>` and the quoted key columns.
fn select_sql(table: &TableSchema) -> Result<(String, Vec<String>)> {
    if table.primary_key.is_empty() {
        return Err(Error::new(
            ErrorKind::Mapping,
            format!(
                "table {} has no primary key or unique key without NULLs: it cannot be copied in chunks; add one",
                table.name
            ),
        ));
    }
    let mut select = Vec::with_capacity(table.columns.len());
    for c in &table.columns {
        let name = my_ident(&c.name);
        select.push(match c.ty {
            SourceType::Timestamp => format!("UNIX_TIMESTAMP({name})"),
            SourceType::Enum(_) | SourceType::Set(_) => format!("{name}+0"),
            _ => name,
        });
    }
    let keys: Vec<String> = table
        .primary_key
        .iter()
        .map(|&i| {
            let c = &table.columns[i];
            match c.ty {
                SourceType::Int { .. }
                | SourceType::Decimal { .. }
                | SourceType::Text { .. }
                | SourceType::Binary
                | SourceType::Date
                | SourceType::DateTime
                | SourceType::Time
                | SourceType::Year => Ok(my_ident(&c.name)),
                _ => Err(Error::new(
                    ErrorKind::Mapping,
                    format!(
                        "table {}: key column {} is {}; chunks can be bounded only by integer, decimal, text, binary or date keys",
                        table.name, c.name, c.column_type
                    ),
                )),
            }
        })
        .collect::<Result<_>>()?;
    let sql = format!(
        "SELECT {} FROM {}.{}",
        select.join(", "),
        my_ident(&table.name.schema),
        my_ident(&table.name.name)
    );
    Ok((sql, keys))
}

/// The binlog position in `performance_schema.log_status.LOCAL` (MySQL 8):
/// `{"gtid_executed": "…", "binary_log_file": "…", "binary_log_position": N}`.
fn mysql_log_status(local: &str) -> Result<MysqlPosition> {
    let v: serde_json::Value = serde_json::from_str(local).map_err(|e| {
        Error::new(
            ErrorKind::SourceDefinite,
            format!("performance_schema.log_status returned {local:?}: {e}"),
        )
    })?;
    let file = v["binary_log_file"].as_str().unwrap_or_default();
    let pos = v["binary_log_position"].as_u64().unwrap_or(0);
    if file.is_empty() {
        return Err(Error::new(
            ErrorKind::ServerSetting,
            "performance_schema.log_status shows no binary log: start the server with log_bin",
        ));
    }
    let mut position = MysqlPosition::new(file, pos);
    let gtid = v["gtid_executed"]
        .as_str()
        .unwrap_or_default()
        .replace('\n', "");
    if !gtid.trim().is_empty() {
        position.gtid = Some(GtidState::Mysql(gtid.parse::<MysqlGtidSet>()?));
    }
    Ok(position)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ColumnSchema, TableName};

    #[test]
    fn chunk_queries_walk_composite_keys() {
        let col = |n: &str, ty| ColumnSchema {
            name: n.into(),
            ty,
            nullable: false,
            column_type: "x".into(),
        };
        let int = SourceType::Int {
            bytes: 4,
            unsigned: false,
        };
        let t = TableSchema {
            name: TableName::new("shop", "t"),
            columns: vec![
                col("A", int.clone()),
                col("B", int),
                col("T", SourceType::Timestamp),
                col("E", SourceType::Enum(vec!["x".into()])),
            ],
            primary_key: vec![0, 1],
        };
        assert_eq!(
            chunk_sql(&t, true).unwrap(),
            "SELECT `A`, `B`, UNIX_TIMESTAMP(`T`), `E`+0 FROM `shop`.`t` WHERE (`A` > ?) OR (`A` = ? AND `B` > ?) ORDER BY `A`, `B` LIMIT ?"
        );
        assert!(chunk_sql(&t, false)
            .unwrap()
            .ends_with("FROM `shop`.`t` ORDER BY `A`, `B` LIMIT ?"));
    }

    #[test]
    fn mysql_log_status_is_read() {
        let p = mysql_log_status(
            r#"{"gtid_executed": "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5", "binary_log_file": "binlog.000007", "binary_log_position": 1234}"#,
        )
        .unwrap();
        assert_eq!(p.file.0, "binlog.000007");
        assert_eq!(p.pos, 1234);
        assert!(p.gtid.is_some());
    }
}

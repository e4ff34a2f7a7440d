//! The MySQL/MariaDB sink: applies PostgreSQL transactions to Bitrix tables.
//!
//! Every target transaction first bumps duplex's checkpoint row — the echo marker the binlog
//! reader drops transactions by — then writes the rows (multi-row `INSERT … ON DUPLICATE KEY
//! UPDATE` of the mapped columns only, so Bitrix keeps every column duplex does not own;
//! `DELETE` by key), then stores the source LSN in that same row, then commits. A column whose
//! value PostgreSQL did not send (an unchanged TOASTed value) is left as it is.

mod guard;
mod load;
mod newest;
pub mod statements;

use std::sync::Arc;

use mysql_async::prelude::Queryable;
use mysql_async::Value as My;

use super::{DeadLetter, Encoder, Mark, Sink};
use crate::config::MysqlConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::mapping::{Bindings, Plan, ReversePlan};
use crate::model::REVERSE;
use crate::model::{my_ident, Op, Position, RowChange, SourceType, TableSchema, Value};
use crate::state::checkpoint;

/// Rows per multi-row statement.
const ROWS_PER_STATEMENT: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MyKind {
    Upsert,
    Delete,
    /// UPDATE of an existing row only (`reverse_write = "update"`).
    Update,
    /// The forward direction's last change of a `newest` column (see `state::newest`).
    Relay,
}

/// A mapped change for one MySQL table.
#[derive(Debug, Clone)]
pub struct MyChange {
    /// Index into `Plan::reverse`.
    pub table: usize,
    pub kind: MyKind,
    /// Upsert: one value per plan column (`None`: not sent, leave as is). Delete: key values.
    pub values: Vec<Option<My>>,
    /// The change time, one value per `reverse_set` column of the plan (each in its zone).
    pub at: Vec<My>,
    /// Update: per column, the MySQL values that already mean the new value (several codes a
    /// map reads as one CRM value); such a column is left as it is.
    pub same: Vec<Option<Vec<My>>>,
    /// A change of a table with `both` columns: checked for conflicts before it is written.
    pub guard: Option<Box<guard::MyGuard>>,
    /// [`MyKind::Relay`]: what the forward direction tells.
    pub relay: Option<Box<crate::state::newest::Relay>>,
}

/// Converts a value read from PostgreSQL for a MySQL column.
pub fn to_mysql(v: &Value, ty: &SourceType, tz: chrono_tz::Tz) -> Result<Option<My>> {
    let mismatch = || {
        Error::convert(format!(
            "a {} value ({v}) cannot be stored in a MySQL {} column",
            v.type_name(),
            ty.describe()
        ))
    };
    let date = |d: chrono::NaiveDateTime| {
        use chrono::{Datelike, Timelike};
        My::Date(
            d.year() as u16,
            d.month() as u8,
            d.day() as u8,
            d.hour() as u8,
            d.minute() as u8,
            d.second() as u8,
            d.nanosecond() / 1000,
        )
    };
    Ok(Some(match v {
        Value::Unchanged => return Ok(None),
        Value::Unreadable(why) => return Err(Error::convert(why.clone())),
        Value::Null => My::NULL,
        Value::Bool(b) => match ty {
            SourceType::Text { .. } => My::Bytes(if *b { b"1".to_vec() } else { b"0".to_vec() }),
            _ => My::Int(*b as i64),
        },
        Value::Int(i) => My::Int(*i),
        Value::UInt(u) => My::UInt(*u),
        Value::Float(f) => My::Float(*f),
        Value::Double(f) => My::Double(*f),
        Value::Text(s) => {
            if let SourceType::Text { charset } = ty {
                check_charset(s, charset)?;
            }
            My::Bytes(s.clone().into_bytes())
        }
        Value::Decimal(s) | Value::Json(s) => My::Bytes(s.clone().into_bytes()),
        Value::Bytes(b) => My::Bytes(b.clone()),
        Value::Uuid(_) => match ty {
            SourceType::Binary => match v {
                Value::Uuid(u) => My::Bytes(u.to_vec()),
                _ => unreachable!(),
            },
            _ => My::Bytes(v.to_string().into_bytes()),
        },
        Value::Date(d) => My::Date(d.year, d.month, d.day, 0, 0, 0, 0),
        Value::DateTime(dt) => match ty {
            // MySQL TIMESTAMP is written in the session's zone (UTC); a zoneless value is
            // taken as wall time of the source zone.
            SourceType::Timestamp => {
                use chrono::TimeZone;
                let naive = dt.to_chrono().ok_or_else(mismatch)?;
                let utc = tz
                    .from_local_datetime(&naive)
                    .latest()
                    .ok_or_else(mismatch)?
                    .naive_utc();
                date(utc)
            }
            _ => My::Date(
                dt.date.year,
                dt.date.month,
                dt.date.day,
                dt.hour,
                dt.minute,
                dt.second,
                dt.micro,
            ),
        },
        Value::Timestamp(us) => {
            let utc = chrono::DateTime::from_timestamp_micros(*us).ok_or_else(mismatch)?;
            match ty {
                SourceType::Timestamp => date(utc.naive_utc()),
                // Bitrix DATETIME is wall time in the shop's zone.
                _ => date(utc.with_timezone(&tz).naive_local()),
            }
        }
        Value::Time(us) => {
            let neg = *us < 0;
            let a = us.unsigned_abs();
            let secs = a / 1_000_000;
            My::Time(
                neg,
                (secs / 86_400) as u32,
                (secs / 3600 % 24) as u8,
                (secs / 60 % 60) as u8,
                (secs % 60) as u8,
                (a % 1_000_000) as u32,
            )
        }
        Value::Bits { bytes, .. } => match ty {
            SourceType::Int { .. } | SourceType::Bit(_) => {
                My::UInt(bytes.iter().fold(0u64, |acc, b| (acc << 8) | *b as u64))
            }
            _ => My::Bytes(bytes.clone()),
        },
    }))
}

/// MySQL silently stores `?` for characters a column's charset lacks (Bitrix runs with an
/// empty sql_mode); refuse them instead, so the row becomes a dead letter, not lost text.
fn check_charset(s: &str, charset: &str) -> Result<()> {
    let bad = |c: char| {
        Err(Error::convert(format!(
            "{c:?} (U+{:04X}) cannot be stored in a {charset} column; MySQL would keep '?'",
            c as u32
        )))
    };
    match charset {
        "utf8mb4" | "binary" | "utf16" | "utf16le" | "utf32" => Ok(()),
        "utf8" | "utf8mb3" | "ucs2" => match s.chars().find(|c| *c as u32 > 0xFFFF) {
            Some(c) => bad(c),
            None => Ok(()),
        },
        other => {
            let enc = match other {
                "latin1" => encoding_rs::WINDOWS_1252,
                "cp1251" => encoding_rs::WINDOWS_1251,
                _ => match encoding_rs::Encoding::for_label(other.as_bytes()) {
                    Some(e) => e,
                    None => return Ok(()),
                },
            };
            match s.chars().find(|c| {
                let mut buf = [0u8; 4];
                enc.encode(c.encode_utf8(&mut buf)).2
            }) {
                Some(c) => bad(c),
                None => Ok(()),
            }
        }
    }
}

pub struct MyEncoder {
    plan: Arc<Plan>,
    tz: chrono_tz::Tz,
    bindings: Bindings,
    /// Commit time of the transaction being encoded (µs since the epoch).
    commit_time_us: Option<i64>,
    /// Id of the transaction being encoded.
    txn: String,
    /// The transaction being encoded is duplex's own (it carries only relays).
    own: bool,
    pipeline: String,
}

impl MyEncoder {
    /// An encoder outside a sink (verify compares what it makes with what MySQL holds).
    pub fn new(plan: Arc<Plan>, tz: chrono_tz::Tz, pipeline: &str) -> MyEncoder {
        MyEncoder {
            plan,
            tz,
            bindings: Bindings::default(),
            commit_time_us: None,
            txn: String::new(),
            own: false,
            pipeline: pipeline.to_string(),
        }
    }

    fn binding(&mut self, t: usize, schema: &Arc<TableSchema>) -> Result<Arc<Vec<usize>>> {
        let plan = &self.plan.reverse[t];
        self.bindings.get(t, schema, |s| plan.bind(s))
    }

    fn convert(
        &self,
        t: &ReversePlan,
        idx: &[usize],
        cols: impl Iterator<Item = usize>,
        values: &[Value],
    ) -> Result<Vec<Option<My>>> {
        cols.map(|i| {
            let c = &t.columns[i];
            let context = || format!("column {} → {}.{}", c.pg_name, t.target, c.my.name);
            let v = values.get(idx[i]).unwrap_or(&Value::Null);
            if c.transform.is_identity() || matches!(v, Value::Unchanged | Value::Unreadable(_)) {
                to_mysql(v, &c.my.ty, self.tz)
            } else {
                let back = c
                    .transform
                    .backward(v)
                    .map_err(|e| Error::convert(e).context(context()))?;
                to_mysql(&back, &c.my.ty, self.tz)
            }
            .map_err(|e| e.context(context()))
        })
        .collect()
    }

    /// Per column, the MySQL values a map reads as the same PostgreSQL value, when there are
    /// several (`P` and `PD` both mean `paid`).
    pub fn same(&self, t: &ReversePlan, idx: &[usize], values: &[Value]) -> Vec<Option<Vec<My>>> {
        t.columns
            .iter()
            .enumerate()
            .map(|(i, c)| self.preimages(c, values.get(idx[i])?))
            .collect()
    }

    /// The MySQL values a column's map reads as the PostgreSQL value `v`, when it has several.
    fn preimages(&self, c: &crate::mapping::reverse::ReverseColumn, v: &Value) -> Option<Vec<My>> {
        let codes = c.transform.preimages(v)?;
        codes
            .iter()
            .map(|code| to_mysql(code, &c.my.ty, self.tz).ok().flatten())
            .collect()
    }

    /// The change time for each `reverse_set` column: the commit time as wall time in the
    /// column's zone (default: the shop's), in the column's type.
    fn at(&self, t: &ReversePlan) -> Vec<My> {
        if t.set.is_empty() {
            return Vec::new();
        }
        let us = self
            .commit_time_us
            .unwrap_or_else(|| chrono::Utc::now().timestamp_micros());
        t.set
            .iter()
            .map(|s| {
                to_mysql(
                    &Value::Timestamp(us),
                    &s.column.ty,
                    s.zone.unwrap_or(self.tz),
                )
                .ok()
                .flatten()
                .unwrap_or(My::NULL)
            })
            .collect()
    }
}

impl Encoder for MyEncoder {
    type Change = MyChange;

    fn prepare(
        &mut self,
        change: &RowChange,
    ) -> std::result::Result<Vec<MyChange>, (String, Error)> {
        let mut out = Vec::new();
        if change.table.name == crate::state::newest::message_table() {
            out.extend(self.relay(change));
            return Ok(out);
        }
        for i in 0..self.plan.reverse.len() {
            let t = self.plan.reverse[i].clone();
            if t.source != change.table.name {
                continue;
            }
            let fail = |e: Error| (t.target.to_string(), e);
            let idx = self.binding(i, &change.table).map_err(fail)?;
            let none = Vec::new();
            let before = change.before.as_ref().unwrap_or(&none);
            let after = change.after.as_ref().unwrap_or(&none);
            let key = |enc: &Self, row: &[Value]| enc.convert(&t, &idx, t.key.iter().copied(), row);
            let at = self.at(&t);
            if t.write == crate::mapping::ReverseWrite::Update {
                // Rows the shop created are updated; others (and deletes) are not the CRM's to make.
                if change.op != Op::Delete {
                    let mut values = self
                        .convert(&t, &idx, 0..t.columns.len(), after)
                        .map_err(fail)?;
                    let keyed = t
                        .key
                        .iter()
                        .all(|k| values[*k].as_ref().is_some_and(|v| *v != My::NULL));
                    if keyed {
                        let same = self.same(&t, &idx, after);
                        let guard = self.guard(&t, &idx, change, &mut values);
                        out.push(MyChange {
                            table: i,
                            kind: MyKind::Update,
                            values,
                            at,
                            same,
                            guard,
                            relay: None,
                        });
                    }
                }
                continue;
            }
            match change.op {
                Op::Insert | Op::Update => {
                    if change.op == Op::Update {
                        let old = key(self, before).map_err(fail)?;
                        let new = key(self, after).map_err(fail)?;
                        // The old image is key-only or absent when the key did not change.
                        if old != new
                            && old
                                .iter()
                                .all(|v| v.as_ref().is_some_and(|v| *v != My::NULL))
                        {
                            out.push(MyChange {
                                table: i,
                                kind: MyKind::Delete,
                                values: old,
                                at: Vec::new(),
                                same: Vec::new(),
                                guard: None,
                                relay: None,
                            });
                        }
                    }
                    let mut values = self
                        .convert(&t, &idx, 0..t.columns.len(), after)
                        .map_err(fail)?;
                    let guard = self.guard(&t, &idx, change, &mut values);
                    out.push(MyChange {
                        table: i,
                        kind: MyKind::Upsert,
                        values,
                        at,
                        same: Vec::new(),
                        guard,
                        relay: None,
                    });
                }
                Op::Delete => {
                    let values = key(self, before).map_err(fail)?;
                    out.push(MyChange {
                        table: i,
                        kind: MyKind::Delete,
                        values,
                        at: Vec::new(),
                        same: Vec::new(),
                        guard: None,
                        relay: None,
                    });
                }
            }
        }
        Ok(out)
    }

    fn target_of(&self, change: &MyChange) -> String {
        self.plan.reverse[change.table].target.to_string()
    }

    fn begin(&mut self, txn: &crate::model::TxnBegin) {
        self.commit_time_us = Some(txn.commit_time_us);
        self.txn = txn.id.clone();
        self.own = txn.own;
    }
}

pub struct MySqlSink {
    conn: mysql_async::Conn,
    plan: Arc<Plan>,
    pipeline: String,
    tz: chrono_tz::Tz,
    db: String,
    pending: Vec<MyChange>,
    letters: Vec<DeadLetter>,
    /// Conflicts found in the open transaction, logged with its commit.
    conflicts: Vec<crate::state::conflict::Conflict>,
    /// The CRM's halves of `newest` columns decided in the open transaction, to write.
    notes: Vec<newest::Note>,
    in_txn: bool,
    /// The statements' text (literals quoted for the session's sql_mode).
    text: statements::Text,
    /// Runs of new rows sent with `LOAD DATA LOCAL`.
    loader: load::Loader,
}

fn my_err(e: mysql_async::Error, what: &str) -> Error {
    Error::from_mysql(e, true, what)
}

impl MySqlSink {
    /// The writer's connection (outside a transaction of the sink's own).
    pub fn conn(&mut self) -> &mut mysql_async::Conn {
        &mut self.conn
    }

    pub async fn connect(
        cfg: &MysqlConfig,
        plan: Arc<Plan>,
        pipeline: &str,
        tz: chrono_tz::Tz,
    ) -> Result<MySqlSink> {
        let mut conn = crate::connect::mysql(cfg, None, true).await?;
        // TIMESTAMP columns are written in UTC; names and text in UTF-8 (the server converts to
        // each column's charset).
        conn.query_drop("SET time_zone = '+00:00', NAMES utf8mb4")
            .await
            .map_err(|e| my_err(e, "preparing the MySQL writer session"))?;
        // A writer that died without a reset leaves its transaction open on the server, with
        // its row locks, until this ends it (MariaDB; MySQL has no such setting and waits for
        // TCP to give up).
        if let Err(e) = conn
            .query_drop(format!(
                "SET SESSION idle_write_transaction_timeout = {}",
                4 * cfg.read_timeout_s
            ))
            .await
        {
            tracing::debug!(error = %e, "no idle_write_transaction_timeout on this server");
        }
        let modes: Option<String> = conn
            .query_first("SELECT @@SESSION.sql_mode")
            .await
            .map_err(|e| my_err(e, "reading sql_mode"))?;
        let no_backslash_escapes = modes.unwrap_or_default().contains("NO_BACKSLASH_ESCAPES");
        if plan.tables.iter().any(|t| t.has_newest()) {
            let sql = format!(
                "SELECT 1 FROM {}.{} LIMIT 0",
                my_ident(&cfg.duplex_database),
                crate::state::newest::TABLE
            );
            conn.query_drop(sql).await.map_err(|e| {
                Error::from_mysql(
                    e,
                    true,
                    "reading duplex's newest table, which `conflict = \"newest\"` needs (run `duplex setup`)",
                )
            })?;
        }
        Ok(MySqlSink {
            text: statements::Text {
                no_backslash_escapes,
            },
            conn,
            plan,
            pipeline: pipeline.to_string(),
            tz,
            db: cfg.duplex_database.clone(),
            pending: Vec::new(),
            letters: Vec::new(),
            conflicts: Vec::new(),
            notes: Vec::new(),
            in_txn: false,
            loader: load::Loader::default(),
        })
    }

    /// Writes changes in order: runs of guarded changes are checked for conflicts first
    /// ([`MySqlSink::write_guarded`]).
    async fn write(&mut self, changes: Vec<MyChange>) -> Result<()> {
        let mut plain = Vec::new();
        let mut guarded = Vec::new();
        for c in changes {
            if c.kind == MyKind::Relay {
                self.write_guarded(std::mem::take(&mut guarded)).await?;
                self.write_plain(std::mem::take(&mut plain)).await?;
                self.write_notes().await?;
                self.apply_relay(c).await?;
                continue;
            }
            if c.guard.is_some() {
                if !plain.is_empty() {
                    self.write_plain(std::mem::take(&mut plain)).await?;
                }
                guarded.push(c);
            } else {
                if !guarded.is_empty() {
                    self.write_guarded(std::mem::take(&mut guarded)).await?;
                }
                plain.push(c);
            }
        }
        if !guarded.is_empty() {
            self.write_guarded(guarded).await?;
        }
        self.write_plain(plain).await?;
        self.write_notes().await
    }

    /// Writes changes in order, in runs: UPDATEs as one multi-statement query per run (each
    /// row sets its own values), upserts and deletes as one multi-row statement per run.
    async fn write_plain(&mut self, changes: Vec<MyChange>) -> Result<()> {
        // Shared with a load's row stream, which formats rows while the server parses them.
        let changes = Arc::new(changes);
        let mut i = 0;
        while i < changes.len() {
            let first = &changes[i];
            let t = self.plan.reverse[first.table].clone();
            // A run: same table and kind; for multi-row statements also the same sent columns.
            let sent: Vec<bool> = first.values.iter().map(Option::is_some).collect();
            let same = |c: &MyChange| {
                c.table == first.table
                    && c.kind == first.kind
                    && (c.kind == MyKind::Update
                        || c.values
                            .iter()
                            .map(Option::is_some)
                            .eq(sent.iter().copied()))
            };
            let upsert = first.kind == MyKind::Upsert;
            let limit = if upsert {
                load::MAX_ROWS
            } else {
                ROWS_PER_STATEMENT
            };
            let long = changes[i..]
                .iter()
                .take(limit)
                .take_while(|c| same(c))
                .count();
            if upsert && self.loader.wants(first.table, &t, &sent, long) {
                let run = load::Run {
                    changes: changes.clone(),
                    rows: i..i + long,
                };
                let loaded = self
                    .loader
                    .load(&mut self.conn, first.table, &t, run, &sent)
                    .await
                    .map_err(|e| my_err(e, &format!("loading {long} rows into {}", t.target)))?;
                if let load::Loaded::All = loaded {
                    count_rows(&t, "upsert", long);
                    i += long;
                    continue;
                }
            }
            let len = long.min(ROWS_PER_STATEMENT);
            let run = &changes[i..i + len];
            let (sql, op) = match first.kind {
                MyKind::Update => {
                    let sql: Vec<String> =
                        run.iter().map(|c| self.text.update_sql(&t, c)).collect();
                    (sql.join(";\n"), "update")
                }
                MyKind::Upsert => (self.text.upsert_sql(&t, run, &sent), "upsert"),
                MyKind::Delete => (self.text.delete_sql(&t, run), "delete"),
                MyKind::Relay => unreachable!("relays are applied by apply_relay"),
            };
            self.conn
                .query_drop(sql)
                .await
                .map_err(|e| my_err(e, &format!("writing {len} rows to {}", t.target)))?;
            count_rows(&t, op, len);
            i += len;
        }
        free_later(changes);
        Ok(())
    }

    /// One value as an SQL literal (for the guard and the newest-column notes).
    fn literal(&self, v: &My) -> String {
        self.text.literal(v)
    }

    fn literal_tuple<'a>(&self, values: impl Iterator<Item = &'a My>) -> String {
        self.text.literal_tuple(values)
    }

    fn key_condition(&self, t: &ReversePlan, c: &MyChange) -> String {
        self.text.key_condition(t, c)
    }

    async fn flush(&mut self) -> Result<()> {
        let changes = std::mem::take(&mut self.pending);
        self.write(changes).await
    }
}

impl Sink for MySqlSink {
    type Encoder = MyEncoder;

    fn encoder(&self) -> MyEncoder {
        MyEncoder::new(self.plan.clone(), self.tz, &self.pipeline)
    }

    async fn prune(
        &mut self,
        source: &crate::model::TableSchema,
        after: Option<i64>,
        upto: Option<i64>,
        keep: &[i64],
    ) -> Result<u64> {
        let plan = self.plan.clone();
        let pk: Vec<String> = source
            .primary_key
            .iter()
            .map(|&i| source.columns[i].name.clone())
            .collect();
        let mut removed = 0;
        for r in plan.reverse.iter().filter(|r| r.source == source.name) {
            let Some(key) = plan.reverse_prune_key(r, &pk) else {
                continue;
            };
            self.begin().await?;
            let k = crate::model::my_ident(key);
            let mut conds = Vec::new();
            if let Some(a) = after {
                conds.push(format!("{k} > {a}"));
            }
            if let Some(u) = upto {
                conds.push(format!("{k} <= {u}"));
            }
            if !keep.is_empty() {
                let list: Vec<String> = keep.iter().map(i64::to_string).collect();
                conds.push(format!("{k} NOT IN ({})", list.join(",")));
            }
            if conds.is_empty() {
                conds.push("TRUE".into());
            }
            let sql = format!(
                "DELETE FROM {} WHERE {}",
                r.target.my_quoted(),
                conds.join(" AND ")
            );
            self.conn.query_drop(&sql).await.map_err(|e| {
                my_err(
                    e,
                    &format!("removing rows of {} the source no longer has", r.target),
                )
            })?;
            removed += self.conn.affected_rows();
        }
        Ok(removed)
    }

    async fn checkpoint(&mut self) -> Result<Option<Position>> {
        checkpoint::my_load(&mut self.conn, &self.db, &self.pipeline, REVERSE).await
    }

    async fn begin(&mut self) -> Result<()> {
        if self.in_txn {
            return Ok(());
        }
        // The echo marker — the first row event of every transaction duplex applies — sent with
        // the transaction start in one round trip.
        self.conn
            .query_drop(checkpoint::my_marker_sql(&self.db, &self.pipeline, REVERSE))
            .await
            .map_err(|e| my_err(e, "starting and marking a MySQL transaction"))?;
        self.in_txn = true;
        Ok(())
    }

    async fn push(&mut self, change: MyChange) -> Result<()> {
        self.pending.push(change);
        if self.pending.len() >= ROWS_PER_STATEMENT * 4 {
            self.flush().await?;
        }
        Ok(())
    }

    async fn push_careful(&mut self, change: MyChange) -> Result<()> {
        self.flush().await?;
        let sp = |e| my_err(e, "savepoint");
        self.conn
            .query_drop("SAVEPOINT duplex_row")
            .await
            .map_err(sp)?;
        let noted = self.conflicts.len();
        match self.write(vec![change]).await {
            Ok(()) => Ok(()),
            Err(e) if !e.is_transient() => {
                self.conflicts.truncate(noted);
                self.conn
                    .query_drop("ROLLBACK TO SAVEPOINT duplex_row")
                    .await
                    .map_err(sp)?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    fn dead_letter(&mut self, letter: DeadLetter) {
        self.letters.push(letter);
    }

    async fn finish(&mut self, mark: Mark<'_>) -> Result<()> {
        self.begin().await?;
        self.flush().await?;
        let text = mark.position_text();
        for l in std::mem::take(&mut self.letters) {
            let sql = crate::state::dead_letter::my_insert_sql(&self.db);
            let params: Vec<My> = vec![
                self.pipeline.clone().into(),
                REVERSE.into(),
                l.source_table.clone().into(),
                l.target_table.clone().into(),
                l.op.into(),
                text.clone().into(),
                l.txn_id.clone().into(),
                l.row.to_string().into(),
                l.reason.clone().into(),
            ];
            self.conn
                .exec_drop(sql, params)
                .await
                .map_err(|e| my_err(e, "writing a dead letter"))?;
            metrics::counter!(crate::telemetry::DEAD_LETTERS, "direction" => REVERSE, "table" => l.target_table.clone())
                .increment(1);
        }
        let conflicts = std::mem::take(&mut self.conflicts);
        crate::state::conflict::my_insert(
            &mut self.conn,
            &self.db,
            &self.pipeline,
            REVERSE,
            &text,
            &conflicts,
        )
        .await?;
        match mark {
            Mark::Checkpoint(position) => self.store_checkpoint(position).await?,
            Mark::Progress(p) => {
                crate::state::progress::my_store(
                    &mut self.conn,
                    &self.db,
                    &self.pipeline,
                    REVERSE,
                    p,
                )
                .await?
            }
            Mark::Nothing => {}
        }
        self.conn
            .query_drop("COMMIT")
            .await
            .map_err(|e| my_err(e, "committing"))?;
        self.in_txn = false;
        super::count_conflicts(REVERSE, conflicts);
        Ok(())
    }

    async fn rollback(&mut self) {
        self.notes.clear();
        self.pending.clear();
        self.letters.clear();
        self.conflicts.clear();
        if self.in_txn {
            let _ = self.conn.query_drop("ROLLBACK").await;
            self.in_txn = false;
        }
    }
}

impl MySqlSink {
    /// Moves the checkpoint forward inside the open transaction (never backward).
    async fn store_checkpoint(&mut self, position: &Position) -> Result<()> {
        let text = position.to_string();
        let (major, minor) = checkpoint::order_key(position);
        self.conn
            .exec_drop(
                checkpoint::my_store_sql(&self.db),
                (
                    text.as_str(),
                    major,
                    minor,
                    &self.pipeline,
                    REVERSE,
                    major,
                    minor,
                ),
            )
            .await
            .map_err(|e| my_err(e, "writing the MySQL checkpoint"))?;
        if self.conn.affected_rows() != 1 {
            return Err(Error::new(
                ErrorKind::Invariant,
                format!(
                    "MySQL checkpoint of pipeline {} would move backward to {position}; refusing",
                    self.pipeline
                ),
            ));
        }
        Ok(())
    }
}

/// Frees written changes on a blocking thread when there are many: a row's values are dozens
/// of allocations, and freeing a chunk of them took 8 % of duplex's time on the writer's path.
fn free_later(written: Arc<Vec<MyChange>>) {
    if written.len() >= load::MIN_ROWS {
        drop(tokio::task::spawn_blocking(move || drop(written)));
    }
}

fn count_rows(t: &ReversePlan, op: &'static str, n: usize) {
    metrics::counter!(
        crate::telemetry::ROWS_APPLIED,
        "direction" => REVERSE,
        "table" => t.target.to_string(),
        "op" => op
    )
    .increment(n as u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charsets_refuse_what_they_cannot_hold() {
        assert!(check_charset("Привет «мир»", "cp1251").is_ok());
        assert!(check_charset("Привет 🌹", "cp1251").is_err());
        assert!(check_charset("Привет", "utf8mb3").is_ok());
        let e = check_charset("розы 🌹", "utf8mb3").unwrap_err();
        assert!(e.to_string().contains("U+1F339"), "{e}");
        assert!(check_charset("розы 🌹", "utf8mb4").is_ok());
        assert!(check_charset("café", "latin1").is_ok());
        assert!(check_charset("кафе", "latin1").is_err());
        let t = SourceType::Text {
            charset: "utf8mb3".into(),
        };
        assert!(to_mysql(&Value::Text("🌹".into()), &t, chrono_tz::UTC).is_err());
        assert_eq!(
            to_mysql(&Value::Unchanged, &t, chrono_tz::UTC).unwrap(),
            None
        );
        let dt = SourceType::DateTime;
        // 07:00 UTC is 12:00 wall time in Almaty (UTC+5 since 2024-03-01).
        let v = Value::Timestamp(
            chrono::NaiveDate::from_ymd_opt(2024, 6, 1)
                .unwrap()
                .and_hms_opt(7, 0, 0)
                .unwrap()
                .and_utc()
                .timestamp_micros(),
        );
        assert_eq!(
            to_mysql(&v, &dt, chrono_tz::Asia::Almaty).unwrap(),
            Some(My::Date(2024, 6, 1, 12, 0, 0, 0))
        );
    }
}

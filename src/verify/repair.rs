//! `duplex repair`: the differences a verify proved, sent again through the sink.
//!
//! Per entry, in batches of keys, one PostgreSQL transaction each:
//! 1. the source rows of the keys are locked on MySQL (`SELECT … FOR UPDATE` in a transaction
//!    held to the end): no newer version of them can be committed meanwhile;
//! 2. they are read from a read view opened after the lock (position P) — their newest
//!    versions — and, when a stream runs, repair waits until it has passed P, so the stream
//!    has nothing older of them left to apply;
//! 3. the rows go through the PostgreSQL sink as a copy's rows do (the sink's encoder,
//!    look-ups, pivot recompute, origin-tagged so they do not come back), target rows the
//!    source does not have are deleted (or their columns cleared, as the entry's `on_delete`
//!    says), each action is logged in duplex's `repair_log` table in the same transaction,
//!    and it commits; then the MySQL locks go.
//!
//! Entries mapped `reverse` only go the other way (`repair_back`): the PostgreSQL rows are
//! locked (`FOR UPDATE`; when rows are to be deleted from MySQL, the table `IN SHARE MODE`,
//! which holds off inserts of those keys, for the batch's few milliseconds), read, and at
//! PostgreSQL's position P once they are locked repair waits until PostgreSQL → MySQL has
//! passed P; then the rows go through the MySQL sink (marked as duplex's own) and commit; the
//! log is written in the locking PostgreSQL transaction, which commits last.
//!
//! `--dry-run` stops before step 1 and lists what would be done.

use std::sync::Arc;

use mysql_async::prelude::Queryable;
use serde::Serialize;

use super::back::Back;
use super::entry::{key_text, Entry, Holds};
use super::mytarget::{key_id, normal};
use super::report::{Kind, Report};
use super::settle::Streams;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::mapping::Plan;
use crate::model::{my_ident, pg_ident, Position};
use crate::sink::mysql::{MyChange, MyKind, MySqlSink};
use crate::sink::postgres::encode::EncodedRow;
use crate::sink::postgres::{Kind as ChangeKind, PgChange, PgSink};
use crate::sink::{Encoder, Sink};
use crate::snapshot::mysql::MysqlSnapshot;
use crate::snapshot::postgres::PgSnapshot;
use crate::state::progress::KeyValue;

/// Keys repaired per transaction.
const BATCH: usize = 200;

/// One thing repair did (or, with `--dry-run`, would do).
#[derive(Debug, Clone, Serialize)]
pub struct Action {
    pub target: String,
    pub key: String,
    /// `write` (the source row sent again), `delete` (a row the source does not have),
    /// `clear` (values the source does not have), or `skip` with the reason in `detail`.
    pub action: &'static str,
    pub detail: String,
}

/// Repairs the differences of `report` (keys limited to `keys` when not empty, as text
/// `a, b`); returns what was done.
pub async fn repair(
    cfg: &Config,
    plan: Arc<Plan>,
    report: &Report,
    keys: &[String],
    dry_run: bool,
    streams: &mut Streams,
) -> Result<Vec<Action>> {
    let mut actions = Vec::new();
    let mut sink = None;
    for (i, t) in plan.tables.iter().enumerate() {
        let Some(r) = report
            .entries
            .iter()
            .find(|r| r.entry == t.origin && r.skipped.is_none())
        else {
            continue;
        };
        let diffs: Vec<_> = r
            .differences
            .iter()
            .filter(|d| keys.is_empty() || keys.contains(&key_text(&d.key_values)))
            .collect();
        if diffs.is_empty() {
            continue;
        }
        // Entries mapped `reverse` only are repaired on MySQL, the others on PostgreSQL.
        let (back, entry) = if t.direction == crate::mapping::Direction::Reverse {
            (Some(Back::of(&plan, i).map_err(Error::mapping)?), None)
        } else {
            (None, Some(Entry::of(i, t).map_err(Error::mapping)?))
        };
        let holds = match (&back, &entry) {
            (Some(b), _) => b.holds,
            (_, Some(e)) => e.holds,
            (None, None) => unreachable!("one of them"),
        };
        if dry_run {
            actions.extend(diffs.iter().map(|d| Action {
                target: r.target.clone(),
                key: d.key.clone(),
                action: planned(holds, d.kind),
                detail: "dry run".into(),
            }));
            continue;
        }
        if let Some(b) = back {
            let keys: Vec<(Vec<String>, Kind)> = diffs
                .iter()
                .map(|d| {
                    let texts = d
                        .key_values
                        .iter()
                        .map(|k| key_text(std::slice::from_ref(k)))
                        .collect();
                    (texts, d.kind)
                })
                .collect();
            actions.extend(repair_back(cfg, &plan, &b, &keys, streams).await?);
            continue;
        }
        let e = entry.expect("a forward entry");
        if sink.is_none() {
            sink = Some(
                PgSink::connect_writer(
                    &cfg.postgres,
                    plan.clone(),
                    &cfg.pipeline,
                    cfg.source_time_zone,
                    crate::model::DLQ_WRITER,
                )
                .await?,
            );
        }
        let sink = sink.as_mut().expect("connected");
        let keys: Vec<Vec<KeyValue>> = diffs.iter().map(|d| d.key_values.clone()).collect();
        for part in keys.chunks(BATCH) {
            actions.extend(repair_batch(cfg, &e, part, sink, streams).await?);
        }
    }
    Ok(actions)
}

/// What repairing a difference of `kind` does.
fn planned(holds: Holds, kind: Kind) -> &'static str {
    match (kind, holds) {
        (Kind::Extra, Holds::Rows) => "delete",
        (Kind::Extra, _) => "clear",
        _ => "write",
    }
}

/// Repairs one batch of keys of entry `e` (see the module's steps).
async fn repair_batch(
    cfg: &Config,
    e: &Entry,
    keys: &[Vec<KeyValue>],
    sink: &mut PgSink,
    streams: &mut Streams,
) -> Result<Vec<Action>> {
    let schema = e.plan.source_schema.clone();
    let mut lock = crate::connect::mysql(&cfg.mysql, None, true).await?;
    let locked = lock_rows(&mut lock, e, keys).await;
    let result = async {
        locked?;
        let mut snap = MysqlSnapshot::open_light(&cfg.mysql).await?;
        let at = Position::Mysql(snap.position.clone());
        let rows = snap.rows_where(&schema, &e.key_sources, keys).await;
        snap.close().await;
        let rows = rows?;
        streams.forward_reached(&at).await?;
        write(cfg, e, keys, rows, sink, &at).await
    }
    .await;
    let _ = lock.query_drop("ROLLBACK").await;
    let _ = lock.disconnect().await;
    result
}

/// Locks the source rows with these keys (and, for keys without a row, the index gap) until
/// the session's transaction ends.
async fn lock_rows(conn: &mut mysql_async::Conn, e: &Entry, keys: &[Vec<KeyValue>]) -> Result<()> {
    let t = &e.plan.source;
    let cols: Vec<String> = e.key_sources.iter().map(|c| my_ident(c)).collect();
    let one = format!("({})", vec!["?"; cols.len()].join(", "));
    let sql = format!(
        "SELECT 1 FROM {}.{} WHERE ({}) IN ({}) FOR UPDATE",
        my_ident(&t.schema),
        my_ident(&t.name),
        cols.join(", "),
        vec![one.as_str(); keys.len()].join(", ")
    );
    let params: Vec<mysql_async::Value> = keys
        .iter()
        .flatten()
        .map(crate::snapshot::mysql::param)
        .collect();
    let what = |e| Error::from_mysql(e, true, "locking the source rows to repair");
    conn.query_drop("SET SESSION innodb_lock_wait_timeout = 10; START TRANSACTION")
        .await
        .map_err(what)?;
    let _: Vec<i64> = conn.exec(sql, params).await.map_err(what)?;
    Ok(())
}

/// Writes the batch through the sink in one transaction, with its log.
async fn write(
    cfg: &Config,
    e: &Entry,
    keys: &[Vec<KeyValue>],
    rows: Vec<crate::snapshot::ReadRow>,
    sink: &mut PgSink,
    at: &Position,
) -> Result<Vec<Action>> {
    let tz = cfg.source_time_zone;
    let schema = e.plan.source_schema.clone();
    let idx = e.plan.bind(&schema).map_err(Error::mapping)?;
    let mut encoder = sink.encoder();
    let mut changes: Vec<(Vec<u8>, PgChange)> = Vec::new();
    let mut actions = Vec::new();
    let mut skipped = std::collections::HashMap::new();
    for r in rows {
        let Some(key) = e.source_key(&r.values, &idx) else {
            continue;
        };
        let id = e.shape.encode_key(&key, tz)?.into_identity();
        if let Some(why) = &r.unreadable {
            skipped.insert(id, why.clone());
            continue;
        }
        let change = crate::snapshot::insert_of(&schema, r.values);
        match encoder.prepare(&change) {
            Ok(cs) => changes.extend(
                cs.into_iter()
                    .filter(|c| c.table == e.index)
                    .map(|c| (id.clone(), c)),
            ),
            Err((_, err)) => {
                skipped.insert(id, err.to_string());
            }
        }
    }
    sink.begin().await?;
    let done = async {
        for key in keys {
            let cells = e.shape.encode_key(key, tz)?;
            let id = cells.identity();
            let text = key_text(key);
            let mine: Vec<PgChange> = changes
                .iter()
                .filter(|(i, _)| *i == id)
                .map(|(_, c)| c.clone())
                .collect();
            let action = if let Some(why) = skipped.get(&id) {
                Action {
                    target: e.report.target.clone(),
                    key: text,
                    action: "skip",
                    detail: format!("the mapping cannot write the source row: {why}"),
                }
            } else if e.plan.is_pivot() || !mine.is_empty() {
                // A pivot: every code's value of the key cleared, then the source's set again.
                let clear = if e.plan.is_pivot() {
                    clear_pivot(e, &text)
                } else {
                    Vec::new()
                };
                for c in clear.into_iter().chain(mine) {
                    sink.push(c).await?;
                }
                Action {
                    target: e.report.target.clone(),
                    key: text,
                    action: "write",
                    detail: if e.plan.is_pivot() {
                        "pivoted values recomputed from the source".into()
                    } else {
                        "source row sent again".into()
                    },
                }
            } else {
                match removal(e, cells, &text) {
                    Some((kind, c)) => {
                        sink.push(c).await?;
                        Action {
                            target: e.report.target.clone(),
                            key: text,
                            action: kind,
                            detail: "the source has no row for this key".into(),
                        }
                    }
                    None => Action {
                        target: e.report.target.clone(),
                        key: text,
                        action: "skip",
                        detail: "the entry ignores deletes".into(),
                    },
                }
            };
            log(sink.client(), cfg, &action, at).await?;
            actions.push(action);
        }
        sink.commit_unmarked().await
    }
    .await;
    if let Err(err) = done {
        sink.rollback().await;
        return Err(err);
    }
    Ok(actions)
}

/// The removal of a target row (or its values) the source does not have.
fn removal(e: &Entry, key: EncodedRow, text: &str) -> Option<(&'static str, PgChange)> {
    let (name, kind) = match e.holds {
        Holds::Rows => ("delete", ChangeKind::Delete),
        Holds::Columns => ("clear", ChangeKind::Clear),
        Holds::Nothing => return None,
    };
    Some((
        name,
        PgChange {
            table: e.index,
            kind,
            key: key.identity(),
            row: key,
            from_insert: false,
            key_text: Some(text.to_string()),
            pivot: None,
            guard: None,
            relay: None,
        },
    ))
}

/// Cells that clear every code's value of a pivot key (in duplex's pivot table; the recompute
/// then sets the columns from what is left).
fn clear_pivot(e: &Entry, text: &str) -> Vec<PgChange> {
    let p = e.plan.pivot.as_ref().expect("a pivot entry");
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for targets in p.codes.values() {
        for pt in targets {
            if !seen.insert((pt.column, pt.priority)) {
                continue;
            }
            out.push(PgChange::pivot(
                e.index,
                text.to_string(),
                pt.column,
                pt.priority,
                None,
            ));
        }
    }
    out
}

/// Logs an action in duplex's `repair_log`, inside the sink's open transaction.
async fn log(
    client: &tokio_postgres::Client,
    cfg: &Config,
    a: &Action,
    at: &Position,
) -> Result<()> {
    let sql = format!(
        "INSERT INTO {}.repair_log (pipeline, target_table, key, action, detail, position) VALUES ($1, $2, $3, $4, $5, $6)",
        pg_ident(&cfg.postgres.duplex_schema)
    );
    client
        .execute(
            &sql,
            &[
                &cfg.pipeline,
                &a.target,
                &a.key,
                &a.action,
                &a.detail,
                &at.to_string(),
            ],
        )
        .await
        .map_err(|e| {
            Error::from_pg(
                e,
                true,
                "logging a repair (run `duplex setup` to create the repair_log table)",
            )
        })?;
    Ok(())
}

/// Repairs the differences of a reverse-only entry (keys as text, with their kind), in
/// batches (see the module's description).
async fn repair_back(
    cfg: &Config,
    plan: &Arc<Plan>,
    b: &Back,
    keys: &[(Vec<String>, Kind)],
    streams: &mut Streams,
) -> Result<Vec<Action>> {
    let mut sink = MySqlSink::connect(
        &cfg.mysql,
        plan.clone(),
        &cfg.pipeline,
        cfg.source_time_zone,
    )
    .await?;
    let mut actions = Vec::new();
    for part in keys.chunks(BATCH) {
        let mut lock = PgSnapshot::open_locking(&cfg.postgres).await?;
        match repair_back_batch(cfg, b, part, &mut lock, &mut sink, streams).await {
            Ok(done) => {
                lock.commit().await?;
                actions.extend(done);
            }
            Err(e) => {
                sink.rollback().await;
                lock.close().await;
                return Err(e);
            }
        }
    }
    Ok(actions)
}

async fn repair_back_batch(
    cfg: &Config,
    b: &Back,
    part: &[(Vec<String>, Kind)],
    lock: &mut PgSnapshot,
    sink: &mut MySqlSink,
    streams: &mut Streams,
) -> Result<Vec<Action>> {
    let schema = Arc::new(lock.table_schema(&b.plan).await?);
    let key_cols = b.source_key(&schema)?;
    if b.holds == Holds::Rows && part.iter().any(|(_, k)| *k == Kind::Extra) {
        let sql = format!("LOCK TABLE {} IN SHARE MODE", b.plan.source.pg_quoted());
        lock.client()
            .batch_execute(&sql)
            .await
            .map_err(|e| Error::from_pg(e, true, "locking the source table to repair"))?;
    }
    let keys: Vec<Vec<KeyValue>> = part
        .iter()
        .map(|(k, _)| k.iter().map(|v| KeyValue::S(v.clone())).collect())
        .collect();
    let rows = lock.rows_where(&schema, &key_cols, &keys, true).await?;
    let at = Position::Postgres(lock.mark().await?);
    streams.reverse_reached(&at).await?;
    let idx = b.plan.bind(&schema).map_err(Error::mapping)?;
    let mut enc = sink.encoder();
    let wanted = b.expect(&mut enc, &schema, &idx, rows.clone());
    let mut changes: std::collections::HashMap<String, Vec<MyChange>> = Default::default();
    for r in rows {
        let change = crate::snapshot::insert_of(&schema, r.values);
        let Ok(cs) = enc.prepare(&change) else {
            continue;
        };
        for c in cs.into_iter().filter(|c| c.table == b.index) {
            let key: Option<Vec<String>> = b
                .plan
                .key
                .iter()
                .map(|&k| {
                    c.values[k]
                        .as_ref()
                        .and_then(|v| normal(v, &b.plan.columns[k].my))
                })
                .collect();
            if let Some(key) = key {
                changes.entry(key_id(&key)).or_default().push(c);
            }
        }
    }
    sink.begin().await?;
    let mut actions = Vec::new();
    for (key, _) in part {
        let id = key_id(key);
        let action = |action: &'static str, detail: String| Action {
            target: b.report.target.clone(),
            key: key.join(", "),
            action,
            detail,
        };
        let a = if let Some(why) = wanted.dead.get(&id) {
            action(
                "skip",
                format!("the mapping cannot write the source row: {why}"),
            )
        } else if let Some(cs) = changes.remove(&id) {
            for c in cs {
                sink.push(c).await?;
            }
            action("write", "source row sent again".into())
        } else if b.holds == Holds::Rows {
            sink.push(MyChange {
                table: b.index,
                kind: MyKind::Delete,
                values: key
                    .iter()
                    .map(|k| Some(mysql_async::Value::Bytes(k.clone().into_bytes())))
                    .collect(),
                at: Vec::new(),
                same: Vec::new(),
                guard: None,
                relay: None,
            })
            .await?;
            action("delete", "the source has no row for this key".into())
        } else {
            action("skip", "the entry only updates rows the shop made".into())
        };
        actions.push(a);
    }
    sink.commit_unmarked().await?;
    for a in &actions {
        log(lock.client(), cfg, a, &at).await?;
    }
    Ok(actions)
}

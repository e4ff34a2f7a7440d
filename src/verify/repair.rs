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
//! `--dry-run` stops before step 1 and lists what would be done.

use std::sync::Arc;

use mysql_async::prelude::Queryable;
use serde::Serialize;

use super::entry::{key_text, Entry, Holds};
use super::report::{Kind, Report};
use super::settle::Streams;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::mapping::Plan;
use crate::model::{my_ident, pg_ident, Position};
use crate::sink::postgres::encode::EncodedRow;
use crate::sink::postgres::{Kind as ChangeKind, PgChange, PgSink};
use crate::sink::{Encoder, Sink};
use crate::snapshot::mysql::MysqlSnapshot;
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
        let e = Entry::of(i, t).map_err(Error::mapping)?;
        if dry_run {
            actions.extend(diffs.iter().map(|d| Action {
                target: r.target.clone(),
                key: d.key.clone(),
                action: planned(&e, d.kind),
                detail: "dry run".into(),
            }));
            continue;
        }
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
fn planned(e: &Entry, kind: Kind) -> &'static str {
    match (kind, e.holds) {
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
            log(sink, cfg, &action, at).await?;
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
async fn log(sink: &PgSink, cfg: &Config, a: &Action, at: &Position) -> Result<()> {
    let sql = format!(
        "INSERT INTO {}.repair_log (pipeline, target_table, key, action, detail, position) VALUES ($1, $2, $3, $4, $5, $6)",
        pg_ident(&cfg.postgres.duplex_schema)
    );
    sink.client()
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

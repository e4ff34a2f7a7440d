//! `duplex dlq`: the dead-letter tables, read and acted on. Rows that could not be applied sit in
//! a table on each target side — `<duplex_schema>.dead_letter` on PostgreSQL for MySQL →
//! PostgreSQL, `<duplex_database>.dead_letter` on MySQL for the way back — with the row, the
//! source position, the table, the reason, the first and last attempt and the attempt count.
//!
//! `retry` reads the row's current version from the source by its key (the row may have changed
//! since; if it is gone, its deletion is what is applied) and sends it through the current
//! mapping into the target, each row under a savepoint, in one target transaction that does not
//! move the checkpoint. A row that now applies is marked resolved; one that still fails keeps
//! its letter with the new reason, `attempts` + 1 and a new `last_attempt`. `drop` deletes
//! letters for good.
//!
//! May use: the mapping plan, the sinks, the snapshot's row readers, the sources' value decoding,
//! `state`, `connect`, `telemetry::live`, the model and the configuration; only `commands` uses
//! it.

use std::sync::Arc;

use serde::Serialize;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::Way;
use crate::model::{Image, Op, RowChange, TableName, TableSchema, Value};
use crate::model::{FORWARD, REVERSE};
use crate::sink::mysql::MySqlSink;
use crate::sink::postgres::PgSink;
use crate::sink::{Encoder, Sink};
use crate::state::dead_letter;
use crate::state::progress::KeyValue;

pub use crate::state::dead_letter::Letter;

/// Which letters a command is about.
#[derive(Debug, Clone, Default)]
pub struct Select {
    /// These ids only (empty: every letter that passes the other filters).
    pub ids: Vec<i64>,
    pub direction: Option<Way>,
    /// Source or target table name, `schema.table` or the bare table name.
    pub table: Option<String>,
    /// Which letters by their state (ids pick letters in any state).
    pub which: Which,
    pub limit: Option<usize>,
}

/// Letters by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Which {
    #[default]
    Unresolved,
    Resolved,
    All,
}

impl Select {
    fn wants(&self, l: &Letter) -> bool {
        let table_ok = self.table.as_ref().is_none_or(|t| {
            [&l.source_table, &l.target_table]
                .iter()
                .any(|n| *n == t || n.rsplit('.').next() == Some(t.as_str()))
        });
        let state_ok = !self.ids.is_empty()
            || match self.which {
                Which::Unresolved => !l.resolved,
                Which::Resolved => l.resolved,
                Which::All => true,
            };
        (self.ids.is_empty() || self.ids.contains(&l.id)) && state_ok && table_ok
    }

    fn ways(&self) -> Vec<Way> {
        match self.direction {
            Some(w) => vec![w],
            None => vec![Way::Forward, Way::Reverse],
        }
    }
}

/// Parses `mysql_to_pg` / `pg_to_mysql` (or `forward` / `reverse`).
pub fn parse_direction(s: &str) -> Result<Way> {
    match s {
        FORWARD | "forward" => Ok(Way::Forward),
        REVERSE | "reverse" => Ok(Way::Reverse),
        other => Err(Error::config(format!(
            "--direction {other:?}: use {FORWARD} (or forward) or {REVERSE} (or reverse)"
        ))),
    }
}

/// The letters `select` picks, newest first per direction.
pub async fn list(cfg: &Config, select: &Select) -> Result<Vec<Letter>> {
    let mut out = Vec::new();
    for way in select.ways() {
        let mut letters = read(cfg, way).await?;
        letters.retain(|l| select.wants(l));
        out.extend(letters);
    }
    if let Some(n) = select.limit {
        out.truncate(n);
    }
    if !select.ids.is_empty() {
        for id in &select.ids {
            let found: Vec<&Letter> = out.iter().filter(|l| l.id == *id).collect();
            if found.is_empty() {
                return Err(Error::config(format!("no dead letter with id {id}")));
            }
            if found.len() > 1 {
                return Err(Error::config(format!(
                    "dead letter id {id} exists in both directions: add --direction {FORWARD} or --direction {REVERSE}"
                )));
            }
        }
    }
    Ok(out)
}

async fn read(cfg: &Config, way: Way) -> Result<Vec<Letter>> {
    match way {
        Way::Forward => {
            let client = crate::connect::postgres(&cfg.postgres, "duplex dlq").await?;
            dead_letter::pg_read(&client, &cfg.postgres.duplex_schema, &cfg.pipeline).await
        }
        Way::Reverse => {
            let mut conn = crate::connect::mysql(&cfg.mysql, None, true).await?;
            let letters =
                dead_letter::my_read(&mut conn, &cfg.mysql.duplex_database, &cfg.pipeline).await;
            let _ = conn.disconnect().await;
            letters
        }
    }
}

/// What `retry` did with one letter.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub id: i64,
    pub direction: String,
    pub table: String,
    pub applied: bool,
    pub detail: String,
}

/// Sends the selected letters through the current mapping again.
pub async fn retry(cfg: &Config, select: &Select) -> Result<Vec<Outcome>> {
    let letters = list(cfg, select).await?;
    if letters.is_empty() {
        return Ok(Vec::new());
    }
    let plan = Arc::new(crate::mapping::load_plan(cfg).await?);
    let mut out = Vec::new();
    for way in [Way::Forward, Way::Reverse] {
        let mine: Vec<&Letter> = letters
            .iter()
            .filter(|l| l.direction == way.as_str() && !l.resolved)
            .collect();
        if mine.is_empty() {
            continue;
        }
        let outcomes = match way {
            Way::Forward => {
                // Its own origin: the running stream's writer holds the stream's.
                let sink = PgSink::connect_writer(
                    &cfg.postgres,
                    plan.clone(),
                    &cfg.pipeline,
                    cfg.source_time_zone,
                    crate::model::DLQ_WRITER,
                )
                .await?;
                retry_way(way, cfg, &plan, sink, &mine).await?
            }
            Way::Reverse => {
                let sink = MySqlSink::connect(
                    &cfg.mysql,
                    plan.clone(),
                    &cfg.pipeline,
                    cfg.source_time_zone,
                )
                .await?;
                retry_way(way, cfg, &plan, sink, &mine).await?
            }
        };
        record(cfg, way, &outcomes).await?;
        out.extend(outcomes);
    }
    Ok(out)
}

/// The source change that re-applies a letter's row as it is now: an insert of its current
/// version, or a delete when it is gone.
async fn current_change(
    reader: &mut crate::snapshot::RowReader,
    plan: &crate::mapping::Plan,
    letter: &Letter,
) -> std::result::Result<RowChange, String> {
    let name = TableName::parse(&letter.source_table, "");
    let schema = reader
        .schema_of(plan, &name)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "{} is not mapped any more (edit the mapping, or drop the letter)",
                letter.source_table
            )
        })?;
    let row = letter
        .row
        .as_object()
        .ok_or("the stored row is not a JSON object")?;
    let mut key = Vec::new();
    let mut before: Vec<Value> = vec![Value::Null; schema.columns.len()];
    for &i in &schema.primary_key {
        let col = &schema.columns[i];
        let text = row
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(&col.name))
            .and_then(|(_, v)| v.as_str())
            .ok_or_else(|| format!("the stored row has no value for key column {}", col.name))?;
        key.push(KeyValue::S(text.to_string()));
        before[i] = key_value(&schema, i, text)?;
    }
    match reader.row(&schema, &key).await.map_err(|e| e.to_string())? {
        Some(read) => {
            if let Some(why) = read.unreadable {
                return Err(format!("the current source row cannot be read: {why}"));
            }
            Ok(RowChange {
                table: schema,
                op: Op::Insert,
                before: None,
                after: Some(read.values),
                image: Image::Full,
            })
        }
        None => Ok(RowChange {
            table: schema,
            op: Op::Delete,
            before: Some(before),
            after: None,
            image: Image::KeyOnly,
        }),
    }
}

/// A key column's value from its stored text, typed as the source column is.
fn key_value(schema: &TableSchema, i: usize, text: &str) -> std::result::Result<Value, String> {
    use crate::model::SourceType;
    let col = &schema.columns[i];
    let bad = |e: &dyn std::fmt::Display| format!("key column {} = {text:?}: {e}", col.name);
    Ok(match &col.ty {
        SourceType::Int { unsigned: true, .. } => Value::UInt(text.parse().map_err(|e| bad(&e))?),
        SourceType::Int { .. } => Value::Int(text.parse().map_err(|e| bad(&e))?),
        SourceType::Decimal { .. } => Value::Decimal(text.to_string()),
        SourceType::Postgres(kind) => {
            crate::source::postgres::decode::decode_text(kind, text.as_bytes())
                .map_err(|e| bad(&e))?
        }
        _ => Value::Text(text.to_string()),
    })
}

async fn retry_way<S: Sink>(
    way: Way,
    cfg: &Config,
    plan: &crate::mapping::Plan,
    mut sink: S,
    letters: &[&Letter],
) -> Result<Vec<Outcome>> {
    let mut reader = crate::snapshot::RowReader::open(way, cfg).await?;
    let mut encoder = sink.encoder();
    encoder.begin(&crate::model::TxnBegin {
        id: "dlq retry".into(),
        commit_time_us: crate::telemetry::live::now_us(),
        at: None,
        own: false,
    });
    sink.begin().await?;
    let mut out = Vec::new();
    for l in letters {
        let outcome = |applied: bool, detail: String| Outcome {
            id: l.id,
            direction: way.as_str().to_string(),
            table: l.target_table.clone(),
            applied,
            detail,
        };
        let change = match current_change(&mut reader, plan, l).await {
            Ok(c) => c,
            Err(why) => {
                out.push(outcome(false, why));
                continue;
            }
        };
        let what = match change.op {
            Op::Delete => "the row is gone from the source: its deletion",
            _ => "the current source row",
        };
        let changes = match encoder.prepare(&change) {
            Ok(c) => c,
            Err((_, e)) => {
                out.push(outcome(false, e.to_string()));
                continue;
            }
        };
        let mut failed = None;
        for c in changes {
            match sink.push_careful(c).await {
                Ok(()) => {}
                Err(e) if !e.is_transient() => {
                    failed = Some(e.to_string());
                    break;
                }
                Err(e) => {
                    sink.rollback().await;
                    reader.close().await;
                    return Err(e);
                }
            }
        }
        out.push(match failed {
            None => outcome(true, format!("applied {what}")),
            Some(why) => outcome(false, why),
        });
    }
    reader.close().await;
    sink.commit_unmarked().await?;
    Ok(out)
}

/// Marks applied letters resolved; failed ones get the new reason and one more attempt.
async fn record(cfg: &Config, way: Way, outcomes: &[Outcome]) -> Result<()> {
    match way {
        Way::Forward => {
            let client = crate::connect::postgres(&cfg.postgres, "duplex dlq").await?;
            for o in outcomes {
                dead_letter::pg_record(
                    &client,
                    &cfg.postgres.duplex_schema,
                    o.id,
                    o.applied,
                    &o.detail,
                )
                .await?;
            }
        }
        Way::Reverse => {
            let mut conn = crate::connect::mysql(&cfg.mysql, None, true).await?;
            for o in outcomes {
                dead_letter::my_record(
                    &mut conn,
                    &cfg.mysql.duplex_database,
                    o.id,
                    o.applied,
                    &o.detail,
                )
                .await?;
            }
            let _ = conn.disconnect().await;
        }
    }
    Ok(())
}

/// Deletes the selected letters; returns how many.
pub async fn drop(cfg: &Config, select: &Select) -> Result<usize> {
    let letters = list(cfg, select).await?;
    let mut n = 0;
    for way in [Way::Forward, Way::Reverse] {
        let ids: Vec<i64> = letters
            .iter()
            .filter(|l| l.direction == way.as_str())
            .map(|l| l.id)
            .collect();
        if ids.is_empty() {
            continue;
        }
        n += match way {
            Way::Forward => {
                let client = crate::connect::postgres(&cfg.postgres, "duplex dlq").await?;
                dead_letter::pg_drop(&client, &cfg.postgres.duplex_schema, &cfg.pipeline, &ids)
                    .await?
            }
            Way::Reverse => {
                let mut conn = crate::connect::mysql(&cfg.mysql, None, true).await?;
                let dropped = dead_letter::my_drop(
                    &mut conn,
                    &cfg.mysql.duplex_database,
                    &cfg.pipeline,
                    &ids,
                )
                .await;
                let _ = conn.disconnect().await;
                dropped?
            }
        };
    }
    Ok(n)
}

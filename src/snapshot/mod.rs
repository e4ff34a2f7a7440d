//! The initial copy of existing rows, and its handover to streaming.
//!
//! Per direction, the tables that need a copy (never copied, interrupted, or asked for by name)
//! are read from one consistent view of the source whose position is known exactly
//! ([`mysql::MysqlSnapshot`], [`postgres::PgSnapshot`]). Each table goes in primary-key chunks
//! through the same mapping, encoder and sink as streamed rows: a chunk is one target
//! transaction that also stores the table's progress ([`state`]), so a killed copy resumes
//! after the last chunk that committed. A resumed copy reads the rest from a new view; the
//! progress keeps which key range came from which position, and the stream drops the changes
//! a copy already holds ([`filter`]).
//!
//! Invariants:
//! - Before the first chunk of a copy is written, its progress row (with the snapshot position)
//!   is committed, and for MySQL → PostgreSQL the stream checkpoint is set to that position if
//!   there was none: the stream never starts after a change the copy missed.
//! - Every source row is either copied or a dead letter with the reason; the progress row
//!   counts both.
//!
//! May use: sources (their readers and value decoding), sinks, the mapping plan, `state`,
//! `connect`, `telemetry`, the model and the configuration; the pipeline, `dlq` and the commands
//! use it.

pub mod filter;
pub mod mysql;
pub mod postgres;
pub mod progress;
pub mod store;

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::mapping::{Direction, Plan};
use crate::model::Way;
use crate::model::{Image, Op, Position, RowChange, TableName, TableSchema, Value};
use crate::sink::mysql::MySqlSink;
use crate::sink::postgres::PgSink;
use crate::sink::{DeadLetter, Encoder, Sink};
use crate::telemetry;

use crate::state::progress::{KeyValue, Progress, State};
pub use filter::SnapshotFilter;
use store::ProgressStore;

/// Which tables to copy.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Only this table (source or target name, with or without its schema), copied again
    /// from the first row even if it was copied before.
    pub table: Option<String>,
}

/// How the copy of one table ended.
#[derive(Debug, Clone)]
pub struct Report {
    pub direction: &'static str,
    pub table: String,
    pub copied: i64,
    pub dead_lettered: i64,
    /// Rows of `copied` that no mapping entry writes (row filters, unmapped pivot codes), in
    /// this run.
    pub left_out: i64,
    /// False when the copy was interrupted by shutdown (it resumes on the next start).
    pub finished: bool,
    pub seconds: f64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: copied {}, dead-lettered {}{} in {:.1} s",
            self.direction,
            self.table,
            self.copied,
            self.dead_lettered,
            if self.finished {
                ""
            } else {
                " (interrupted; resumes on the next start)"
            },
            self.seconds
        )?;
        if self.left_out > 0 {
            write!(
                f,
                "; {} of them written nowhere (filtered out, or a property code no entry maps)",
                self.left_out
            )?;
        }
        Ok(())
    }
}

/// A source row read by a snapshot; `unreadable` says why a value could not be read (the row
/// becomes a dead letter).
#[derive(Clone)]
pub struct ReadRow {
    pub values: Vec<Value>,
    pub unreadable: Option<String>,
}

/// A consistent read view of the source.
enum Reader {
    My(mysql::MysqlSnapshot),
    Pg(postgres::PgSnapshot),
}

impl Reader {
    /// Opens the read view of the source of `way`, and its position.
    async fn open(way: Way, cfg: &Config) -> Result<(Reader, Position)> {
        Ok(match way {
            Way::Forward => {
                let r = mysql::MysqlSnapshot::open(&cfg.mysql).await?;
                let at = Position::Mysql(r.position.clone());
                (Reader::My(r), at)
            }
            Way::Reverse => {
                let r = postgres::PgSnapshot::open(&cfg.postgres, &cfg.pipeline).await?;
                let at = Position::Postgres(r.position);
                (Reader::Pg(r), at)
            }
        })
    }

    /// The columns read from source table `name`: a MySQL table as the plan compiled it; of a
    /// PostgreSQL table, the mapped columns (see [`postgres::PgSnapshot::table_schema`]).
    async fn schema_of(&self, plan: &Plan, name: &TableName) -> Result<Arc<TableSchema>> {
        match self {
            Reader::My(_) => Ok(plan
                .tables
                .iter()
                .find(|t| t.source == *name)
                .map(|t| t.source_schema.clone())
                .expect("a mapped table")),
            Reader::Pg(r) => {
                let plan = plan
                    .reverse
                    .iter()
                    .find(|r| r.source == *name)
                    .expect("a mapped table");
                Ok(Arc::new(r.table_schema(plan).await?))
            }
        }
    }

    async fn chunk(
        &mut self,
        table: &TableSchema,
        after: Option<&[KeyValue]>,
        limit: usize,
    ) -> Result<Vec<ReadRow>> {
        match self {
            Reader::My(r) => r.chunk(table, after, limit).await,
            Reader::Pg(r) => r.chunk(table, after, limit).await,
        }
    }

    async fn estimate(&mut self, table: &TableSchema) -> u64 {
        match self {
            Reader::My(r) => r.estimate(table).await,
            Reader::Pg(r) => r.estimate(table).await,
        }
    }

    async fn close(self) {
        match self {
            Reader::My(r) => r.close().await,
            Reader::Pg(r) => r.close().await,
        }
    }
}

/// Whether a name given on the command line means this table pair.
/// Reads the current version of single source rows by key, for `duplex dlq retry`.
pub struct RowReader(Reader);

impl RowReader {
    pub async fn open(way: Way, cfg: &Config) -> Result<RowReader> {
        Ok(RowReader(Reader::open(way, cfg).await?.0))
    }

    /// The schema rows of source table `name` are read with; None when `plan` does not map it.
    pub async fn schema_of(
        &self,
        plan: &Plan,
        name: &TableName,
    ) -> Result<Option<Arc<TableSchema>>> {
        let mapped = match self.0 {
            Reader::My(_) => plan
                .tables
                .iter()
                .any(|t| t.source == *name && t.direction.forward()),
            Reader::Pg(_) => plan.reverse.iter().any(|r| r.source == *name),
        };
        if !mapped {
            return Ok(None);
        }
        self.0.schema_of(plan, name).await.map(Some)
    }

    pub async fn row(&mut self, table: &TableSchema, key: &[KeyValue]) -> Result<Option<ReadRow>> {
        match &mut self.0 {
            Reader::My(r) => r.row(table, key).await,
            Reader::Pg(r) => r.row(table, key).await,
        }
    }

    pub async fn close(self) {
        self.0.close().await
    }
}

fn names_match(asked: &str, source: &TableName, target: &TableName) -> bool {
    [source, target]
        .iter()
        .any(|t| asked.eq_ignore_ascii_case(&t.to_string()) || asked.eq_ignore_ascii_case(&t.name))
}

/// The source tables a direction copies, with a target name for matching: MySQL → PostgreSQL
/// copies tables mapped `forward` or `both` (the shop is the system of record for rows that
/// already exist); PostgreSQL → MySQL copies tables mapped `reverse` only.
fn tables_of(plan: &Plan, way: Way) -> Vec<(TableName, TableName)> {
    let mut out: Vec<(TableName, TableName)> = Vec::new();
    match way {
        Way::Forward => {
            for t in &plan.tables {
                if t.direction != Direction::Reverse && !out.iter().any(|(s, _)| *s == t.source) {
                    out.push((t.source.clone(), t.target.clone()));
                }
            }
            out = parents_first(plan, out);
        }
        Way::Reverse => {
            for r in &plan.reverse {
                let forward = plan
                    .tables
                    .iter()
                    .find(|t| t.target == r.source && t.source == r.target);
                if forward.is_some_and(|t| t.direction == Direction::Reverse)
                    && !out.iter().any(|(s, _)| *s == r.source)
                {
                    out.push((r.source.clone(), r.target.clone()));
                }
            }
        }
    }
    out
}

/// The forward tables ordered so that a table another entry looks up is copied before that
/// entry's table (otherwise in plan order): a child row then finds its parent as it is written,
/// instead of every child being updated when the parent arrives. A cycle keeps plan order.
fn parents_first(plan: &Plan, tables: Vec<(TableName, TableName)>) -> Vec<(TableName, TableName)> {
    // The targets each target's rows look up.
    let looks_up = |target: &TableName| -> Vec<TableName> {
        plan.tables
            .iter()
            .filter(|t| t.target == *target)
            .flat_map(|t| t.lookups.iter().map(|l| l.table.clone()))
            .filter(|p| p != target)
            .collect()
    };
    let mut left = tables;
    let mut out = Vec::with_capacity(left.len());
    while !left.is_empty() {
        // The first table none of whose parents is still waiting to be copied.
        let ready = left.iter().position(|(_, target)| {
            looks_up(target)
                .iter()
                .all(|p| !left.iter().any(|(_, t)| t == p))
        });
        out.push(left.remove(ready.unwrap_or(0)));
    }
    out
}

/// Copies what `request` asks for in one direction; returns a report per table copied.
pub async fn run(
    way: Way,
    cfg: &Config,
    plan: Arc<Plan>,
    request: &Request,
    shutdown: watch::Receiver<bool>,
) -> Result<Vec<Report>> {
    let tables = tables_of(&plan, way);
    let asked_here = request
        .table
        .as_ref()
        .is_none_or(|asked| tables.iter().any(|(s, t)| names_match(asked, s, t)));
    if tables.is_empty() || !asked_here {
        // Still check the name against every direction, for the message.
        if let Some(asked) = &request.table {
            check_name(&plan, asked)?;
        }
        return Ok(Vec::new());
    }
    match way {
        Way::Forward => {
            let mut sink = PgSink::connect(
                &cfg.postgres,
                plan.clone(),
                &cfg.pipeline,
                cfg.source_time_zone,
            )
            .await?;
            let copied =
                copy_direction(way, cfg, &plan, &tables, request, &mut sink, shutdown).await;
            sink.release().await;
            copied
        }
        Way::Reverse => {
            let mut sink = MySqlSink::connect(
                &cfg.mysql,
                plan.clone(),
                &cfg.pipeline,
                cfg.source_time_zone,
            )
            .await?;
            copy_direction(way, cfg, &plan, &tables, request, &mut sink, shutdown).await
        }
    }
}

/// One direction's copy through its sink: the tables that need it, from one read view.
async fn copy_direction<S: Sink + ProgressStore>(
    way: Way,
    cfg: &Config,
    plan: &Plan,
    tables: &[(TableName, TableName)],
    request: &Request,
    sink: &mut S,
    shutdown: watch::Receiver<bool>,
) -> Result<Vec<Report>> {
    sink.ensure_progress_table(cfg).await?;
    let done = sink.load_progress(cfg).await?;
    let todo = pick(tables, &done, request);
    if todo.is_empty() {
        return Ok(Vec::new());
    }
    if way == Way::Reverse {
        let client = crate::connect::postgres(&cfg.postgres, "duplex snapshot").await?;
        let names: Vec<TableName> = todo.iter().map(|(n, _)| n.clone()).collect();
        let hidden = postgres::rls_hidden(&client, &names).await?;
        if !hidden.is_empty() {
            return Err(Error::new(
                ErrorKind::Config,
                postgres::rls_message(&hidden, &cfg.postgres.user),
            ));
        }
    }
    let (reader, at) = Reader::open(way, cfg).await?;
    tracing::info!(direction = way.as_str(), position = %at, tables = todo.len(), "snapshot taken");
    let mut starts = Vec::new();
    for (name, previous) in todo {
        let schema = reader.schema_of(plan, &name).await?;
        let mut progress = start(&name, &schema, previous, &at);
        // Copying a named table again is a resync: the target ends holding what the source
        // holds, so rows the source no longer has go too (where the key allows it).
        progress.prune |= request.table.is_some();
        starts.push((schema, progress));
    }
    let rows: Vec<&Progress> = starts.iter().map(|(_, p)| p).collect();
    sink.start_copies(cfg, &rows, &at).await?;
    copy_all(way, cfg, sink, reader, starts, shutdown).await
}

/// Fails with the list of mapped tables when `asked` names none of them.
fn check_name(plan: &Plan, asked: &str) -> Result<()> {
    let all: Vec<(TableName, TableName)> = tables_of(plan, Way::Forward)
        .into_iter()
        .chain(tables_of(plan, Way::Reverse))
        .collect();
    if all.iter().any(|(s, t)| names_match(asked, s, t)) {
        return Ok(());
    }
    let names: Vec<String> = all.iter().map(|(s, t)| format!("{s} → {t}")).collect();
    Err(Error::new(
        ErrorKind::Config,
        format!(
            "no mapped table is called {asked}; mapped tables: {}",
            names.join(", ")
        ),
    ))
}

/// The tables to copy now, with their earlier progress (kept when resuming).
fn pick(
    tables: &[(TableName, TableName)],
    done: &[Progress],
    request: &Request,
) -> Vec<(TableName, Option<Progress>)> {
    tables
        .iter()
        .filter_map(|(source, target)| {
            let previous = done.iter().find(|p| p.table == source.to_string()).cloned();
            match &request.table {
                Some(asked) if names_match(asked, source, target) => Some((source.clone(), None)),
                Some(_) => None,
                None => match previous {
                    Some(p) if p.state == State::Done => None,
                    other => Some((source.clone(), other)),
                },
            }
        })
        .collect()
}

/// The progress a copy starts with: from the first row, or resumed after the last key.
fn start(
    name: &TableName,
    schema: &TableSchema,
    previous: Option<Progress>,
    at: &Position,
) -> Progress {
    let keys: Vec<String> = schema
        .primary_key
        .iter()
        .map(|&i| schema.columns[i].name.clone())
        .collect();
    match previous {
        Some(mut p) if p.key_columns == keys && p.last_key.is_some() => {
            tracing::info!(table = %name, after = ?p.last_key, copied = p.rows_copied, "resuming an interrupted copy");
            p.resume_at(at);
            p
        }
        previous => {
            let mut fresh = Progress::fresh(name.to_string(), keys, at);
            // A copy asked for as a resync (see `duplex setup` after a new slot) stays one.
            fresh.prune = previous.is_some_and(|p| p.prune);
            fresh
        }
    }
}

async fn copy_all<S: Sink>(
    way: Way,
    cfg: &Config,
    sink: &mut S,
    mut reader: Reader,
    starts: Vec<(Arc<TableSchema>, Progress)>,
    shutdown: watch::Receiver<bool>,
) -> Result<Vec<Report>> {
    let mut reports = Vec::new();
    metrics::gauge!(telemetry::SNAPSHOT_TABLES_PENDING, "direction" => way.as_str())
        .set(starts.len() as f64);
    let mut left = starts.len();
    for (schema, progress) in starts {
        let (r, report) =
            copy_table(way, cfg, sink, reader, schema, progress, shutdown.clone()).await;
        reader = r;
        let report = match report {
            Ok(rep) => rep,
            Err(e) => {
                reader.close().await;
                return Err(e);
            }
        };
        tracing::info!("{report}");
        let finished = report.finished;
        reports.push(report);
        left -= 1;
        metrics::gauge!(telemetry::SNAPSHOT_TABLES_PENDING, "direction" => way.as_str())
            .set(left as f64);
        if !finished {
            break;
        }
    }
    reader.close().await;
    Ok(reports)
}

/// A chunk as read: the rows after `after`, and the key of its last row.
struct Read {
    after: Option<Vec<KeyValue>>,
    rows: Vec<ReadRow>,
    last_key: Vec<KeyValue>,
}

/// A request to read the chunk after a key again, and where to answer.
type Again = (
    Option<Vec<KeyValue>>,
    usize,
    tokio::sync::oneshot::Sender<Result<Vec<ReadRow>>>,
);

/// Answers a request to read rows again.
async fn read_again(reader: &mut Reader, schema: &TableSchema, (after, n, answer): Again) {
    let rows = reader.chunk(schema, after.as_deref(), n).await;
    let _ = answer.send(rows);
}

/// Rows read per query; a transaction gathers `snapshot.chunk_rows` of them.
const READ_ROWS: usize = 2500;

/// The target transaction being filled.
struct Open {
    /// The key before its first row (to read its rows again).
    after: Option<Vec<KeyValue>>,
    rows: usize,
    dead: usize,
    last_key: Vec<KeyValue>,
    started: Instant,
    /// The error that stopped the fast path; the rows are then written one by one.
    failed: Option<Error>,
    /// See [`Chunk::keys`].
    keys: Vec<i64>,
}

/// Commits a filled transaction with the table's progress; when the target rejected something,
/// writes its rows again one by one (read again from the same view) to set the bad ones aside.
#[allow(clippy::too_many_arguments)]
async fn finish_txn<S: Sink>(
    sink: &mut S,
    txn: Open,
    again: &mpsc::Sender<Again>,
    schema: &Arc<TableSchema>,
    progress: &mut Progress,
    txn_id: &str,
    way: Way,
    bar: &mut progress::Bar,
) -> Result<()> {
    let failed = match txn.failed {
        Some(e) => Some(e),
        None => async {
            prune_range(
                sink,
                schema,
                progress,
                txn.after.as_deref(),
                Some(&txn.last_key),
                &txn.keys,
            )
            .await?;
            commit_chunk(sink, txn.rows, txn.dead, &txn.last_key, progress).await
        }
        .await
        .err(),
    };
    let dead = match failed {
        None => txn.dead,
        Some(e) if e.kind() == ErrorKind::SinkDefinite => {
            sink.rollback().await;
            tracing::warn!(table = %progress.table, error = %e, "a chunk was rejected; copying it row by row to set the bad rows aside");
            let stopped = || Error::new(ErrorKind::Invariant, "the snapshot reader stopped");
            let (answer, rows) = tokio::sync::oneshot::channel();
            again
                .send((txn.after.clone(), txn.rows, answer))
                .await
                .map_err(|_| stopped())?;
            let rows = rows.await.map_err(|_| stopped())??;
            if rows.len() != txn.rows {
                return Err(Error::new(
                    ErrorKind::Invariant,
                    format!(
                        "a chunk of {} read again has {} rows, not {}",
                        progress.table,
                        rows.len(),
                        txn.rows
                    ),
                ));
            }
            let range = (txn.after.as_deref(), txn.keys.as_slice());
            write_chunk_carefully(sink, schema, rows, &txn.last_key, progress, txn_id, range)
                .await?
        }
        Some(e) => {
            sink.rollback().await;
            return Err(e);
        }
    };
    let table = progress.table.clone();
    metrics::counter!(telemetry::SNAPSHOT_ROWS, "direction" => way.as_str(), "table" => table.clone())
        .increment((txn.rows - dead) as u64);
    if dead > 0 {
        metrics::counter!(telemetry::SNAPSHOT_DEAD_LETTERS, "direction" => way.as_str(), "table" => table)
            .increment(dead as u64);
    }
    metrics::histogram!(telemetry::SNAPSHOT_CHUNK_SECONDS, "direction" => way.as_str())
        .record(txn.started.elapsed().as_secs_f64());
    bar.advance(txn.rows as u64);
    Ok(())
}

/// One source row: its encoded changes, or why it cannot be copied.
type Item<C> = std::result::Result<Vec<C>, Box<DeadLetter>>;

/// A chunk on its way from the encoder to the writer.
struct Chunk<C> {
    /// The key before the chunk (to read it again).
    after: Option<Vec<KeyValue>>,
    /// Per source row: its encoded changes, or why it cannot be copied.
    items: Vec<Item<C>>,
    last_key: Vec<KeyValue>,
    /// The integer keys of the rows the target keeps (written or set aside; not those no entry
    /// writes), for a resync's pruning.
    keys: Vec<i64>,
}

async fn read_chunk(
    reader: &mut Reader,
    schema: &TableSchema,
    after: Option<Vec<KeyValue>>,
    limit: usize,
) -> Result<Read> {
    let rows = reader.chunk(schema, after.as_deref(), limit).await?;
    let last_key = match rows.last() {
        Some(last) => schema
            .primary_key
            .iter()
            .map(|&i| KeyValue::of(&last.values[i]))
            .collect::<Result<_>>()?,
        None => Vec::new(),
    };
    Ok(Read {
        after,
        rows,
        last_key,
    })
}

/// Maps and encodes the rows of a chunk (dropping the decoded rows as it goes).
fn encode_chunk<E: Encoder>(
    encoder: &mut E,
    schema: &Arc<TableSchema>,
    read: Read,
    txn_id: &str,
    with_keys: bool,
) -> Chunk<E::Change> {
    let mut keys = Vec::new();
    let items = read
        .rows
        .into_iter()
        .map(|r| {
            let key = if with_keys {
                int_key_of(schema, &r.values)
            } else {
                None
            };
            let change = insert_of(schema, r.values);
            let item = match r.unreadable {
                Some(why) => Err(Box::new(DeadLetter::new(
                    &change,
                    String::new(),
                    txn_id,
                    why,
                ))),
                None => encoder.prepare(&change).map_err(|(target, e)| {
                    Box::new(DeadLetter::new(&change, target, txn_id, e.to_string()))
                }),
            };
            if let Some(k) = key.filter(|_| item.as_ref().map_or(true, |c| !c.is_empty())) {
                keys.push(k);
            }
            item
        })
        .collect();
    Chunk {
        after: read.after,
        items,
        last_key: read.last_key,
        keys,
    }
}

/// The single integer key of a key or row, when the table has one (a resync prunes by it).
fn int_key(key: &[KeyValue]) -> Option<i64> {
    match key {
        [KeyValue::I(i)] => Some(*i),
        [KeyValue::U(u)] => i64::try_from(*u).ok(),
        _ => None,
    }
}

fn int_key_of(schema: &TableSchema, values: &[Value]) -> Option<i64> {
    let [pk] = schema.primary_key.as_slice() else {
        return None;
    };
    int_key(&[KeyValue::of(values.get(*pk)?).ok()?])
}

/// A resync's pruning of the key range a chunk covers, `(after, last]`, in its transaction:
/// the target rows whose key the source no longer has go (see [`Sink::prune`]).
async fn prune_range<S: Sink>(
    sink: &mut S,
    schema: &TableSchema,
    progress: &Progress,
    after: Option<&[KeyValue]>,
    last: Option<&[KeyValue]>,
    keep: &[i64],
) -> Result<()> {
    if !progress.prune {
        return Ok(());
    }
    let bound = |k: Option<&[KeyValue]>| match k {
        None => Ok(None),
        Some(k) => int_key(k).map(Some).ok_or(()),
    };
    let (Ok(after), Ok(upto)) = (bound(after), bound(last)) else {
        return Ok(());
    };
    let removed = sink.prune(schema, after, upto, keep).await?;
    if removed > 0 {
        tracing::info!(table = %progress.table, removed, "removed target rows the source no longer has");
        metrics::counter!(telemetry::SNAPSHOT_ROWS_REMOVED, "table" => progress.table.clone())
            .increment(removed);
    }
    Ok(())
}

/// A copied row as the insert a sink applies.
pub fn insert_of(schema: &Arc<TableSchema>, values: Vec<Value>) -> RowChange {
    RowChange {
        table: schema.clone(),
        op: Op::Insert,
        before: None,
        after: Some(values),
        image: Image::Full,
    }
}

/// Copies one table: a reader task, an encoder task and this task writing, so reading,
/// encoding and writing overlap. Returns the reader for the next table.
async fn copy_table<S: Sink>(
    way: Way,
    cfg: &Config,
    sink: &mut S,
    mut reader: Reader,
    schema: Arc<TableSchema>,
    mut progress: Progress,
    mut shutdown: watch::Receiver<bool>,
) -> (Reader, Result<Report>) {
    let started = Instant::now();
    let table = progress.table.clone();
    let estimate = reader.estimate(&schema).await;
    let mut bar = progress::Bar::new(
        way.as_str(),
        &table,
        estimate,
        progress.rows_copied + progress.rows_dead,
    );
    let limit = cfg.snapshot.chunk_rows.max(1);
    // Rows are read in small pieces so that few decoded rows are in memory at once (a decoded
    // row is three times its encoded size); the writer gathers `limit` rows per transaction.
    let piece = limit.min(READ_ROWS);
    let (rtx, rrx) = mpsc::channel::<Result<Read>>(1);
    // The writer asks for rows again (same view, same rows) when it must write them one by one.
    let (again_tx, again_rx) = mpsc::channel::<Again>(1);
    let first = progress.last_key.clone();
    let read_task = spawn_reader(reader, schema.clone(), first, piece, rtx, again_rx);
    let (etx, mut erx) = mpsc::channel::<Result<Chunk<<S::Encoder as Encoder>::Change>>>(1);
    let encoder = sink.encoder();
    let txn_id = progress.label();
    let keys = progress.prune;
    let encode_task = spawn_encoder::<S>(encoder, schema.clone(), (txn_id.clone(), keys), rrx, etx);
    let mut open: Option<Open> = None;
    let mut left_out = 0i64;
    let result = async {
        loop {
            if *shutdown.borrow() {
                // What is not committed is read again on the next start.
                sink.rollback().await;
                return Ok(false);
            }
            let chunk = tokio::select! {
                c = erx.recv() => c,
                _ = shutdown.changed() => continue,
            };
            let ended = chunk.is_none();
            if let Some(chunk) = chunk {
                let chunk = chunk?;
                add_chunk(sink, &mut open, chunk, &mut left_out).await?;
            }
            if open.as_ref().is_some_and(|t| ended || t.rows >= limit) {
                let txn = open.take().expect("an open transaction");
                finish_txn(
                    sink,
                    txn,
                    &again_tx,
                    &schema,
                    &mut progress,
                    &txn_id,
                    way,
                    &mut bar,
                )
                .await?;
            }
            if ended {
                return Ok(true);
            }
        }
    }
    .await;
    encode_task.abort();
    drop(erx);
    drop(again_tx);
    let reader = match read_task.await {
        Ok(r) => r,
        Err(e) => panic!("the snapshot reader task failed: {e}"),
    };
    let result = match result {
        Ok(true) => mark_done(sink, &schema, &mut progress).await.map(|()| true),
        other => other,
    };
    bar.finish();
    let result = result.map(|finished| Report {
        direction: way.as_str(),
        table: table.clone(),
        copied: progress.rows_copied,
        dead_lettered: progress.rows_dead,
        left_out,
        finished,
        seconds: started.elapsed().as_secs_f64(),
    });
    (reader, result)
}

/// Marks a table's copy done, in one transaction with a resync's last range: past the last row
/// copied (every row, for an empty table).
async fn mark_done<S: Sink>(
    sink: &mut S,
    schema: &TableSchema,
    progress: &mut Progress,
) -> Result<()> {
    let last = progress.last_key.clone();
    prune_range(sink, schema, progress, last.as_deref(), None, &[]).await?;
    progress.state = State::Done;
    sink.commit_progress(progress).await
}

/// Starts the reader task of [`copy_table`]: reads the rows after `first` in pieces of `piece`
/// rows and sends them on, serving requests to read rows again meanwhile and until the writer
/// is done; it hands the reader back.
fn spawn_reader(
    mut reader: Reader,
    read_schema: Arc<TableSchema>,
    first: Option<Vec<KeyValue>>,
    piece: usize,
    rtx: mpsc::Sender<Result<Read>>,
    mut again_rx: mpsc::Receiver<Again>,
) -> tokio::task::JoinHandle<Reader> {
    tokio::spawn(async move {
        let mut after = first;
        loop {
            let read = read_chunk(&mut reader, &read_schema, after.clone(), piece).await;
            let next = match &read {
                Ok(r) if r.rows.len() == piece => Some(r.last_key.clone()),
                _ => None,
            };
            if read.as_ref().is_ok_and(|r| r.rows.is_empty()) {
                break;
            }
            // Wait for room downstream, serving repeat requests meanwhile.
            let permit = loop {
                tokio::select! {
                    biased;
                    Some(again) = again_rx.recv() => read_again(&mut reader, &read_schema, again).await,
                    permit = rtx.reserve() => break permit,
                }
            };
            let Ok(permit) = permit else { break };
            permit.send(read);
            match next {
                Some(key) => after = Some(key),
                None => break,
            }
        }
        // Serve repeat requests until the writer is done.
        drop(rtx);
        while let Some(again) = again_rx.recv().await {
            read_again(&mut reader, &read_schema, again).await;
        }
        reader
    })
}

/// Starts the encoder task of [`copy_table`]: maps and encodes each piece read, until the
/// reader is done or the writer gone; with `keys` (a resync) it gathers each chunk's keys.
fn spawn_encoder<S: Sink>(
    mut encoder: S::Encoder,
    enc_schema: Arc<TableSchema>,
    (enc_txn, keys): (String, bool),
    mut rrx: mpsc::Receiver<Result<Read>>,
    etx: mpsc::Sender<Result<Chunk<<S::Encoder as Encoder>::Change>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(read) = rrx.recv().await {
            let out =
                read.map(|read| encode_chunk(&mut encoder, &enc_schema, read, &enc_txn, keys));
            if etx.send(out).await.is_err() {
                break;
            }
        }
    })
}

/// Adds an encoded chunk to the open target transaction (beginning one if none is open): its
/// changes are written and its unusable rows set aside, until a write fails (then the
/// transaction's rows are written again one by one when it is finished).
async fn add_chunk<S: Sink>(
    sink: &mut S,
    open: &mut Option<Open>,
    chunk: Chunk<<S::Encoder as Encoder>::Change>,
    left_out: &mut i64,
) -> Result<()> {
    let txn = match open.as_mut() {
        Some(t) => t,
        None => {
            sink.begin().await?;
            open.insert(Open {
                after: chunk.after.clone(),
                rows: 0,
                dead: 0,
                last_key: Vec::new(),
                started: Instant::now(),
                failed: None,
                keys: Vec::new(),
            })
        }
    };
    txn.rows += chunk.items.len();
    txn.last_key = chunk.last_key;
    txn.keys.extend(chunk.keys);
    if txn.failed.is_none() {
        for item in chunk.items {
            match item {
                Ok(changes) => {
                    if changes.is_empty() {
                        *left_out += 1;
                    }
                    for c in changes {
                        if let Err(e) = sink.push(c).await {
                            txn.failed = Some(e);
                            break;
                        }
                    }
                }
                Err(letter) => {
                    txn.dead += 1;
                    sink.dead_letter(*letter);
                }
            }
            if txn.failed.is_some() {
                break;
            }
        }
    }
    Ok(())
}

/// Commits a chunk with the table's progress moved past it.
async fn commit_chunk<S: Sink>(
    sink: &mut S,
    rows: usize,
    dead: usize,
    last_key: &[KeyValue],
    progress: &mut Progress,
) -> Result<()> {
    let mut next = progress.clone();
    next.rows_copied += (rows - dead) as i64;
    next.rows_dead += dead as i64;
    next.last_key = Some(last_key.to_vec());
    sink.commit_progress(&next).await?;
    *progress = next;
    Ok(())
}

/// The careful path: each row (encoded again) under a savepoint, rejected rows into the
/// dead-letter table.
async fn write_chunk_carefully<S: Sink>(
    sink: &mut S,
    schema: &Arc<TableSchema>,
    rows: Vec<ReadRow>,
    last_key: &[KeyValue],
    progress: &mut Progress,
    txn_id: &str,
    (after, keep): (Option<&[KeyValue]>, &[i64]),
) -> Result<usize> {
    let mut encoder = sink.encoder();
    sink.begin().await?;
    let n = rows.len();
    let mut dead = 0;
    for r in rows {
        let row = insert_of(schema, r.values);
        if let Some(why) = r.unreadable {
            dead += 1;
            sink.dead_letter(DeadLetter::new(&row, String::new(), txn_id, why));
            continue;
        }
        match encoder.prepare(&row) {
            Ok(changes) => {
                let mut rejected = None;
                for c in changes {
                    let target = encoder.target_of(&c);
                    match sink.push_careful(c).await {
                        Ok(()) => {}
                        Err(e) if !e.is_transient() => {
                            rejected = Some((target, e));
                            break;
                        }
                        Err(e) => return Err(e),
                    }
                }
                if let Some((target, e)) = rejected {
                    tracing::warn!(table = %target, error = %e, "row rejected by the target; set aside into the dead-letter table");
                    dead += 1;
                    sink.dead_letter(DeadLetter::new(&row, target, txn_id, e.to_string()));
                }
            }
            Err((target, e)) => {
                dead += 1;
                sink.dead_letter(DeadLetter::new(&row, target, txn_id, e.to_string()));
            }
        }
    }
    prune_range(sink, schema, progress, after, Some(last_key), keep).await?;
    commit_chunk(sink, n, dead, last_key, progress).await?;
    Ok(dead)
}

/// The stream filter of a direction: the copies recorded in the target's progress rows.
pub async fn filter<S: ProgressStore>(
    way: Way,
    sink: &mut S,
    cfg: &Config,
    plan: &Plan,
    from: Option<&Position>,
) -> Result<SnapshotFilter> {
    let done = sink.load_progress(cfg).await?;
    let tables = tables_of(plan, way);
    SnapshotFilter::new(
        &done,
        |t| {
            tables
                .iter()
                .find(|(s, _)| s.to_string() == t)
                .map(|(s, _)| s.clone())
        },
        from,
    )
}

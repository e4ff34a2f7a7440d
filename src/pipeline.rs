//! The pipeline: source transactions → mapping and encoding → batching → sink, with the one retry
//! loop of the process.
//!
//! Invariants:
//! - A target transaction is committed only at a source transaction boundary, and always with the
//!   position of the last source transaction it holds; several small source transactions may
//!   share one target transaction (commit when the queue is empty, the batch is large, or it is
//!   older than `batch_max_delay_ms`).
//! - On a transient error (network, restart, deadlock) everything is torn down and rebuilt from
//!   the checkpoint after a capped, jittered backoff: what was not committed is read again.
//! - When the target rejects a batch for a definite reason (a constraint), the pipeline restarts
//!   from the checkpoint in *careful* mode: each source transaction alone, each row under a
//!   savepoint, rejected rows into the dead-letter table, until it is past the failing batch.
//! - On shutdown the transaction in flight is finished and checkpointed (given up after
//!   [`SHUTDOWN_GRACE`], leaving the checkpoint where it was).
//!
//! May use: sources, sinks, the mapping plan, the snapshot (copies of newly mapped tables, the
//! handover filter), `state`, `telemetry`, `origin`, the model and the configuration; only
//! `commands` uses it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::mapping::Plan;
use crate::model::{Lsn, Position, SourceEvent, TableName, TxnBegin, TxnCommit, Way};
use crate::sink::mysql::MySqlSink;
use crate::sink::postgres::PgSink;
use crate::sink::{DeadLetter, Encoder, Sink};
use crate::snapshot::SnapshotFilter;
use crate::source::mysql::MysqlSource;
use crate::source::postgres::PgSource;
use crate::source::Source;
use crate::telemetry;

/// Rows (and transaction boundaries) encoded and waiting for the writer, as a multiple of
/// `chunk_rows`. Counting rows, not events, lets thousands of one-row transactions queue up —
/// so the writer groups them into large target transactions — while a huge transaction still
/// holds only a few chunks in memory. A sink that writes its buffered rows at once
/// ([`Sink::write_unit`]) gets that many rows more: while the target takes one write, the source
/// and the encoder prepare the next, so neither side waits for the other (PostgreSQL's 5,000
/// rows against 4 chunks had the target idle while they refilled: a 500k-row catch-up took
/// 6.3 s, not 4.7).
const ENCODED_CHUNKS_IN_FLIGHT: usize = 4;
/// Source events in flight between the source and the sink (each a chunk of at most
/// `chunk_rows` rows): with the chunk being built and the one being applied, this bounds the
/// decoded rows in memory, which for wide tables with two images per update matters.
const CHANNEL_EVENTS: usize = 2;
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
const BACKOFF_START: Duration = Duration::from_millis(200);
/// Low enough that a server back from an outage is found within seconds.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// An idle source position is checkpointed at most this often.
const IDLE_CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Capped exponential backoff with full jitter.
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: BACKOFF_START,
        }
    }
}

impl Backoff {
    pub fn next_delay(&mut self) -> Duration {
        use rand::RngExt;
        let cap = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        let jitter = rand::rng().random_range(0.5..=1.0);
        cap.mul_f64(jitter)
    }

    pub fn reset(&mut self) {
        self.next = BACKOFF_START;
    }
}

/// What the encoder stage hands to the writer: the source events, with rows mapped and encoded.
enum Encoded<C> {
    Begin(TxnBegin),
    Rows(Vec<Item<C>>),
    Commit(TxnCommit),
    Idle(Position),
}

/// One source row change after mapping and encoding.
enum Item<C> {
    /// Changes to apply.
    Apply(Vec<C>),
    /// Changes to apply one by one, each with the dead letter to record if the target rejects
    /// it (careful mode).
    Careful(Vec<(C, DeadLetter)>),
    /// The row cannot be mapped or encoded.
    Dead(DeadLetter),
    /// duplex's heartbeat row (of this pipeline, with its stamp; None for another pipeline's):
    /// nothing to write, its arrival is timed at commit.
    Heartbeat(Option<i64>),
}

/// Where a direction's heartbeat rows come from and whose they are.
struct HeartbeatRows {
    table: crate::model::TableName,
    pipeline: String,
}

impl HeartbeatRows {
    /// See [`crate::state::heartbeat::stamp`].
    fn stamp(&self, change: &crate::model::RowChange) -> Option<Option<i64>> {
        crate::state::heartbeat::stamp(change, &self.table, &self.pipeline)
    }
}

/// The encoder stage: maps and encodes each chunk on its own task, so encoding overlaps with
/// the writer waiting on PostgreSQL.
async fn encode_stage<E: Encoder>(
    mut encoder: E,
    mut rx: mpsc::Receiver<SourceEvent>,
    tx: mpsc::UnboundedSender<(Encoded<E::Change>, OwnedSemaphorePermit)>,
    budget: Arc<Semaphore>,
    careful: bool,
    filter: Arc<SnapshotFilter>,
    heartbeat: HeartbeatRows,
) {
    let mut txn_id = String::new();
    let mut txn_at: Option<Position> = None;
    // The whole budget: one event never asks for more (a rows event of a multi-row INSERT can
    // hold more rows than `chunk_rows`, and would wait for permits that cannot exist).
    let most = budget.available_permits().max(1);
    while let Some(event) = rx.recv().await {
        // The writer returns the permits when it has applied the event.
        let weight = match &event {
            SourceEvent::Rows(rows) => rows.len().clamp(1, most),
            _ => 1,
        };
        let Ok(permit) = budget
            .clone()
            .acquire_many_owned(weight.min(u32::MAX as usize) as u32)
            .await
        else {
            return;
        };
        let out = match event {
            SourceEvent::Begin(b) => {
                txn_id = b.id.clone();
                encoder.begin(&b);
                txn_at = b.at.as_ref().filter(|at| filter.may_cover(at)).cloned();
                Encoded::Begin(b)
            }
            SourceEvent::Rows(rows) => Encoded::Rows(
                rows.iter()
                    // Changes a snapshot copy already holds.
                    .filter(|change| !filter.covers(change, txn_at.as_ref()))
                    .map(|change| match heartbeat.stamp(change) {
                        Some(stamp) => Item::Heartbeat(stamp),
                        None => match encoder.prepare(change) {
                            Ok(changes) if careful => Item::Careful(
                                changes
                                    .into_iter()
                                    .map(|c| {
                                        let target = encoder.target_of(&c);
                                        let letter =
                                            DeadLetter::new(change, target, &txn_id, String::new());
                                        (c, letter)
                                    })
                                    .collect(),
                            ),
                            Ok(changes) => Item::Apply(changes),
                            Err((target, e)) => {
                                tracing::warn!(table = %change.table.name, txn = %txn_id, error = %e, "row set aside into the dead-letter table");
                                Item::Dead(DeadLetter::new(change, target, &txn_id, e.to_string()))
                            }
                        },
                    })
                    .collect(),
            ),
            SourceEvent::Commit(c) => Encoded::Commit(c),
            SourceEvent::Idle(p) => Encoded::Idle(p),
        };
        if tx.send((out, permit)).is_err() {
            return;
        }
    }
}

/// Why one run of the pipeline ended.
enum Stop {
    Shutdown,
    /// The target rejected a batch; re-run carefully up to and including the transaction after
    /// this position.
    Rejected(Option<Position>, Error),
}

/// Runs one direction until `shutdown` turns true. Returns an error only for what retrying
/// cannot cure. When `reload` announces a new mapping plan in `plans`, the transaction in flight
/// is finished and checkpointed, tables the new plan maps but never copied are copied (when
/// `[snapshot] on_start` allows), and the direction goes on from its checkpoint with the new plan.
pub async fn run(
    way: Way,
    cfg: &Config,
    plans: Arc<arc_swap::ArcSwap<Plan>>,
    mut shutdown: watch::Receiver<bool>,
    mut reload: watch::Receiver<u64>,
) -> Result<()> {
    let mut backoff = Backoff::default();
    let mut attempt = 0u32;
    let mut careful_until: Option<Option<Position>> = None;
    crate::telemetry::live().activate(way);
    loop {
        let plan = plans.load_full();
        // This run stops on shutdown or on a reload announced after it started.
        reload.borrow_and_update();
        let (stop_tx, mut stop) = watch::channel(*shutdown.borrow());
        let forwarder = {
            let mut shutdown = shutdown.clone();
            let mut reload = reload.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = shutdown.changed() => {}
                    _ = reload.changed() => {}
                }
                let _ = stop_tx.send(true);
            })
        };
        let started = Instant::now();
        let careful = careful_until.take();
        let outcome = match way {
            Way::Forward => run_forward_once(cfg, plan.clone(), &mut stop, careful).await,
            Way::Reverse => run_reverse_once(cfg, plan.clone(), &mut stop, careful).await,
        };
        forwarder.abort();
        match outcome {
            Ok(Stop::Shutdown) if *shutdown.borrow() => return Ok(()),
            Ok(Stop::Shutdown) => {
                let plan = plans.load_full();
                tracing::info!(
                    direction = way.as_str(),
                    tables = plan.tables.len(),
                    "continuing with the reloaded mappings"
                );
                if cfg.snapshot_on_start()
                    && !copy_new_tables(way, cfg, plan, shutdown.clone()).await?
                {
                    return Ok(());
                }
            }
            Ok(Stop::Rejected(at, e)) => {
                tracing::warn!(direction = way.as_str(), error = %e, after = ?at.as_ref().map(|p| p.to_string()), "target rejected a batch; re-applying row by row to set the bad rows aside");
                careful_until = Some(at);
            }
            Err(e) if e.is_transient() => {
                if started.elapsed() > Duration::from_secs(30) {
                    backoff.reset();
                    attempt = 0;
                }
                attempt += 1;
                let delay = backoff.next_delay();
                metrics::counter!(telemetry::ERRORS, "direction" => way.as_str(), "kind" => e.kind().as_str()).increment(1);
                metrics::counter!(telemetry::RECONNECTS, "direction" => way.as_str(), "side" => way.failed_side(&e)).increment(1);
                crate::telemetry::live().failed(way, &e, Some((attempt, delay)));
                tracing::warn!(direction = way.as_str(), error = %e, attempt, retry_in_ms = delay.as_millis() as u64, "transient error; restarting from the checkpoint");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
                // A schema may have changed under the plan (a target column's type, say, which
                // makes every write fail the same way): check the running mapping set against
                // the live schemas again before the next attempt. Unreachable servers keep the
                // old plan; the files on disk are adopted only by SIGHUP.
                match crate::mapping::recheck_plan(cfg, &plans.load_full()).await {
                    Ok(fresh) => plans.store(Arc::new(fresh)),
                    Err(e) if e.is_transient() => {}
                    Err(e) => {
                        metrics::counter!(telemetry::ERRORS, "direction" => way.as_str(), "kind" => e.kind().as_str()).increment(1);
                        crate::telemetry::live().failed(way, &e, None);
                        return Err(e.context("the mappings no longer fit the live schemas"));
                    }
                }
            }
            Err(e) => {
                metrics::counter!(telemetry::ERRORS, "direction" => way.as_str(), "kind" => e.kind().as_str()).increment(1);
                crate::telemetry::live().failed(way, &e, None);
                return Err(e);
            }
        }
        if *shutdown.borrow() {
            return Ok(());
        }
    }
}

/// Copies the tables of `plan` that were never copied in this direction, resuming after
/// transient errors. Returns false when it stopped for shutdown (the copy resumes on the next
/// start).
pub async fn copy_new_tables(
    way: Way,
    cfg: &Config,
    plan: Arc<Plan>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<bool> {
    let mut backoff = Backoff::default();
    crate::telemetry::live().set_state(way, crate::telemetry::State::Snapshot);
    loop {
        let copied = crate::snapshot::run(
            way,
            cfg,
            plan.clone(),
            &crate::snapshot::Request::default(),
            shutdown.clone(),
        )
        .await;
        match copied {
            Ok(reports) => return Ok(!reports.iter().any(|r| !r.finished) && !*shutdown.borrow()),
            Err(e) if e.is_transient() => {
                let d = backoff.next_delay();
                tracing::warn!(direction = way.as_str(), error = %e, retry_in_ms = d.as_millis() as u64, "copy interrupted; resuming after the last chunk copied");
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = shutdown.changed() => return Ok(false),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

async fn run_forward_once(
    cfg: &Config,
    plan: Arc<Plan>,
    shutdown: &mut watch::Receiver<bool>,
    careful_until: Option<Option<Position>>,
) -> Result<Stop> {
    let mut sink = PgSink::connect(
        &cfg.postgres,
        plan.clone(),
        &cfg.pipeline,
        cfg.source_time_zone,
    )
    .await?;
    let from = match sink.checkpoint().await? {
        Some(p) => Some(p),
        None => cfg
            .mysql
            .start_position
            .as_deref()
            .map(|s| s.parse().map(Position::Mysql))
            .transpose()?,
    };
    let filter =
        crate::snapshot::filter(Way::Forward, &mut sink, cfg, &plan, from.as_ref()).await?;
    let mut watched: std::collections::HashSet<_> = plan.forward_sources().into_iter().collect();
    watched.insert(crate::state::heartbeat::source_table(Way::Forward, cfg));
    if plan.tables.iter().any(|t| t.has_newest()) {
        // The reverse direction's halves of `newest` columns come back in its own transactions.
        let relays = crate::model::TableName {
            schema: cfg.mysql.duplex_database.clone(),
            name: crate::state::newest::TABLE.to_string(),
        };
        watched.insert(relays.clone());
        sink.read_relays(relays);
    }
    let source = MysqlSource::new(
        cfg.mysql.clone(),
        cfg.pipeline.clone(),
        watched,
        cfg.apply.chunk_rows,
    )
    .with_copies(filter.oldest_positions());
    drive(
        Way::Forward,
        cfg,
        &mut sink,
        source,
        from,
        shutdown,
        careful_until,
        None,
        filter,
    )
    .await
}

/// Refuses to stream PostgreSQL's changes when MySQL's checkpoint of this direction is behind
/// the slot: PostgreSQL would start at the slot and the CRM's changes in between would be
/// skipped. It happens when MySQL lost its last commits (an OS crash under
/// `innodb_flush_log_at_trx_commit = 2` or `sync_binlog = 0`) or was restored from a backup.
/// Copies of every table the direction streams, taken after the slot's position, hold those
/// changes: with them the stream goes on.
async fn refuse_a_gap(
    cfg: &Config,
    client: &tokio_postgres::Client,
    checkpoint: Option<&Position>,
    tables: &[TableName],
    copied: &std::collections::HashMap<TableName, Position>,
) -> Result<()> {
    let Some(Position::Postgres(at)) = checkpoint else {
        return Ok(());
    };
    let slot = crate::model::slot_name(&cfg.pipeline);
    let Some(confirmed) = slot_confirmed(cfg, client).await? else {
        return Ok(());
    };
    if *at >= confirmed {
        return Ok(());
    }
    let slot_at = Position::Postgres(confirmed);
    let uncovered: Vec<String> = tables
        .iter()
        .filter(|t| !copied.get(*t).is_some_and(|c| c.is_after(&slot_at)))
        .map(|t| t.to_string())
        .collect();
    if uncovered.is_empty() {
        tracing::warn!(checkpoint = %at, slot = %confirmed, "MySQL's checkpoint is behind the slot; copies taken after it hold the changes in between");
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Invariant,
        format!(
            "MySQL's checkpoint of {} ({at}) is behind the replication slot {slot} ({confirmed}): MySQL lost its last commits (an OS crash under innodb_flush_log_at_trx_commit = 2 or sync_binlog = 0) or was restored from a backup, \
             and the CRM's changes in between are no longer in the slot. Fix: resync the tables replicated from PostgreSQL — {} — with `duplex snapshot --table <table>` for each, then start duplex",
            crate::model::REVERSE,
            uncovered
                .iter()
                .map(|t| format!("`duplex snapshot --table {t}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ))
}

/// The slot's confirmed position (`None`: no such slot, or none yet).
async fn slot_confirmed(cfg: &Config, client: &tokio_postgres::Client) -> Result<Option<Lsn>> {
    let slot = crate::model::slot_name(&cfg.pipeline);
    let row = client
        .query_opt(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| Error::from_pg(e, false, "reading the replication slot's position"))?;
    Ok(row
        .and_then(|r| r.get::<_, Option<String>>(0))
        .and_then(|s| s.parse::<Lsn>().ok()))
}

/// At the reverse direction's start: MySQL's checkpoint ahead of PostgreSQL's WAL means
/// PostgreSQL was restored from a backup (or replaced by a server without that history). The
/// stream would start at the checkpoint and skip every CRM change written since below it, and
/// the positions of earlier copies name another history, so none of them can be trusted to
/// hold the gap: refused, naming the way to start the pipeline over.
async fn refuse_a_future(
    client: &tokio_postgres::Client,
    checkpoint: Option<&Position>,
) -> Result<()> {
    let Some(Position::Postgres(at)) = checkpoint else {
        return Ok(());
    };
    let now: String = client
        .query_one(
            "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text",
            &[],
        )
        .await
        .map_err(|e| Error::from_pg(e, false, "reading PostgreSQL's WAL position"))?
        .get(0);
    let now: Lsn = now.parse()?;
    if *at <= now {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Invariant,
        format!(
            "MySQL's checkpoint of {} ({at}) is ahead of PostgreSQL's WAL ({now}): PostgreSQL was restored from a backup or replaced by a server without that history, \
             so the CRM's changes written since would be skipped, and the positions of earlier copies belong to the old history. \
             Fix: start the pipeline over: `duplex setup --start-over`, then start duplex (it copies every table again, removing rows the source no longer has)",
            crate::model::REVERSE,
        ),
    ))
}

async fn run_reverse_once(
    cfg: &Config,
    plan: Arc<Plan>,
    shutdown: &mut watch::Receiver<bool>,
    careful_until: Option<Option<Position>>,
) -> Result<Stop> {
    let mut sink = MySqlSink::connect(
        &cfg.mysql,
        plan.clone(),
        &cfg.pipeline,
        cfg.source_time_zone,
    )
    .await?;
    let from = sink.checkpoint().await?;
    let filter =
        crate::snapshot::filter(Way::Reverse, &mut sink, cfg, &plan, from.as_ref()).await?;
    // Tables this mapping set replicates from PostgreSQL that the publication lacks (a reload
    // mapped them): added now, with the set already in place.
    let client =
        crate::connect::postgres(&cfg.postgres, &format!("duplex {}", cfg.pipeline)).await?;
    let streamed: Vec<TableName> = plan.reverse.iter().map(|r| r.source.clone()).collect();
    refuse_a_gap(
        cfg,
        &client,
        from.as_ref(),
        &streamed,
        &filter.oldest_positions(),
    )
    .await?;
    refuse_a_future(&client, from.as_ref()).await?;
    let committed = match &from {
        Some(Position::Postgres(l)) => *l,
        _ => Lsn(0),
    };
    let added = crate::source::postgres::publication::extend(cfg, &client, &plan).await?;
    if !added.is_empty() {
        let names: Vec<String> = added.iter().map(ToString::to_string).collect();
        tracing::info!(tables = %names.join(", "), "added to the publication: streamed from now on");
    }
    drop(client);
    let (flushed_tx, flushed_rx) = watch::channel(committed);
    let slot = crate::model::slot_name(&cfg.pipeline);
    let source = PgSource::new(
        cfg.postgres.clone(),
        slot.clone(),
        slot,
        cfg.pipeline.clone(),
        cfg.apply.chunk_rows,
        flushed_rx,
    )
    .with_copies(filter.oldest_positions());
    drive(
        Way::Reverse,
        cfg,
        &mut sink,
        source,
        from,
        shutdown,
        careful_until,
        Some(flushed_tx),
        filter,
    )
    .await
}

/// Source → encoder → writer for one run; `flushed` learns every committed position.
#[allow(clippy::too_many_arguments)]
async fn drive<S: Sink, Src: Source + Send + 'static>(
    way: Way,
    cfg: &Config,
    sink: &mut S,
    mut source: Src,
    from: Option<Position>,
    shutdown: &mut watch::Receiver<bool>,
    careful_until: Option<Option<Position>>,
    flushed: Option<watch::Sender<Lsn>>,
    filter: SnapshotFilter,
) -> Result<Stop> {
    tracing::info!(direction = way.as_str(), from = %from.as_ref().map(|p| p.to_string()).unwrap_or_else(|| "the source's current end".into()), careful = careful_until.is_some(), "pipeline starting");
    let (tx, rx) = mpsc::channel(CHANNEL_EVENTS);
    let start = from.clone();
    let source_task = tokio::spawn(async move { source.run(start, tx).await });
    let (etx, erx) = mpsc::unbounded_channel();
    // A chunk's rows plus its Begin and Commit must fit, or a whole chunk could never be let in.
    let budget = Arc::new(Semaphore::new(
        cfg.apply.chunk_rows.max(1) * ENCODED_CHUNKS_IN_FLIGHT + sink.write_unit() + 2,
    ));
    let encoder_task = tokio::spawn(encode_stage(
        sink.encoder(),
        rx,
        etx,
        budget,
        careful_until.is_some(),
        Arc::new(filter),
        HeartbeatRows {
            table: crate::state::heartbeat::source_table(way, cfg),
            pipeline: cfg.pipeline.clone(),
        },
    ));
    let mut applier = Applier {
        way,
        sink,
        batch_max_rows: cfg.apply.batch_max_rows,
        batch_max_delay: Duration::from_millis(cfg.apply.batch_max_delay_ms),
        answer_limit: Duration::from_secs(match way {
            Way::Forward => cfg.postgres.read_timeout_s,
            Way::Reverse => cfg.mysql.read_timeout_s,
        }),
        committed: from.clone(),
        last_seen: from,
        careful_until,
        flushed,
    };
    let result = applier.apply(erx, shutdown).await;
    encoder_task.abort();
    let source_result = if source_task.is_finished() {
        source_task.await.ok()
    } else {
        source_task.abort();
        None
    };
    match result {
        Err(e)
            if e.kind() == ErrorKind::SourceTransient && e.message().contains("source stopped") =>
        {
            // The channel closed: the source's own error says why.
            match source_result {
                Some(Err(se)) => Err(se),
                _ => Err(e),
            }
        }
        other => other,
    }
}

/// One target round trip (or a few) within `limit` (the target's `read_timeout_s`): a target
/// that does not answer (a connection dead without a reset, a blackholed address) fails the
/// batch like a lost connection, and the direction connects anew. A server that is only slow,
/// or waits on a lock, that long is retried the same way.
async fn within_limit<T>(
    limit: Duration,
    what: &str,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(limit, work).await {
        Ok(done) => done,
        Err(_) => Err(Error::new(
            ErrorKind::SinkTransient,
            format!(
                "the target did not answer {what} within {} s (read_timeout_s): its connection is taken for dead",
                limit.as_secs()
            ),
        )),
    }
}

struct Applier<'a, S: Sink> {
    way: Way,
    sink: &'a mut S,
    batch_max_rows: usize,
    batch_max_delay: Duration,
    /// A target round trip without an answer for this long: the connection is taken for dead
    /// (the target's `read_timeout_s`).
    answer_limit: Duration,
    /// The position of the last committed target transaction.
    committed: Option<Position>,
    /// The position of the last source transaction received (committed or not).
    last_seen: Option<Position>,
    /// Some(x): careful mode until a transaction after position x is committed.
    careful_until: Option<Option<Position>>,
    /// Told every committed PostgreSQL position (the reverse direction's slot acknowledgement).
    flushed: Option<watch::Sender<Lsn>>,
}

struct Batch {
    started: Instant,
    rows: usize,
    txns: usize,
    last: Option<(Position, i64)>,
    /// Stamps of the heartbeats in this batch, timed when it commits.
    heartbeats: Vec<i64>,
    /// Source transactions that were duplex's own — only a heartbeat, or the other direction's
    /// writes read back — not counted as applied.
    own_txns: usize,
}

impl<S: Sink> Applier<'_, S> {
    async fn begin(&mut self) -> Result<()> {
        let limit = self.answer_limit;
        within_limit(limit, "BEGIN", self.sink.begin()).await
    }

    async fn push(&mut self, c: <S::Encoder as Encoder>::Change) -> Result<()> {
        let limit = self.answer_limit;
        within_limit(limit, "a write", self.sink.push(c)).await
    }

    async fn push_careful(&mut self, c: <S::Encoder as Encoder>::Change) -> Result<()> {
        let limit = self.answer_limit;
        within_limit(limit, "a write", self.sink.push_careful(c)).await
    }

    async fn commit_at(&mut self, at: &Position) -> Result<()> {
        let limit = self.answer_limit;
        within_limit(limit, "COMMIT", self.sink.commit(at)).await
    }

    /// Rolls back; a target that does not answer is left (its connection goes with the sink).
    async fn rollback(&mut self) {
        let _ = tokio::time::timeout(self.answer_limit, self.sink.rollback()).await;
    }

    fn careful(&self) -> bool {
        self.careful_until.is_some()
    }

    async fn apply(
        &mut self,
        mut rx: mpsc::UnboundedReceiver<(
            Encoded<<S::Encoder as Encoder>::Change>,
            OwnedSemaphorePermit,
        )>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Stop> {
        let mut batch: Option<Batch> = None;
        let mut txn_id: Option<String> = None;
        let mut stopping: Option<Instant> = None;
        let mut last_idle_checkpoint = Instant::now();
        let mut streaming = false;
        // Whether the transaction being received held a heartbeat, and any other row.
        let (mut txn_heartbeat, mut txn_other) = (false, false);
        // Whether the transaction being received is duplex's own write read back.
        let mut txn_own = false;
        loop {
            let ready_to_commit = txn_id.is_none() && batch.as_ref().is_some_and(|b| b.txns > 0);
            if stopping.is_none() && *shutdown.borrow() {
                stopping = Some(Instant::now());
            }
            if let Some(since) = stopping {
                if let Some(stop) = self
                    .stop_if_due(since, &txn_id, ready_to_commit, &mut batch)
                    .await?
                {
                    return Ok(stop);
                }
            }
            let event = if ready_to_commit {
                match rx.try_recv() {
                    Ok(ev) => Some(ev),
                    Err(mpsc::error::TryRecvError::Empty) => {
                        if let Err(e) = self.commit(&mut batch).await {
                            return self.rejected(e).await;
                        }
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                }
            } else if stopping.is_some() {
                match tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
                    Ok(ev) => ev,
                    Err(_) => continue,
                }
            } else {
                tokio::select! {
                    ev = rx.recv() => ev,
                    _ = shutdown.changed() => continue,
                }
            };
            let Some(event) = event else {
                return self.source_stopped(ready_to_commit, &mut batch).await;
            };
            // The permit returns to the encoder's budget once this event is handled.
            let (event, _permit) = event;
            if !streaming {
                // Both sides answer: the sink connected before, the source has sent something.
                streaming = true;
                crate::telemetry::live().set_state(self.way, crate::telemetry::State::Streaming);
            }
            match event {
                Encoded::Begin(b) => {
                    self.begin_txn(&mut batch).await?;
                    txn_own = b.own;
                    txn_id = Some(b.id);
                    (txn_heartbeat, txn_other) = (false, false);
                }
                Encoded::Rows(items) => {
                    if let Some(stop) = self
                        .push_rows(items, &mut batch, &mut txn_heartbeat, &mut txn_other)
                        .await?
                    {
                        return Ok(stop);
                    }
                }
                Encoded::Commit(c) => {
                    txn_id = None;
                    if let Some(stop) = self
                        .end_txn(
                            c.position,
                            c.commit_time_us,
                            &mut batch,
                            txn_heartbeat,
                            txn_other,
                            txn_own,
                        )
                        .await?
                    {
                        return Ok(stop);
                    }
                }
                Encoded::Idle(pos) => {
                    self.idle_checkpoint(pos, &batch, &mut last_idle_checkpoint)
                        .await?
                }
            }
        }
    }

    /// Shutdown was asked for at `since`: stops once no source transaction is in flight
    /// (committing the complete ones first), or when the one in flight outlasts
    /// [`SHUTDOWN_GRACE`]. `Ok(None)`: not yet.
    async fn stop_if_due(
        &mut self,
        since: Instant,
        txn_id: &Option<String>,
        ready_to_commit: bool,
        batch: &mut Option<Batch>,
    ) -> Result<Option<Stop>> {
        if txn_id.is_none() {
            if ready_to_commit {
                if let Err(e) = self.commit(batch).await {
                    return self.rejected(e).await.map(Some);
                }
            }
            self.rollback().await;
            return Ok(Some(Stop::Shutdown));
        }
        if since.elapsed() > SHUTDOWN_GRACE {
            tracing::warn!(
                "the transaction in flight did not finish in time; leaving it for the next start"
            );
            self.rollback().await;
            return Ok(Some(Stop::Shutdown));
        }
        Ok(None)
    }

    /// The channel closed: commits the complete source transactions, then reports that the
    /// source stopped (the caller asks the source why).
    async fn source_stopped(
        &mut self,
        ready_to_commit: bool,
        batch: &mut Option<Batch>,
    ) -> Result<Stop> {
        if ready_to_commit {
            if let Err(e) = self.commit(batch).await {
                return self.rejected(e).await;
            }
        }
        self.rollback().await;
        Err(Error::new(ErrorKind::SourceTransient, "source stopped"))
    }

    /// A source transaction begins: opens a target transaction unless a batch is open.
    async fn begin_txn(&mut self, batch: &mut Option<Batch>) -> Result<()> {
        if batch.is_none() {
            self.begin().await?;
            *batch = Some(Batch {
                started: Instant::now(),
                rows: 0,
                txns: 0,
                last: None,
                heartbeats: Vec::new(),
                own_txns: 0,
            });
        }
        Ok(())
    }

    /// Writes rows of the source transaction being received: in careful mode a row the target
    /// rejects becomes a dead letter; heartbeats are only noted. `Ok(Some(_))`: the apply ends.
    async fn push_rows(
        &mut self,
        items: Vec<Item<<S::Encoder as Encoder>::Change>>,
        batch: &mut Option<Batch>,
        txn_heartbeat: &mut bool,
        txn_other: &mut bool,
    ) -> Result<Option<Stop>> {
        if let Some(b) = batch.as_mut() {
            b.rows += items.len();
        }
        for item in items {
            if !matches!(item, Item::Heartbeat(_)) {
                *txn_other = true;
            }
            match item {
                Item::Apply(changes) => {
                    for c in changes {
                        if let Err(e) = self.push(c).await {
                            return self.rejected(e).await.map(Some);
                        }
                    }
                }
                Item::Careful(changes) => {
                    for (c, mut letter) in changes {
                        if !self.careful() {
                            if let Err(e) = self.push(c).await {
                                return self.rejected(e).await.map(Some);
                            }
                            continue;
                        }
                        match self.push_careful(c).await {
                            Ok(()) => {}
                            Err(e) if !e.is_transient() => {
                                tracing::warn!(table = %letter.target_table, txn = %letter.txn_id, error = %e, "row rejected by the target; set aside into the dead-letter table");
                                letter.reason = e.to_string().replace('\0', "\\0");
                                self.sink.dead_letter(letter);
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
                Item::Dead(letter) => self.sink.dead_letter(letter),
                Item::Heartbeat(stamp) => {
                    *txn_heartbeat = true;
                    if let (Some(b), Some(stamp)) = (batch.as_mut(), stamp) {
                        b.heartbeats.push(stamp);
                    }
                    continue;
                }
            }
        }
        Ok(None)
    }

    /// A source transaction ended at `position`: it joins the batch, which commits when full
    /// (or at once in careful mode). `Ok(Some(_))`: the apply ends.
    async fn end_txn(
        &mut self,
        position: Position,
        commit_time_us: i64,
        batch: &mut Option<Batch>,
        txn_heartbeat: bool,
        txn_other: bool,
        own: bool,
    ) -> Result<Option<Stop>> {
        self.last_seen = Some(position.clone());
        if let Some(b) = batch.as_mut() {
            b.txns += 1;
            if (txn_heartbeat && !txn_other) || own {
                b.own_txns += 1;
            }
            b.last = Some((position, commit_time_us));
        }
        let full = batch.as_ref().is_some_and(|b| {
            b.rows >= self.batch_max_rows || b.started.elapsed() >= self.batch_max_delay
        });
        if self.careful() || full {
            if let Err(e) = self.commit(batch).await {
                return self.rejected(e).await.map(Some);
            }
        }
        Ok(None)
    }

    /// The source is idle at `pos`: checkpoints it (at most every [`IDLE_CHECKPOINT_EVERY`])
    /// when no batch is open and it is past the last commit.
    async fn idle_checkpoint(
        &mut self,
        pos: Position,
        batch: &Option<Batch>,
        last_idle_checkpoint: &mut Instant,
    ) -> Result<()> {
        let ahead = self.committed.as_ref().is_none_or(|c| pos.is_after(c));
        if batch.is_none() && ahead && last_idle_checkpoint.elapsed() >= IDLE_CHECKPOINT_EVERY {
            *last_idle_checkpoint = Instant::now();
            self.begin().await?;
            self.commit_at(&pos).await?;
            self.acknowledge(&pos);
            self.committed = Some(pos);
        }
        Ok(())
    }

    /// Handles an error of the fast path: definite target errors restart in careful mode.
    async fn rejected(&mut self, e: Error) -> Result<Stop> {
        self.rollback().await;
        if e.kind() == ErrorKind::SinkDefinite && !self.careful() {
            // Carefully up to the newest transaction received, and the one after it (which may
            // have been arriving when the batch failed).
            Ok(Stop::Rejected(self.last_seen.clone(), e))
        } else {
            Err(e)
        }
    }

    async fn commit(&mut self, batch: &mut Option<Batch>) -> Result<()> {
        let Some(b) = batch.take() else { return Ok(()) };
        let Some((position, commit_time_us)) = b.last else {
            self.rollback().await;
            return Ok(());
        };
        let t0 = Instant::now();
        self.commit_at(&position).await?;
        tracing::debug!(position = %position, txns = b.txns, rows = b.rows, "committed");
        let way = self.way.as_str();
        metrics::histogram!(telemetry::APPLY_BATCH_SECONDS, "direction" => way)
            .record(t0.elapsed().as_secs_f64());
        metrics::counter!(telemetry::TXNS_APPLIED, "direction" => way)
            .increment((b.txns - b.own_txns) as u64);
        metrics::counter!(telemetry::BATCHES_COMMITTED, "direction" => way).increment(1);
        let now_us = crate::telemetry::live::now_us();
        if commit_time_us > 0 {
            metrics::gauge!(telemetry::SOURCE_COMMIT_LAG_SECONDS, "direction" => way)
                .set((now_us - commit_time_us).max(0) as f64 / 1e6);
        }
        if let Some(Some(until)) = &self.careful_until {
            let past = position.is_after(until);
            if past {
                tracing::info!(position = %position, "past the rejected batch; back to batched apply");
                self.careful_until = None;
            }
        } else if self.careful_until.is_some() {
            self.careful_until = None;
        }
        self.acknowledge(&position);
        for stamp in b.heartbeats {
            crate::telemetry::live().heartbeat_arrived(self.way, stamp, now_us);
        }
        self.committed = Some(position);
        Ok(())
    }

    /// A target transaction committed at `position`: the live state learns it, and the source
    /// may report a PostgreSQL position to the server.
    fn acknowledge(&self, position: &Position) {
        if let (Some(tx), Position::Postgres(lsn)) = (&self.flushed, position) {
            let _ = tx.send(*lsn);
        }
        crate::telemetry::live().committed(self.way, position);
    }
}

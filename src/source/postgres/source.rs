//! The PostgreSQL source: reads a logical replication slot with pgoutput and turns each
//! committed transaction into [`SourceEvent`]s.
//!
//! - Transactions carrying a replication origin whose name starts with the configured prefix
//!   (duplex's own writes, `duplex_<pipeline>_…`) are not passed on, no echo — but for the
//!   `newest` relay messages they carry (see `state::newest`), which are passed on as rows of a
//!   synthetic table inside a transaction marked own.
//! - A transaction that is dropped or touches no published table still yields an
//!   [`SourceEvent::Idle`] at its end LSN, and so do keepalives while no transaction is open, so
//!   the checkpoint (and with it the slot) moves forward on an idle or echo-only stream.
//! - The LSN reported to the server as flushed comes only from `flushed`: the position the
//!   target has committed. The slot never confirms anything the target does not have.
//!
//! [`PgSource::run`] is a loop of three steps: receive the next replication message (sending
//! the standby status updates meanwhile), decode it into the reader's state (the open
//! transaction, the relations and types the stream has described), hand over what it completed.
//! Owns the mapping of pgoutput relations and tuples to the model's tables and row changes. May
//! use the sibling modules (the replication protocol, the pgoutput decoder, text cell decoding),
//! the model, the configuration, and the checkpoint table's name (to recognise duplex's own
//! writes).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::decode::{decode_text, SESSION_SETTINGS};
use super::pgoutput::{self, Cell, OldKind, PgOutput, Relation, Tuple};
use super::stream::{ReplicationConn, ReplicationMessage, ReplicationStream};
use crate::config::PostgresConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::model::{
    ColumnSchema, Image, Lsn, Op, Position, RowChange, SourceEvent, SourceType, TableName,
    TableSchema, TargetKind, TxnBegin, TxnCommit, Value,
};
use crate::source::Source;
use crate::state::newest;

/// Status updates go out at least this often, so the server neither times us out nor keeps
/// WAL it could release.
const STATUS_EVERY: Duration = Duration::from_secs(5);
/// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

pub struct PgSource {
    cfg: PostgresConfig,
    slot: String,
    publication: String,
    /// The pipeline: transactions of its origins, or marked with its checkpoint row, are
    /// duplex's own and dropped.
    pipeline: String,
    /// Transactions whose origin name starts with this are duplex's own: dropped.
    own_origin_prefix: String,
    chunk_rows: usize,
    flushed: watch::Receiver<Lsn>,
    /// Per copied table, the oldest position its copy was taken at.
    copied: HashMap<TableName, Position>,
}

impl PgSource {
    pub fn new(
        cfg: PostgresConfig,
        slot: String,
        publication: String,
        pipeline: String,
        chunk_rows: usize,
        flushed: watch::Receiver<Lsn>,
    ) -> Self {
        PgSource {
            cfg,
            slot,
            publication,
            own_origin_prefix: crate::model::own_prefix(&pipeline),
            pipeline,
            chunk_rows: chunk_rows.max(1),
            flushed,
            copied: HashMap::new(),
        }
    }
}

/// A table as the stream describes it, with the type family of each column.
struct Table {
    schema: Arc<TableSchema>,
    kinds: Vec<TargetKind>,
}

/// The type family of a column type oid: built-in types by name, others (enums, domains over
/// text) from their Type message, else text.
fn kind_of(oid: u32, custom: &HashMap<u32, String>) -> TargetKind {
    match tokio_postgres::types::Type::from_oid(oid) {
        Some(t) => TargetKind::from_pg_typname(t.name(), 'b'),
        None => match custom.get(&oid) {
            Some(_) => TargetKind::Text,
            None => TargetKind::Unsupported,
        },
    }
}

fn table_of(rel: &Relation, custom: &HashMap<u32, String>) -> Table {
    let kinds: Vec<TargetKind> = rel
        .columns
        .iter()
        .map(|c| kind_of(c.type_oid, custom))
        .collect();
    let columns = rel
        .columns
        .iter()
        .zip(&kinds)
        .map(|(c, k)| ColumnSchema {
            name: c.name.clone(),
            ty: SourceType::Postgres(k.clone()),
            nullable: true,
            column_type: format!("oid {}", c.type_oid),
        })
        .collect();
    let primary_key = rel
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.key)
        .map(|(i, _)| i)
        .collect();
    let namespace = if rel.namespace.is_empty() {
        "pg_catalog"
    } else {
        &rel.namespace
    };
    Table {
        schema: Arc::new(TableSchema {
            name: TableName::new(namespace, rel.name.clone()),
            columns,
            primary_key,
        }),
        kinds,
    }
}

fn values(t: &Table, tuple: &Tuple) -> Result<Vec<Value>> {
    if tuple.0.len() != t.kinds.len() {
        return Err(Error::new(
            ErrorKind::SourceDefinite,
            format!(
                "a row of {} has {} columns, its relation {}",
                t.schema.name,
                tuple.0.len(),
                t.kinds.len()
            ),
        ));
    }
    tuple
        .0
        .iter()
        .zip(&t.kinds)
        .zip(&t.schema.columns)
        .map(|((cell, kind), col)| match cell {
            Cell::Null => Ok(Value::Null),
            Cell::Unchanged => Ok(Value::Unchanged),
            // A value that cannot be read stops nothing: only a mapped column's is written,
            // and then the row becomes a dead letter with why.
            Cell::Text(b) => Ok(decode_text(kind, b).unwrap_or_else(|e| {
                Value::Unreadable(
                    e.context(format!("{}.{}", t.schema.name, col.name))
                        .to_string(),
                )
            })),
            Cell::Binary(_) => Err(Error::new(
                ErrorKind::SourceDefinite,
                "binary pgoutput cells are not requested and not read",
            )),
        })
        .collect()
}

/// The transaction being read.
struct OpenTxn {
    id: String,
    commit_time_us: i64,
    /// The LSN of the commit record.
    at: Lsn,
    own: bool,
    begun: bool,
    /// A change has been seen (the first one decides whether the marker rule applies).
    seen: bool,
    rows: Vec<RowChange>,
}

impl PgSource {
    /// The copies of published tables: per table the oldest position its copy was taken at. A
    /// TRUNCATE before it is held by the copy and passed.
    pub fn with_copies(mut self, copied: HashMap<TableName, Position>) -> Self {
        self.copied = copied;
        self
    }
}

impl Source for PgSource {
    async fn run(&mut self, from: Option<Position>, tx: mpsc::Sender<SourceEvent>) -> Result<()> {
        let start = match from {
            Some(Position::Postgres(l)) => l,
            Some(other) => {
                return Err(Error::new(
                    ErrorKind::Invariant,
                    format!("PostgreSQL source asked to start from {other}"),
                ))
            }
            // 0/0: the slot's confirmed position.
            None => Lsn(0),
        };
        let mut stream = self.start_replication(start).await?;
        tracing::info!(slot = %self.slot, from = %start, "logical replication started");
        let mut reader = Reader {
            cfg: &self.cfg,
            own_origin_prefix: &self.own_origin_prefix,
            pipeline: &self.pipeline,
            chunk_rows: self.chunk_rows,
            copied: &self.copied,
            tables: HashMap::new(),
            custom_types: HashMap::new(),
            txn: None,
        };
        let limit = Duration::from_secs(self.cfg.read_timeout_s);
        let mut status = Status::new(&mut self.flushed, limit);
        loop {
            let Some(message) = status.receive(&mut stream).await? else {
                return Ok(());
            };
            let Some(out) = reader.decode(message)? else {
                continue;
            };
            if !reader.hand_over(out, &tx).await {
                return Ok(());
            }
        }
    }
}

impl PgSource {
    /// Connects for replication and starts streaming the slot from `start`.
    async fn start_replication(&self, start: Lsn) -> Result<ReplicationStream> {
        let conn =
            ReplicationConn::connect_with(&self.cfg, "duplex reader", SESSION_SETTINGS).await?;
        conn.start_replication(
            &self.slot,
            start,
            &[
                ("proto_version", "1"),
                (
                    "publication_names",
                    &format!("\"{}\"", self.publication.replace('"', "\"\"")),
                ),
                ("messages", "true"),
            ],
        )
        .await
        .inspect_err(|e| {
            if e.message().contains("(SQLSTATE 55006)") {
                self.stale_reader_found();
            }
        })
    }

    /// The slot is held by another connection: with the pipeline lock held by this process,
    /// that is a reader of this pipeline gone silent (its server side waits for
    /// `wal_sender_timeout`, 60 s by default). It is ended in the background, so the retry
    /// finds the slot free.
    fn stale_reader_found(&self) {
        let (cfg, slot) = (self.cfg.clone(), self.slot.clone());
        tokio::spawn(async move {
            let Ok(client) = crate::connect::postgres(&cfg, "duplex reader cleanup").await else {
                return;
            };
            let ended = client
                .query(
                    "SELECT active_pid, pg_terminate_backend(active_pid) FROM pg_replication_slots \
                     WHERE slot_name = $1 AND active_pid IS NOT NULL AND active_pid <> pg_backend_pid()",
                    &[&slot],
                )
                .await;
            match ended {
                Ok(rows) => {
                    for r in rows {
                        tracing::warn!(slot = %slot, pid = r.get::<_, i32>(0), "the slot was held by a connection of this pipeline that went silent: ended it");
                    }
                }
                Err(e) => {
                    tracing::debug!(slot = %slot, error = %e, "could not end the slot's stale reader")
                }
            }
        });
    }
}

/// The standby status updates: the LSN the target has flushed, and the last one reported; and
/// the watch on a silent server.
struct Status<'a> {
    flushed: &'a mut watch::Receiver<Lsn>,
    every: tokio::time::Interval,
    reported: Lsn,
    /// A server that sends nothing for this long while duplex waits is taken for dead.
    limit: Duration,
    /// When the server last sent something.
    heard: Instant,
}

impl<'a> Status<'a> {
    fn new(flushed: &'a mut watch::Receiver<Lsn>, limit: Duration) -> Self {
        // Often enough that a reply comes well within the limit.
        let mut every = tokio::time::interval(STATUS_EVERY.min(limit / 3));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Status {
            flushed,
            every,
            reported: Lsn(0),
            limit,
            heard: Instant::now(),
        }
    }

    /// Receive: the next replication message. Meanwhile a status update goes out every
    /// [`STATUS_EVERY`] (or a third of the read timeout) asking the server for a reply, and
    /// whenever the flushed LSN moves past the one reported, and a keepalive that asks for a
    /// reply gets one. A server silent for the read timeout while this waits (a dead
    /// connection: no reset came) is an error, so the direction connects anew. `None`: the
    /// pipeline is gone.
    async fn receive(
        &mut self,
        stream: &mut ReplicationStream,
    ) -> Result<Option<ReplicationMessage>> {
        let waiting = Instant::now();
        loop {
            tokio::select! {
                m = stream.next() => {
                    let m = m?;
                    self.heard = Instant::now();
                    if let ReplicationMessage::Keepalive { reply: true, .. } = m {
                        let f = *self.flushed.borrow();
                        self.report(stream, f, false).await?;
                    }
                    return Ok(Some(m));
                }
                _ = self.every.tick() => {
                    let quiet = self.heard.max(waiting).elapsed();
                    if quiet > self.limit {
                        return Err(Error::new(
                            ErrorKind::SourceTransient,
                            format!(
                                "PostgreSQL sent nothing on the replication connection for {} s though asked to reply: taken for dead (read_timeout_s = {})",
                                quiet.as_secs(),
                                self.limit.as_secs()
                            ),
                        ));
                    }
                    let f = *self.flushed.borrow();
                    self.report(stream, f, true).await?;
                }
                changed = self.flushed.changed() => {
                    if changed.is_err() {
                        return Ok(None);
                    }
                    let f = *self.flushed.borrow();
                    if f > self.reported {
                        self.report(stream, f, false).await?;
                    }
                }
            }
        }
    }

    /// Reports `f` as written, flushed and applied (`reply`: asking the server to answer at
    /// once). A send that cannot go out within the read timeout (the peer reads nothing) is an
    /// error too.
    async fn report(&mut self, stream: &mut ReplicationStream, f: Lsn, reply: bool) -> Result<()> {
        match tokio::time::timeout(self.limit, stream.send_status(f, f, f, reply)).await {
            Ok(sent) => sent?,
            Err(_) => {
                return Err(Error::new(
                    ErrorKind::SourceTransient,
                    format!(
                        "a status update to PostgreSQL did not go out within {} s: the replication connection is taken for dead",
                        self.limit.as_secs()
                    ),
                ))
            }
        }
        self.reported = f;
        Ok(())
    }
}

/// What decoding one message leaves to hand over to the pipeline.
enum Handover {
    /// A keepalive while no transaction is open: the server's WAL end, as an idle position.
    Idle(Lsn),
    /// The open transaction has gathered a chunk of rows.
    Chunk,
    /// A transaction ended at `end_lsn`, committed at `commit_time_us` (PostgreSQL's epoch).
    End {
        txn: OpenTxn,
        end_lsn: Lsn,
        commit_time_us: i64,
    },
}

/// The state the reader carries from one message to the next.
struct Reader<'a> {
    cfg: &'a PostgresConfig,
    /// Transactions whose origin name starts with this are duplex's own: dropped.
    own_origin_prefix: &'a str,
    /// Transactions whose first change is this pipeline's checkpoint row are its own.
    pipeline: &'a str,
    chunk_rows: usize,
    copied: &'a HashMap<TableName, Position>,
    tables: HashMap<u32, Table>,
    custom_types: HashMap<u32, String>,
    txn: Option<OpenTxn>,
}

impl Reader<'_> {
    /// A TRUNCATE of published tables (not duplex's own) stops the direction before its
    /// checkpoint passes it, unless copies taken after it hold every table it names. duplex does
    /// not empty MySQL tables by itself: that is the operator's decision.
    fn truncate(&self, rels: &[u32]) -> Result<()> {
        let Some(txn) = self.txn.as_ref().filter(|t| !t.own) else {
            return Ok(());
        };
        let tables: Vec<&TableName> = rels
            .iter()
            .filter_map(|r| self.tables.get(r).map(|t| &t.schema.name))
            .collect();
        let at = Position::Postgres(txn.at);
        if tables.len() == rels.len() && crate::source::held_by_copies(&tables, &at, self.copied) {
            return Ok(());
        }
        let names: Vec<String> = rels
            .iter()
            .map(|r| {
                self.tables
                    .get(r)
                    .map_or(format!("oid {r}"), |t| t.schema.name.to_string())
            })
            .collect();
        let first = tables.first().map(|t| t.name.clone()).unwrap_or_default();
        Err(Error::new(
            ErrorKind::SourceDefinite,
            format!(
                "TRUNCATE of {} in PostgreSQL (transaction committed at {}): duplex does not empty the MySQL tables mapped from it on its own. \
                 To follow it, resync the table: `duplex snapshot --table {first}` (each table named) copies it again and removes the rows PostgreSQL no longer has, \
                 then start duplex: it passes the TRUNCATE once a later copy holds the table. \
                 To keep MySQL's rows instead, take the table out of the mappings before starting duplex",
                names.join(", "),
                txn.at
            ),
        ))
    }

    /// Decode: applies one message to the reader's state; returns what is ready to hand over.
    fn decode(&mut self, message: ReplicationMessage) -> Result<Option<Handover>> {
        let data = match message {
            ReplicationMessage::Keepalive { wal_end, .. } => {
                return Ok(self.txn.is_none().then_some(Handover::Idle(wal_end)));
            }
            ReplicationMessage::XLogData { data, .. } => data,
        };
        match pgoutput::decode(&data)? {
            PgOutput::Begin {
                final_lsn,
                commit_time_us,
                xid,
            } => {
                self.txn = Some(OpenTxn {
                    id: format!("{xid}@{final_lsn}"),
                    commit_time_us: commit_time_us + PG_EPOCH_OFFSET_US,
                    at: final_lsn,
                    own: false,
                    begun: false,
                    seen: false,
                    rows: Vec::new(),
                });
            }
            PgOutput::Origin { name, .. } => {
                if let Some(t) = self.txn.as_mut() {
                    t.own = crate::model::is_own_origin(self.own_origin_prefix, &name);
                }
            }
            PgOutput::Type {
                oid,
                namespace,
                name,
            } => {
                self.custom_types.insert(oid, format!("{namespace}.{name}"));
            }
            PgOutput::Relation(rel) => {
                self.tables
                    .insert(rel.oid, table_of(&rel, &self.custom_types));
            }
            PgOutput::Insert { rel, new } => {
                return self.row(rel, Op::Insert, None, Some(&new), true);
            }
            PgOutput::Update { rel, old, new } => {
                let full = matches!(old, Some((OldKind::Full, _)));
                let old = old.as_ref().map(|(_, t)| t);
                return self.row(rel, Op::Update, old, Some(&new), full);
            }
            PgOutput::Delete { rel, old } => {
                let full = old.0 == OldKind::Full;
                return self.row(rel, Op::Delete, Some(&old.1), None, full);
            }
            PgOutput::Truncate { rels, .. } => self.truncate(&rels)?,
            PgOutput::Message {
                transactional: true,
                prefix,
                content,
                ..
            } if prefix == newest::MESSAGE_PREFIX => {
                // The forward direction's half of a `newest` column: passed on from duplex's
                // own transactions only.
                if let Some(t) = self.txn.as_mut().filter(|t| t.own) {
                    t.rows.push(relay_row(content));
                    return Ok((t.rows.len() >= self.chunk_rows).then_some(Handover::Chunk));
                }
            }
            PgOutput::Message { .. } => {}
            PgOutput::Commit {
                end_lsn,
                commit_time_us,
                ..
            } => {
                return Ok(self.txn.take().map(|txn| Handover::End {
                    txn,
                    end_lsn,
                    commit_time_us,
                }));
            }
        }
        Ok(None)
    }

    /// Adds a row change to the open transaction (unless it is duplex's own); a full chunk is
    /// handed over. `full_old`: the old image holds every column (`REPLICA IDENTITY FULL`).
    fn row(
        &mut self,
        rel: u32,
        op: Op,
        old: Option<&Tuple>,
        new: Option<&Tuple>,
        full_old: bool,
    ) -> Result<Option<Handover>> {
        let t = self.txn.as_mut().ok_or_else(|| {
            Error::new(
                ErrorKind::SourceDefinite,
                "a row change outside a transaction",
            )
        })?;
        if t.own {
            return Ok(None);
        }
        let table = self.tables.get(&rel).ok_or_else(|| {
            Error::new(
                ErrorKind::SourceDefinite,
                format!("a row change for relation {rel} before its Relation message"),
            )
        })?;
        // The marker rule: a transaction whose first change is this pipeline's checkpoint row
        // is its own (another pipeline's row marks that pipeline's writes, which this one
        // replicates like any other); the checkpoint table's changes are never passed on.
        let is_marker = table.schema.name.schema == self.cfg.duplex_schema
            && table.schema.name.name == crate::state::checkpoint::TABLE;
        if !t.seen {
            t.seen = true;
            t.own = is_marker && marks_pipeline(table, new, self.pipeline);
        }
        if t.own || is_marker {
            return Ok(None);
        }
        let after = new.map(|n| values(table, n)).transpose()?;
        // Without an old image (default replica identity, key unchanged) the key is in the new row.
        let before = match old {
            Some(o) => Some(values(table, o)?),
            None if op == Op::Update => after.clone(),
            None => None,
        };
        // Without REPLICA IDENTITY FULL the before image holds the key only (or, copied from
        // the new row, nothing that tells what changed).
        let image = if op == Op::Insert || full_old {
            Image::Full
        } else {
            Image::KeyOnly
        };
        t.rows.push(RowChange {
            table: table.schema.clone(),
            op,
            before,
            after,
            image,
        });
        Ok((t.rows.len() >= self.chunk_rows).then_some(Handover::Chunk))
    }

    /// Hand over: sends what a message completed. `false`: the pipeline is gone and the run ends
    /// (noticed by an idle position's or a transaction end's send; a chunk sends what it can and
    /// reading goes on).
    async fn hand_over(&mut self, out: Handover, tx: &mpsc::Sender<SourceEvent>) -> bool {
        match out {
            Handover::Idle(wal_end) => tx
                .send(SourceEvent::Idle(Position::Postgres(wal_end)))
                .await
                .is_ok(),
            Handover::Chunk => {
                if let Some(t) = self.txn.as_mut() {
                    send_chunk(t, tx).await;
                }
                true
            }
            Handover::End {
                txn,
                end_lsn,
                commit_time_us,
            } => finish(txn, end_lsn, commit_time_us, tx).await,
        }
    }
}

/// A relay message as a row of its own synthetic table ([`newest::message_table`]): one text
/// column, the message.
fn relay_row(content: Vec<u8>) -> RowChange {
    let table = TableSchema {
        name: newest::message_table(),
        columns: vec![ColumnSchema {
            name: "relay".into(),
            ty: SourceType::Postgres(TargetKind::Text),
            nullable: false,
            column_type: "text".into(),
        }],
        primary_key: Vec::new(),
    };
    RowChange {
        table: Arc::new(table),
        op: Op::Insert,
        before: None,
        after: Some(vec![Value::Text(
            String::from_utf8_lossy(&content).into_owned(),
        )]),
        image: Image::Full,
    }
}

/// Sends the rows gathered so far, after the transaction's Begin the first time.
async fn send_chunk(t: &mut OpenTxn, tx: &mpsc::Sender<SourceEvent>) {
    if !t.begun {
        t.begun = true;
        let begin = TxnBegin {
            id: t.id.clone(),
            commit_time_us: t.commit_time_us,
            at: Some(Position::Postgres(t.at)),
            own: t.own,
        };
        if tx.send(SourceEvent::Begin(begin)).await.is_err() {
            return;
        }
    }
    let chunk = std::mem::take(&mut t.rows);
    let _ = tx.send(SourceEvent::Rows(chunk)).await;
}

/// Sends the end of a transaction, or only an idle position at its end when it is duplex's own
/// or touched no published table. `false`: the pipeline is gone.
async fn finish(
    mut t: OpenTxn,
    end_lsn: Lsn,
    commit_time_us: i64,
    tx: &mpsc::Sender<SourceEvent>,
) -> bool {
    let position = Position::Postgres(end_lsn);
    tracing::debug!(txn = %t.id, end = %end_lsn, own = t.own, rows = t.rows.len(), "PostgreSQL transaction read");
    if !t.begun && t.rows.is_empty() {
        return tx.send(SourceEvent::Idle(position)).await.is_ok();
    }
    if !t.begun
        && tx
            .send(SourceEvent::Begin(TxnBegin {
                id: t.id.clone(),
                commit_time_us: t.commit_time_us,
                at: Some(Position::Postgres(t.at)),
                own: t.own,
            }))
            .await
            .is_err()
    {
        return false;
    }
    if !t.rows.is_empty()
        && tx
            .send(SourceEvent::Rows(std::mem::take(&mut t.rows)))
            .await
            .is_err()
    {
        return false;
    }
    let commit = TxnCommit {
        position,
        commit_time_us: commit_time_us + PG_EPOCH_OFFSET_US,
    };
    tx.send(SourceEvent::Commit(commit)).await.is_ok()
}
/// Whether a checkpoint row (its new image) is pipeline `pipeline`'s.
fn marks_pipeline(table: &Table, new: Option<&Tuple>, pipeline: &str) -> bool {
    let Some(at) = table
        .schema
        .columns
        .iter()
        .position(|c| c.name == "pipeline")
    else {
        return false;
    };
    new.and_then(|n| values(table, n).ok())
        .and_then(|row| row.into_iter().nth(at))
        .is_some_and(|v| matches!(v, Value::Text(ref p) if p == pipeline))
}

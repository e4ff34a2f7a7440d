//! The PostgreSQL source: reads a logical replication slot with pgoutput and turns each
//! committed transaction into [`SourceEvent`]s.
//!
//! - Transactions carrying a replication origin whose name starts with the configured prefix
//!   (duplex's own writes, `duplex_<pipeline>_…`) are dropped whole: no echo.
//! - A transaction that is dropped or touches no published table still yields an
//!   [`SourceEvent::Idle`] at its end LSN, and so do keepalives while no transaction is open, so
//!   the checkpoint (and with it the slot) moves forward on an idle or echo-only stream.
//! - The LSN reported to the server as flushed comes only from `flushed`: the position the
//!   target has committed. The slot never confirms anything the target does not have.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::decode::{decode_text, SESSION_SETTINGS};
use super::pgoutput::{self, Cell, PgOutput, Relation, Tuple};
use super::stream::{ReplicationConn, ReplicationMessage};
use crate::config::PostgresConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::model::{
    ColumnSchema, Image, Lsn, Op, Position, RowChange, SourceEvent, SourceType, TableName,
    TableSchema, TargetKind, TxnBegin, TxnCommit, Value,
};
use crate::source::Source;

/// Status updates go out at least this often, so the server neither times us out nor keeps
/// WAL it could release.
const STATUS_EVERY: Duration = Duration::from_secs(5);
/// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

pub struct PgSource {
    cfg: PostgresConfig,
    slot: String,
    publication: String,
    /// Transactions whose origin name starts with this are duplex's own: dropped.
    own_origin_prefix: String,
    chunk_rows: usize,
    flushed: watch::Receiver<Lsn>,
}

impl PgSource {
    pub fn new(
        cfg: PostgresConfig,
        slot: String,
        publication: String,
        own_origin_prefix: String,
        chunk_rows: usize,
        flushed: watch::Receiver<Lsn>,
    ) -> Self {
        PgSource {
            cfg,
            slot,
            publication,
            own_origin_prefix,
            chunk_rows: chunk_rows.max(1),
            flushed,
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
            Cell::Text(b) => decode_text(kind, b)
                .map_err(|e| e.context(format!("{}.{}", t.schema.name, col.name))),
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
        let conn =
            ReplicationConn::connect_with(&self.cfg, "duplex reader", SESSION_SETTINGS).await?;
        let mut stream = conn
            .start_replication(
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
            .await?;
        tracing::info!(slot = %self.slot, from = %start, "logical replication started");
        let mut tables: HashMap<u32, Table> = HashMap::new();
        let mut custom_types: HashMap<u32, String> = HashMap::new();
        let mut txn: Option<OpenTxn> = None;
        let mut status = tokio::time::interval(STATUS_EVERY);
        status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reported = Lsn(0);
        loop {
            let message = tokio::select! {
                m = stream.next() => m?,
                _ = status.tick() => {
                    let f = *self.flushed.borrow();
                    stream.send_status(f, f, f, false).await?;
                    reported = f;
                    continue;
                }
                changed = self.flushed.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    let f = *self.flushed.borrow();
                    if f > reported {
                        stream.send_status(f, f, f, false).await?;
                        reported = f;
                    }
                    continue;
                }
            };
            match message {
                ReplicationMessage::Keepalive { wal_end, reply, .. } => {
                    if reply {
                        let f = *self.flushed.borrow();
                        stream.send_status(f, f, f, false).await?;
                        reported = f;
                    }
                    if txn.is_none()
                        && tx
                            .send(SourceEvent::Idle(Position::Postgres(wal_end)))
                            .await
                            .is_err()
                    {
                        return Ok(());
                    }
                }
                ReplicationMessage::XLogData { data, .. } => match pgoutput::decode(&data)? {
                    PgOutput::Begin {
                        final_lsn,
                        commit_time_us,
                        xid,
                    } => {
                        txn = Some(OpenTxn {
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
                        if let Some(t) = txn.as_mut() {
                            t.own = name.starts_with(&self.own_origin_prefix);
                        }
                    }
                    PgOutput::Type {
                        oid,
                        namespace,
                        name,
                    } => {
                        custom_types.insert(oid, format!("{namespace}.{name}"));
                    }
                    PgOutput::Relation(rel) => {
                        tables.insert(rel.oid, table_of(&rel, &custom_types));
                    }
                    PgOutput::Insert { rel, new } => {
                        self.row(&tables, &mut txn, rel, Op::Insert, None, Some(&new), &tx)
                            .await?;
                    }
                    PgOutput::Update { rel, old, new } => {
                        let old = old.as_ref().map(|(_, t)| t);
                        self.row(&tables, &mut txn, rel, Op::Update, old, Some(&new), &tx)
                            .await?;
                    }
                    PgOutput::Delete { rel, old } => {
                        self.row(&tables, &mut txn, rel, Op::Delete, Some(&old.1), None, &tx)
                            .await?;
                    }
                    PgOutput::Truncate { rels, .. } => {
                        let names: Vec<String> = rels
                            .iter()
                            .map(|r| {
                                tables
                                    .get(r)
                                    .map_or(format!("oid {r}"), |t| t.schema.name.to_string())
                            })
                            .collect();
                        if !txn.as_ref().is_some_and(|t| t.own) {
                            return Err(Error::new(
                                ErrorKind::SourceDefinite,
                                format!(
                                    "TRUNCATE of {} in PostgreSQL: duplex does not replicate truncation; \
                                     remove the table from the publication or truncate the other side by hand, then resume",
                                    names.join(", ")
                                ),
                            ));
                        }
                    }
                    PgOutput::Message { .. } => {}
                    PgOutput::Commit {
                        end_lsn,
                        commit_time_us,
                        ..
                    } => {
                        let Some(mut t) = txn.take() else { continue };
                        let position = Position::Postgres(end_lsn);
                        tracing::debug!(txn = %t.id, end = %end_lsn, own = t.own, rows = t.rows.len(), "PostgreSQL transaction read");
                        if t.own || (!t.begun && t.rows.is_empty()) {
                            if tx.send(SourceEvent::Idle(position)).await.is_err() {
                                return Ok(());
                            }
                            continue;
                        }
                        if !t.begun
                            && tx
                                .send(SourceEvent::Begin(TxnBegin {
                                    id: t.id.clone(),
                                    commit_time_us: t.commit_time_us,
                                    at: Some(Position::Postgres(t.at)),
                                }))
                                .await
                                .is_err()
                        {
                            return Ok(());
                        }
                        if !t.rows.is_empty()
                            && tx
                                .send(SourceEvent::Rows(std::mem::take(&mut t.rows)))
                                .await
                                .is_err()
                        {
                            return Ok(());
                        }
                        let commit = TxnCommit {
                            position,
                            commit_time_us: commit_time_us + PG_EPOCH_OFFSET_US,
                        };
                        if tx.send(SourceEvent::Commit(commit)).await.is_err() {
                            return Ok(());
                        }
                    }
                },
            }
        }
    }
}

impl PgSource {
    /// Adds a row change to the open transaction (unless it is duplex's own), sending a chunk
    /// when enough have gathered.
    #[allow(clippy::too_many_arguments)]
    async fn row(
        &self,
        tables: &HashMap<u32, Table>,
        txn: &mut Option<OpenTxn>,
        rel: u32,
        op: Op,
        old: Option<&Tuple>,
        new: Option<&Tuple>,
        tx: &mpsc::Sender<SourceEvent>,
    ) -> Result<()> {
        let t = txn.as_mut().ok_or_else(|| {
            Error::new(
                ErrorKind::SourceDefinite,
                "a row change outside a transaction",
            )
        })?;
        if t.own {
            return Ok(());
        }
        let table = tables.get(&rel).ok_or_else(|| {
            Error::new(
                ErrorKind::SourceDefinite,
                format!("a row change for relation {rel} before its Relation message"),
            )
        })?;
        // The marker rule: a transaction whose first change is duplex's checkpoint row is
        // duplex's own; the checkpoint table's changes are never passed on.
        let is_marker = table.schema.name.schema == self.cfg.duplex_schema
            && table.schema.name.name == crate::state::checkpoint::TABLE;
        if !t.seen {
            t.seen = true;
            t.own = is_marker;
        }
        if t.own || is_marker {
            return Ok(());
        }
        let after = new.map(|n| values(table, n)).transpose()?;
        // Without an old image (default replica identity, key unchanged) the key is in the new row.
        let before = match old {
            Some(o) => Some(values(table, o)?),
            None if op == Op::Update => after.clone(),
            None => None,
        };
        let image = match old {
            Some(_) if table.schema.primary_key.len() < table.schema.columns.len() => {
                Image::KeyOnly
            }
            _ => Image::Full,
        };
        t.rows.push(RowChange {
            table: table.schema.clone(),
            op,
            before,
            after,
            image,
        });
        if t.rows.len() >= self.chunk_rows {
            if !t.begun {
                t.begun = true;
                let begin = TxnBegin {
                    id: t.id.clone(),
                    commit_time_us: t.commit_time_us,
                    at: Some(Position::Postgres(t.at)),
                };
                if tx.send(SourceEvent::Begin(begin)).await.is_err() {
                    return Ok(());
                }
            }
            let chunk = std::mem::take(&mut t.rows);
            let _ = tx.send(SourceEvent::Rows(chunk)).await;
        }
        Ok(())
    }
}

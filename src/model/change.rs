//! Transactions and row changes as they flow from a source to a sink.
//!
//! A source emits, for each committed source transaction, `Begin`, zero or more `Rows` chunks
//! (a huge transaction arrives in several chunks so memory stays bounded) and `Commit` carrying
//! the position *after* the transaction. A sink makes the transaction visible only at `Commit`,
//! together with that position: nothing in between is ever committed on its own.

use std::sync::Arc;

use super::position::Position;
use super::schema::TableSchema;
use super::value::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Insert,
    Update,
    Delete,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }
}

/// Whether a row image holds every column or only the key columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Image {
    Full,
    KeyOnly,
}

/// One row change. `before` is set for updates and deletes, `after` for inserts and updates;
/// values are in the order of `table.columns`.
#[derive(Debug, Clone)]
pub struct RowChange {
    pub table: Arc<TableSchema>,
    pub op: Op,
    pub before: Option<Vec<Value>>,
    pub after: Option<Vec<Value>>,
    pub image: Image,
}

impl RowChange {
    /// Rough in-memory size, for bounding buffers.
    pub fn approx_bytes(&self) -> usize {
        fn row(r: &Option<Vec<Value>>) -> usize {
            r.as_ref().map_or(0, |vals| {
                vals.iter()
                    .map(|v| {
                        32 + match v {
                            Value::Text(s) | Value::Decimal(s) | Value::Json(s) => s.len(),
                            Value::Bytes(b) | Value::Bits { bytes: b, .. } => b.len(),
                            _ => 0,
                        }
                    })
                    .sum()
            })
        }
        64 + row(&self.before) + row(&self.after)
    }
}

#[derive(Debug, Clone)]
pub struct TxnBegin {
    /// A printable id of the source transaction (GTID or binlog coordinates).
    pub id: String,
    /// Commit time on the source, microseconds since the Unix epoch (0 when unknown).
    pub commit_time_us: i64,
    /// Where the transaction sits in the source's order, for comparing with a snapshot's
    /// position: MySQL, a binlog position inside the transaction (its first event's end);
    /// PostgreSQL, the LSN of its commit record. `None` when unknown.
    pub at: Option<Position>,
    /// The transaction is duplex's own write (the other direction applied it on this source).
    /// Its rows are passed on so that the other side's mirror columns stay fresh; the sink
    /// never lets them overwrite a value the other side changed since (no echo).
    pub own: bool,
}

#[derive(Debug, Clone)]
pub struct TxnCommit {
    /// The position just after this transaction: resuming from it skips the transaction.
    pub position: Position,
    pub commit_time_us: i64,
}

/// What a source sends down the pipeline.
#[derive(Debug, Clone)]
pub enum SourceEvent {
    Begin(TxnBegin),
    Rows(Vec<RowChange>),
    Commit(TxnCommit),
    /// The source is idle at this position (nothing to apply, but it may be checkpointed).
    Idle(Position),
}

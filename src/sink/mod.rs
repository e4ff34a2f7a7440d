//! Sinks apply mapped row changes to a target database, transaction by transaction, with the
//! source position written in the same target transaction.
//!
//! Every sink has the same small parts: `prepare` (map and encode one source row change; a value
//! that does not fit is an error for that row only), `begin` / `push` / `commit(position)` for the
//! fast path, `push_careful` (one row under a savepoint, so one bad row can be set aside into the
//! dead-letter table), and `checkpoint` to resume from.
//!
//! May use: the mapping plan, `state` (checkpoint, dead letters, snapshot progress), `origin`,
//! `connect`, `telemetry` (metric names), the model and the configuration; the pipeline, the
//! snapshot and `dlq` use it.

pub mod mysql;
pub mod postgres;

use crate::error::Result;
use crate::model::{Position, RowChange};

/// A row that could not be applied, with why.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub source_table: String,
    pub target_table: String,
    pub op: &'static str,
    pub txn_id: String,
    pub row: serde_json::Value,
    pub reason: String,
}

impl DeadLetter {
    pub fn new(change: &RowChange, target_table: String, txn_id: &str, reason: String) -> Self {
        let image = change.after.as_ref().or(change.before.as_ref());
        let mut row = serde_json::Map::new();
        if let Some(values) = image {
            for (c, v) in change.table.columns.iter().zip(values) {
                row.insert(
                    c.name.clone(),
                    if v.is_null() {
                        serde_json::Value::Null
                    } else {
                        // jsonb cannot hold NUL; keep it visible as an escape.
                        serde_json::Value::String(v.to_string().replace('\0', "\\0"))
                    },
                );
            }
        }
        DeadLetter {
            source_table: change.table.name.to_string(),
            target_table,
            op: change.op.as_str(),
            txn_id: txn_id.to_string(),
            row: serde_json::Value::Object(row),
            reason: reason.replace('\0', "\\0"),
        }
    }
}

/// Maps and encodes source row changes for one sink; runs on its own task, ahead of the writer.
pub trait Encoder: Send + 'static {
    /// A mapped, encoded change ready to apply.
    type Change: Send + 'static;

    /// Maps and encodes one source row change (into zero or more target changes). An error here
    /// concerns this row only and sends it to the dead-letter table, named by the returned
    /// target table.
    fn prepare(
        &mut self,
        change: &RowChange,
    ) -> std::result::Result<Vec<Self::Change>, (String, crate::error::Error)>;

    /// Target table name of a change, for dead letters.
    fn target_of(&self, change: &Self::Change) -> String;

    /// A source transaction starts (its rows follow).
    fn begin(&mut self, _txn: &crate::model::TxnBegin) {}
}

/// What the pipeline needs from a target database.
pub trait Sink {
    type Encoder: Encoder;

    /// A new encoder for this sink's mapping plan.
    fn encoder(&self) -> Self::Encoder;

    /// Buffered rows the sink writes at once inside a transaction (0: it writes as changes
    /// come). The pipeline keeps more than this encoded ahead, so that the next write is ready
    /// when one ends.
    fn write_unit(&self) -> usize {
        0
    }

    /// The position to resume from.
    fn checkpoint(&mut self) -> impl std::future::Future<Output = Result<Option<Position>>> + Send;

    fn begin(&mut self) -> impl std::future::Future<Output = Result<()>> + Send;

    /// Buffers a change; may write buffered changes inside the open transaction.
    fn push(
        &mut self,
        change: <Self::Encoder as Encoder>::Change,
    ) -> impl std::future::Future<Output = Result<()>> + Send;

    /// Writes one change under a savepoint; a definite error leaves the transaction usable.
    fn push_careful(
        &mut self,
        change: <Self::Encoder as Encoder>::Change,
    ) -> impl std::future::Future<Output = Result<()>> + Send;

    /// A resync's removal of rows the source no longer has, in the open transaction (begun if
    /// none is): the target rows mapped from the copied source table `source` whose source key lies in
    /// `(after, upto]` (`None`: that end open) and is none of `keep`. Only entries that map the
    /// source's single integer key unchanged to the target's key, go one way and delete on
    /// delete are pruned; others are left alone. Returns the rows removed.
    fn prune(
        &mut self,
        source: &crate::model::TableSchema,
        after: Option<i64>,
        upto: Option<i64>,
        keep: &[i64],
    ) -> impl std::future::Future<Output = Result<u64>> + Send;

    /// Records a dead letter, written with the next commit.
    fn dead_letter(&mut self, letter: DeadLetter);

    /// Writes what is buffered, the dead letters, the conflicts found and `mark`, and commits.
    fn finish(&mut self, mark: Mark<'_>) -> impl std::future::Future<Output = Result<()>> + Send;

    /// Writes what is buffered, the dead letters and the checkpoint, and commits.
    fn commit(
        &mut self,
        position: &Position,
    ) -> impl std::future::Future<Output = Result<()>> + Send {
        self.finish(Mark::Checkpoint(position))
    }

    /// Like [`Sink::commit`] for a chunk of a snapshot: stores the table's snapshot progress
    /// instead of the stream checkpoint.
    fn commit_progress(
        &mut self,
        progress: &crate::state::progress::Progress,
    ) -> impl std::future::Future<Output = Result<()>> + Send {
        self.finish(Mark::Progress(progress))
    }

    /// Like [`Sink::commit`] for rows applied outside the stream (`duplex dlq retry`): neither
    /// the checkpoint nor a snapshot's progress moves.
    fn commit_unmarked(&mut self) -> impl std::future::Future<Output = Result<()>> + Send {
        self.finish(Mark::Nothing)
    }

    fn rollback(&mut self) -> impl std::future::Future<Output = ()> + Send;
}

/// Counts the conflicts a direction logged, once the transaction logging them committed.
fn count_conflicts(direction: &'static str, conflicts: Vec<crate::state::conflict::Conflict>) {
    for c in conflicts {
        metrics::counter!(crate::telemetry::CONFLICTS, "direction" => direction, "table" => c.target_table, "resolution" => c.winner)
            .increment(1);
    }
}

/// What a target transaction records besides its changes.
pub enum Mark<'a> {
    /// The stream checkpoint: the source position after the last transaction applied.
    Checkpoint(&'a Position),
    /// A snapshot chunk: the copy's progress for one table.
    Progress(&'a crate::state::progress::Progress),
    /// Rows re-applied by `duplex dlq retry`: nothing to record.
    Nothing,
}

impl Mark<'_> {
    /// The text stored with dead letters as their source position.
    pub fn position_text(&self) -> String {
        match self {
            Mark::Checkpoint(p) => p.to_string(),
            Mark::Progress(p) => p.label(),
            Mark::Nothing => "dlq retry".to_string(),
        }
    }
}

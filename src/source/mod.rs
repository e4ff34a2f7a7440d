//! Sources read committed transactions from a database's change stream and send them down the
//! pipeline as [`SourceEvent`]s, in commit order, each transaction ending with the position that
//! resumes right after it.
//!
//! Owns the [`Source`] trait; the readers are [`mysql`] and [`postgres`]. A reader may use the
//! model, errors, configuration, TLS settings and the checkpoint table's name; it knows nothing of
//! mappings, sinks or the pipeline beyond the channel it sends on.

pub mod mysql;
pub mod postgres;

use std::collections::HashMap;

use tokio::sync::mpsc;

use crate::error::Result;
use crate::model::{Position, SourceEvent, TableName};

/// Whether copies taken after `at` hold every table of `tables` (`copied`: the oldest position
/// each copied table's copy was taken at). A source event duplex cannot replicate (a statement,
/// a partial row image, rows without column names, a TRUNCATE) is passed when this holds — the
/// copy already has its effect, as far as duplex can carry it — and counted as passed.
pub fn held_by_copies(
    tables: &[&TableName],
    at: &Position,
    copied: &HashMap<TableName, Position>,
) -> bool {
    let held = tables
        .iter()
        .all(|t| copied.get(*t).is_some_and(|c| c.is_after(at)));
    if held {
        metrics::counter!(crate::telemetry::EVENTS_PASSED).increment(1);
    }
    held
}

/// A change stream. `run` returns only on shutdown (`Ok`) or on an error the caller classifies;
/// the caller restarts it from the last checkpoint.
pub trait Source {
    fn run(
        &mut self,
        from: Option<Position>,
        tx: mpsc::Sender<SourceEvent>,
    ) -> impl std::future::Future<Output = Result<()>> + Send;
}

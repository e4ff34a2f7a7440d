//! Sources read committed transactions from a database's change stream and send them down the
//! pipeline as [`SourceEvent`]s, in commit order, each transaction ending with the position that
//! resumes right after it.
//!
//! Owns the [`Source`] trait; the readers are [`mysql`] and [`postgres`]. A reader may use the
//! model, errors, configuration, TLS settings and the checkpoint table's name; it knows nothing of
//! mappings, sinks or the pipeline beyond the channel it sends on.

pub mod mysql;
pub mod postgres;

use tokio::sync::mpsc;

use crate::error::Result;
use crate::model::{Position, SourceEvent};

/// A change stream. `run` returns only on shutdown (`Ok`) or on an error the caller classifies;
/// the caller restarts it from the last checkpoint.
pub trait Source {
    fn run(
        &mut self,
        from: Option<Position>,
        tx: mpsc::Sender<SourceEvent>,
    ) -> impl std::future::Future<Output = Result<()>> + Send;
}

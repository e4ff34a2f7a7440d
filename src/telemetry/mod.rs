//! Telemetry: metric names (one place, `duplex_<name>_<unit>[_total]`, bounded labels: pipeline,
//! direction, table, op — never a key value) and the Prometheus listener.

use std::net::SocketAddr;

use crate::error::{Error, Result};

pub const TXNS_APPLIED: &str = "duplex_transactions_applied_total";
pub const ROWS_APPLIED: &str = "duplex_rows_applied_total";
pub const BATCHES_COMMITTED: &str = "duplex_batches_committed_total";
pub const APPLY_BATCH_SECONDS: &str = "duplex_apply_batch_duration_seconds";
pub const SOURCE_COMMIT_LAG_SECONDS: &str = "duplex_source_commit_lag_seconds";
pub const DEAD_LETTERS: &str = "duplex_dead_letters_total";
pub const ERRORS: &str = "duplex_errors_total";
pub const RECONNECTS: &str = "duplex_reconnects_total";
pub const SNAPSHOT_ROWS: &str = "duplex_snapshot_rows_copied_total";
pub const SNAPSHOT_DEAD_LETTERS: &str = "duplex_snapshot_dead_letters_total";
pub const SNAPSHOT_ROWS_ESTIMATED: &str = "duplex_snapshot_rows_estimated";
pub const SNAPSHOT_TABLES_PENDING: &str = "duplex_snapshot_tables_pending";
pub const SNAPSHOT_CHUNK_SECONDS: &str = "duplex_snapshot_chunk_duration_seconds";

/// Describes every metric once and starts the Prometheus HTTP listener.
pub fn install(listen: SocketAddr) -> Result<()> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(listen)
        .install()
        .map_err(|e| Error::config(format!("metrics listener on {listen}: {e}")))?;
    metrics::describe_counter!(TXNS_APPLIED, "Source transactions applied to the target");
    metrics::describe_counter!(
        ROWS_APPLIED,
        "Rows written to the target, by table and operation"
    );
    metrics::describe_counter!(BATCHES_COMMITTED, "Target transactions committed");
    metrics::describe_histogram!(
        APPLY_BATCH_SECONDS,
        "Time to apply and commit one target transaction"
    );
    metrics::describe_gauge!(
        SOURCE_COMMIT_LAG_SECONDS,
        "Time from the source commit of the newest applied transaction to its target commit"
    );
    metrics::describe_counter!(DEAD_LETTERS, "Rows set aside into the dead-letter table");
    metrics::describe_counter!(ERRORS, "Errors by kind");
    metrics::describe_counter!(RECONNECTS, "Pipeline restarts after a transient error");
    metrics::describe_counter!(
        SNAPSHOT_ROWS,
        "Rows copied by the initial snapshot, by table"
    );
    metrics::describe_counter!(
        SNAPSHOT_DEAD_LETTERS,
        "Rows the snapshot set aside into the dead-letter table, by table"
    );
    metrics::describe_gauge!(
        SNAPSHOT_ROWS_ESTIMATED,
        "Rows the table being copied holds, by the source's estimate"
    );
    metrics::describe_gauge!(
        SNAPSHOT_TABLES_PENDING,
        "Tables the running snapshot has still to copy"
    );
    metrics::describe_histogram!(
        SNAPSHOT_CHUNK_SECONDS,
        "Time to write and commit one snapshot chunk"
    );
    // Present from the start, so rate() and increase() see the first increment.
    for name in [TXNS_APPLIED, BATCHES_COMMITTED, RECONNECTS] {
        for way in [crate::checkpoint::FORWARD, crate::checkpoint::REVERSE] {
            metrics::counter!(name, "direction" => way).absolute(0);
        }
    }
    Ok(())
}

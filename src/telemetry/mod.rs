//! Telemetry: metric names (one place, `duplex_<name>_<unit>[_total]`, bounded labels: pipeline,
//! direction, table, op, kind, side, state — never a key value), the live state of each direction
//! ([`live`]) and the HTTP listener (`/metrics`, `/health`, `/ready`, `/status`).
//!
//! May use: `connect` (the database gauges), the model and the configuration; sinks, the
//! pipeline, the snapshot and the commands use it.

pub mod http;
pub mod live;
pub mod notify;
pub mod observe;
pub mod process;
pub mod terminal;

pub use live::{live, State};

use std::net::SocketAddr;

use crate::error::{Error, Result};

/// End-to-end lag measured by the heartbeat: see [`live`].
pub const LAG_SECONDS: &str = "duplex_lag_seconds";
pub const HEARTBEATS: &str = "duplex_heartbeats_received_total";
pub const TXNS_APPLIED: &str = "duplex_transactions_applied_total";
pub const ROWS_APPLIED: &str = "duplex_rows_applied_total";
pub const BATCHES_COMMITTED: &str = "duplex_batches_committed_total";
/// Binlog events with changes duplex cannot replicate that it passed: statements naming no
/// mapped table, and statements or partial row images a later copy of their table holds.
pub const EVENTS_PASSED: &str = "duplex_binlog_events_passed_total";
pub const APPLY_BATCH_SECONDS: &str = "duplex_apply_batch_duration_seconds";
pub const SOURCE_COMMIT_LAG_SECONDS: &str = "duplex_source_commit_lag_seconds";
pub const DEAD_LETTERS: &str = "duplex_dead_letters_total";
/// Conflicts on `both` columns resolved, by direction (the one that found it), target table and
/// winner (`resolution`: `bitrix` / `crm`).
pub const CONFLICTS: &str = "duplex_conflicts_total";
pub const DEAD_LETTERS_UNRESOLVED: &str = "duplex_dead_letters_unresolved";
pub const ERRORS: &str = "duplex_errors_total";
pub const RECONNECTS: &str = "duplex_reconnects_total";
pub const RETRY_ATTEMPT: &str = "duplex_retry_attempt";
pub const PIPELINE_STATE: &str = "duplex_pipeline_state";
pub const READY: &str = "duplex_ready";
pub const SLOT_RETAINED_WAL_BYTES: &str = "duplex_slot_retained_wal_bytes";
pub const BINLOG_FILES_BEHIND: &str = "duplex_binlog_files_behind";
pub const BINLOG_EXPIRY_REMAINING_SECONDS: &str = "duplex_binlog_expiry_remaining_seconds";
pub const SNAPSHOT_ROWS: &str = "duplex_snapshot_rows_copied_total";
pub const SNAPSHOT_DEAD_LETTERS: &str = "duplex_snapshot_dead_letters_total";
pub const SNAPSHOT_ROWS_REMOVED: &str = "duplex_snapshot_rows_removed_total";
pub const SNAPSHOT_ROWS_ESTIMATED: &str = "duplex_snapshot_rows_estimated";
pub const SNAPSHOT_TABLES_PENDING: &str = "duplex_snapshot_tables_pending";
pub const SNAPSHOT_CHUNK_SECONDS: &str = "duplex_snapshot_chunk_duration_seconds";
pub const VERIFY_ROWS_CHECKED: &str = "duplex_verify_rows_checked_total";
/// Per target table, the differences (and unsettled rows) of the last verify run.
pub const VERIFY_MISMATCHES: &str = "duplex_verify_mismatches";
pub const VERIFY_LAST_SUCCESS: &str = "duplex_verify_last_success_timestamp_seconds";
pub const BUILD_INFO: &str = "duplex_build_info";

/// The version and the commit duplex was built from.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const COMMIT: &str = env!("DUPLEX_BUILD_COMMIT");

/// Buckets of the duration histograms, in seconds: 1 ms to 30 s.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Installs the recorder, describes every metric once and starts the HTTP listener (bound
/// before this returns, so a taken port is an error here, not a log line later).
pub async fn install(listen: SocketAddr, ready_max_lag: std::time::Duration) -> Result<()> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_duration_seconds".into()),
            DURATION_BUCKETS,
        )
        .map_err(|e| Error::config(format!("metrics buckets: {e}")))?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|e| Error::config(format!("metrics recorder: {e}")))?;
    describe();
    metrics::gauge!(BUILD_INFO, "version" => VERSION, "commit" => COMMIT).set(1.0);
    http::serve(listen, handle, ready_max_lag).await
}

fn describe() {
    metrics::describe_gauge!(
        BUILD_INFO,
        "1, labelled with the version and the commit this duplex was built from"
    );
    metrics::describe_gauge!(
        LAG_SECONDS,
        "End-to-end lag: age of the newest heartbeat duplex wrote into the source that has not reached the target yet, or the transit time of the last one that did"
    );
    metrics::describe_counter!(HEARTBEATS, "Heartbeat rows that reached the target");
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
    metrics::describe_gauge!(
        DEAD_LETTERS_UNRESOLVED,
        "Rows in the dead-letter table not yet retried successfully or dropped"
    );
    metrics::describe_counter!(ERRORS, "Errors by direction and kind");
    metrics::describe_counter!(
        RECONNECTS,
        "Pipeline restarts after a transient error, by the side that failed"
    );
    metrics::describe_gauge!(
        RETRY_ATTEMPT,
        "Consecutive retries of a direction (0 when it streams)"
    );
    metrics::describe_gauge!(
        PIPELINE_STATE,
        "1 for the state a direction is in (starting, snapshot, streaming, retrying, stopped)"
    );
    metrics::describe_gauge!(READY, "1 when /ready answers 200");
    metrics::describe_gauge!(
        SLOT_RETAINED_WAL_BYTES,
        "WAL PostgreSQL keeps for duplex's replication slot"
    );
    metrics::describe_gauge!(
        BINLOG_FILES_BEHIND,
        "Binlog files on the MySQL server newer than the one duplex's checkpoint is in"
    );
    metrics::describe_gauge!(
        BINLOG_EXPIRY_REMAINING_SECONDS,
        "Estimated time until binlog expiry purges the file duplex's checkpoint is in"
    );
    metrics::describe_counter!(
        SNAPSHOT_ROWS,
        "Rows copied by the initial snapshot, by table"
    );
    metrics::describe_counter!(
        SNAPSHOT_ROWS_REMOVED,
        "Target rows a resync (duplex snapshot --table) removed because the source no longer has them, by table"
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
    metrics::describe_counter!(
        VERIFY_ROWS_CHECKED,
        "Rows compared by verify runs (`[verify] interval` or `duplex verify`)"
    );
    metrics::describe_gauge!(
        VERIFY_MISMATCHES,
        "Per target table, the rows the last verify run proved different, missing or extra (and those that never settled)"
    );
    metrics::describe_gauge!(
        VERIFY_LAST_SUCCESS,
        "Unix time of the last verify run that found both sides equal"
    );
}

/// Creates a direction's counters at zero, so rate() and increase() see the first increment.
pub fn zero_counters(direction: &'static str) {
    for name in [TXNS_APPLIED, BATCHES_COMMITTED, HEARTBEATS] {
        metrics::counter!(name, "direction" => direction).absolute(0);
    }
    for side in ["mysql", "postgres"] {
        metrics::counter!(RECONNECTS, "direction" => direction, "side" => side).absolute(0);
    }
}

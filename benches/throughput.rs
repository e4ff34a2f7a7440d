//! Throughput, latency and memory benchmark of `duplex run` (MariaDB binlog → PostgreSQL),
//! against the private servers of the test support.
//!
//! `cargo bench --bench throughput` runs three measurements in sequence and prints one
//! markdown table (on stdout; progress goes to stderr):
//!
//! 1. **Catch-up**: `BENCH_ROWS` (default 1,000,000) rows shaped like `b_sale_order` (all 76
//!    columns) are written into MariaDB in 1,000-row INSERT transactions while duplex is
//!    stopped (after `duplex setup`); then duplex starts and the time until PostgreSQL holds
//!    every row is taken. The raw limit of the same run is a binary `COPY` of the same rows
//!    into an identical empty table; the replicated rows are compared with it column by column.
//! 2. **Steady state**: 200 transactions/s for `BENCH_STEADY_SECS` (default 60) seconds, each
//!    1 order + 3 basket rows + 8 order property rows, while duplex runs. Lag per transaction is
//!    `applied_at` (a PostgreSQL-only column `DEFAULT clock_timestamp()`, stamped when duplex
//!    inserts the order row) minus the wall-clock time at which MariaDB's COMMIT returned to
//!    the writer (same machine, same clock).
//! 3. **Memory**: duplex is restarted (so its high-water mark starts fresh), then one MariaDB
//!    transaction updates all catch-up rows (`binlog_row_image=FULL`: before and after image
//!    per row); once PostgreSQL shows the new prices, duplex's `VmHWM` is read from
//!    `/proc/<pid>/status`.
//!
//!
//! Then, unless `BENCH_REVERSE=0`, three measurements of the reverse direction (PostgreSQL →
//! MariaDB) on fresh databases with `b_sale_order` mapped `direction = "both"`,
//! `columns = "all"` (see `throughput/reverse.rs`):
//!
//! 4. **Reverse catch-up**: `BENCH_ROWS` rows inserted in PostgreSQL (1,000-row transactions)
//!    while duplex is stopped after `duplex setup`; time from starting duplex until MariaDB holds
//!    them all. Raw limit: the same rows written straight into an identical MariaDB table with
//!    1,000-row INSERT statements on one connection.
//! 5. **Status updates**: `BENCH_STATUS_UPDATES` (default 100,000) single-row
//!    `UPDATE b_sale_order SET status_id = … WHERE id = …` transactions in PostgreSQL over
//!    10,000 orders, one connection, as fast as it goes; time from the first update until
//!    MariaDB shows the last one. Raw limit: the same UPDATEs straight against MariaDB.
//! 6. **Both ways at once**: 200 tx/s each way for `BENCH_STEADY_SECS` (MariaDB: the
//!    steady-state order transaction above; PostgreSQL: a single-row status update); lag per
//!    transaction in each direction.
//!
//! Before the stream measurements, unless `BENCH_SNAPSHOT=0` (see `throughput/snapshot.rs`):
//!
//! 7. **Snapshot**: `duplex snapshot` of the catch-up rows (already in MariaDB) into an empty
//!    table of a fresh PostgreSQL database, next to a plain `SELECT *` read and a binary `COPY`
//!    of the same rows (medians of 3 interleaved runs each), and pg_chameleon's `init_replica`
//!    (installed from PyPI by `benches/pg_chameleon/run.sh`; `BENCH_CHAMELEON=0` skips it).
//!
//! 8. **Verify**, unless `BENCH_VERIFY=0` (see `throughput/verify.rs`): `duplex verify` of the
//!    copied rows, next to a raw `SELECT *` of them on each side.
//!
//! Last, unless `BENCH_SHOP=0`, the mapping set (see `throughput/shop.rs`): `duplex snapshot` of
//! a generated cvety.kz shop (`BENCH_SHOP_ORDERS`, default 30,000 orders) through
//! `mappings/bitrix/`, against the raw read and write of the same rows.
//!
//! Then, unless `BENCH_TLS=0`, the cost of TLS (see `throughput/tls.rs`): a catch-up of
//! `BENCH_TLS_ROWS` rows (default 200,000) with both sides on `verify-full`, against the same in
//! plain text.
//!
//! `BENCH_FORWARD=0` skips measurements 1–3 (the rows are still written for the snapshot).
//!
//! `BENCH_LOG_DIR=<dir>` keeps duplex's logs (`forward.log`, `reverse.log`).
//!
//! `BENCH_LAGS_CSV=<path>` also writes `order_id,commit_us,applied_us` per steady-state
//! transaction, to look at the lag over time.
//!
//! Arguments (cargo passes `--bench`) are ignored. A duplex that exits early or a wait that
//! times out is a panic that shows the tail of duplex's log.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "throughput/cpu.rs"]
mod cpu;
#[path = "throughput/encode.rs"]
mod encode;
#[path = "throughput/reverse.rs"]
mod reverse;
#[path = "throughput/schema.rs"]
mod schema;
#[path = "throughput/shop.rs"]
mod shop;
#[path = "throughput/snapshot.rs"]
mod snapshot;
#[path = "throughput/tls.rs"]
mod tls;
#[path = "throughput/verify.rs"]
mod verify;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::SinkExt;
use mysql_async::prelude::Queryable;
use mysql_async::TxOpts;
use rand::rngs::StdRng;
use rand::SeedableRng;
use support::harness::{terminate, Duplex, Workdir};
use support::TestDbs;
use tokio_postgres::Client;

use schema::{Cell, RowCtx, Table, BASKET, BASKETS_PER_ORDER, ORDER, PROPS_PER_ORDER, PROPS_VALUE};

/// Rows per source transaction in the catch-up phase.
const BATCH_ROWS: i64 = 1_000;
/// Concurrent MariaDB connections writing the catch-up rows.
const WRITERS: usize = 2;
/// Steady-state pacing: one transaction per tick.
const STEADY_TICK: Duration = Duration::from_millis(5);
const STEADY_TARGET_TPS: f64 = 200.0;
/// Steady-state order ids start above this, clear of the catch-up rows.
const STEADY_ORDER_BASE: i64 = 100_000_000;
/// Name of the PostgreSQL table that receives the raw COPY.
const COPY_TABLE: &str = "b_sale_order_copy";
/// Interleaved rounds of the forward catch-up and its COPY reference.
const CATCH_UP_RUNS: usize = 3;
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(600);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);
const UPDATE_TIMEOUT: Duration = Duration::from_secs(600);
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// Targets from the issue.
const TARGET_CATCH_UP_ROWS_PER_S: f64 = 60_000.0;
const TARGET_COPY_RATIO: f64 = 0.9;
const TARGET_P99_MS: f64 = 100.0;
const TARGET_RSS_MB: f64 = 150.0;
/// What duplex logs once its binlog stream is up.
const STREAM_STARTED: &str = "binlog stream started";

fn main() {
    let settings = Settings::from_env();
    let started = Instant::now();
    progress("starting MariaDB and PostgreSQL");
    support::servers();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build a tokio runtime");
    let report = runtime.block_on(run(&settings));
    print!("{report}");
    println!(
        "\nTotal bench time: {:.0} s.",
        started.elapsed().as_secs_f64()
    );
}

/// Run size, from the environment.
struct Settings {
    rows: i64,
    steady: Duration,
    /// Run the PostgreSQL → MariaDB measurements (`BENCH_REVERSE`, default on).
    reverse: bool,
    /// Single-row status updates in the reverse status-update measurement.
    status_updates: i64,
    /// Run the MariaDB → PostgreSQL stream measurements (`BENCH_FORWARD`, default on).
    forward: bool,
    /// Run the snapshot measurement (`BENCH_SNAPSHOT`, default on).
    snapshot: bool,
    /// Rows of the TLS measurement (`BENCH_TLS_ROWS`); 0 with `BENCH_TLS=0`.
    tls_rows: i64,
    /// Orders of the mapping-set measurement (`BENCH_SHOP_ORDERS`); 0 with `BENCH_SHOP=0`.
    shop_orders: usize,
}

impl Settings {
    fn from_env() -> Settings {
        let rows = env_number("BENCH_ROWS", 1_000_000);
        let secs = env_number("BENCH_STEADY_SECS", 60);
        let status_updates = env_number("BENCH_STATUS_UPDATES", 100_000);
        assert!(
            rows > 0 && secs > 0 && status_updates > 0,
            "BENCH_ROWS, BENCH_STEADY_SECS and BENCH_STATUS_UPDATES must be positive"
        );
        Settings {
            rows,
            steady: Duration::from_secs(secs as u64),
            reverse: env_flag("BENCH_REVERSE", true),
            tls_rows: if env_flag("BENCH_TLS", true) {
                env_number("BENCH_TLS_ROWS", 200_000)
            } else {
                0
            },
            forward: env_flag("BENCH_FORWARD", true),
            snapshot: env_flag("BENCH_SNAPSHOT", true),
            status_updates,
            shop_orders: if env_flag("BENCH_SHOP", true) {
                env_number("BENCH_SHOP_ORDERS", 30_000) as usize
            } else {
                0
            },
        }
    }
}

/// `0`, `false`, `no`, `off` (any case) are false; anything else is true.
fn env_flag(name: &str, default: bool) -> bool {
    match std::env::var(name) {
        Ok(v) => !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "0" | "false" | "no" | "off"
        ),
        Err(_) => default,
    }
}

fn env_number(name: &str, default: i64) -> i64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}")),
        Err(_) => default,
    }
}

fn progress(what: &str) {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(Instant::now);
    eprintln!("[bench {:>6.1}s] {what}", start.elapsed().as_secs_f64());
}

async fn run(settings: &Settings) -> String {
    let dbs = support::fresh_dbs("bench_throughput").await;
    let pg = dbs.pg().await;
    let facts = machine_facts(&dbs, &pg).await;
    create_tables(&dbs, &pg).await;
    let mappings = [ORDER.mapping(), BASKET.mapping(), PROPS_VALUE.mapping()].join("\n");
    let work = Workdir::new(&dbs, "bench", "UTC", &[("sale.toml", &mappings)]);
    // Catch-up measures the binlog stream: rows written while duplex is stopped are streamed,
    // not copied by a snapshot.
    work.append_config("[snapshot]\non_start = false\n");
    work.setup();

    let write = write_orders(&dbs, settings.rows).await;
    let snapshot = if settings.snapshot {
        Some(snapshot::run(&dbs, settings.rows).await)
    } else {
        progress("BENCH_SNAPSHOT=0: skipping the snapshot measurement");
        None
    };
    let forward = if settings.forward {
        let mut duplex = Replicator::new(work, &[STREAM_STARTED], false);
        let start = forward_start(&pg).await;
        // Interleaved rounds (duplex, COPY, duplex, COPY, …): between duplex rounds the target
        // is emptied and the checkpoint put back, so each round streams the same binlog.
        let mut catch_ups = Vec::new();
        let mut copies = Vec::new();
        let mut catch_up_cpu = String::new();
        for round in 0..CATCH_UP_RUNS {
            if round > 0 {
                duplex.stop();
                rewind(&pg, &start).await;
            }
            let (took, cpu) = catch_up(&mut duplex, &pg, settings.rows).await;
            catch_ups.push(took);
            catch_up_cpu = cpu;
            copies.push(copy_reference(&pg, settings.rows).await);
        }
        let mismatches = compare_with_reference(&pg, settings.rows).await;
        let steady = steady_state(&dbs, &mut duplex, &pg, settings.steady).await;
        let hwm_before_restart = duplex.status_kb("VmHWM");
        let memory = big_update(&dbs, &mut duplex, &pg, settings.rows).await;
        duplex.stop();
        let findings = duplex.log_findings();
        duplex.keep_log("forward");
        drop(duplex);
        Some(Forward {
            catch_ups,
            copies,
            catch_up_cpu,
            mismatches,
            steady,
            hwm_before_restart,
            memory,
            findings,
        })
    } else {
        progress("BENCH_FORWARD=0: skipping the MariaDB → PostgreSQL stream measurements");
        None
    };

    let reverse = if settings.reverse {
        Some(reverse::run(settings).await)
    } else {
        progress("BENCH_REVERSE=0: skipping the PostgreSQL → MariaDB measurements");
        None
    };

    let tls = if settings.tls_rows > 0 {
        Some(tls::run(settings.tls_rows).await)
    } else {
        progress("BENCH_TLS=0: skipping the TLS measurement");
        None
    };

    let shop = if settings.shop_orders > 0 {
        Some(shop::run(settings.shop_orders).await)
    } else {
        progress("BENCH_SHOP=0: skipping the mapping-set measurement");
        None
    };

    let results = Results {
        rows: settings.rows,
        write,
        forward,
        snapshot,
        reverse,
        tls,
        shop,
    };
    render(&facts, &results)
}

// ---------------------------------------------------------------------------------------
// The duplex process.

/// The bench's `duplex run`, started and stopped across the phases (the process handle kills
/// it when dropped, so a panicking bench leaves nothing running; a pipeline with a replication
/// slot is also torn down then, so the slot does not keep WAL).
struct Replicator {
    work: Workdir,
    process: Option<Duplex>,
    /// Log lines (one per stream) that say duplex is up, each once per start.
    ready: &'static [&'static str],
    /// Run `duplex teardown` when dropped (set for pipelines with a slot, cleared by
    /// [`Replicator::teardown`]).
    teardown_on_drop: bool,
}

impl Replicator {
    fn new(work: Workdir, ready: &'static [&'static str], teardown_on_drop: bool) -> Replicator {
        Replicator {
            work,
            process: None,
            ready,
            teardown_on_drop,
        }
    }

    /// Starts `duplex run` and waits until each of its streams is up.
    async fn start(&mut self) {
        assert!(self.process.is_none(), "duplex is already running");
        let log = self.work.log();
        let before: Vec<usize> = self.ready.iter().map(|m| log.matches(m).count()).collect();
        self.process = Some(self.work.start());
        let log_path = self.work.path().join("duplex.log");
        let ready = self.ready;
        self.wait_until("duplex to start streaming", START_TIMEOUT, ms(50), || {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let up = ready
                .iter()
                .zip(&before)
                .all(|(m, n)| log.matches(m).count() > *n);
            async move { up }
        })
        .await;
    }

    /// `duplex teardown` (drops the slot, the publication and the origin); duplex must be
    /// stopped. Panics if it fails.
    fn teardown(&mut self) {
        assert!(self.process.is_none(), "stop duplex before teardown");
        self.teardown_on_drop = false;
        let (ok, out) = self.work.run_cmd(&["teardown", "--yes"]);
        assert!(ok, "duplex teardown failed:\n{out}");
    }

    /// SIGTERM; panics unless duplex exits with status 0 in time.
    fn stop(&mut self) {
        let mut process = self.process.take().expect("duplex is running");
        match terminate(&mut process, STOP_TIMEOUT) {
            Some(status) if status.success() => {}
            other => panic!(
                "duplex did not stop cleanly on SIGTERM ({other:?}); log tail:\n{}",
                self.log_tail()
            ),
        }
    }

    fn pid(&self) -> u32 {
        self.process.as_ref().expect("duplex is running").id()
    }

    /// Panics with the log tail if duplex has exited.
    fn ensure_running(&mut self, during: &str) {
        let process = self.process.as_mut().expect("duplex is running");
        if let Ok(Some(status)) = process.0.try_wait() {
            panic!(
                "duplex exited ({status}) during {during}; log tail:\n{}",
                self.log_tail()
            );
        }
    }

    /// A `kB` field of `/proc/<pid>/status` (`VmHWM`, `VmRSS`).
    fn status_kb(&self, field: &str) -> u64 {
        status_kb(self.pid(), field)
            .unwrap_or_else(|| panic!("no {field} in /proc/{}/status", self.pid()))
    }

    /// Polls `check` every `every` until it holds; returns the instant at which the successful
    /// check started. Panics if duplex exits or `timeout` passes.
    async fn wait_until<F, Fut>(
        &mut self,
        what: &str,
        timeout: Duration,
        every: Duration,
        mut check: F,
    ) -> Instant
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            let attempt = Instant::now();
            if check().await {
                return attempt;
            }
            self.ensure_running(what);
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; duplex log tail:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(every).await;
        }
    }

    fn log_tail(&self) -> String {
        let log = self.work.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Warning and error lines of duplex's log.
    fn log_findings(&self) -> Vec<String> {
        self.work
            .log()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .map(|l| l.chars().take(300).collect())
            .collect()
    }

    /// With `BENCH_LOG_DIR` set, copies duplex's log there as `<name>.log` (the work dir is
    /// removed at the end). `DUPLEX_TEST_LOG` sets duplex's `RUST_LOG`, e.g.
    /// `info,duplex::pipeline=debug` for one line per committed batch.
    fn keep_log(&self, name: &str) {
        if let Ok(dir) = std::env::var("BENCH_LOG_DIR") {
            let to = std::path::Path::new(&dir).join(format!("{name}.log"));
            let _ = std::fs::create_dir_all(&dir);
            std::fs::write(&to, self.work.log())
                .unwrap_or_else(|e| panic!("copy the duplex log to {}: {e}", to.display()));
        }
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        // Kill a still running duplex first: teardown cannot drop a slot in use.
        drop(self.process.take());
        if self.teardown_on_drop {
            progress("tearing down the reverse pipeline (slot, publication, origin)");
            let (ok, out) = self.work.run_cmd(&["teardown", "--yes"]);
            if !ok {
                eprintln!("duplex teardown failed:\n{out}");
            }
        }
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------------------------------
// Setup.

/// Facts about the machine and servers, as markdown lines.
async fn machine_facts(dbs: &TestDbs, pg: &Client) -> String {
    let mut my = dbs.mysql().await;
    let mariadb: Option<String> = my
        .query_first("SELECT VERSION()")
        .await
        .expect("SELECT VERSION()");
    let _ = my.disconnect().await;
    let postgres: String = pg
        .query_one("SHOW server_version", &[])
        .await
        .expect("SHOW server_version")
        .get(0);
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = proc_field("/proc/cpuinfo", "model name").unwrap_or_else(|| "?".into());
    let mem = proc_field("/proc/meminfo", "MemTotal").unwrap_or_else(|| "?".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let commit = git_describe();
    // What else ran: the load average over the minute before the bench's servers were busy.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        "- machine: {nproc} CPUs ({cpu}), {mem} RAM, Linux {}; load average at the start {}\n\
         - MariaDB {} (binlog ROW/FULL, innodb_flush_log_at_trx_commit=2, sync_binlog=0)\n\
         - PostgreSQL {postgres} (fsync=off, synchronous_commit=off)\n\
         - duplex {commit}, release build, default apply settings\n",
        kernel.trim(),
        load.join(" / "),
        mariadb.unwrap_or_default()
    )
}

/// A `kB` field of `/proc/<pid>/status` (`VmHWM`, `VmRSS`); `None` once the process is gone.
fn status_kb(pid: u32, field: &str) -> Option<u64> {
    proc_field(&format!("/proc/{pid}/status"), field)?
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn proc_field(path: &str, field: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.trim_start().strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

fn git_describe() -> String {
    std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "(unknown commit)".into())
}

/// The three tables on both servers.
async fn create_tables(dbs: &TestDbs, pg: &Client) {
    let mut my = dbs.mysql().await;
    for table in [&ORDER, &BASKET, &PROPS_VALUE] {
        my.query_drop(table.mysql_ddl())
            .await
            .unwrap_or_else(|e| panic!("MariaDB CREATE TABLE {}: {e}", table.name));
        pg.batch_execute(&table.pg_ddl(table.name))
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL CREATE TABLE {}: {e}", table.name));
    }
    let _ = my.disconnect().await;
}

/// Catch-up order rows `first..=last`; the same ids always give the same rows.
fn order_rows(first: i64, last: i64) -> Vec<Vec<Cell>> {
    let mut rng = StdRng::seed_from_u64(first as u64);
    (first..=last)
        .map(|id| {
            ORDER.row(&mut RowCtx {
                id,
                order_id: id,
                slot: 0,
                rng: &mut rng,
            })
        })
        .collect()
}

/// Id range of catch-up batch `batch` (0-based).
fn batch_ids(batch: i64, rows: i64) -> (i64, i64) {
    let first = batch * BATCH_ROWS + 1;
    (first, (first + BATCH_ROWS - 1).min(rows))
}

fn batch_count(rows: i64) -> i64 {
    (rows + BATCH_ROWS - 1) / BATCH_ROWS
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as i64
}

// ---------------------------------------------------------------------------------------
// 1. Catch-up.

struct WriteStats {
    elapsed: Duration,
    binlog_bytes: u64,
}

/// Writes the catch-up rows into MariaDB with [`WRITERS`] connections.
async fn write_orders(dbs: &TestDbs, rows: i64) -> WriteStats {
    progress(&format!(
        "writing {rows} b_sale_order rows into MariaDB (duplex stopped)"
    ));
    let mut my = dbs.mysql().await;
    let binlog_before = binlog_bytes(&mut my).await;
    let next = Arc::new(AtomicI64::new(0));
    let started = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| tokio::spawn(write_batches(dbs.clone(), next.clone(), rows)))
        .collect();
    for writer in writers {
        writer.await.expect("a MariaDB writer panicked");
    }
    let elapsed = started.elapsed();
    let binlog_bytes = binlog_bytes(&mut my).await.saturating_sub(binlog_before);
    let _ = my.disconnect().await;
    progress(&format!("written in {:.1} s", elapsed.as_secs_f64()));
    WriteStats {
        elapsed,
        binlog_bytes,
    }
}

/// One writer: claims batches from `next` and inserts them, generating the next statement
/// while the current one runs.
async fn write_batches(dbs: TestDbs, next: Arc<AtomicI64>, rows: i64) {
    let claim = || {
        let batch = next.fetch_add(1, Ordering::Relaxed);
        (batch < batch_count(rows)).then(|| {
            tokio::task::spawn_blocking(move || {
                let (first, last) = batch_ids(batch, rows);
                encode::insert_sql(&ORDER, &order_rows(first, last))
            })
        })
    };
    let mut conn = dbs.mysql().await;
    let mut pending = claim();
    while let Some(job) = pending.take() {
        let sql = job.await.expect("generating an INSERT panicked");
        pending = claim();
        conn.query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("MariaDB INSERT of a catch-up batch: {e}"));
    }
    let _ = conn.disconnect().await;
}

/// Total size of MariaDB's binlog files.
async fn binlog_bytes(conn: &mut mysql_async::Conn) -> u64 {
    let rows: Vec<mysql_async::Row> = conn
        .query("SHOW BINARY LOGS")
        .await
        .expect("SHOW BINARY LOGS");
    rows.iter().map(|r| r.get::<u64, _>(1).unwrap_or(0)).sum()
}

/// Starts duplex and returns the time until PostgreSQL holds all `rows` catch-up rows.
async fn catch_up(duplex: &mut Replicator, pg: &Client, rows: i64) -> (Duration, String) {
    progress("starting duplex; catching up");
    let started = Instant::now();
    duplex.start().await;
    let cpu_start = cpu::sample(duplex.pid());
    duplex
        .wait_until("catch-up (last id)", CATCH_UP_TIMEOUT, ms(100), || {
            row_exists(pg, "b_sale_order", rows)
        })
        .await;
    // Two writers interleave, so the highest id need not be the last commit.
    let done = duplex
        .wait_until("catch-up (all rows)", CATCH_UP_TIMEOUT, ms(100), || async {
            count_up_to(pg, "b_sale_order", rows).await == rows
        })
        .await;
    let cpu = cpu_start.until(&cpu::sample(duplex.pid()));
    let elapsed = done - started;
    progress(&format!(
        "caught up in {:.1} s (CPU: {cpu})",
        elapsed.as_secs_f64()
    ));
    (elapsed, cpu)
}

/// The forward checkpoint `duplex setup` recorded (pipeline `bench`): where each catch-up
/// round starts.
async fn forward_start(pg: &Client) -> (String, i64, i64) {
    pg.query_one(
        "SELECT position, ord_major, ord_minor FROM duplex.checkpoint \
         WHERE pipeline = 'bench' AND direction = 'mysql_to_pg'",
        &[],
    )
    .await
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .expect("the forward checkpoint duplex setup recorded")
}

/// Before another catch-up round (duplex stopped): the target emptied and the forward
/// checkpoint back at `start`, in one transaction.
async fn rewind(pg: &Client, start: &(String, i64, i64)) {
    progress("emptying the target and rewinding the forward checkpoint for the next round");
    let (position, major, minor) = start;
    let tx = format!(
        "BEGIN; TRUNCATE b_sale_order; \
         UPDATE duplex.checkpoint SET position = '{position}', ord_major = {major}, \
           ord_minor = {minor} WHERE pipeline = 'bench' AND direction = 'mysql_to_pg'; COMMIT"
    );
    pg.batch_execute(&tx)
        .await
        .unwrap_or_else(|e| panic!("rewind the forward catch-up: {e}"));
}

async fn row_exists(pg: &Client, table: &str, id: i64) -> bool {
    pg.query_one(
        &format!("SELECT EXISTS (SELECT 1 FROM {table} WHERE id = $1)"),
        &[&(id as i32)],
    )
    .await
    .map(|r| r.get(0))
    .unwrap_or_else(|e| panic!("look up id {id} in {table}: {e}"))
}

async fn count_up_to(pg: &Client, table: &str, id: i64) -> i64 {
    pg.query_one(
        &format!("SELECT count(*) FROM {table} WHERE id <= $1"),
        &[&(id as i32)],
    )
    .await
    .map(|r| r.get(0))
    .unwrap_or_else(|e| panic!("count {table}: {e}"))
}

/// Binary COPY of the catch-up rows into an empty copy of the target table; the rows are
/// encoded on a separate thread while the COPY runs.
async fn copy_reference(pg: &Client, rows: i64) -> Duration {
    progress("binary COPY of the same rows (raw limit)");
    pg.batch_execute(&format!(
        "DROP TABLE IF EXISTS {COPY_TABLE}; CREATE TABLE {COPY_TABLE} (LIKE b_sale_order INCLUDING ALL)"
    ))
    .await
    .expect("create the COPY table");
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let started = Instant::now();
    let encoder = std::thread::spawn(move || encode_copy_chunks(rows, tx));
    let sink = pg
        .copy_in::<_, Bytes>(&format!(
            "COPY {COPY_TABLE} ({}) FROM STDIN (FORMAT binary)",
            ORDER.pg_columns()
        ))
        .await
        .expect("start COPY");
    futures_util::pin_mut!(sink);
    while let Some(chunk) = rx.recv().await {
        sink.send(chunk).await.expect("send COPY data");
    }
    let copied = sink.as_mut().finish().await.expect("finish COPY");
    let elapsed = started.elapsed();
    encoder.join().expect("the COPY encoder panicked");
    assert_eq!(copied, rows as u64, "COPY row count");
    progress(&format!("COPY took {:.1} s", elapsed.as_secs_f64()));
    elapsed
}

/// Sends the binary COPY stream of the catch-up rows, one chunk per batch.
fn encode_copy_chunks(rows: i64, tx: tokio::sync::mpsc::Sender<Bytes>) {
    let batches = batch_count(rows);
    for batch in 0..batches {
        let (first, last) = batch_ids(batch, rows);
        let mut buf = Vec::with_capacity(1 << 20);
        if batch == 0 {
            buf.extend_from_slice(encode::COPY_HEADER);
        }
        for row in order_rows(first, last) {
            encode::push_copy_tuple(&mut buf, &row);
        }
        if batch == batches - 1 {
            buf.extend_from_slice(encode::COPY_TRAILER);
        }
        if tx.blocking_send(Bytes::from(buf)).is_err() {
            return;
        }
    }
}

/// Rows among the first `rows` whose replicated values differ from the COPY reference.
async fn compare_with_reference(pg: &Client, rows: i64) -> i64 {
    progress("comparing replicated rows with the COPY reference");
    let row_of = |alias: &str| {
        let cols: Vec<String> = ORDER
            .columns
            .iter()
            .map(|c| format!("{alias}.{}", c.name.to_lowercase()))
            .collect();
        format!("({})", cols.join(", "))
    };
    let sql = format!(
        "SELECT count(*) FROM (SELECT * FROM b_sale_order WHERE id <= $1) o \
         FULL JOIN {COPY_TABLE} c ON c.id = o.id WHERE {} IS DISTINCT FROM {}",
        row_of("o"),
        row_of("c")
    );
    pg.query_one(&sql, &[&(rows as i32)])
        .await
        .expect("compare with the COPY reference")
        .get(0)
}

// ---------------------------------------------------------------------------------------
// 2. Steady state.

struct Steady {
    elapsed: Duration,
    transactions: usize,
    /// Lag per transaction in microseconds, clamped at 0, sorted.
    lags_us: Vec<i64>,
    /// Transactions applied (by `applied_at`) before the writer saw COMMIT return.
    negative: usize,
}

/// Writes paced transactions for `duration`, then reads each order's `applied_at`.
async fn steady_state(
    dbs: &TestDbs,
    duplex: &mut Replicator,
    pg: &Client,
    duration: Duration,
) -> Steady {
    progress(&format!(
        "steady state: {STEADY_TARGET_TPS} tx/s for {} s",
        duration.as_secs()
    ));
    let mut conn = dbs.mysql().await;
    let mut writer = SteadyWriter::default();
    let mut ticker = tokio::time::interval(STEADY_TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    while started.elapsed() < duration {
        ticker.tick().await;
        writer.transaction(&mut conn).await;
        if writer.commits.len() % 200 == 0 {
            duplex.ensure_running("the steady-state phase");
        }
    }
    let elapsed = started.elapsed();
    let _ = conn.disconnect().await;
    let last = writer.commits.last().map_or(STEADY_ORDER_BASE, |c| c.0);
    duplex
        .wait_until("the steady-state rows", DRAIN_TIMEOUT, ms(20), || {
            row_exists(pg, "b_sale_order", last)
        })
        .await;
    check_children(pg, &writer).await;
    let (lags_us, negative) = lags(pg, &writer.commits).await;
    if let Ok(path) = std::env::var("BENCH_LAGS_CSV") {
        dump_lags(pg, &writer.commits, &path).await;
    }
    Steady {
        elapsed,
        transactions: writer.commits.len(),
        lags_us,
        negative,
    }
}

/// Generates and writes the steady-state transactions; remembers when each commit returned.
struct SteadyWriter {
    rng: StdRng,
    next_basket: i64,
    next_prop: i64,
    /// (order id, µs since the epoch when COMMIT returned)
    commits: Vec<(i64, i64)>,
}

impl Default for SteadyWriter {
    fn default() -> Self {
        SteadyWriter {
            rng: StdRng::seed_from_u64(7),
            next_basket: 1,
            next_prop: 1,
            commits: Vec::new(),
        }
    }
}

impl SteadyWriter {
    async fn transaction(&mut self, conn: &mut mysql_async::Conn) {
        let order_id = STEADY_ORDER_BASE + self.commits.len() as i64 + 1;
        let statements = [
            self.insert(&ORDER, order_id, order_id, 1),
            self.insert(&BASKET, order_id, self.next_basket, BASKETS_PER_ORDER),
            self.insert(&PROPS_VALUE, order_id, self.next_prop, PROPS_PER_ORDER),
        ];
        self.next_basket += BASKETS_PER_ORDER as i64;
        self.next_prop += PROPS_PER_ORDER as i64;
        let mut tx = conn
            .start_transaction(TxOpts::default())
            .await
            .expect("MariaDB START TRANSACTION");
        for sql in statements {
            tx.query_drop(sql).await.expect("steady-state INSERT");
        }
        tx.commit().await.expect("MariaDB COMMIT");
        self.commits.push((order_id, now_us()));
    }

    /// INSERT of `n` rows of `table` for order `order_id`, with ids from `first_id` on.
    fn insert(&mut self, table: &Table, order_id: i64, first_id: i64, n: usize) -> String {
        let rows: Vec<Vec<Cell>> = (0..n)
            .map(|slot| {
                table.row(&mut RowCtx {
                    id: first_id + slot as i64,
                    order_id,
                    slot,
                    rng: &mut self.rng,
                })
            })
            .collect();
        encode::insert_sql(table, &rows)
    }
}

/// Every basket and property row of the steady-state orders arrived.
async fn check_children(pg: &Client, writer: &SteadyWriter) {
    let orders = writer.commits.len() as i64;
    for (table, per_order) in [
        (BASKET.name, BASKETS_PER_ORDER),
        (PROPS_VALUE.name, PROPS_PER_ORDER),
    ] {
        let count: i64 = pg
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .expect("count steady-state rows")
            .get(0);
        assert_eq!(
            count,
            orders * per_order as i64,
            "{table} rows in PostgreSQL after the steady-state phase"
        );
    }
}

/// `applied_at` (µs since the epoch) of the steady-state orders, by id.
async fn applied_at(pg: &Client) -> HashMap<i64, i64> {
    let rows = pg
        .query(
            "SELECT id, (extract(epoch FROM applied_at) * 1000000)::bigint \
             FROM b_sale_order WHERE id > $1",
            &[&(STEADY_ORDER_BASE as i32)],
        )
        .await
        .expect("read applied_at");
    rows.iter()
        .map(|r| (r.get::<_, i32>(0) as i64, r.get::<_, i64>(1)))
        .collect()
}

/// Sorted lags (µs, clamped at 0) and the number of negative ones.
async fn lags(pg: &Client, commits: &[(i64, i64)]) -> (Vec<i64>, usize) {
    let applied = applied_at(pg).await;
    let mut negative = 0;
    let mut lags: Vec<i64> = commits
        .iter()
        .map(|(id, committed)| {
            let at = applied
                .get(id)
                .unwrap_or_else(|| panic!("order {id} missing in PostgreSQL"));
            let lag = at - committed;
            negative += usize::from(lag < 0);
            lag.max(0)
        })
        .collect();
    lags.sort_unstable();
    (lags, negative)
}

/// Writes `order_id,commit_us,applied_us` per steady-state transaction to `path` (for
/// looking at the lag over time; enabled by `BENCH_LAGS_CSV`).
async fn dump_lags(pg: &Client, commits: &[(i64, i64)], path: &str) {
    let applied = applied_at(pg).await;
    let mut csv = String::from("order_id,commit_us,applied_us\n");
    for (id, committed) in commits {
        let _ = writeln!(
            csv,
            "{id},{committed},{}",
            applied.get(id).copied().unwrap_or(0)
        );
    }
    std::fs::write(path, csv).unwrap_or_else(|e| panic!("write {path}: {e}"));
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ---------------------------------------------------------------------------------------
// 3. Memory.

struct Memory {
    rss_before_kb: u64,
    hwm_kb: u64,
    /// How long MariaDB took for the UPDATE (until its COMMIT returned).
    update: Duration,
    /// From MariaDB's COMMIT to the new prices visible in PostgreSQL.
    apply: Duration,
}

/// Restarts duplex, updates every catch-up row in one MariaDB transaction, waits until
/// PostgreSQL shows all new prices and reads duplex's peak RSS.
async fn big_update(dbs: &TestDbs, duplex: &mut Replicator, pg: &Client, rows: i64) -> Memory {
    progress("restarting duplex for the memory measurement");
    duplex.stop();
    duplex.start().await;
    let rss_before_kb = duplex.status_kb("VmRSS");
    progress(&format!("one MariaDB transaction updating {rows} rows"));
    let mut conn = dbs.mysql().await;
    let started = Instant::now();
    conn.query_drop(format!(
        "UPDATE b_sale_order SET PRICE = PRICE + 1 WHERE ID <= {rows}"
    ))
    .await
    .expect("the big UPDATE");
    let committed = Instant::now();
    assert_eq!(conn.affected_rows(), rows as u64, "rows updated in MariaDB");
    let _ = conn.disconnect().await;
    progress(&format!(
        "MariaDB committed after {:.1} s; waiting for PostgreSQL",
        (committed - started).as_secs_f64()
    ));
    let visible = duplex
        .wait_until(
            "the big update to be applied",
            UPDATE_TIMEOUT,
            ms(100),
            || price_updated(pg, rows),
        )
        .await;
    assert_eq!(updated_count(pg).await, rows, "rows with the new price");
    Memory {
        rss_before_kb,
        hwm_kb: duplex.status_kb("VmHWM"),
        update: committed - started,
        apply: visible.saturating_duration_since(committed),
    }
}

/// Row `id` carries the updated price (the whole update is one target transaction, so one
/// row tells).
async fn price_updated(pg: &Client, id: i64) -> bool {
    pg.query_one(
        &format!(
            "SELECT o.price = c.price + 1 FROM b_sale_order o JOIN {COPY_TABLE} c USING (id) \
             WHERE id = $1"
        ),
        &[&(id as i32)],
    )
    .await
    .map(|r| r.get(0))
    .expect("check the updated price")
}

async fn updated_count(pg: &Client) -> i64 {
    pg.query_one(
        &format!(
            "SELECT count(*) FROM b_sale_order o JOIN {COPY_TABLE} c USING (id) \
             WHERE o.price = c.price + 1"
        ),
        &[],
    )
    .await
    .expect("count updated rows")
    .get(0)
}

// ---------------------------------------------------------------------------------------
// Report.

struct Results {
    rows: i64,
    write: WriteStats,
    forward: Option<Forward>,
    snapshot: Option<snapshot::Snapshot>,
    reverse: Option<reverse::Reverse>,
    tls: Option<tls::Tls>,
    shop: Option<shop::Shop>,
}

/// The MariaDB → PostgreSQL stream measurements.
struct Forward {
    /// Each round's catch-up and COPY reference time, in the order run.
    catch_ups: Vec<Duration>,
    copies: Vec<Duration>,
    /// Where the cores went during the last catch-up round.
    catch_up_cpu: String,
    mismatches: i64,
    steady: Steady,
    hwm_before_restart: u64,
    memory: Memory,
    /// Warning and error lines of duplex's log.
    findings: Vec<String>,
}

/// One table row: measurement, result, raw limit, ratio, target, verdict.
type Line = [String; 6];

fn render(facts: &str, r: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## duplex throughput bench\n\n{facts}");
    let _ = writeln!(
        out,
        "| measurement | result | raw limit (same run) | ratio | target | verdict |\n\
         |---|---|---|---|---|---|"
    );
    let mut lines = Vec::new();
    if let Some(f) = &r.forward {
        lines.extend(
            [
                catch_up_lines(r, f),
                steady_lines(&f.steady),
                memory_lines(r, f),
            ]
            .concat(),
        );
    }
    if let Some(snap) = &r.snapshot {
        lines.extend(snapshot::lines(snap));
        if let Some(v) = &snap.verify {
            lines.extend(verify::lines(v));
        }
    }
    if let Some(rev) = &r.reverse {
        lines.extend(reverse::lines(rev));
    }
    if let Some(t) = &r.tls {
        lines.extend(tls::lines(t));
    }
    if let Some(s) = &r.shop {
        lines.extend(shop::lines(s));
        if let Some(v) = &s.verify {
            lines.extend(verify::lines(v));
        }
    }
    for line in lines {
        let _ = writeln!(out, "| {} |", line.join(" | "));
    }
    if let Some(f) = &r.forward {
        out.push_str(&notes(f));
    }
    if let Some(snap) = &r.snapshot {
        out.push_str(&snapshot::notes(snap));
        if let Some(v) = &snap.verify {
            out.push_str(&verify::notes(v));
        }
    }
    if let Some(rev) = &r.reverse {
        out.push_str(&reverse::notes(rev));
    }
    if let Some(s) = &r.shop {
        out.push_str(&shop::notes(s));
        if let Some(v) = &s.verify {
            out.push_str(&verify::notes(v));
        }
    }
    out
}

fn catch_up_lines(r: &Results, f: &Forward) -> Vec<Line> {
    let (catch_up, copy) = (median(&f.catch_ups), median(&f.copies));
    let rate = per_second(r.rows, catch_up);
    let copy_rate = per_second(r.rows, copy);
    let ratio = rate / copy_rate;
    let write_rate = per_second(r.rows, r.write.elapsed);
    let runs = f.catch_ups.len();
    vec![
        [
            format!("catch-up: {} b_sale_order rows (76 cols) written while duplex was stopped, median of {runs} interleaved runs", thousands(r.rows as f64)),
            format!("{} rows/s ({:.1} s; runs {})", thousands(rate), catch_up.as_secs_f64(), seconds(&f.catch_ups)),
            format!("{} rows/s (binary COPY, {:.1} s; runs {})", thousands(copy_rate), copy.as_secs_f64(), seconds(&f.copies)),
            format!("{ratio:.2}"),
            format!("≥ 60,000 rows/s and ≥ {TARGET_COPY_RATIO} of COPY"),
            verdict(rate >= TARGET_CATCH_UP_ROWS_PER_S && ratio >= TARGET_COPY_RATIO),
        ],
        [
            "catch-up: replicated rows differing from the COPY reference".into(),
            thousands(f.mismatches as f64),
            "—".into(),
            "—".into(),
            "0".into(),
            verdict(f.mismatches == 0),
        ],
        [
            format!("source: MariaDB writing those rows ({BATCH_ROWS}-row INSERT txns, {WRITERS} connections)"),
            format!(
                "{} rows/s ({:.1} s, binlog {:.0} MB)",
                thousands(write_rate),
                r.write.elapsed.as_secs_f64(),
                r.write.binlog_bytes as f64 / 1e6
            ),
            "—".into(),
            "—".into(),
            "informational".into(),
            "—".into(),
        ],
    ]
}

fn steady_lines(s: &Steady) -> Vec<Line> {
    let tps = s.transactions as f64 / s.elapsed.as_secs_f64();
    let rows_per_tx = (1 + BASKETS_PER_ORDER + PROPS_PER_ORDER) as f64;
    let lag = |p: f64| percentile(&s.lags_us, p) as f64 / 1000.0;
    let p99 = lag(99.0);
    let lag_line = |name: &str, value: f64, target: &str, verdict: String| -> Line {
        [
            format!("steady state: end-to-end lag {name}"),
            format!("{value:.1} ms"),
            "—".into(),
            "—".into(),
            target.into(),
            verdict,
        ]
    };
    vec![
        [
            format!(
                "steady state: achieved rate over {:.0} s (1 order + {BASKETS_PER_ORDER} basket + {PROPS_PER_ORDER} props rows per tx)",
                s.elapsed.as_secs_f64()
            ),
            format!("{tps:.1} tx/s ({} rows/s)", thousands(tps * rows_per_tx)),
            "—".into(),
            "—".into(),
            format!("{STEADY_TARGET_TPS:.0} tx/s"),
            verdict(tps >= STEADY_TARGET_TPS * 0.98),
        ],
        lag_line("p50", lag(50.0), "—", "—".into()),
        lag_line("p99", p99, "< 100 ms", verdict(p99 < TARGET_P99_MS)),
        lag_line("max", lag(100.0), "—", "—".into()),
    ]
}

fn memory_lines(r: &Results, f: &Forward) -> Vec<Line> {
    let m = &f.memory;
    let hwm_mb = m.hwm_kb as f64 / 1024.0;
    vec![
        [
            format!(
                "memory: duplex peak RSS (VmHWM) applying 1 txn that UPDATEs {} rows",
                thousands(r.rows as f64)
            ),
            format!(
                "{hwm_mb:.1} MB (idle before: {:.1} MB)",
                m.rss_before_kb as f64 / 1024.0
            ),
            "—".into(),
            "—".into(),
            "< 150 MB".into(),
            verdict(hwm_mb < TARGET_RSS_MB),
        ],
        [
            "memory: time to apply that txn (MariaDB COMMIT → visible in PostgreSQL)".into(),
            format!(
                "{:.1} s ({} rows/s)",
                m.apply.as_secs_f64(),
                thousands(per_second(r.rows, m.apply))
            ),
            format!("MariaDB's own UPDATE: {:.1} s", m.update.as_secs_f64()),
            "—".into(),
            "informational".into(),
            "—".into(),
        ],
        [
            "memory: duplex VmHWM over catch-up + steady state".into(),
            format!("{:.1} MB", f.hwm_before_restart as f64 / 1024.0),
            "—".into(),
            "—".into(),
            "informational".into(),
            "—".into(),
        ],
    ]
}

fn notes(f: &Forward) -> String {
    let s = &f.steady;
    let mut out = format!(
        "\nNotes:\n\
         - catch-up time runs from spawning `duplex run` to the last row visible (polled every 100 ms); \
         the raw limit is one binary `COPY … FROM STDIN (FORMAT binary)` of the same rows into an \
         identical empty table (rows encoded on another thread while COPY runs).\n\
         - lag = `applied_at` (`DEFAULT clock_timestamp()`, taken when duplex inserts the order row, \
         i.e. slightly before its target COMMIT) − time MariaDB's COMMIT returned to the writer; \
         {} of {} transactions had a negative lag (applied before the writer saw COMMIT return) and were \
         counted as 0. Pacing: `tokio::time::interval({} ms)`, `MissedTickBehavior::Burst`.\n\
         - the memory phase restarts duplex first, so VmHWM covers only the big transaction.\n\
         - CPU, % of one core (2 cores = 200 %), last catch-up round (streams up → done): {}.\n",
        s.negative,
        s.transactions,
        STEADY_TICK.as_millis(),
        f.catch_up_cpu
    );
    out.push_str(&findings_note("duplex log", &f.findings));
    out
}

/// The note on a duplex log's warning and error lines.
fn findings_note(what: &str, findings: &[String]) -> String {
    let mut out = String::new();
    if findings.is_empty() {
        let _ = writeln!(out, "- {what}: no warnings or errors.");
    } else {
        let _ = writeln!(
            out,
            "- {what}: {} warning/error lines, first ones:",
            findings.len()
        );
        for line in findings.iter().take(5) {
            let _ = writeln!(out, "  - `{line}`");
        }
    }
    out
}

/// The median of timings (the upper one of an even count).
fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

/// `1.2 / 1.3 / 1.1 s`: each run's time, in the order run.
fn seconds(v: &[Duration]) -> String {
    let each: Vec<String> = v
        .iter()
        .map(|d| format!("{:.1}", d.as_secs_f64()))
        .collect();
    format!("{} s", each.join(" / "))
}

fn per_second(rows: i64, elapsed: Duration) -> f64 {
    rows as f64 / elapsed.as_secs_f64().max(1e-9)
}

fn verdict(meets: bool) -> String {
    if meets { "meets" } else { "misses" }.into()
}

/// `1234567.8` → `1,234,568`.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

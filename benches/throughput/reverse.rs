//! The PostgreSQL → MariaDB measurements: reverse catch-up, the CRM's status updates, and
//! both directions at once.
//!
//! They run on fresh databases (so nothing of the forward measurements is replayed) with
//! `b_sale_order` mapped `direction = "both"`, `columns = "all"`, and `b_sale_basket` and
//! `b_sale_order_props_value` mapped forward (for the MariaDB side of the both-ways load).
//! The MariaDB `b_sale_order` has one column more than its PostgreSQL twin, skipped by the
//! mapping: `APPLIED_AT timestamp(6) DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE
//! CURRENT_TIMESTAMP(6)`, which MariaDB sets when duplex's statement changes the row (the
//! reverse lag's apply time). `timestamp` rather than `datetime`: its `UNIX_TIMESTAMP()` does
//! not depend on the session time zone of the writer or the reader.
//!
//! Order of work, chosen so that no measurement pays for another one's binlog or WAL:
//!
//! 1. tables on both sides, then the raw INSERT reference into `b_sale_order_raw` — before
//!    `duplex setup`, which records the binlog end as the forward start, so duplex never reads
//!    those events;
//! 2. `duplex setup` (slot, publication, origin), the rows written into PostgreSQL while duplex
//!    is stopped, then duplex started and timed until MariaDB holds every row; the replicated
//!    rows are compared with the raw table column by column;
//! 3. duplex stopped; the raw status UPDATEs against `b_sale_order_raw`; duplex restarted and a
//!    forward barrier row awaited (its binlog reader is past the raw UPDATEs); then the same
//!    UPDATEs in PostgreSQL, timed until MariaDB shows the last one; the hot rows are compared
//!    with the raw table again;
//! 4. both ways at once; then duplex stopped and `duplex teardown` (also on a panic, through
//!    [`Replicator`]'s drop).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::SinkExt;
use mysql_async::prelude::Queryable;
use mysql_async::Pool;
use tokio_postgres::Client;

use super::cpu;
use super::schema::{Cell, BASKET, ORDER, PROPS_VALUE};
use super::support::harness::Workdir;
use super::support::{self, TestDbs};
use super::{
    batch_count, batch_ids, encode, lags, median, ms, now_us, order_rows, per_second, percentile,
    progress, row_exists, seconds, thousands, verdict, Line, Replicator, Settings, SteadyWriter,
    BASKETS_PER_ORDER, BATCH_ROWS, CATCH_UP_TIMEOUT, DRAIN_TIMEOUT, PROPS_PER_ORDER,
    STEADY_ORDER_BASE, STEADY_TARGET_TPS, STEADY_TICK, STREAM_STARTED, TARGET_P99_MS,
    UPDATE_TIMEOUT,
};

/// The MariaDB table that receives the raw INSERTs and UPDATEs (same shape as `b_sale_order`).
const RAW_TABLE: &str = "b_sale_order_raw";
/// Interleaved rounds of the reverse catch-up and its raw references.
const CATCH_UP_RUNS: usize = 3;
/// The MariaDB table that receives the raw `LOAD DATA` reference.
const RAW_LOAD_TABLE: &str = "b_sale_order_rawload";
/// The MariaDB-only apply-time column.
const APPLIED_AT: &str = "APPLIED_AT";
const APPLIED_AT_DDL: &str =
    "`APPLIED_AT` timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)";
/// What duplex logs once its PostgreSQL stream is up.
const LOGICAL_STARTED: &str = "logical replication started";
/// Orders the status updates go round (the CRM works on recent orders).
const HOT_ORDERS: i64 = 10_000;
/// The status the very last status update sets; no other update sets it.
const SENTINEL: &str = "ZZ";
/// Length of the informational reverse-only run with `synchronous_commit = off` (at most
/// `BENCH_STEADY_SECS`).
const ASYNC_COMMIT_SECS: u64 = 15;
/// Targets from the brief.
const TARGET_CATCH_UP_RATIO: f64 = 1.2;
const TARGET_STATUS_RATIO: f64 = 1.0;

/// The mappings of the reverse run.
fn mappings() -> String {
    let order = format!(
        "[[table]]\nsource = \"{0}\"\ntarget = \"{0}\"\ndirection = \"both\"\ncolumns = \"all\"\n\n\
         [table.column]\n{APPLIED_AT} = {{ skip = true }}\n",
        ORDER.name
    );
    [order, BASKET.mapping(), PROPS_VALUE.mapping()].join("\n")
}

/// Everything the reverse measurements found.
pub struct Reverse {
    rows: i64,
    /// PostgreSQL writing the rows (1,000-row COPY transactions, one connection), per round.
    pg_writes: Vec<Duration>,
    /// WAL of the last round's rows.
    wal_bytes: i64,
    /// The raw limit: 1,000-row INSERTs into MariaDB, one connection, per round.
    raw_inserts: Vec<Duration>,
    /// The same rows with `LOAD DATA LOCAL INFILE`, 1,000 rows each, from memory, per round.
    raw_loads: Vec<Duration>,
    /// duplex's catch-up, per round (interleaved with the raw references).
    catch_ups: Vec<Duration>,
    catch_up_mismatches: i64,
    catch_up_cpu: String,
    hwm_catch_up_kb: u64,
    status: Status,
    both: Both,
    /// Reverse-only, PostgreSQL writer with `synchronous_commit = off`.
    async_commit: Paced,
    /// VmHWM of the duplex restarted after the catch-up, over status updates and both ways.
    hwm_after_kb: u64,
    findings: Vec<String>,
}

struct Status {
    updates: i64,
    hot: i64,
    /// PostgreSQL issuing the updates (the first until the last COMMIT returned).
    issue: Duration,
    /// From the first update until MariaDB showed the last.
    apply: Duration,
    /// The same updates straight against MariaDB.
    raw: Duration,
    mismatches: i64,
    cpu: String,
}

struct Both {
    forward_elapsed: Duration,
    forward_tx: usize,
    forward_lags_us: Vec<i64>,
    forward_negative: usize,
    reverse: Paced,
    cpu: String,
}

/// Paced PostgreSQL status updates and their lags into MariaDB.
struct Paced {
    elapsed: Duration,
    tx: usize,
    /// Sorted lags of the updates that were the last of their row (all, unless the ids wrapped).
    lags_us: Vec<i64>,
    negative: usize,
}

impl Paced {
    fn tps(&self) -> f64 {
        self.tx as f64 / self.elapsed.as_secs_f64()
    }

    fn lag_ms(&self, p: f64) -> f64 {
        percentile(&self.lags_us, p) as f64 / 1000.0
    }
}

pub async fn run(settings: &Settings) -> Reverse {
    let rows = settings.rows;
    progress("reverse: fresh databases for the PostgreSQL → MariaDB measurements");
    let dbs = support::fresh_dbs("bench_reverse").await;
    let pg = dbs.pg().await;
    let pool = Pool::new(support::mysql_opts(Some(&dbs.mysql_db)));
    create_tables(&dbs, &pg).await;
    let mut raw_inserts = vec![raw_insert(&dbs, rows).await];
    let mut raw_loads = vec![raw_load(&dbs, rows).await];

    let pipeline = format!("rev{}", &dbs.pg_db[dbs.pg_db.len() - 8..]);
    let work = Workdir::new(&dbs, &pipeline, "UTC", &[("sale.toml", &mappings())]);
    // Catch-up measures the replication stream, not a snapshot.
    work.append_config("[snapshot]\non_start = false\n");
    work.setup();
    let mut duplex = Replicator::new(work, &[STREAM_STARTED, LOGICAL_STARTED], true);

    // Interleaved rounds: the raw references, then duplex's catch-up of the same rows. The
    // last round writes ids 1..rows (the status updates work on those); earlier rounds write
    // theirs above.
    let mut catch_ups = Vec::new();
    let mut pg_writes = Vec::new();
    let (mut wal_bytes, mut catch_up_cpu) = (0, String::new());
    for round in 0..CATCH_UP_RUNS {
        let offset = ((round + 1) % CATCH_UP_RUNS) as i64 * rows;
        if round > 0 {
            duplex.stop();
            empty_mysql(&dbs).await;
            raw_inserts.push(raw_insert(&dbs, rows).await);
            raw_loads.push(raw_load(&dbs, rows).await);
            // duplex's binlog reader passes the raw rows before the timed catch-up.
            duplex.start().await;
            let barrier = STEADY_ORDER_BASE - 10 - round as i64;
            forward_barrier(&dbs, &mut duplex, &pg, barrier, "the raw references' rows").await;
            duplex.stop();
        }
        let (pg_write, wal) = write_pg_orders(&pg, rows, offset).await;
        pg_writes.push(pg_write);
        let (took, cpu) = catch_up(&mut duplex, &pool, rows, offset).await;
        catch_ups.push(took);
        (wal_bytes, catch_up_cpu) = (wal, cpu);
    }
    let catch_up_mismatches = compare_with_raw(&pool, rows).await;
    let hwm_catch_up_kb = duplex.status_kb("VmHWM");

    let hot = HOT_ORDERS.min(rows);
    let updates = settings.status_updates;
    progress("reverse: stopping duplex for the raw status UPDATEs");
    duplex.stop();
    let raw = raw_status_updates(&pool, updates, hot).await;
    duplex.start().await;
    forward_barrier(&dbs, &mut duplex, &pg, STEADY_ORDER_BASE, "the raw UPDATEs").await;
    let (issue, apply, cpu) = status_updates(&mut duplex, &pg, &pool, updates, hot).await;
    let status_mismatches = compare_with_raw(&pool, hot).await;
    // The forward direction reads duplex's own MariaDB writes of the status updates back (the
    // CRM's mirrors of Bitrix's columns); the both-ways measurement starts once it is past them.
    forward_barrier(
        &dbs,
        &mut duplex,
        &pg,
        STEADY_ORDER_BASE - 1,
        "duplex's own writes of the status updates (read back)",
    )
    .await;
    let status = Status {
        updates,
        hot,
        issue,
        apply,
        raw,
        mismatches: status_mismatches,
        cpu,
    };

    let (both, steady_updates) =
        both_ways(&dbs, &mut duplex, &pg, &pool, rows, hot, settings.steady).await;
    let async_secs = settings.steady.min(Duration::from_secs(ASYNC_COMMIT_SECS));
    progress(&format!(
        "reverse: informational: PostgreSQL → MariaDB only, writer synchronous_commit = off, {} s",
        async_secs.as_secs()
    ));
    let sweep = Sweep {
        rows,
        hot,
        first: steady_updates,
    };
    let updates = pg_paced_updates(&dbs, sweep, async_secs, false).await;
    let async_commit = drain_reverse(&mut duplex, &pool, updates).await;
    let hwm_after_kb = duplex.status_kb("VmHWM");
    duplex.stop();
    progress("reverse: duplex teardown");
    duplex.teardown();
    let findings = duplex.log_findings();
    duplex.keep_log("reverse");
    pool.disconnect().await.expect("close the MariaDB pool");
    Reverse {
        rows,
        pg_writes,
        wal_bytes,
        raw_inserts,
        raw_loads,
        catch_ups,
        catch_up_mismatches,
        catch_up_cpu,
        hwm_catch_up_kb,
        status,
        both,
        async_commit,
        hwm_after_kb,
        findings,
    }
}

// ---------------------------------------------------------------------------------------
// Setup and helpers.

/// `b_sale_order` (+ `APPLIED_AT`), its raw twin, basket and properties in MariaDB; the same
/// tables (without the raw twin) in PostgreSQL.
async fn create_tables(dbs: &TestDbs, pg: &Client) {
    let mut my = dbs.mysql().await;
    for name in [ORDER.name, RAW_TABLE, RAW_LOAD_TABLE] {
        my.query_drop(ORDER.mysql_ddl_as(name, &[APPLIED_AT_DDL]))
            .await
            .unwrap_or_else(|e| panic!("MariaDB CREATE TABLE {name}: {e}"));
    }
    for table in [&BASKET, &PROPS_VALUE] {
        my.query_drop(table.mysql_ddl())
            .await
            .unwrap_or_else(|e| panic!("MariaDB CREATE TABLE {}: {e}", table.name));
    }
    for table in [&ORDER, &BASKET, &PROPS_VALUE] {
        pg.batch_execute(&table.pg_ddl(table.name))
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL CREATE TABLE {}: {e}", table.name));
    }
    let _ = my.disconnect().await;
}

/// The reverse rows `first..=last`: the catch-up rows, with the ~1 % zero `DATE_STATUS` (a
/// MariaDB-only value, NULL in PostgreSQL, where MariaDB's column is NOT NULL) replaced by a
/// real date, as a CRM would write.
fn reverse_rows(first: i64, last: i64) -> Vec<Vec<Cell>> {
    let date = chrono::NaiveDate::from_ymd_opt(2024, 1, 1)
        .and_then(|d| d.and_hms_opt(12, 0, 0))
        .expect("valid date");
    let mut rows = order_rows(first, last);
    for cell in rows.iter_mut().flatten() {
        if *cell == Cell::ZeroDt {
            *cell = Cell::Dt(date);
        }
    }
    rows
}

async fn my_i64(pool: &Pool, sql: &str) -> i64 {
    let mut conn = pool.get_conn().await.expect("a MariaDB connection");
    let v: Option<i64> = conn
        .query_first(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    v.unwrap_or(0)
}

/// The status of order `id` in MariaDB's `b_sale_order` is `status`.
async fn my_status_is(pool: &Pool, id: i64, status: &str) -> bool {
    let mut conn = pool.get_conn().await.expect("a MariaDB connection");
    let v: Option<String> = conn
        .exec_first("SELECT STATUS_ID FROM b_sale_order WHERE ID = ?", (id,))
        .await
        .unwrap_or_else(|e| panic!("read the status of order {id}: {e}"));
    v.as_deref() == Some(status)
}

// ---------------------------------------------------------------------------------------
// 4. Reverse catch-up.

/// The raw limit: the rows into `b_sale_order_raw`, 1,000 per INSERT, one connection, the next
/// statement generated on another thread while the current one runs.
async fn raw_insert(dbs: &TestDbs, rows: i64) -> Duration {
    progress(&format!(
        "reverse: raw limit: {rows} rows into MariaDB {RAW_TABLE} ({BATCH_ROWS}-row INSERTs, 1 connection)"
    ));
    let generate = |batch: i64| {
        tokio::task::spawn_blocking(move || {
            let (first, last) = batch_ids(batch, rows);
            encode::insert_sql_into(&ORDER, RAW_TABLE, &reverse_rows(first, last))
        })
    };
    let mut conn = dbs.mysql().await;
    let batches = batch_count(rows);
    let started = Instant::now();
    let mut pending = Some(generate(0));
    for batch in 0..batches {
        let sql = pending
            .take()
            .expect("a statement is pending")
            .await
            .expect("generating an INSERT panicked");
        if batch + 1 < batches {
            pending = Some(generate(batch + 1));
        }
        conn.query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("MariaDB INSERT into {RAW_TABLE}: {e}"));
    }
    let elapsed = started.elapsed();
    let _ = conn.disconnect().await;
    progress(&format!("raw INSERTs took {:.1} s", elapsed.as_secs_f64()));
    elapsed
}

/// The other raw limit: the rows into `b_sale_order_rawload` with `LOAD DATA LOCAL INFILE`
/// streamed from memory, 1,000 rows each (autocommit), one connection, the next batch
/// generated on another thread while the current one loads.
async fn raw_load(dbs: &TestDbs, rows: i64) -> Duration {
    progress(&format!(
        "reverse: raw limit: {rows} rows into MariaDB {RAW_LOAD_TABLE} ({BATCH_ROWS}-row LOAD DATA LOCAL, 1 connection)"
    ));
    let names: Vec<String> = ORDER
        .columns
        .iter()
        .map(|c| format!("`{}`", c.name))
        .collect();
    let sql = format!(
        "LOAD DATA LOCAL INFILE 'rows' INTO TABLE `{RAW_LOAD_TABLE}` CHARACTER SET utf8mb4 ({})",
        names.join(", ")
    );
    let generate = |batch: i64| {
        tokio::task::spawn_blocking(move || {
            let (first, last) = batch_ids(batch, rows);
            Bytes::from(encode::load_data_rows(&reverse_rows(first, last)))
        })
    };
    let mut conn = dbs.mysql().await;
    let batches = batch_count(rows);
    let started = Instant::now();
    let mut pending = Some(generate(0));
    for batch in 0..batches {
        let data = pending
            .take()
            .expect("a batch is pending")
            .await
            .expect("generating a LOAD DATA batch panicked");
        if batch + 1 < batches {
            pending = Some(generate(batch + 1));
        }
        conn.set_infile_handler(async move {
            let stream: mysql_async::InfileData =
                Box::pin(futures_util::stream::once(async move { Ok(data) }));
            Ok(stream)
        });
        conn.query_drop(&sql)
            .await
            .unwrap_or_else(|e| panic!("MariaDB LOAD DATA into {RAW_LOAD_TABLE}: {e}"));
    }
    let elapsed = started.elapsed();
    let loaded: Option<i64> = conn
        .query_first(format!("SELECT COUNT(*) FROM {RAW_LOAD_TABLE}"))
        .await
        .expect("count the loaded rows");
    assert_eq!(loaded, Some(rows), "rows in {RAW_LOAD_TABLE}");
    let _ = conn.disconnect().await;
    progress(&format!(
        "raw LOAD DATA took {:.1} s",
        elapsed.as_secs_f64()
    ));
    elapsed
}

/// Writes the rows into PostgreSQL's `b_sale_order`, one binary COPY (its own transaction)
/// per 1,000 rows, one connection; returns the time and the WAL written.
async fn write_pg_orders(pg: &Client, rows: i64, offset: i64) -> (Duration, i64) {
    progress(&format!(
        "reverse: writing {rows} rows (ids from {}) into PostgreSQL ({BATCH_ROWS}-row COPY transactions; duplex stopped)",
        offset + 1
    ));
    let lsn_before: String = pg
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .expect("read the WAL position")
        .get(0);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, Bytes)>(8);
    let encoder = std::thread::spawn(move || {
        for batch in 0..batch_count(rows) {
            let (first, last) = batch_ids(batch, rows);
            let mut buf = Vec::with_capacity(1 << 20);
            buf.extend_from_slice(encode::COPY_HEADER);
            for row in reverse_rows(first + offset, last + offset) {
                encode::push_copy_tuple(&mut buf, &row);
            }
            buf.extend_from_slice(encode::COPY_TRAILER);
            if tx
                .blocking_send(((last - first + 1) as u64, Bytes::from(buf)))
                .is_err()
            {
                return;
            }
        }
    });
    let sql = format!(
        "COPY {} ({}) FROM STDIN (FORMAT binary)",
        ORDER.name,
        ORDER.pg_columns()
    );
    let started = Instant::now();
    while let Some((n, chunk)) = rx.recv().await {
        let sink = pg
            .copy_in::<_, Bytes>(&sql)
            .await
            .expect("start a COPY batch");
        futures_util::pin_mut!(sink);
        sink.send(chunk).await.expect("send COPY data");
        let copied = sink.as_mut().finish().await.expect("finish a COPY batch");
        assert_eq!(copied, n, "rows of a COPY batch");
    }
    let elapsed = started.elapsed();
    encoder.join().expect("the COPY encoder panicked");
    let wal: i64 = pg
        .query_one(
            &format!("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{lsn_before}')::bigint"),
            &[],
        )
        .await
        .expect("measure the WAL written")
        .get(0);
    progress(&format!(
        "written in {:.1} s ({:.0} MB WAL)",
        elapsed.as_secs_f64(),
        wal as f64 / 1e6
    ));
    (elapsed, wal)
}

/// Starts duplex; the time until MariaDB's `b_sale_order` holds every row, and the CPU split
/// from duplex's streams being up until then.
async fn catch_up(
    duplex: &mut Replicator,
    pool: &Pool,
    rows: i64,
    offset: i64,
) -> (Duration, String) {
    progress("reverse: starting duplex; catching up from the slot");
    let started = Instant::now();
    duplex.start().await;
    let cpu_start = cpu::sample(duplex.pid());
    let last = format!(
        "SELECT COUNT(*) FROM b_sale_order WHERE ID = {}",
        offset + rows
    );
    duplex
        .wait_until(
            "reverse catch-up (last id)",
            CATCH_UP_TIMEOUT,
            ms(100),
            || {
                let sql = last.clone();
                async move { my_i64(pool, &sql).await == 1 }
            },
        )
        .await;
    // One writer, applied in commit order: the last id tells; the count confirms.
    let count = format!(
        "SELECT COUNT(*) FROM b_sale_order WHERE ID BETWEEN {} AND {}",
        offset + 1,
        offset + rows
    );
    let done = duplex
        .wait_until(
            "reverse catch-up (all rows)",
            CATCH_UP_TIMEOUT,
            ms(100),
            || {
                let sql = count.clone();
                async move { my_i64(pool, &sql).await == rows }
            },
        )
        .await;
    let cpu = cpu_start.until(&cpu::sample(duplex.pid()));
    let elapsed = done - started;
    progress(&format!(
        "caught up in {:.1} s (CPU: {cpu})",
        elapsed.as_secs_f64()
    ));
    (elapsed, cpu)
}

/// Between rounds (duplex stopped): MariaDB's `b_sale_order` and the raw tables emptied outside
/// the binlog (`sql_log_bin = 0`), so that duplex's binlog reader never sees it and the
/// CRM keeps its rows.
async fn empty_mysql(dbs: &TestDbs) {
    progress("reverse: emptying MariaDB's b_sale_order and the raw tables for the next round");
    let mut conn = dbs.mysql().await;
    conn.query_drop(format!(
        "SET SESSION sql_log_bin = 0; TRUNCATE b_sale_order; TRUNCATE {RAW_TABLE}; TRUNCATE {RAW_LOAD_TABLE}"
    ))
    .await
    .expect("empty MariaDB's tables outside the binlog");
    let _ = conn.disconnect().await;
}

/// Rows with `ID <= upto` of the raw table that are missing from `b_sale_order` or differ in
/// any of the 76 columns (not `APPLIED_AT`).
async fn compare_with_raw(pool: &Pool, upto: i64) -> i64 {
    progress(&format!(
        "reverse: comparing b_sale_order with {RAW_TABLE} (ids ≤ {upto})"
    ));
    let same: Vec<String> = ORDER
        .columns
        .iter()
        .map(|c| format!("r.`{0}` <=> o.`{0}`", c.name))
        .collect();
    let sql = format!(
        "SELECT COUNT(*) FROM {RAW_TABLE} r LEFT JOIN b_sale_order o ON o.ID = r.ID \
         WHERE r.ID <= {upto} AND (o.ID IS NULL OR NOT ({}))",
        same.join(" AND ")
    );
    let missing_in_raw = format!(
        "SELECT COUNT(*) FROM b_sale_order o LEFT JOIN {RAW_TABLE} r ON r.ID = o.ID \
         WHERE o.ID <= {upto} AND r.ID IS NULL"
    );
    my_i64(pool, &sql).await + my_i64(pool, &missing_in_raw).await
}

// ---------------------------------------------------------------------------------------
// 5. Status updates.

/// Update `k` of `n`: the order it touches and the status it sets. The orders go round
/// `1..=hot`; each round sets a new status (`00`, `01`, …), so every update changes its row;
/// the last update sets [`SENTINEL`].
fn status_update(k: i64, n: i64, hot: i64) -> (i64, String) {
    let id = k % hot + 1;
    let status = if k == n - 1 {
        SENTINEL.to_string()
    } else {
        format!("{:02}", (k / hot) % 100)
    };
    (id, status)
}

/// The raw limit: the same updates against `b_sale_order_raw`, autocommit, one connection.
async fn raw_status_updates(pool: &Pool, n: i64, hot: i64) -> Duration {
    progress(&format!(
        "reverse: raw limit: {n} single-row UPDATEs of {RAW_TABLE} (autocommit, 1 connection)"
    ));
    let mut conn = pool.get_conn().await.expect("a MariaDB connection");
    let stmt = conn
        .prep(format!("UPDATE {RAW_TABLE} SET STATUS_ID = ? WHERE ID = ?"))
        .await
        .expect("prepare the raw UPDATE");
    let started = Instant::now();
    for k in 0..n {
        let (id, status) = status_update(k, n, hot);
        conn.exec_drop(&stmt, (status, id))
            .await
            .expect("raw status UPDATE");
        assert_eq!(conn.affected_rows(), 1, "raw UPDATE of order {id}");
    }
    let elapsed = started.elapsed();
    progress(&format!("raw UPDATEs took {:.1} s", elapsed.as_secs_f64()));
    elapsed
}

/// Writes order `id` into MariaDB and waits until PostgreSQL has it: duplex's binlog reader is
/// then past everything written to MariaDB before (the raw UPDATEs, duplex's own writes),
/// which would otherwise be read during the next measurement; returns how long that took. Ids
/// at or below [`STEADY_ORDER_BASE`], below the steady-state orders.
async fn forward_barrier(
    dbs: &TestDbs,
    duplex: &mut Replicator,
    pg: &Client,
    id: i64,
    what: &str,
) -> Duration {
    progress(&format!(
        "reverse: waiting for duplex's binlog reader to pass {what}"
    ));
    let started = Instant::now();
    let mut conn = dbs.mysql().await;
    conn.query_drop(encode::insert_sql(&ORDER, &order_rows(id, id)))
        .await
        .expect("insert the barrier order");
    let _ = conn.disconnect().await;
    duplex
        .wait_until("the forward barrier order", DRAIN_TIMEOUT, ms(50), || {
            row_exists(pg, ORDER.name, id)
        })
        .await;
    let took = started.elapsed();
    progress(&format!("passed {what} after {:.1} s", took.as_secs_f64()));
    took
}

/// The updates in PostgreSQL, one transaction each, one connection, as fast as it goes;
/// returns (time to issue them, time until MariaDB showed the last one, CPU split).
async fn status_updates(
    duplex: &mut Replicator,
    pg: &Client,
    pool: &Pool,
    n: i64,
    hot: i64,
) -> (Duration, Duration, String) {
    progress(&format!(
        "reverse: {n} single-row status UPDATEs in PostgreSQL over {hot} orders (duplex running)"
    ));
    let stmt = pg
        .prepare(&format!(
            "UPDATE {} SET status_id = $1 WHERE id = $2",
            ORDER.name
        ))
        .await
        .expect("prepare the status UPDATE");
    let cpu_start = cpu::sample(duplex.pid());
    let started = Instant::now();
    for k in 0..n {
        let (id, status) = status_update(k, n, hot);
        let updated = pg
            .execute(&stmt, &[&status, &(id as i32)])
            .await
            .expect("PostgreSQL status UPDATE");
        assert_eq!(updated, 1, "PostgreSQL UPDATE of order {id}");
        if k % 10_000 == 0 {
            duplex.ensure_running("the status updates");
        }
    }
    let issue = started.elapsed();
    progress(&format!(
        "PostgreSQL issued them in {:.1} s; waiting for MariaDB",
        issue.as_secs_f64()
    ));
    let (last_id, last_status) = status_update(n - 1, n, hot);
    let visible = duplex
        .wait_until("the last status update", UPDATE_TIMEOUT, ms(20), || {
            my_status_is(pool, last_id, &last_status)
        })
        .await;
    let cpu = cpu_start.until(&cpu::sample(duplex.pid()));
    let apply = visible - started;
    progress(&format!(
        "MariaDB showed the last update after {:.1} s (CPU: {cpu})",
        apply.as_secs_f64()
    ));
    (issue, apply, cpu)
}

// ---------------------------------------------------------------------------------------
// 6. Both ways at once.

/// One paced status update in PostgreSQL.
struct PgUpdate {
    id: i64,
    status: String,
    /// µs since the epoch when the COMMIT returned.
    committed: i64,
}

/// Which orders paced status updates go to: update k (counted on from `first`) touches the
/// orders after the hot ones, wrapping round the table, and sets a status no earlier update
/// set on that row (`S0`, then `S1` once the ids wrapped, …).
#[derive(Clone, Copy)]
struct Sweep {
    rows: i64,
    hot: i64,
    /// Updates made by earlier paced runs.
    first: i64,
}

impl Sweep {
    fn update(&self, k: i64) -> (i64, String) {
        let n = self.hot + self.first + k;
        (n % self.rows + 1, format!("S{}", (n / self.rows) % 10))
    }
}

/// 200 single-row status updates per second in PostgreSQL for `duration`, on a connection
/// with `synchronous_commit` on or off.
async fn pg_paced_updates(
    dbs: &TestDbs,
    sweep: Sweep,
    duration: Duration,
    synchronous_commit: bool,
) -> (Vec<PgUpdate>, Duration) {
    let client = dbs.pg().await;
    client
        .batch_execute(&format!(
            "SET synchronous_commit = {}",
            if synchronous_commit { "on" } else { "off" }
        ))
        .await
        .expect("set synchronous_commit");
    let stmt = client
        .prepare(&format!(
            "UPDATE {} SET status_id = $1 WHERE id = $2",
            ORDER.name
        ))
        .await
        .expect("prepare the paced status UPDATE");
    let mut updates = Vec::new();
    let mut ticker = tokio::time::interval(STEADY_TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    while started.elapsed() < duration {
        ticker.tick().await;
        let (id, status) = sweep.update(updates.len() as i64);
        let n = client
            .execute(&stmt, &[&status, &(id as i32)])
            .await
            .expect("paced PostgreSQL status UPDATE");
        assert_eq!(n, 1, "paced UPDATE of order {id}");
        updates.push(PgUpdate {
            id,
            status,
            committed: now_us(),
        });
    }
    (updates, started.elapsed())
}

/// Waits until MariaDB shows the last of `updates`, then reads the lags.
async fn drain_reverse(
    duplex: &mut Replicator,
    pool: &Pool,
    (updates, elapsed): (Vec<PgUpdate>, Duration),
) -> Paced {
    if let Some(last) = updates.last() {
        duplex
            .wait_until(
                "the last PostgreSQL update in MariaDB",
                DRAIN_TIMEOUT,
                ms(20),
                || my_status_is(pool, last.id, &last.status),
            )
            .await;
    }
    let (lags_us, negative) = reverse_lags(pool, &updates).await;
    Paced {
        elapsed,
        tx: updates.len(),
        lags_us,
        negative,
    }
}

/// Both directions at once; also returns the number of PostgreSQL updates made.
async fn both_ways(
    dbs: &TestDbs,
    duplex: &mut Replicator,
    pg: &Client,
    pool: &Pool,
    rows: i64,
    hot: i64,
    duration: Duration,
) -> (Both, i64) {
    progress(&format!(
        "reverse: both ways at once, {STEADY_TARGET_TPS} tx/s each way for {} s",
        duration.as_secs()
    ));
    let my_writer = async {
        let mut conn = dbs.mysql().await;
        let mut writer = SteadyWriter::default();
        let mut ticker = tokio::time::interval(STEADY_TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let started = Instant::now();
        while started.elapsed() < duration {
            ticker.tick().await;
            writer.transaction(&mut conn).await;
        }
        let elapsed = started.elapsed();
        let _ = conn.disconnect().await;
        (writer, elapsed)
    };
    let sweep = Sweep {
        rows,
        hot,
        first: 0,
    };
    let cpu_start = cpu::sample(duplex.pid());
    let ((writer, forward_elapsed), pg_updates) =
        tokio::join!(my_writer, pg_paced_updates(dbs, sweep, duration, true));
    let cpu = cpu_start.until(&cpu::sample(duplex.pid()));
    progress(&format!("both ways done (CPU: {cpu})"));
    duplex.ensure_running("both ways at once");

    let last_order = writer.commits.last().map_or(STEADY_ORDER_BASE, |c| c.0);
    duplex
        .wait_until(
            "the last MariaDB order in PostgreSQL",
            DRAIN_TIMEOUT,
            ms(20),
            || row_exists(pg, ORDER.name, last_order),
        )
        .await;
    let made = pg_updates.0.len() as i64;
    let reverse = drain_reverse(duplex, pool, pg_updates).await;
    super::check_children(pg, &writer).await;
    let (forward_lags_us, forward_negative) = lags(pg, &writer.commits).await;
    let both = Both {
        forward_elapsed,
        forward_tx: writer.commits.len(),
        forward_lags_us,
        forward_negative,
        reverse,
        cpu,
    };
    (both, made)
}

/// Sorted lags (µs, clamped at 0) of the updates that were the last of their row, from
/// MariaDB's `APPLIED_AT`, and the number of negative ones. Panics if a row does not show
/// its last update.
async fn reverse_lags(pool: &Pool, updates: &[PgUpdate]) -> (Vec<i64>, usize) {
    let mut last: HashMap<i64, &PgUpdate> = HashMap::new();
    for u in updates {
        last.insert(u.id, u);
    }
    let ids: Vec<i64> = last.keys().copied().collect();
    let mut applied: HashMap<i64, (String, i64)> = HashMap::new();
    let mut conn = pool.get_conn().await.expect("a MariaDB connection");
    for chunk in ids.chunks(2_000) {
        let list: Vec<String> = chunk.iter().map(i64::to_string).collect();
        let sql = format!(
            "SELECT ID, STATUS_ID, CAST(UNIX_TIMESTAMP({APPLIED_AT}) * 1000000 AS SIGNED) \
             FROM b_sale_order WHERE ID IN ({})",
            list.join(",")
        );
        let found: Vec<(i64, String, i64)> = conn
            .query(&sql)
            .await
            .unwrap_or_else(|e| panic!("read {APPLIED_AT}: {e}"));
        applied.extend(found.into_iter().map(|(id, s, at)| (id, (s, at))));
    }
    let mut negative = 0;
    let mut lags: Vec<i64> = last
        .values()
        .map(|u| {
            let (status, at) = applied
                .get(&u.id)
                .unwrap_or_else(|| panic!("order {} missing in MariaDB", u.id));
            assert_eq!(status, &u.status, "status of order {} in MariaDB", u.id);
            let lag = at - u.committed;
            negative += usize::from(lag < 0);
            lag.max(0)
        })
        .collect();
    lags.sort_unstable();
    (lags, negative)
}

// ---------------------------------------------------------------------------------------
// Report.

/// The table rows of the reverse measurements.
pub fn lines(r: &Reverse) -> Vec<Line> {
    let na = || "—".to_string();
    let (catch_up, raw_insert, raw_load) = (
        median(&r.catch_ups),
        median(&r.raw_inserts),
        median(&r.raw_loads),
    );
    let pg_write = median(&r.pg_writes);
    let runs = r.catch_ups.len();
    let rate = per_second(r.rows, catch_up);
    let raw_rate = per_second(r.rows, raw_insert);
    let ratio = rate / raw_rate;
    let s = &r.status;
    let status_rate = per_second(s.updates, s.apply);
    let status_raw = per_second(s.updates, s.raw);
    let status_ratio = status_rate / status_raw;
    let b = &r.both;
    let fwd_tps = b.forward_tx as f64 / b.forward_elapsed.as_secs_f64();
    let rev_tps = b.reverse.tps();
    let rows_per_tx = (1 + BASKETS_PER_ORDER + PROPS_PER_ORDER) as f64;
    let mut out = vec![
        [
            format!(
                "reverse catch-up: {} b_sale_order rows written in PostgreSQL while duplex was stopped → MariaDB, median of {runs} interleaved runs",
                thousands(r.rows as f64)
            ),
            format!(
                "{} rows/s ({:.1} s; runs {})",
                thousands(rate),
                catch_up.as_secs_f64(),
                seconds(&r.catch_ups)
            ),
            format!(
                "{} rows/s (MariaDB {BATCH_ROWS}-row INSERTs, 1 connection, {:.1} s; runs {})",
                thousands(raw_rate),
                raw_insert.as_secs_f64(),
                seconds(&r.raw_inserts)
            ),
            format!("{ratio:.2}"),
            format!("≥ {TARGET_CATCH_UP_RATIO} of raw INSERT"),
            verdict(ratio >= TARGET_CATCH_UP_RATIO),
        ],
        [
            "reverse catch-up: the same rows as MariaDB LOAD DATA LOCAL (from memory)".into(),
            format!("{} rows/s ({:.1} s)", thousands(rate), catch_up.as_secs_f64()),
            format!(
                "{} rows/s (MariaDB {BATCH_ROWS}-row LOAD DATA LOCAL, 1 connection, {:.1} s; runs {})",
                thousands(per_second(r.rows, raw_load)),
                raw_load.as_secs_f64(),
                seconds(&r.raw_loads)
            ),
            format!("{:.2}", rate / per_second(r.rows, raw_load)),
            "informational".into(),
            na(),
        ],
        [
            "reverse catch-up: replicated rows differing from the raw INSERT reference".into(),
            thousands(r.catch_up_mismatches as f64),
            na(),
            na(),
            "0".into(),
            verdict(r.catch_up_mismatches == 0),
        ],
        [
            format!("source: PostgreSQL writing those rows ({BATCH_ROWS}-row COPY txns, 1 connection)"),
            format!(
                "{} rows/s ({:.1} s, WAL {:.0} MB)",
                thousands(per_second(r.rows, pg_write)),
                pg_write.as_secs_f64(),
                r.wal_bytes as f64 / 1e6
            ),
            na(),
            na(),
            "informational".into(),
            na(),
        ],
        [
            format!(
                "reverse status updates: {} single-row UPDATE txns in PostgreSQL (1 connection, {} orders) → MariaDB",
                thousands(s.updates as f64),
                thousands(s.hot as f64)
            ),
            format!("{} rows/s ({:.1} s)", thousands(status_rate), s.apply.as_secs_f64()),
            format!(
                "{} rows/s (MariaDB autocommit UPDATEs, 1 connection, {:.1} s)",
                thousands(status_raw),
                s.raw.as_secs_f64()
            ),
            format!("{status_ratio:.2}"),
            format!("≥ {TARGET_STATUS_RATIO:.1} of raw UPDATE"),
            verdict(status_ratio >= TARGET_STATUS_RATIO),
        ],
        [
            "reverse status updates: rows differing from the raw UPDATE reference".into(),
            thousands(s.mismatches as f64),
            na(),
            na(),
            "0".into(),
            verdict(s.mismatches == 0),
        ],
        [
            "source: PostgreSQL issuing those updates (1 connection, each its own txn)".into(),
            format!(
                "{} tx/s ({:.1} s)",
                thousands(per_second(s.updates, s.issue)),
                s.issue.as_secs_f64()
            ),
            na(),
            na(),
            "informational".into(),
            na(),
        ],
        [
            format!(
                "both ways: MariaDB → PostgreSQL rate over {:.0} s (1 order + {BASKETS_PER_ORDER} basket + {PROPS_PER_ORDER} props rows per tx)",
                b.forward_elapsed.as_secs_f64()
            ),
            format!("{fwd_tps:.1} tx/s ({} rows/s)", thousands(fwd_tps * rows_per_tx)),
            na(),
            na(),
            format!("{STEADY_TARGET_TPS:.0} tx/s"),
            verdict(fwd_tps >= STEADY_TARGET_TPS * 0.98),
        ],
        [
            format!(
                "both ways: PostgreSQL → MariaDB rate over {:.0} s (single-row status UPDATE per tx, synchronous_commit = on)",
                b.reverse.elapsed.as_secs_f64()
            ),
            format!("{rev_tps:.1} tx/s"),
            na(),
            na(),
            format!("{STEADY_TARGET_TPS:.0} tx/s"),
            verdict(rev_tps >= STEADY_TARGET_TPS * 0.98),
        ],
    ];
    let lag_lines = |way: &str, lags: &[i64], target: bool| -> Vec<Line> {
        let lag = |p: f64| percentile(lags, p) as f64 / 1000.0;
        let p99 = lag(99.0);
        let (p99_target, p99_verdict) = if target {
            ("< 100 ms".to_string(), verdict(p99 < TARGET_P99_MS))
        } else {
            ("informational".to_string(), na())
        };
        [
            ("p50", lag(50.0), na(), na()),
            ("p99", p99, p99_target, p99_verdict),
            ("max", lag(100.0), na(), na()),
        ]
        .into_iter()
        .map(|(name, value, target, v)| {
            [
                format!("{way} lag {name}"),
                format!("{value:.1} ms"),
                na(),
                na(),
                target,
                v,
            ]
        })
        .collect()
    };
    out.extend(lag_lines(
        "both ways: MariaDB → PostgreSQL",
        &b.forward_lags_us,
        true,
    ));
    out.extend(lag_lines(
        "both ways: PostgreSQL → MariaDB",
        &b.reverse.lags_us,
        true,
    ));
    let a = &r.async_commit;
    out.push([
        format!(
            "PostgreSQL → MariaDB only, writer synchronous_commit = off (the test server's setting), {:.0} s at {:.1} tx/s: lag p50 / p99 / max",
            a.elapsed.as_secs_f64(),
            a.tps()
        ),
        format!(
            "{:.1} / {:.1} / {:.1} ms",
            a.lag_ms(50.0),
            a.lag_ms(99.0),
            a.lag_ms(100.0)
        ),
        na(),
        na(),
        "informational".into(),
        na(),
    ]);
    out.push([
        "memory: duplex VmHWM, both directions (reverse catch-up / restarted: status updates + both ways)".into(),
        format!(
            "{:.1} MB / {:.1} MB",
            r.hwm_catch_up_kb as f64 / 1024.0,
            r.hwm_after_kb as f64 / 1024.0
        ),
        na(),
        na(),
        "informational".into(),
        na(),
    ]);
    out
}

/// The notes on the reverse measurements.
pub fn notes(r: &Reverse) -> String {
    let b = &r.both;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "- reverse measurements: fresh databases, `b_sale_order` mapped `direction = \"both\"`, \
         `columns = \"all\"` (the MariaDB-only `{APPLIED_AT}` skipped); basket and properties \
         mapped forward. Rows as in the forward catch-up, zero `DATE_STATUS` (NOT NULL in MariaDB) \
         replaced by a real date. The raw INSERT reference ran before `duplex setup` so duplex never \
         read its binlog; the raw UPDATEs ran with duplex stopped, and a forward barrier row was \
         awaited after the restart. Reverse catch-up time runs from spawning `duplex run` (both \
         directions; the forward one reads and drops duplex's own tagged writes) to the last row \
         visible in MariaDB (polled every 100 ms)."
    );
    let _ = writeln!(
        out,
        "- status updates: update k sets order k mod {} + 1 to a status no earlier update of that \
         row set (the last one to `{SENTINEL}`); time from the first PostgreSQL UPDATE to MariaDB \
         showing `{SENTINEL}` (polled every 20 ms). The writer session keeps the server's \
         `synchronous_commit = off`.",
        r.status.hot
    );
    let _ = writeln!(
        out,
        "- both ways: MariaDB → PostgreSQL lag as in the steady state above ({} of {} negative); \
         PostgreSQL → MariaDB lag = MariaDB `{APPLIED_AT}` (`timestamp(6) … ON UPDATE \
         CURRENT_TIMESTAMP(6)`, not mapped: MariaDB stamps it when duplex's upsert changes the row, \
         i.e. at the start of that statement, before its COMMIT) − time PostgreSQL's COMMIT returned \
         to the writer; {} lags from {} updates ({} negative, counted as 0). Each side paced by its \
         own `tokio::time::interval({} ms)`. The PostgreSQL writer session sets \
         `synchronous_commit = on` (PostgreSQL's default): with the test server's `off`, a COMMIT \
         returns before its WAL is flushed, and the walsender only decodes flushed WAL, which the WAL \
         writer flushes every `wal_writer_delay` (200 ms) — the informational reverse-only row \
         shows that case.",
        b.forward_negative,
        b.forward_tx,
        b.reverse.lags_us.len(),
        b.reverse.tx,
        b.reverse.negative,
        STEADY_TICK.as_millis()
    );
    let _ = writeln!(
        out,
        "- CPU, % of one core (2 cores = 200 %): reverse catch-up (streams up → done): {}; \
         status updates (first UPDATE → last visible): {}; both ways (the paced period): {}.",
        r.catch_up_cpu, r.status.cpu, b.cpu
    );
    out.push_str(&super::findings_note(
        "duplex log (reverse run)",
        &r.findings,
    ));
    out
}

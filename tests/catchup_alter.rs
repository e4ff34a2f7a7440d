//! A catch-up across `ALTER TABLE … ADD COLUMN`: 100,000 transactions written before the ALTER
//! and read after it cost what the same catch-up without the ALTER costs. Each row event is
//! decoded with the definition its table map carries, kept once per definition; nothing is read
//! from `information_schema` per transaction and no definition is kept per transaction.
//!
//! The two catch-ups run one after the other in this test, in separate duplex processes, and are
//! compared with each other (peak RSS, rows per second): ratios, not absolute times. This binary
//! holds only this test, so nothing else runs beside the measurements.

mod support;

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use support::harness::{pg_count, stop_cleanly, Workdir};

const TXNS: i64 = 100_000;

/// Peak resident set of a process, in kB (`VmHWM`).
fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

/// Writes `TXNS` single-row transactions to `table` (one commit each).
async fn write_transactions(my: &mut mysql_async::Conn, table: &str) {
    my.query_drop(format!(
        "CREATE PROCEDURE fill_{table}() BEGIN
           DECLARE i INT DEFAULT 0;
           WHILE i < {TXNS} DO
             SET i = i + 1;
             INSERT INTO {table} (id, v, n) VALUES (i, CONCAT('row ', i), i * 3);
           END WHILE;
         END"
    ))
    .await
    .unwrap();
    my.query_drop("SET autocommit = 1").await.unwrap();
    my.query_drop(format!("CALL fill_{table}()")).await.unwrap();
}

/// Starts duplex on `work`, waits until PostgreSQL holds every row of `table`, and returns the
/// rows per second and the process's peak RSS (kB).
async fn catch_up(work: &Workdir, pg: &tokio_postgres::Client, table: &str) -> (f64, u64) {
    let started = Instant::now();
    let mut child = work.start();
    loop {
        if pg_count(pg, table).await == TXNS {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the catch-up of {table} did not end in 600 s; duplex log:\n{}",
            work.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rate = TXNS as f64 / started.elapsed().as_secs_f64();
    let rss = peak_rss_kb(child.id());
    stop_cleanly(&mut child, work);
    (rate, rss)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_across_add_column_costs_what_one_without_it_costs() {
    let dbs = support::fresh_dbs("catchup").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    let mut works = Vec::new();
    for table in ["plain", "grown"] {
        my.query_drop(format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, v varchar(40), n int)"
        ))
        .await
        .unwrap();
        pg.batch_execute(&format!(
            "CREATE TABLE {table} (id integer PRIMARY KEY, v text, n integer)"
        ))
        .await
        .unwrap();
    }
    for table in ["plain", "grown"] {
        let mapping = format!(
            "[[table]]\nsource = \"{table}\"\ntarget = \"{table}\"\n[table.column]\nid = \"id\"\nv = \"v\"\nn = \"n\"\n"
        );
        let pipeline = support::harness::pipeline_name(table, &dbs);
        let work = Workdir::new(&dbs, &pipeline, "UTC", &[("t.toml", &mapping)]);
        // Streamed, not copied: the catch-up is what is measured.
        work.append_config("[snapshot]\non_start = false\n");
        work.setup();
        works.push(work);
    }

    write_transactions(&mut my, "plain").await;
    let (plain_rate, plain_rss) = catch_up(&works[0], &pg, "plain").await;

    write_transactions(&mut my, "grown").await;
    my.query_drop("ALTER TABLE grown ADD COLUMN z int NOT NULL DEFAULT 0 AFTER id")
        .await
        .unwrap();
    let (altered_rate, altered_rss) = catch_up(&works[1], &pg, "grown").await;

    eprintln!(
        "catch-up of {TXNS} transactions: without ALTER {plain_rate:.0}/s, peak RSS {plain_rss} kB; \
         across ADD COLUMN {altered_rate:.0}/s, peak RSS {altered_rss} kB"
    );
    assert!(
        altered_rss as f64 <= plain_rss as f64 * 1.2,
        "peak RSS across ADD COLUMN {altered_rss} kB > 120% of {plain_rss} kB without it"
    );
    assert!(
        altered_rate >= plain_rate * 0.7,
        "catch-up across ADD COLUMN {altered_rate:.0}/s < 70% of {plain_rate:.0}/s without it"
    );
    // Every value in its own column.
    let wrong: i64 = pg
        .query_one(
            "SELECT count(*) FROM grown WHERE v <> 'row ' || id OR n <> id * 3",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(wrong, 0);
}

//! The snapshot measurement: `duplex snapshot` copying the catch-up rows (already in MariaDB)
//! into an empty `b_sale_order` of a fresh PostgreSQL database, next to the raw limits of the
//! same run and to pg_chameleon's `init_replica` on the same rows.
//!
//! - Raw read: one `SELECT * FROM b_sale_order` over the binary protocol (what duplex uses),
//!   every row fetched and its values counted; its byte count is the data size for MB/s.
//! - Raw write: one binary `COPY` of the same rows into an identical empty table.
//! - Each of these three `BENCH_SNAPSHOT_RUNS` times (default 3), interleaved; medians count.
//! - duplex: `duplex setup` then `duplex snapshot` (release build) as a child process; time from
//!   spawn to exit, peak RSS from `/proc/<pid>/status` (`VmHWM`, sampled every 20 ms), copied
//!   rows compared with the COPY reference column by column.
//! - pg_chameleon: `benches/pg_chameleon/run.sh` (creates a venv, installs pg_chameleon from
//!   PyPI, runs `init_replica`) on a copy of the rows whose zero `DATE_STATUS` values are made
//!   valid (pg_chameleon drops rows with zero dates in NOT NULL columns, row by row); skipped
//!   with `BENCH_CHAMELEON=0`; `BENCH_CHAMELEON_RAW=1` also runs it on the rows as they are.
//!
//! `BENCH_SNAPSHOT_CHUNK=<rows>` sets duplex's `snapshot.chunk_rows` (default: duplex's).

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

use super::schema::ORDER;
use super::support::harness::Workdir;
use super::support::{self, TestDbs};
use super::{
    compare_with_reference, copy_reference, median, per_second, progress, thousands, verdict, Line,
};

const TARGET_RAW_RATIO: f64 = 0.9;
const TARGET_CHAMELEON_RATIO: f64 = 4.0;
const TARGET_RSS_MB: f64 = 200.0;

pub struct Snapshot {
    rows: i64,
    select: Duration,
    select_bytes: u64,
    copy: Duration,
    duplex: Duration,
    peak_rss_kb: u64,
    /// duplex's CPU time (user + system) until its last sample before exit.
    cpu: Duration,
    /// Runs of each measurement; the times are medians.
    runs: i64,
    /// Each run's `duplex snapshot`, in the order run.
    duplexes: Vec<Duration>,
    /// CPU split of the last run (spawn → exit).
    split: String,
    /// The resync of the emptied table (`--table`) after the runs.
    resync: Duration,
    copied: i64,
    mismatches: i64,
    report: String,
    chameleon: Result<(i64, f64), String>,
    /// pg_chameleon on the rows as they are, zero dates included (`BENCH_CHAMELEON_RAW=1`).
    chameleon_raw: Option<Result<(i64, f64), String>>,
    /// `duplex verify` of the copied rows (unless `BENCH_VERIFY=0`).
    pub verify: Option<super::verify::Verify>,
}

pub async fn run(dbs: &TestDbs, rows: i64) -> Snapshot {
    // A fresh PostgreSQL database next to the source database.
    let pg_db = format!("{}_snap", dbs.pg_db);
    support::pg_client("postgres")
        .await
        .batch_execute(&format!("CREATE DATABASE \"{pg_db}\""))
        .await
        .expect("create the snapshot database");
    let dbs2 = TestDbs {
        mysql_db: dbs.mysql_db.clone(),
        pg_db,
    };
    let pg = dbs2.pg().await;
    pg.batch_execute(&ORDER.pg_ddl("b_sale_order"))
        .await
        .expect("create b_sale_order");

    let work = Workdir::new(
        &dbs2,
        "snapbench",
        "UTC",
        &[("sale.toml", &ORDER.mapping())],
    );
    if let Ok(n) = std::env::var("BENCH_SNAPSHOT_CHUNK") {
        work.append_config(&format!("[snapshot]\nchunk_rows = {n}\n"));
    }
    work.setup();

    // Each measurement several times, interleaved, and the medians: this machine's speed
    // drifts by a quarter from one run to the next.
    let runs = super::env_number("BENCH_SNAPSHOT_RUNS", 3).max(1);
    let (mut selects, mut copies, mut duplexes, mut cpus) = (vec![], vec![], vec![], vec![]);
    let mut split = String::new();
    let mut select_bytes = 0;
    let mut peak_rss_kb = 0;
    let mut report = String::new();
    for _ in 0..runs {
        let (select, bytes) = raw_select(dbs, rows).await;
        selects.push(select);
        select_bytes = bytes;
        copies.push(copy_reference(&pg, rows).await);
        // Each run is the same first copy: the table emptied and duplex's progress row gone.
        pg.batch_execute("TRUNCATE b_sale_order; DELETE FROM duplex.snapshot")
            .await
            .expect("empty b_sale_order");
        let (elapsed, cpu, rss_kb, line) = duplex_snapshot(&work, &["snapshot"], &mut split).await;
        duplexes.push(elapsed);
        cpus.push(cpu);
        peak_rss_kb = peak_rss_kb.max(rss_kb);
        report = line;
    }
    // A resync (`--table`: the target ends as the source, rows it no longer has pruned) into
    // the emptied table, once.
    pg.batch_execute("TRUNCATE b_sale_order")
        .await
        .expect("empty b_sale_order");
    let (resync, _, _, _) = duplex_snapshot(
        &work,
        &["snapshot", "--table", "b_sale_order"],
        &mut String::new(),
    )
    .await;
    let (select, copy, duplex, cpu) = (
        median(&selects),
        median(&copies),
        median(&duplexes),
        median(&cpus),
    );
    let copied: i64 = pg
        .query_one("SELECT count(*) FROM b_sale_order", &[])
        .await
        .expect("count copied rows")
        .get(0);
    let mismatches = compare_with_reference(&pg, rows).await;
    let verify = if super::env_flag("BENCH_VERIFY", true) {
        Some(
            super::verify::run(
                ("the copied b_sale_order rows (76 cols)", true),
                &work,
                &dbs2,
                rows,
                (&["b_sale_order"], &["b_sale_order"]),
            )
            .await,
        )
    } else {
        None
    };

    let chameleon = if super::env_flag("BENCH_CHAMELEON", true) {
        // pg_chameleon turns MariaDB's zero dates in NOT NULL columns into NULL, its COPY of
        // the batch fails, and it falls back to row-by-row inserts that drop those rows: on
        // the rows as they are it copies 2 thousand rows/s and loses 1 % of them. Its fair
        // measurement is on the same rows with the zero DATE_STATUS values made valid.
        let fair = TestDbs {
            mysql_db: format!("{}_cham", dbs.mysql_db),
            pg_db: dbs2.pg_db.clone(),
        };
        let mut my = support::mysql_conn(None).await;
        my.query_drop(format!(
            "CREATE DATABASE `{f}`; CREATE TABLE `{f}`.b_sale_order LIKE `{s}`.b_sale_order; \
             INSERT INTO `{f}`.b_sale_order SELECT * FROM `{s}`.b_sale_order; \
             UPDATE `{f}`.b_sale_order SET DATE_STATUS = '2024-01-01 00:00:00' WHERE DATE_STATUS = '0000-00-00 00:00:00'",
            f = fair.mysql_db,
            s = dbs.mysql_db
        ))
        .await
        .expect("prepare pg_chameleon's copy of the rows");
        let _ = my.disconnect().await;
        run_chameleon(&fair).await
    } else {
        Err("skipped (BENCH_CHAMELEON=0)".into())
    };
    let chameleon_raw = if super::env_flag("BENCH_CHAMELEON_RAW", false) {
        Some(run_chameleon(&dbs2).await)
    } else {
        None
    };
    Snapshot {
        rows,
        select,
        select_bytes,
        copy,
        duplex,
        peak_rss_kb,
        cpu,
        runs,
        duplexes,
        split,
        resync,
        copied,
        mismatches,
        report,
        chameleon,
        chameleon_raw,
        verify,
    }
}

/// A log line without its terminal colour codes.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs `duplex <args>` to its end: (time, CPU time, peak RSS in kB, its report line).
/// The CPU split (see `cpu`) goes into `split`.
pub async fn duplex_snapshot(
    work: &Workdir,
    args: &[&str],
    split: &mut String,
) -> (Duration, Duration, u64, String) {
    progress(&format!("duplex {}", args.join(" ")));
    let log_before = work.log().len();
    let started = Instant::now();
    let mut child = work.start_cmd(args);
    let pid = child.id();
    let cpu_start = super::cpu::sample(pid);
    let mut peak_rss_kb = 0;
    let mut cpu_ticks = 0u64;
    let status = loop {
        if let Some(t) = super::cpu::ticks(pid) {
            cpu_ticks = t;
        }
        if let Some(kb) = super::status_kb(pid, "VmHWM") {
            peak_rss_kb = peak_rss_kb.max(kb);
        }
        if let Some(status) = child.0.try_wait().expect("wait for duplex snapshot") {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let elapsed = started.elapsed();
    let ended = Instant::now();
    // The servers are read once the backend duplex used is gone (reaped by the postmaster).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let cpu_end = super::cpu::sample_with(cpu_ticks, ended);
    let log = work.log();
    assert!(
        status.success(),
        "duplex snapshot failed ({status}):\n{log}"
    );
    let report = log[log_before..]
        .lines()
        .find(|l| l.contains("copied") && l.contains("dead-lettered"))
        .map(|l| {
            let l = strip_ansi(l);
            match l.split_once("duplex::snapshot: ") {
                Some((_, report)) => report.trim().to_string(),
                None => l,
            }
        })
        .unwrap_or_default();
    *split = cpu_start.until(&cpu_end);
    progress(&format!("took {:.1} s ({split})", elapsed.as_secs_f64()));
    (
        elapsed,
        Duration::from_millis(cpu_ticks * 10),
        peak_rss_kb,
        report,
    )
}

/// Reads every row with one `SELECT *` over the binary protocol; returns the time and the
/// bytes of the values read.
async fn raw_select(dbs: &TestDbs, rows: i64) -> (Duration, u64) {
    progress("raw read: SELECT * FROM b_sale_order");
    let mut my = dbs.mysql().await;
    let started = Instant::now();
    let mut result = my
        .exec_iter("SELECT * FROM b_sale_order", ())
        .await
        .expect("SELECT *");
    let mut n = 0i64;
    let mut bytes = 0u64;
    while let Some(row) = result.next().await.expect("fetch a row") {
        n += 1;
        for v in row.unwrap_raw().into_iter().flatten() {
            bytes += match v {
                mysql_async::Value::Bytes(b) => b.len() as u64,
                mysql_async::Value::NULL => 0,
                mysql_async::Value::Date(..) | mysql_async::Value::Time(..) => 8,
                _ => 8,
            };
        }
    }
    drop(result);
    let elapsed = started.elapsed();
    assert_eq!(n, rows, "SELECT * row count");
    let _ = my.disconnect().await;
    progress(&format!("SELECT * took {:.1} s", elapsed.as_secs_f64()));
    (elapsed, bytes)
}

/// pg_chameleon's `init_replica` of the same database; (rows, seconds) or why not.
async fn run_chameleon(dbs: &TestDbs) -> Result<(i64, f64), String> {
    progress("pg_chameleon init_replica of the same rows (installs from PyPI on first use)");
    let s = support::servers();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/pg_chameleon/run.sh");
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/target/pg_chameleon-venv");
    let out = tokio::process::Command::new("bash")
        .arg(script)
        .env("MY_HOST", "127.0.0.1")
        .env("MY_PORT", s.mysql_port.to_string())
        .env("MY_USER", &s.mysql_user)
        .env("MY_PASSWORD", &s.mysql_password)
        .env("MY_DB", &dbs.mysql_db)
        .env("PG_HOST", "127.0.0.1")
        .env("PG_PORT", s.pg_port.to_string())
        .env("PG_USER", &s.pg_user)
        .env("PG_PASSWORD", &s.pg_password)
        .env("PG_DB", &dbs.pg_db)
        .env("CHAMELEON_VENV", venv)
        .output()
        .await
        .map_err(|e| format!("cannot run {script}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default().to_string();
    let parsed = last
        .strip_prefix("pg_chameleon init_replica: ")
        .and_then(|rest| {
            let (rows, rest) = rest.split_once(" rows in ")?;
            let secs = rest.strip_suffix(" s")?;
            Some((rows.trim().parse().ok()?, secs.trim().parse().ok()?))
        });
    match (out.status.success(), parsed) {
        (true, Some(r)) => {
            progress(&format!("pg_chameleon: {} rows in {:.1} s", r.0, r.1));
            Ok(r)
        }
        _ => {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Err(format!(
                "pg_chameleon failed ({}): {}",
                out.status,
                tail.join(" / ")
            ))
        }
    }
}

pub fn lines(s: &Snapshot) -> Vec<Line> {
    let rate = per_second(s.rows, s.duplex);
    let select_rate = per_second(s.rows, s.select);
    let copy_rate = per_second(s.rows, s.copy);
    let slower = select_rate.min(copy_rate);
    let mb = s.select_bytes as f64 / 1e6;
    let mbps = |d: Duration| mb / d.as_secs_f64().max(1e-9);
    let rss_mb = s.peak_rss_kb as f64 / 1024.0;
    let mut out = vec![
        [
            format!(
                "snapshot: `duplex snapshot` of {} b_sale_order rows (76 cols, {mb:.0} MB read)",
                thousands(s.rows as f64)
            ),
            format!(
                "{} rows/s, {:.1} MB/s ({:.1} s; runs {}; duplex CPU {:.1} s)",
                thousands(rate),
                mbps(s.duplex),
                s.duplex.as_secs_f64(),
                super::seconds(&s.duplexes),
                s.cpu.as_secs_f64()
            ),
            format!(
                "SELECT * {} rows/s ({:.1} MB/s, {:.1} s); binary COPY {} rows/s ({:.1} s)",
                thousands(select_rate),
                mbps(s.select),
                s.select.as_secs_f64(),
                thousands(copy_rate),
                s.copy.as_secs_f64()
            ),
            format!("{:.2} of the slower", rate / slower),
            format!("≥ {TARGET_RAW_RATIO} of the slower raw limit"),
            verdict(rate / slower >= TARGET_RAW_RATIO),
        ],
        [
            "snapshot: rows copied; rows differing from the COPY reference".into(),
            format!(
                "{}; {}",
                thousands(s.copied as f64),
                thousands(s.mismatches as f64)
            ),
            "—".into(),
            "—".into(),
            format!("{}; 0", thousands(s.rows as f64)),
            verdict(s.copied == s.rows && s.mismatches == 0),
        ],
        [
            "snapshot: duplex peak RSS (VmHWM)".into(),
            format!("{rss_mb:.1} MB"),
            "—".into(),
            "—".into(),
            "< 200 MB".into(),
            verdict(rss_mb < TARGET_RSS_MB),
        ],
    ];
    out.push(match &s.chameleon {
        Ok((rows, secs)) => {
            let theirs = *rows as f64 / secs.max(1e-9);
            [
                "snapshot: pg_chameleon 2.0.21 `init_replica` of the same rows (its 1 % zero DATE_STATUS made valid)".into(),
                format!(
                    "{} rows/s ({secs:.1} s, {} rows)",
                    thousands(theirs),
                    thousands(*rows as f64)
                ),
                "—".into(),
                format!("duplex {:.1}×", rate / theirs),
                format!("duplex ≥ {TARGET_CHAMELEON_RATIO}× pg_chameleon"),
                verdict(rate / theirs >= TARGET_CHAMELEON_RATIO && *rows == s.rows),
            ]
        }
        Err(why) => [
            "snapshot: pg_chameleon 2.0.21 `init_replica` of the same rows".into(),
            why.replace('|', "/"),
            "—".into(),
            "—".into(),
            format!("duplex ≥ {TARGET_CHAMELEON_RATIO}× pg_chameleon"),
            "not measured".into(),
        ],
    });
    if let Some(raw) = &s.chameleon_raw {
        out.push([
            "snapshot: pg_chameleon `init_replica` of the rows as they are (zero dates included)"
                .into(),
            match raw {
                Ok((rows, secs)) => format!(
                    "{} rows/s ({secs:.1} s); {} of {} rows arrived",
                    thousands(*rows as f64 / secs.max(1e-9)),
                    thousands(*rows as f64),
                    thousands(s.rows as f64)
                ),
                Err(why) => why.replace('|', "/"),
            },
            "—".into(),
            "—".into(),
            "informational".into(),
            "—".into(),
        ]);
    }
    out
}

pub fn notes(s: &Snapshot) -> String {
    format!(
        "- snapshot: medians of {} interleaved runs of each measurement (`BENCH_SNAPSHOT_RUNS`); \
         duplex's own report of the last: `{}`. Time runs from spawning `duplex snapshot` to its exit \
         (connecting, reading the schemas, the consistent-snapshot transaction and the progress rows \
         included); every run is the same first copy (runs after the first empty the table and \
         delete duplex's progress row); CPU, % of one core (2 cores = 200 %), the last run: {}. Then a resync (`duplex snapshot --table b_sale_order`, which \
         also prunes the rows the source no longer has, chunk by chunk) into the emptied table took \
         {:.1} s; the comparison with the COPY reference is of its rows. MB/s uses the bytes of the \
         values `SELECT *` returned.\n",
        s.runs,
        s.report,
        s.split,
        s.resync.as_secs_f64()
    )
}

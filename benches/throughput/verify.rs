//! The verify measurement: `duplex verify` of the rows a snapshot copied (no stream runs: an
//! offline verify; every row is compared), next to the raw reads of the same rows on both
//! sides — MariaDB's `SELECT *` over the binary protocol and PostgreSQL's `SELECT *` in binary
//! — in the same run, medians of interleaved runs. The ratio is against the slower read.
//! duplex's peak RSS from `/proc/<pid>/status` (`VmHWM`). The report must find both sides
//! equal (exit 0): a verify that reports a difference on a clean copy fails the bench.

use std::time::{Duration, Instant};

use super::support::harness::Workdir;
use super::support::TestDbs;
use super::{median, per_second, progress, thousands, verdict, Line};

const TARGET_RAW_RATIO: f64 = 0.7;
const TARGET_RSS_MB: f64 = 150.0;

pub struct Verify {
    /// What was verified (for the table).
    what: String,
    /// Whether the ratio has the target (the 76-column table) or is informational.
    targeted: bool,
    rows: i64,
    /// The keys duplex's report says it compared.
    keys: u64,
    select_my: Duration,
    select_pg: Duration,
    duplex: Duration,
    peak_rss_kb: u64,
    runs: i64,
}

/// Measures `duplex verify` of `work`'s pipeline (`tables` of it, all when empty), whose source
/// holds `rows` rows in `my_tables` and whose target holds them in `pg_tables`.
pub async fn run(
    (what, targeted): (&str, bool),
    work: &Workdir,
    dbs: &TestDbs,
    rows: i64,
    (my_tables, pg_tables): (&[&str], &[&str]),
) -> Verify {
    let runs = super::env_number("BENCH_VERIFY_RUNS", 3).max(1);
    let (mut mys, mut pgs, mut duplexes) = (vec![], vec![], vec![]);
    let mut peak_rss_kb = 0;
    let mut keys = 0;
    for _ in 0..runs {
        mys.push(select_my(dbs, my_tables).await);
        pgs.push(select_pg(dbs, pg_tables).await);
        let (elapsed, rss, k) = duplex_verify(work).await;
        duplexes.push(elapsed);
        peak_rss_kb = peak_rss_kb.max(rss);
        keys = k;
    }
    Verify {
        what: what.to_string(),
        targeted,
        rows,
        keys,
        select_my: median(&mys),
        select_pg: median(&pgs),
        duplex: median(&duplexes),
        peak_rss_kb,
        runs,
    }
}

/// Every row of the tables with `SELECT *` over MariaDB's binary protocol.
async fn select_my(dbs: &TestDbs, tables: &[&str]) -> Duration {
    use mysql_async::prelude::Queryable;
    progress("raw read: MariaDB SELECT *");
    let mut my = dbs.mysql().await;
    let started = Instant::now();
    for t in tables {
        let mut result = my
            .exec_iter(format!("SELECT * FROM `{t}`"), ())
            .await
            .expect("SELECT *");
        while let Some(row) = result.next().await.expect("fetch a row") {
            std::hint::black_box(row.unwrap_raw());
        }
    }
    let elapsed = started.elapsed();
    let _ = my.disconnect().await;
    elapsed
}

/// Every row of the tables with `SELECT *` in PostgreSQL's binary format, streamed.
async fn select_pg(dbs: &TestDbs, tables: &[&str]) -> Duration {
    use futures_util::StreamExt;
    progress("raw read: PostgreSQL SELECT *");
    let pg = dbs.pg().await;
    let started = Instant::now();
    for t in tables {
        let stmt = pg
            .prepare(&format!("SELECT * FROM {t}"))
            .await
            .expect("prepare SELECT *");
        let rows = pg
            .query_raw(&stmt, std::iter::empty::<i32>())
            .await
            .expect("SELECT *");
        futures_util::pin_mut!(rows);
        while let Some(row) = rows.next().await {
            std::hint::black_box(row.expect("a row"));
        }
    }
    started.elapsed()
}

/// `duplex verify --json` to its end: (time, peak RSS in kB, keys compared). Panics unless it
/// found both sides equal.
async fn duplex_verify(work: &Workdir) -> (Duration, u64, u64) {
    progress("duplex verify");
    let log_before = work.log().len();
    let started = Instant::now();
    let log = work.path().join("verify.json");
    let mut child = work.start_cmd_to(&["verify", "--json"], &log);
    let pid = child.id();
    let mut peak = 0;
    let mut ticks = 0;
    let status = loop {
        if let Some(t) = super::cpu::ticks(pid) {
            ticks = t;
        }
        if let Some(kb) = super::status_kb(pid, "VmHWM") {
            peak = peak.max(kb);
        }
        if let Some(status) = child.0.try_wait().expect("wait for duplex verify") {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let elapsed = started.elapsed();
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.success(),
        "duplex verify did not find the copy equal ({status}):\n{out}\n{}",
        work.log()
    );
    let report: serde_json::Value = serde_json::from_str(&out).expect("verify's JSON report");
    let keys = report["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["rows_checked"].as_u64().unwrap_or(0))
        .sum();
    for l in work.log()[log_before..]
        .lines()
        .filter(|l| l.contains("verified"))
    {
        progress(&super::snapshot::strip_ansi(l));
    }
    progress(&format!(
        "took {:.1} s (duplex CPU {:.1} s)",
        elapsed.as_secs_f64(),
        ticks as f64 / 100.0
    ));
    (elapsed, peak, keys)
}

pub fn lines(v: &Verify) -> Vec<Line> {
    let rate = per_second(v.rows, v.duplex);
    let my = per_second(v.rows, v.select_my);
    let pg = per_second(v.rows, v.select_pg);
    let slower = my.min(pg);
    let rss_mb = v.peak_rss_kb as f64 / 1024.0;
    vec![
        [
            format!(
                "verify: `duplex verify` of {} ({} keys compared)",
                v.what,
                thousands(v.keys as f64)
            ),
            format!(
                "{} rows/s ({:.1} s)",
                thousands(rate),
                v.duplex.as_secs_f64()
            ),
            format!(
                "SELECT * MariaDB {} rows/s ({:.1} s); PostgreSQL {} rows/s ({:.1} s)",
                thousands(my),
                v.select_my.as_secs_f64(),
                thousands(pg),
                v.select_pg.as_secs_f64()
            ),
            format!("{:.2} of the slower", rate / slower),
            if v.targeted {
                "≥ 0.7 of the slower raw read".into()
            } else {
                "informational".into()
            },
            if v.targeted {
                verdict(rate / slower >= TARGET_RAW_RATIO)
            } else {
                "—".into()
            },
        ],
        [
            format!("verify: duplex peak RSS (VmHWM), {}", v.what),
            format!("{rss_mb:.1} MB"),
            "—".into(),
            "—".into(),
            "< 150 MB".into(),
            verdict(rss_mb < TARGET_RSS_MB),
        ],
    ]
}

pub fn notes(v: &Verify) -> String {
    format!(
        "- verify ({}): medians of {} interleaved runs (`BENCH_VERIFY_RUNS`); offline (no stream), so \
         every row is scanned and compared, and the report must say both sides agree. Time runs from \
         spawning `duplex verify --json` to its exit.\n",
        v.what, v.runs
    )
}

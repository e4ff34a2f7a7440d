//! Fault injection, against the real servers, with a writer busy on both sides the whole time:
//! MariaDB and PostgreSQL restarted mid-stream, the network to both cut for 10 s (blackholed,
//! then reset, by a TCP proxy between duplex and the servers), duplex killed with SIGKILL
//! again and again, and a burst of 50,000 rows while PostgreSQL is down for 20 s.
//!
//! Each scenario ends with both tables compared row by row (nothing lost) and with the target's
//! insert-attempt counters at exactly 1 per row (nothing applied twice: a trigger counts every
//! insert attempt in the transaction that makes it, so only committed attempts count). The time
//! from the fault's end (server back, network back, duplex restarted) to a heartbeat lag under
//! 1 s in both directions is measured and printed; the target is under 5 s.
//!
//! The scenarios stop shared servers, so they run one at a time ([`support::exclusive`]).
#![allow(clippy::await_holding_lock)]

mod support;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use support::harness::{
    free_port, http_get, kill9, metric, mysql_rows, pg_count, pg_rows, pipeline_name, stop_cleanly,
    wait_for, Workdir,
};
use support::proxy::Proxy;
use support::Stop;

/// The table `t` of [`support::harness::one_mapped_table`] on each side.
const T_MY: &str = "CREATE TABLE t (id int PRIMARY KEY, v varchar(20))";
const T_PG: &str = "CREATE TABLE t (id integer PRIMARY KEY, v text)";

const MAPPING: &str = r#"
[[table]]
source = "fwd"
target = "fwd"
direction = "both"
columns = "all"

[[table]]
source = "rev"
target = "rev"
direction = "both"
columns = "all"
"#;

/// The recovery bound the tests hold duplex to. The goal is 5 s; this leaves room for a
/// loaded CI machine while still failing on a pipeline that does not come back by itself.
const RECOVERY_BOUND: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    RestartMariaDb,
    RestartPostgres,
    Blackhole,
    Reset,
    Kill9,
    BurstWhileTargetDown,
    /// Every open connection goes silent for good, no reset; new ones get through (a failover
    /// that blackholes the old address).
    SilentDrop,
}

fn lags(port: u16) -> Option<(f64, f64)> {
    let (_, body) = http_get(port, "/metrics").ok()?;
    let lag = |d: &str| metric(&body, "duplex_lag_seconds", &[("direction", d)]);
    Some((lag("mysql_to_pg")?, lag("pg_to_mysql")?))
}

/// Waits until both directions' lag is under 1 s; returns how long that took from `since`.
async fn time_to_fresh(port: u16, since: Instant, work: &Workdir, what: &str) -> Duration {
    // Every fault here lasts seconds, so the lag is above 1 s when it ends (the blackhole and
    // reset scenarios assert it): a reading under 1 s is a heartbeat that crossed after it.
    loop {
        if let Some((f, r)) = lags(port) {
            if f < 1.0 && r < 1.0 {
                return since.elapsed();
            }
        }
        assert!(
            since.elapsed() < Duration::from_secs(120),
            "{what}: the lag stayed above 1 s for 2 minutes; log tail:\n{}",
            tail(&work.log())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A writer on both sides: transactions of 5 inserts into MySQL `fwd` and into PostgreSQL `rev`,
/// every 10 ms each, reconnecting after errors (a server being down is part of the test).
fn spawn_writers(
    dbs: &support::TestDbs,
    stop: Arc<AtomicBool>,
    next_id: Arc<AtomicI64>,
) -> Vec<tokio::task::JoinHandle<u64>> {
    let my_db = dbs.mysql_db.clone();
    let pg_db = dbs.pg_db.clone();
    let (stop_m, next_m) = (stop.clone(), next_id.clone());
    let mysql = tokio::spawn(async move {
        let mut ok = 0u64;
        let mut conn: Option<mysql_async::Conn> = None;
        while !stop_m.load(Ordering::Relaxed) {
            if conn.is_none() {
                conn = mysql_async::Conn::new(support::mysql_opts(Some(&my_db)))
                    .await
                    .ok();
            }
            if let Some(c) = conn.as_mut() {
                let first = next_m.fetch_add(5, Ordering::Relaxed);
                let values: Vec<String> = (first..first + 5)
                    .map(|i| format!("({i}, {i}, 'shop {i}')"))
                    .collect();
                match c
                    .query_drop(format!("INSERT INTO fwd VALUES {}", values.join(", ")))
                    .await
                {
                    Ok(()) => ok += 1,
                    Err(_) => conn = None,
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        ok
    });
    let postgres = tokio::spawn(async move {
        let mut ok = 0u64;
        let mut client: Option<tokio_postgres::Client> = None;
        while !stop.load(Ordering::Relaxed) {
            if client.as_ref().is_none_or(|c| c.is_closed()) {
                client = match support::pg_config(&pg_db)
                    .connect(tokio_postgres::NoTls)
                    .await
                {
                    Ok((c, conn)) => {
                        tokio::spawn(conn);
                        Some(c)
                    }
                    Err(_) => None,
                };
            }
            if let Some(c) = client.as_ref() {
                let first = next_id.fetch_add(5, Ordering::Relaxed);
                let values: Vec<String> = (first..first + 5)
                    .map(|i| format!("({i}, {i}, 'crm {i}')"))
                    .collect();
                // Commits that must survive a PostgreSQL restart (the test server runs with
                // synchronous_commit = off).
                let sql = format!(
                    "SET synchronous_commit = on; INSERT INTO rev VALUES {}",
                    values.join(", ")
                );
                match c.batch_execute(&sql).await {
                    Ok(()) => ok += 1,
                    Err(_) => client = None,
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        ok
    });
    vec![mysql, postgres]
}

async fn exercise(fault: Fault) -> Duration {
    let _serial = support::exclusive();
    // Servers stopped by an earlier scenario that failed midway are started again.
    tokio::task::spawn_blocking(|| {
        support::start_mysql();
        support::start_postgres();
    })
    .await
    .unwrap();
    let name = format!("{fault:?}").to_lowercase();
    let dbs = support::fresh_dbs("fault").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop(
        "CREATE TABLE fwd (id bigint PRIMARY KEY, n bigint NOT NULL, v varchar(64));
         CREATE TABLE rev (id bigint PRIMARY KEY, n bigint NOT NULL, v varchar(64));
         CREATE TABLE rev_attempts (id bigint PRIMARY KEY, n int NOT NULL);
         CREATE TRIGGER rev_attempt BEFORE INSERT ON rev FOR EACH ROW
           INSERT INTO rev_attempts VALUES (NEW.id, 1) ON DUPLICATE KEY UPDATE n = n + 1",
    )
    .await
    .unwrap();
    pg.batch_execute(
        "CREATE TABLE fwd (id bigint PRIMARY KEY, n bigint NOT NULL, v text);
         CREATE TABLE rev (id bigint PRIMARY KEY, n bigint NOT NULL, v text);
         CREATE TABLE fwd_attempts (id bigint PRIMARY KEY, n int NOT NULL);
         CREATE FUNCTION fwd_attempt() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           INSERT INTO fwd_attempts VALUES (NEW.id, 1) ON CONFLICT (id) DO UPDATE SET n = fwd_attempts.n + 1;
           RETURN NEW;
         END $$;
         CREATE TRIGGER fwd_attempt BEFORE INSERT ON fwd FOR EACH ROW EXECUTE FUNCTION fwd_attempt();",
    )
    .await
    .unwrap();
    let port = free_port();
    let work = Workdir::with_metrics(
        &dbs,
        &pipeline_name("f", &dbs),
        "UTC",
        &[("m.toml", MAPPING)],
        &format!("127.0.0.1:{port}"),
    );
    // The network scenarios put a proxy between duplex and each server.
    let proxies = if matches!(fault, Fault::Blackhole | Fault::Reset | Fault::SilentDrop) {
        let s = support::servers();
        let (pm, pp) = (
            Proxy::start(s.mysql_port).await,
            Proxy::start(s.pg_port).await,
        );
        let config = std::fs::read_to_string(&work.config).unwrap();
        let config = config
            .replace(
                &format!("port = {}\n", s.mysql_port),
                &format!("port = {}\n", pm.port()),
            )
            .replace(
                &format!("port = {}\n", s.pg_port),
                &format!("port = {}\n", pp.port()),
            );
        // A silent peer is noticed within 3 s.
        let config = if fault == Fault::SilentDrop {
            config
                .replace("[mysql]\n", "[mysql]\nread_timeout_s = 3\n")
                .replace("[postgres]\n", "[postgres]\nread_timeout_s = 3\n")
        } else {
            config
        };
        std::fs::write(&work.config, config).unwrap();
        Some((pm, pp))
    } else {
        None
    };
    work.setup();
    let mut child = work.start();
    wait_for(
        Duration::from_secs(60),
        "duplex streaming both ways",
        &work,
        || async { lags(port).is_some_and(|(f, r)| f < 1.0 && r < 1.0) },
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let next_id = Arc::new(AtomicI64::new(1));
    let writers = spawn_writers(&dbs, stop.clone(), next_id.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;

    let blocking = |f: fn()| tokio::task::spawn_blocking(f);
    let mut recoveries = Vec::new();
    match fault {
        Fault::RestartMariaDb | Fault::RestartPostgres => {
            let (stop_it, start_it): (fn(), fn()) = if fault == Fault::RestartMariaDb {
                (|| support::stop_mysql(Stop::Clean), support::start_mysql)
            } else {
                (
                    || support::stop_postgres(Stop::Clean),
                    support::start_postgres,
                )
            };
            blocking(stop_it).await.unwrap();
            tokio::time::sleep(Duration::from_secs(3)).await;
            blocking(start_it).await.unwrap();
            let back = Instant::now();
            recoveries.push(time_to_fresh(port, back, &work, &name).await);
        }
        Fault::Blackhole | Fault::Reset => {
            let (pm, pp) = proxies.as_ref().unwrap();
            for p in [pm, pp] {
                if fault == Fault::Blackhole {
                    p.blackhole()
                } else {
                    p.reset()
                }
            }
            tokio::time::sleep(Duration::from_secs(4)).await;
            let (f, r) = lags(port).unwrap();
            assert!(
                f > 2.0 && r > 2.0,
                "the lag does not show a 4 s outage: {f} / {r}"
            );
            tokio::time::sleep(Duration::from_secs(6)).await;
            pm.pass();
            pp.pass();
            let back = Instant::now();
            recoveries.push(time_to_fresh(port, back, &work, &name).await);
        }
        Fault::SilentDrop => {
            let (pm, pp) = proxies.as_ref().unwrap();
            let (before_m, before_p) = (pm.connections(), pp.connections());
            pm.freeze_existing();
            pp.freeze_existing();
            let frozen = Instant::now();
            tokio::time::sleep(Duration::from_secs(2)).await;
            let (f, r) = lags(port).unwrap();
            assert!(
                f > 1.0 && r > 1.0,
                "the lag does not show the drop: {f} / {r}"
            );
            recoveries.push(time_to_fresh(port, frozen, &work, &name).await);
            // Each side was reached anew: the old connections never came back.
            assert!(
                pm.connections() > before_m && pp.connections() > before_p,
                "no new connections: {before_m} -> {}, {before_p} -> {}",
                pm.connections(),
                pp.connections()
            );
            // Noticed by the silence, and the sessions the frozen connections left holding the
            // slot and the origin ended (the server would keep them for a minute or for good).
            let log = work.log();
            assert!(
                (log.contains("taken for dead") || log.contains("no binlog event or heartbeat"))
                    && log.contains("went silent: ended it"),
                "{}",
                tail(&log)
            );
        }
        Fault::Kill9 => {
            for _ in 0..6 {
                tokio::time::sleep(Duration::from_millis(300 + rand::random::<u64>() % 700)).await;
                kill9(&mut child);
                child = work.start();
                let back = Instant::now();
                recoveries.push(time_to_fresh(port, back, &work, &name).await);
            }
        }
        Fault::BurstWhileTargetDown => {
            let down = Instant::now();
            blocking(|| support::stop_postgres(Stop::Clean))
                .await
                .unwrap();
            // 50,000 rows in 500 transactions while the target is down.
            let first = next_id.fetch_add(50_000, Ordering::Relaxed);
            for t in 0..500 {
                let values: Vec<String> = (0..100)
                    .map(|i| first + t * 100 + i)
                    .map(|i| format!("({i}, {i}, 'burst {i}')"))
                    .collect();
                my.query_drop(format!("INSERT INTO fwd VALUES {}", values.join(", ")))
                    .await
                    .unwrap();
            }
            let rest = Duration::from_secs(20).saturating_sub(down.elapsed());
            tokio::time::sleep(rest).await;
            blocking(support::start_postgres).await.unwrap();
            let back = Instant::now();
            recoveries.push(time_to_fresh(port, back, &work, &name).await);
        }
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    // The connections of before the fault may be gone with a restarted server.
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    let mut txns = 0;
    for w in writers {
        txns += w.await.unwrap();
    }
    assert!(txns > 100, "the writers barely wrote ({txns} transactions)");

    // Nothing lost: both tables equal row by row on both sides.
    let pg2 = dbs.pg().await;
    let equal = || async {
        let mut c = dbs.mysql().await;
        let mut all = true;
        for t in ["fwd", "rev"] {
            let m = mysql_rows(&mut c, &format!("SELECT id, n, v FROM {t} ORDER BY id")).await;
            let p = pg_rows(
                &pg2,
                &format!("SELECT id::text, n::text, v FROM {t} ORDER BY {t}.id"),
            )
            .await;
            all &= m == p;
        }
        all
    };
    let settle = Instant::now();
    while !equal().await {
        if settle.elapsed() > Duration::from_secs(60) {
            let mut c = dbs.mysql().await;
            let mut report = String::new();
            for t in ["fwd", "rev"] {
                let m = mysql_rows(&mut c, &format!("SELECT id, n, v FROM {t} ORDER BY id")).await;
                let p = pg_rows(
                    &pg2,
                    &format!("SELECT id::text, n::text, v FROM {t} ORDER BY {t}.id"),
                )
                .await;
                let only_m: Vec<_> = m.iter().filter(|r| !p.contains(r)).take(5).collect();
                let only_p: Vec<_> = p.iter().filter(|r| !m.contains(r)).take(5).collect();
                if let Some(i) = (0..m.len().min(p.len())).find(|&i| m[i] != p[i]) {
                    report.push_str(&format!("{t}: row {i} differs: {:?} vs {:?}\n", m[i], p[i]));
                }
                report.push_str(&format!("{t}: MariaDB {} rows, PostgreSQL {} rows; only in MariaDB {only_m:?}; only in PostgreSQL {only_p:?}\n", m.len(), p.len()));
            }
            panic!(
                "{name}: the sides differ after 60 s:\n{report}log tail:\n{}",
                tail(&work.log())
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let count = mysql_rows(&mut my, "SELECT count(*) FROM fwd").await[0][0]
        .clone()
        .unwrap();
    let count: i64 = count.parse().unwrap();
    if fault == Fault::BurstWhileTargetDown {
        assert!(count > 50_000, "{count} rows");
    }
    // Nothing doubled: every row inserted into each target exactly once.
    let twice = pg_rows(&pg, "SELECT count(*)::text FROM fwd_attempts WHERE n <> 1").await;
    assert_eq!(
        twice[0][0].as_deref(),
        Some("0"),
        "rows applied twice to PostgreSQL"
    );
    let seen = pg_rows(&pg, "SELECT count(*)::text FROM fwd_attempts").await;
    assert_eq!(
        seen[0][0].as_deref().unwrap().parse::<i64>().unwrap(),
        count
    );
    let twice = mysql_rows(&mut my, "SELECT count(*) FROM rev_attempts WHERE n <> 1").await;
    assert_eq!(
        twice[0][0].as_deref(),
        Some("0"),
        "rows applied twice to MariaDB"
    );

    let worst = recoveries.iter().max().copied().unwrap();
    // A silent drop is noticed within the read timeout (3 s), and the dead writers' open
    // transactions, with their locks, end on the servers within four of it.
    let bound = if fault == Fault::SilentDrop {
        Duration::from_secs(30)
    } else {
        RECOVERY_BOUND
    };
    eprintln!(
        "fault {name}: time from the fault's end to lag < 1 s both ways: {}; {txns} writer transactions, {count} rows in fwd",
        recoveries.iter().map(|d| format!("{:.2} s", d.as_secs_f64())).collect::<Vec<_>>().join(", ")
    );
    assert!(
        worst < bound,
        "{name}: recovery took {worst:?}; log tail:\n{}",
        tail(&work.log())
    );
    stop_cleanly(&mut child, &work);
    let (ok, out) = work.run_cmd(&["teardown", "--yes"]);
    assert!(ok, "{out}");
    worst
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_restart_mid_stream() {
    exercise(Fault::RestartMariaDb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restart_mid_stream() {
    exercise(Fault::RestartPostgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn network_blackholed_for_10_s() {
    exercise(Fault::Blackhole).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn network_reset_for_10_s() {
    exercise(Fault::Reset).await;
}

/// Every connection through the proxies goes silent for good, without a reset, while new ones
/// get through: each direction notices within its read timeout, connects anew, and both sides
/// end equal, nothing doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_silently_dropped_for_good() {
    exercise(Fault::SilentDrop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_again_and_again() {
    exercise(Fault::Kill9).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn burst_of_50k_rows_while_the_target_is_down_20_s() {
    exercise(Fault::BurstWhileTargetDown).await;
}

/// A mapping file left broken on disk (an edit never reloaded) and a MariaDB restart: the retry
/// checks the running mapping set against the live schemas, not the files on disk, so duplex
/// goes on with its set instead of exiting on the broken file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[allow(clippy::await_holding_lock)]
async fn a_retry_keeps_the_running_mappings_when_the_files_on_disk_are_broken() {
    let _serial = support::exclusive();
    tokio::task::spawn_blocking(|| {
        support::start_mysql();
        support::start_postgres();
    })
    .await
    .unwrap();
    let (dbs, work) = support::harness::one_mapped_table("brokenmap", T_MY, T_PG).await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    let mut child = work.start();
    my.query_drop("INSERT INTO t VALUES (1, 'before')")
        .await
        .unwrap();
    wait_for(Duration::from_secs(30), "row 1", &work, || async {
        pg_count(&pg, "t").await == 1
    })
    .await;
    drop(my);
    std::fs::write(
        work.path().join("mappings/t.toml"),
        "[[table]]\nsource = \"t\"\ntarget = ",
    )
    .unwrap();
    tokio::task::spawn_blocking(|| {
        support::stop_mysql(Stop::Clean);
        support::start_mysql();
    })
    .await
    .unwrap();
    let mut my = dbs.mysql().await;
    my.query_drop("INSERT INTO t VALUES (2, 'after the restart')")
        .await
        .unwrap();
    wait_for(Duration::from_secs(60), "row 2", &work, || async {
        pg_count(&pg, "t").await == 2
    })
    .await;
    let log = work.log();
    assert!(log.contains("transient error"), "no retry happened:\n{log}");
    assert!(!log.contains("no longer fit"), "{log}");
    stop_cleanly(&mut child, &work);
}

/// PostgreSQL restarts while duplex runs and a second duplex of the same pipeline waits for
/// the pipeline lock (a standby). The restart ends the lock's session and frees the lock; the
/// running process notices and either takes it again (the standby keeps waiting) or, when the
/// standby was quicker, stops with the reason. Never do both run the pipeline (before, the
/// first ran on without the lock while the standby took it). Rows keep arriving either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pipeline_lock_is_held_again_or_given_up_after_a_postgres_restart() {
    let _serial = support::exclusive();
    tokio::task::spawn_blocking(|| {
        support::start_mysql();
        support::start_postgres();
    })
    .await
    .unwrap();
    let (dbs, work) = support::harness::one_mapped_table("lock", T_MY, T_PG).await;
    let mut my = dbs.mysql().await;
    let name = pipeline_name("lock", &dbs);
    let mut first = work.start();
    my.query_drop("INSERT INTO t VALUES (1, 'before')")
        .await
        .unwrap();
    let arrived = |n: i64| {
        let dbs = dbs.clone();
        async move { pg_count(&dbs.pg().await, "t").await == n }
    };
    wait_for(Duration::from_secs(30), "row 1", &work, || arrived(1)).await;
    // The standby: the same pipeline (its own replica id and log).
    let standby_work = work.sibling(&name, &[("t.toml", support::harness::T_ALL)]);
    let mut standby = standby_work.start();
    wait_for(
        Duration::from_secs(30),
        "the standby waiting",
        &standby_work,
        || async {
            standby_work
                .log()
                .contains("another duplex process holds this pipeline")
        },
    )
    .await;
    tokio::task::spawn_blocking(|| {
        support::stop_postgres(Stop::Clean);
        std::thread::sleep(Duration::from_secs(2));
        support::start_postgres();
    })
    .await
    .unwrap();
    let settled = Instant::now();
    let kept = loop {
        if work.log().contains("pipeline lock taken again") {
            break true;
        }
        if !matches!(first.0.try_wait(), Ok(None)) {
            break false;
        }
        assert!(
            settled.elapsed() < Duration::from_secs(60),
            "neither kept nor gave up the lock:\n{}",
            tail(&work.log())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if kept {
        // The standby still waits: it never starts its pipelines.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            !standby_work.log().contains("pipeline starting"),
            "both run the pipeline:\n{}",
            tail(&standby_work.log())
        );
        assert!(
            matches!(first.0.try_wait(), Ok(None)),
            "{}",
            tail(&work.log())
        );
    } else {
        let status = first.0.wait().unwrap();
        assert!(
            !status.success() && work.log().contains("was lost"),
            "{status:?}\n{}",
            tail(&work.log())
        );
        wait_for(
            Duration::from_secs(60),
            "the standby taking over",
            &standby_work,
            || async { standby_work.log().contains("pipeline starting") },
        )
        .await;
    }
    my.query_drop("INSERT INTO t VALUES (2, 'after')")
        .await
        .unwrap();
    wait_for(Duration::from_secs(60), "row 2", &work, || arrived(2)).await;
    eprintln!(
        "after the restart the running process {}",
        if kept {
            "kept the lock"
        } else {
            "gave it up to the standby"
        }
    );
    if kept {
        stop_cleanly(&mut first, &work);
    }
    stop_cleanly(&mut standby, &standby_work);
}

//! Crash safety: duplex is killed with SIGKILL at random moments while 20,000 source
//! transactions stream, and restarted each time. PostgreSQL must end equal to MariaDB row by row
//! (nothing lost, nothing doubled) and the checkpoint must never move backward.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use rand::{RngExt, SeedableRng};
use support::harness::{mysql_rows, pg_rows, terminate, wait_for, Workdir};

const TXNS: usize = 20_000;

const MAPPING: &str = r#"
[[table]]
source = "ev"
target = "ev"
columns = "all"

[[table]]
source = "agg"
target = "agg"
columns = "all"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_at_random_moments_loses_and_doubles_nothing() {
    let dbs = support::fresh_dbs("crash").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop(
        "CREATE TABLE ev (id int AUTO_INCREMENT PRIMARY KEY, k int NOT NULL, v varchar(64), n bigint NOT NULL);
         CREATE TABLE agg (k int PRIMARY KEY, total bigint NOT NULL, hits int NOT NULL)",
    )
    .await
    .unwrap();
    pg.batch_execute(
        "CREATE TABLE ev (id integer PRIMARY KEY, k integer NOT NULL, v text, n bigint NOT NULL);
         CREATE TABLE agg (k integer PRIMARY KEY, total bigint NOT NULL, hits integer NOT NULL)",
    )
    .await
    .unwrap();
    let work = Workdir::new(&dbs, "crash", "UTC", &[("m.toml", MAPPING)]);
    work.setup();

    // The checkpoint is watched the whole time: its order key must never decrease.
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let done = done.clone();
        let wpg = dbs.pg().await;
        tokio::spawn(async move {
            let mut last: (i64, i64) = (i64::MIN, i64::MIN);
            let mut seen = 0usize;
            while !done.load(Ordering::Relaxed) {
                if let Ok(Some(r)) = wpg
                    .query_opt("SELECT ord_major, ord_minor FROM duplex.checkpoint WHERE pipeline = 'crash'", &[])
                    .await
                {
                    let now: (i64, i64) = (r.get(0), r.get(1));
                    assert!(now >= last, "checkpoint moved backward from {last:?} to {now:?}");
                    if now != last {
                        seen += 1;
                    }
                    last = now;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            seen
        })
    };

    // The writer: 20k transactions of inserts, updates, deletes and upserts.
    let writer_done = Arc::new(AtomicBool::new(false));
    let writer = {
        let writer_done = writer_done.clone();
        let mut wmy = dbs.mysql().await;
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(42);
            for i in 0..TXNS {
                let k = rng.random_range(0..200);
                let n = rng.random_range(1..1000i64);
                let mut tx = wmy.start_transaction(Default::default()).await.unwrap();
                tx.exec_drop(
                    "INSERT INTO ev (k, v, n) VALUES (?, ?, ?)",
                    (k, format!("event {i} ключ {k}"), n),
                )
                .await
                .unwrap();
                tx.exec_drop(
                    "INSERT INTO agg (k, total, hits) VALUES (?, ?, 1) ON DUPLICATE KEY UPDATE total = total + VALUES(total), hits = hits + 1",
                    (k, n),
                )
                .await
                .unwrap();
                match i % 10 {
                    3 => tx.exec_drop("UPDATE ev SET n = n + 1, v = NULL WHERE k = ? ORDER BY id DESC LIMIT 3", (k,)).await.unwrap(),
                    7 => tx.exec_drop("DELETE FROM ev WHERE k = ? ORDER BY id LIMIT 1", (k,)).await.unwrap(),
                    _ => {}
                }
                tx.commit().await.unwrap();
            }
            writer_done.store(true, Ordering::Relaxed);
        })
    };

    // Kill duplex at random moments while the writer runs.
    let (mut child, kills) =
        support::harness::kill_at_random_until(&work, &writer_done, 9, 150..1200).await;
    writer.await.unwrap();

    // Let the last instance catch up, then compare row by row.
    let mut my2 = dbs.mysql().await;
    let expected_ev = mysql_rows(&mut my2, "SELECT id, k, v, n FROM ev ORDER BY id").await;
    let expected_agg = mysql_rows(&mut my2, "SELECT k, total, hits FROM agg ORDER BY k").await;
    wait_for(
        Duration::from_secs(120),
        "PostgreSQL to equal MariaDB",
        &work,
        || {
            let pg = &pg;
            let expected_ev = &expected_ev;
            let expected_agg = &expected_agg;
            async move {
                pg_rows(
                    pg,
                    "SELECT id::text, k::text, v, n::text FROM ev ORDER BY ev.id",
                )
                .await
                    == *expected_ev
                    && pg_rows(
                        pg,
                        "SELECT k::text, total::text, hits::text FROM agg ORDER BY agg.k",
                    )
                    .await
                        == *expected_agg
            }
        },
    )
    .await;
    let status = terminate(&mut child, Duration::from_secs(20));
    done.store(true, Ordering::Relaxed);
    let moves = watcher.await.expect("the checkpoint never moved backward");
    assert!(kills >= 5, "only {kills} kills");
    assert!(moves > 10, "the checkpoint moved only {moves} times");
    let hits: i64 = expected_agg
        .iter()
        .map(|r| r[2].as_deref().unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(hits, TXNS as i64, "the writer's own bookkeeping is off");
    assert!(
        status.is_some_and(|s| s.success()),
        "duplex did not exit 0 on SIGTERM: {status:?}"
    );
    eprintln!(
        "kills: {kills}, checkpoint moves seen: {moves}, rows: ev {} agg {}",
        expected_ev.len(),
        expected_agg.len()
    );
}

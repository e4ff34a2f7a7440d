//! No echo under load: 10,000 random changes made on both sides, interleaved, touching the same
//! rows across rounds (within a round each row has one writer, so the result is defined), end
//! with both sides equal — and duplex applied exactly as many transactions in each direction as
//! were made on the other side: nothing bounced back, nothing looped.

mod support;

use std::time::Duration;

use mysql_async::prelude::Queryable;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use support::harness::{mysql_rows, pg_rows, stop_cleanly, wait_for, Workdir};

const ROUNDS: usize = 10;
const CHANGES_PER_ROUND: usize = 1_000;
const ROWS: i32 = 400;

const BOTH: &str =
    "[[table]]\nsource = \"t\"\ntarget = \"t\"\ndirection = \"both\"\ncolumns = \"all\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_changes_on_both_sides_end_equal_without_echo() {
    let dbs = support::fresh_dbs("echo10k").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL, s varchar(40))")
        .await
        .unwrap();
    pg.batch_execute("CREATE TABLE t (id integer PRIMARY KEY, v integer NOT NULL, s text)")
        .await
        .unwrap();
    let pipeline = support::harness::pipeline_name("x", &dbs);
    let port = support::harness::free_port();
    let work = Workdir::with_metrics(
        &dbs,
        &pipeline,
        "UTC",
        &[("t.toml", BOTH)],
        &format!("127.0.0.1:{port}"),
    );
    work.setup();
    let mut child = work.start();

    let seed: Vec<String> = (1..=ROWS)
        .map(|i| format!("({i}, 0, 'seed {i}')"))
        .collect();
    my.query_drop(format!("INSERT INTO t VALUES {}", seed.join(",")))
        .await
        .unwrap();
    let mut my_txns: u64 = 1;
    let mut pg_txns: u64 = 0;
    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    let mut live: Vec<i32> = (1..=ROWS).collect();
    let mut next_my_id = 100_000;
    let mut next_pg_id = 200_000;
    let equal = || async {
        let mut c = dbs.mysql().await;
        mysql_rows(&mut c, "SELECT id, v, s FROM t ORDER BY id").await
            == pg_rows(&pg, "SELECT id::text, v::text, s FROM t ORDER BY t.id").await
    };
    wait_for(Duration::from_secs(30), "the seed rows", &work, equal).await;

    for round in 0..ROUNDS {
        // Each live row belongs to one side for this round.
        live.shuffle(&mut rng);
        let half = live.len() / 2;
        let (mine, theirs) = live.split_at(half);
        let (mut mine, mut theirs) = (mine.to_vec(), theirs.to_vec());
        for _ in 0..CHANGES_PER_ROUND {
            let on_mysql = rng.random_bool(0.5);
            let rows = if on_mysql { &mut mine } else { &mut theirs };
            let roll = rng.random_range(0..100);
            let sql = if roll < 10 || rows.is_empty() {
                let id = if on_mysql {
                    next_my_id += 1;
                    next_my_id
                } else {
                    next_pg_id += 1;
                    next_pg_id
                };
                rows.push(id);
                format!("INSERT INTO t VALUES ({id}, {round}, 'new {id}')")
            } else if roll < 18 {
                let id = rows.swap_remove(rng.random_range(0..rows.len()));
                format!("DELETE FROM t WHERE id = {id}")
            } else {
                let id = rows[rng.random_range(0..rows.len())];
                let v: i32 = rng.random_range(0..1_000_000);
                format!(
                    "UPDATE t SET v = {v}, s = 'r{round} {}' WHERE id = {id}",
                    if on_mysql { "bitrix" } else { "crm" }
                )
            };
            if on_mysql {
                my.query_drop(&sql).await.unwrap();
                my_txns += 1;
            } else {
                pg.batch_execute(&sql).await.unwrap();
                pg_txns += 1;
            }
        }
        live = mine.into_iter().chain(theirs).collect();
        wait_for(
            Duration::from_secs(60),
            &format!("both sides equal after round {round}"),
            &work,
            equal,
        )
        .await;
    }
    // Let an echo, if any, happen.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(equal().await, "the sides drifted apart after settling");
    let forward = support::harness::transactions_applied(port, "mysql_to_pg");
    let reverse = support::harness::transactions_applied(port, "pg_to_mysql");
    assert_eq!(
        forward, my_txns,
        "MySQL → PostgreSQL applied {forward} transactions for {my_txns} made in MySQL"
    );
    assert_eq!(
        reverse, pg_txns,
        "PostgreSQL → MySQL applied {reverse} transactions for {pg_txns} made in PostgreSQL"
    );
    assert_eq!(my_txns + pg_txns, (ROUNDS * CHANGES_PER_ROUND) as u64 + 1);
    stop_cleanly(&mut child, &work);
    let (ok, out) = work.run_cmd(&["teardown", "--yes"]);
    assert!(ok, "{out}");
}

//! Crash safety of PostgreSQL → MySQL: duplex is killed with SIGKILL at random moments while
//! PostgreSQL transactions stream, and restarted. MariaDB must end equal to PostgreSQL row by
//! row, and the slot must never confirm an LSN beyond what MariaDB has committed (PostgreSQL
//! may discard WAL up to the confirmed LSN).

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use duplex::model::{Lsn, Position};
use mysql_async::prelude::Queryable;
use rand::{RngExt, SeedableRng};
use support::harness::{mysql_rows, pg_rows, stop_cleanly, wait_for, Duplex, Workdir};

const TXNS: usize = 10_000;

const BOTH: &str =
    "[[table]]\nsource = \"ev\"\ntarget = \"ev\"\ndirection = \"both\"\ncolumns = \"all\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_a_postgres_stream_loses_nothing_and_never_over_confirms() {
    let dbs = support::fresh_dbs("rcrash").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop(
        "CREATE TABLE ev (id int PRIMARY KEY, k int NOT NULL, v varchar(64), n bigint NOT NULL)",
    )
    .await
    .unwrap();
    pg.batch_execute(
        "CREATE TABLE ev (id integer PRIMARY KEY, k integer NOT NULL, v text, n bigint NOT NULL)",
    )
    .await
    .unwrap();
    let pipeline = support::harness::pipeline_name("c", &dbs);
    let slot = format!("duplex_{pipeline}");
    let work = Workdir::new(&dbs, &pipeline, "UTC", &[("ev.toml", BOTH)]);
    work.setup();

    // The watcher: the slot's confirmed LSN, once it moved, is never beyond MariaDB's checkpoint.
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let done = done.clone();
        let wpg = dbs.pg().await;
        let mut wmy = dbs.mysql().await;
        let slot = slot.clone();
        let pipeline = pipeline.clone();
        tokio::spawn(async move {
            let initial: Lsn = wpg
                .query_one("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
                .await
                .unwrap()
                .get::<_, String>(0)
                .parse()
                .unwrap();
            let mut checks = 0;
            while !done.load(Ordering::Relaxed) {
                let confirmed: Lsn = wpg
                    .query_one("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
                    .await
                    .unwrap()
                    .get::<_, String>(0)
                    .parse()
                    .unwrap();
                let committed: Option<String> = wmy
                    .exec_first("SELECT position FROM duplex.checkpoint WHERE pipeline = ? AND direction = 'pg_to_mysql'", (&pipeline,))
                    .await
                    .unwrap();
                let committed = match committed
                    .filter(|p| !p.is_empty())
                    .map(|p| p.parse::<Position>().unwrap())
                {
                    Some(Position::Postgres(l)) => l,
                    _ => Lsn(0),
                };
                if confirmed > initial {
                    assert!(
                        confirmed <= committed,
                        "the slot confirmed {confirmed} but MariaDB committed only {committed}"
                    );
                    checks += 1;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            checks
        })
    };

    let writer_done = Arc::new(AtomicBool::new(false));
    let writer = {
        let writer_done = writer_done.clone();
        let wpg = dbs.pg().await;
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(5);
            for i in 0..TXNS as i32 {
                let k = rng.random_range(0..100);
                let sql = match i % 10 {
                    3 => format!("BEGIN; INSERT INTO ev VALUES ({i}, {k}, 'ряд {i}', {i}); UPDATE ev SET n = n + 1, v = NULL WHERE k = {k}; COMMIT"),
                    7 => format!("BEGIN; INSERT INTO ev VALUES ({i}, {k}, 'ряд {i}', {i}); DELETE FROM ev WHERE id = (SELECT min(id) FROM ev WHERE k = {k}); COMMIT"),
                    _ => format!("INSERT INTO ev VALUES ({i}, {k}, 'ряд {i}', {i})"),
                };
                wpg.batch_execute(&sql).await.unwrap();
            }
            writer_done.store(true, Ordering::Relaxed);
        })
    };

    // Kill duplex at random moments while the writer runs.
    let (mut child, kills) =
        support::harness::kill_at_random_until(&work, &writer_done, 11, 150..1000).await;
    writer.await.unwrap();
    let expected = pg_rows(
        &pg,
        "SELECT id::text, k::text, v, n::text FROM ev ORDER BY ev.id",
    )
    .await;
    wait_for(
        Duration::from_secs(120),
        "MariaDB to equal PostgreSQL",
        &work,
        || {
            let expected = &expected;
            let dbs = &dbs;
            async move {
                let mut c = dbs.mysql().await;
                mysql_rows(&mut c, "SELECT id, k, v, n FROM ev ORDER BY id").await == *expected
            }
        },
    )
    .await;
    stop_cleanly(&mut child, &work);
    done.store(true, Ordering::Relaxed);
    let checks = watcher
        .await
        .expect("the slot never confirmed beyond MariaDB's checkpoint");
    assert!(kills >= 5, "only {kills} kills");
    assert!(
        checks > 10,
        "the slot's confirmed position moved too rarely to check ({checks})"
    );
    let (ok, out) = work.run_cmd(&["teardown", "--yes"]);
    assert!(ok, "{out}");
    eprintln!(
        "kills: {kills}, slot checks: {checks}, rows: {}",
        expected.len()
    );
}

/// MySQL's table `r` fed from PostgreSQL's (`direction = "reverse"`), set up, duplex running,
/// rows 1 and 2 written in the CRM and arrived: the start of the restore tests.
async fn reverse_r_streaming(prefix: &str) -> (support::TestDbs, String, Workdir, Duplex) {
    let dbs = support::fresh_dbs(prefix).await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop("CREATE TABLE r (id int PRIMARY KEY, v varchar(20))")
        .await
        .unwrap();
    pg.batch_execute("CREATE TABLE r (id integer PRIMARY KEY, v text)")
        .await
        .unwrap();
    let pipeline = support::harness::pipeline_name(prefix, &dbs);
    let work = Workdir::new(
        &dbs,
        &pipeline,
        "UTC",
        &[(
            "r.toml",
            "[[table]]\nsource = \"r\"\ntarget = \"r\"\ndirection = \"reverse\"\n[table.column]\nid = \"id\"\nv = \"v\"\n",
        )],
    );
    work.setup();
    let child = work.start();
    pg.batch_execute("INSERT INTO r VALUES (1, 'a'), (2, 'b')")
        .await
        .unwrap();
    wait_for(Duration::from_secs(30), "rows 1, 2", &work, || async {
        let mut c = dbs.mysql().await;
        mysql_rows(&mut c, MY_R).await
            == pg_rows(&pg, "SELECT id::text, v FROM r ORDER BY r.id").await
    })
    .await;
    (dbs, pipeline, work, child)
}

/// MySQL's rows of `r`, in order.
const MY_R: &str = "SELECT id, v FROM r ORDER BY id";

/// MySQL restored from a backup (its checkpoint of the reverse direction back at an older
/// position, the rows after it gone) while the slot has moved on: duplex refuses to stream, since
/// PostgreSQL would start at the slot and skip the CRM's changes in between, and says how to
/// recover. After the resync it names, both sides are equal row by row and the stream goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_behind_the_slot_is_refused_until_a_resync() {
    let (dbs, pipeline, work, mut child) = reverse_r_streaming("behind").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    let pg_r = || async { pg_rows(&pg, "SELECT id::text, v FROM r ORDER BY r.id").await };
    let checkpoint = format!(
        "SELECT position, ord_major, ord_minor FROM duplex.checkpoint WHERE pipeline = '{pipeline}' AND direction = 'pg_to_mysql'"
    );
    // The backup: taken once the stream (not only the copy) has stored a checkpoint.
    wait_for(
        Duration::from_secs(30),
        "a stored checkpoint",
        &work,
        || async {
            let mut c = dbs.mysql().await;
            mysql_rows(&mut c, &checkpoint)
                .await
                .first()
                .and_then(|r| r[0].clone())
                .is_some_and(|p| p.starts_with("pg:"))
        },
    )
    .await;
    let backup = mysql_rows(&mut my, &checkpoint).await;
    pg.batch_execute("INSERT INTO r VALUES (3, 'c'); UPDATE r SET v = 'a2' WHERE id = 1")
        .await
        .unwrap();
    wait_for(Duration::from_secs(30), "row 3", &work, || async {
        let mut c = dbs.mysql().await;
        mysql_rows(&mut c, MY_R).await == pg_r().await
    })
    .await;
    stop_cleanly(&mut child, &work);

    // The restore: the checkpoint and the rows as they were at the backup.
    let b = |i: usize| backup[0][i].clone().unwrap();
    my.query_drop(format!(
        "UPDATE duplex.checkpoint SET position = '{}', ord_major = {}, ord_minor = {} WHERE pipeline = '{pipeline}' AND direction = 'pg_to_mysql';
         DELETE FROM r WHERE id = 3; UPDATE r SET v = 'a' WHERE id = 1",
        b(0),
        b(1),
        b(2)
    ))
    .await
    .unwrap();
    let mut refused = work.start();
    wait_for(Duration::from_secs(30), "the refusal", &work, || async {
        work.log().contains("is behind the replication slot")
    })
    .await;
    let log = work.log();
    assert!(log.contains("duplex snapshot --table public.r"), "{log}");
    support::harness::kill9(&mut refused);
    assert_eq!(
        mysql_rows(&mut my, MY_R).await,
        vec![
            vec![Some("1".into()), Some("a".into())],
            vec![Some("2".into()), Some("b".into())]
        ]
    );

    // The recovery the message names.
    let (ok, out) = work.run_cmd(&["snapshot", "--table", "public.r"]);
    assert!(ok, "{out}");
    let mut child = work.start();
    pg.batch_execute("INSERT INTO r VALUES (4, 'd')")
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(30),
        "both sides equal",
        &work,
        || async {
            let mut c = dbs.mysql().await;
            let now = pg_r().await;
            now.len() == 4 && mysql_rows(&mut c, MY_R).await == now
        },
    )
    .await;
    stop_cleanly(&mut child, &work);
}

/// PostgreSQL restored from a backup: MySQL's checkpoint of the way back is ahead of the WAL,
/// and the stream would start there and skip every CRM change written since below it (it did).
/// duplex refuses, naming the way to start over; after `duplex setup --start-over` the resyncs
/// bring the changes written since (deletes included), and later ones stream: both sides end
/// equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_ahead_of_the_wal_is_refused_and_setup_starts_the_way_back_over() {
    let (dbs, pipeline, work, mut child) = reverse_r_streaming("ahead").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    let pg_r = || async { pg_rows(&pg, "SELECT id::text, v FROM r ORDER BY r.id").await };
    stop_cleanly(&mut child, &work);
    // As after a restore of PostgreSQL: MySQL's checkpoint 1 GB past the WAL's end.
    let ahead = pg_rows(
        &pg,
        "SELECT (pg_current_wal_lsn() + 1073741824)::text, ((pg_current_wal_lsn() + 1073741824) - '0/0'::pg_lsn)::bigint::text",
    )
    .await;
    let (lsn, n) = (ahead[0][0].clone().unwrap(), ahead[0][1].clone().unwrap());
    my.query_drop(format!(
        "UPDATE duplex.checkpoint SET position = 'pg:{lsn}', ord_major = 0, ord_minor = {n} \
         WHERE pipeline = '{pipeline}' AND direction = 'pg_to_mysql'"
    ))
    .await
    .unwrap();
    // CRM changes written after the restore, below that checkpoint.
    pg.batch_execute("INSERT INTO r VALUES (3, 'c'); UPDATE r SET v = 'a2' WHERE id = 1")
        .await
        .unwrap();
    let mut refused = work.start();
    wait_for(Duration::from_secs(30), "the refusal", &work, || async {
        work.log().contains("is ahead of PostgreSQL's WAL")
    })
    .await;
    let status = support::harness::terminate(&mut refused, Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| !s.success()) && work.log().contains("`duplex setup --start-over`"),
        "{status:?}\n{}",
        work.log()
    );
    let (ok, out) = work.run_cmd(&["setup", "--start-over"]);
    assert!(ok && out.contains("starts over"), "{out}");
    let mut child = work.start();
    pg.batch_execute("INSERT INTO r VALUES (4, 'd'); DELETE FROM r WHERE id = 2")
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(30),
        "both sides equal",
        &work,
        || async {
            let mut c = dbs.mysql().await;
            let now = pg_r().await;
            now.len() == 3 && mysql_rows(&mut c, MY_R).await == now
        },
    )
    .await;
    assert_eq!(
        pg_r().await,
        vec![
            vec![Some("1".into()), Some("a2".into())],
            vec![Some("3".into()), Some("c".into())],
            vec![Some("4".into()), Some("d".into())]
        ]
    );
    stop_cleanly(&mut child, &work);
}

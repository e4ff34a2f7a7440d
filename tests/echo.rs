//! Echo suppression on both sides: what duplex writes to PostgreSQL carries its replication
//! origin and is dropped by the PostgreSQL reader; a MySQL transaction that writes duplex's
//! checkpoint row first (as the MySQL writer does) is dropped by the binlog reader.

mod support;

use std::time::Duration;

use duplex::model::{Lsn, SourceEvent, Value};
use duplex::source::postgres::stream::ReplicationConn;
use duplex::source::postgres::PgSource;
use duplex::source::Source;
use mysql_async::prelude::Queryable;
use support::harness::{pg_count, pg_rows, stop_cleanly, wait_for, Workdir};
use tokio::sync::{mpsc, watch};

const BOTH: &str =
    "[[table]]\nsource = \"t\"\ntarget = \"t\"\ndirection = \"both\"\ncolumns = \"all\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplex_writes_to_postgres_do_not_come_back() {
    let dbs = support::fresh_dbs("echo_pg").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop("CREATE TABLE t (id int PRIMARY KEY, v varchar(20))")
        .await
        .unwrap();
    pg.batch_execute(
        "CREATE TABLE t (id integer PRIMARY KEY, v text); CREATE PUBLICATION p FOR TABLE t",
    )
    .await
    .unwrap();
    let pipeline = support::harness::pipeline_name("e", &dbs);
    let work = Workdir::new(&dbs, &pipeline, "UTC", &[("t.toml", BOTH)]);
    work.setup();
    // Under least privilege duplex has no origin functions and marks its transactions with its
    // checkpoint row instead: this reader needs that table in its publication to see the mark.
    let least = support::harness::least_privilege();
    if least {
        pg.batch_execute("ALTER PUBLICATION p ADD TABLE duplex.checkpoint")
            .await
            .unwrap();
    }
    let slot = format!("s_{}", dbs.pg_db);
    ReplicationConn::connect(&support::harness::pg_config(&dbs.pg_db), "test")
        .await
        .unwrap()
        .create_slot(&slot)
        .await
        .unwrap();
    let (_flushed_tx, flushed_rx) = watch::channel(Lsn(0));
    let (tx, mut rx) = mpsc::channel(64);
    let mut source = PgSource::new(
        support::harness::pg_config(&dbs.pg_db),
        slot.clone(),
        "p".into(),
        pipeline.clone(),
        1000,
        flushed_rx,
    );
    let reader = tokio::spawn(async move { source.run(None, tx).await });

    let mut child = work.start();
    // Written in MySQL, applied to PostgreSQL by duplex (with its origin).
    my.query_drop("INSERT INTO t VALUES (1, 'from bitrix')")
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(30),
        "the row in PostgreSQL",
        &work,
        || async { pg_count(&pg, "t").await == 1 },
    )
    .await;
    // Written in PostgreSQL directly.
    pg.batch_execute("INSERT INTO t VALUES (2, 'from crm')")
        .await
        .unwrap();

    let mut rows = Vec::new();
    while rows.is_empty() {
        if let SourceEvent::Rows(r) = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("events")
            .expect("reader alive")
        {
            rows.extend(r);
        }
    }
    let ids: Vec<Value> = rows
        .iter()
        .map(|r| r.after.as_ref().unwrap()[0].clone())
        .collect();
    assert_eq!(ids, vec![Value::Int(2)], "duplex's own write came back");
    let origin = pg_rows(
        &pg,
        &format!(
            "SELECT roname FROM pg_replication_origin WHERE roname = '{}'",
            duplex::origin::origin_name(&pipeline, 1)
        ),
    )
    .await;
    if least {
        assert!(
            origin.is_empty(),
            "an origin without the privilege to make one"
        );
    } else {
        assert_eq!(origin.len(), 1, "setup did not create the origin");
    }

    stop_cleanly(&mut child, &work);
    reader.abort();
    let _ = reader.await;
    for _ in 0..50 {
        if ReplicationConn::connect(&support::harness::pg_config(&dbs.pg_db), "test")
            .await
            .unwrap()
            .drop_slot(&slot)
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_transactions_marked_with_the_checkpoint_row_are_not_replicated() {
    let dbs = support::fresh_dbs("echo_my").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop("CREATE TABLE t (id int PRIMARY KEY, v varchar(20))")
        .await
        .unwrap();
    pg.batch_execute("CREATE TABLE t (id integer PRIMARY KEY, v text)")
        .await
        .unwrap();
    let work = Workdir::new(
        &dbs,
        "echomy",
        "UTC",
        &[(
            "t.toml",
            "[[table]]\nsource = \"t\"\ntarget = \"t\"\ncolumns = \"all\"\n",
        )],
    );
    // This test is about the stream: rows written before the start are streamed, not copied.
    work.append_config("[snapshot]\non_start = false\n");
    work.setup();
    let mut child = work.start();

    // What the MySQL writer does: its pipeline's checkpoint row first, then the rows (an echo
    // if replicated).
    let mut tx = my.start_transaction(Default::default()).await.unwrap();
    tx.query_drop(
        "INSERT INTO duplex.checkpoint (pipeline, direction, position, ord_major, ord_minor) \
         VALUES ('echomy', 'pg_to_mysql', 'pg:0/1', 0, 1) \
         ON DUPLICATE KEY UPDATE ord_minor = ord_minor + 1",
    )
    .await
    .unwrap();
    tx.query_drop("INSERT INTO t VALUES (10, 'echo')")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // Another pipeline's writer: its rows are changes like any other for this pipeline.
    let mut tx = my.start_transaction(Default::default()).await.unwrap();
    tx.query_drop(
        "INSERT INTO duplex.checkpoint (pipeline, direction, position, ord_major, ord_minor) \
         VALUES ('echomy_eu', 'pg_to_mysql', 'pg:0/1', 0, 1) \
         ON DUPLICATE KEY UPDATE ord_minor = ord_minor + 1",
    )
    .await
    .unwrap();
    tx.query_drop("INSERT INTO t VALUES (12, 'another pipeline')")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // A checkpoint write that is not first does not hide the transaction.
    let mut tx = my.start_transaction(Default::default()).await.unwrap();
    tx.query_drop("INSERT INTO t VALUES (11, 'real')")
        .await
        .unwrap();
    tx.query_drop(
        "UPDATE duplex.checkpoint SET ord_minor = ord_minor + 1 WHERE pipeline = 'echomy'",
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    wait_for(Duration::from_secs(30), "rows 11 and 12", &work, || async {
        pg_count(&pg, "t").await >= 2
    })
    .await;
    assert_eq!(
        pg_rows(&pg, "SELECT id::text FROM t ORDER BY t.id").await,
        vec![vec![Some("11".to_string())], vec![Some("12".to_string())]]
    );
    stop_cleanly(&mut child, &work);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_origin_privileges_the_marker_rule_prevents_echo() {
    let dbs = support::fresh_dbs("echo_marker").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    let role = support::harness::pipeline_name("weak_", &dbs);
    my.query_drop("CREATE TABLE t (id int PRIMARY KEY, v varchar(20))")
        .await
        .unwrap();
    pg.batch_execute(&format!(
        "CREATE ROLE {role} LOGIN REPLICATION PASSWORD 'weak-pw';
         GRANT CREATE ON DATABASE {db} TO {role};
         CREATE TABLE t (id integer PRIMARY KEY, v text);
         ALTER TABLE t OWNER TO {role}",
        db = dbs.pg_db
    ))
    .await
    .unwrap();
    let pipeline = support::harness::pipeline_name("m", &dbs);
    let port = support::harness::free_port();
    let work = Workdir::with_metrics(
        &dbs,
        &pipeline,
        "UTC",
        &[("t.toml", BOTH)],
        &format!("127.0.0.1:{port}"),
    );
    // duplex connects to PostgreSQL as the role without superuser or origin functions.
    std::fs::write(work.path().join("weak.pw"), "weak-pw\n").unwrap();
    work.set_login("postgres", &role, "weak.pw");

    work.setup();
    let (ok, out) = work.run_cmd(&["check"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("ok    PostgreSQL: echo suppression by the checkpoint-row marker"),
        "{out}"
    );
    let published = pg_rows(&pg, &format!("SELECT tablename FROM pg_publication_tables WHERE pubname = 'duplex_{pipeline}' ORDER BY 1")).await;
    assert_eq!(
        published,
        vec![
            vec![Some("checkpoint".to_string())],
            vec![Some("heartbeat".to_string())],
            vec![Some("t".to_string())]
        ]
    );
    let mut child = work.start();

    my.query_drop("INSERT INTO t VALUES (1, 'bitrix')")
        .await
        .unwrap();
    my.query_drop("UPDATE t SET v = 'bitrix 2' WHERE id = 1")
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(30),
        "Bitrix's row in PostgreSQL",
        &work,
        || async {
            pg_rows(&pg, "SELECT v FROM t WHERE id = 1").await
                == vec![vec![Some("bitrix 2".to_string())]]
        },
    )
    .await;
    pg.batch_execute("INSERT INTO t VALUES (2, 'crm')")
        .await
        .unwrap();
    pg.batch_execute("UPDATE t SET v = 'crm 2' WHERE id = 1")
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(30),
        "both sides equal",
        &work,
        || async {
            let mut c = dbs.mysql().await;
            let m = support::harness::mysql_rows(&mut c, "SELECT id, v FROM t ORDER BY id").await;
            m == pg_rows(&pg, "SELECT id::text, v FROM t ORDER BY t.id").await
                && m.len() == 2
                && m[0][1].as_deref() == Some("crm 2")
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        support::harness::transactions_applied(port, "mysql_to_pg"),
        2,
        "forward applied more than the 2 MySQL transactions: an echo"
    );
    assert_eq!(
        support::harness::transactions_applied(port, "pg_to_mysql"),
        2,
        "reverse applied more than the 2 PostgreSQL transactions: an echo"
    );
    stop_cleanly(&mut child, &work);
    let (ok, out) = work.run_cmd(&["teardown", "--yes"]);
    assert!(ok, "{out}");
}

/// Two pipelines on the same two servers, one chained after the other: pipeline A copies
/// MySQL `m1` to PostgreSQL `p1` and PostgreSQL `p2` to MySQL `m2`; pipeline B copies MySQL
/// `m2` to PostgreSQL `p3` and PostgreSQL `p1` to MySQL `m3`. What A writes (marked as A's:
/// its origin, or its checkpoint row) is a change like any other for B, so it travels on: rows
/// inserted into `m1` end in `m3`, rows inserted into `p2` end in `p3`. Each pipeline drops only
/// its own writes (before, B dropped every transaction that wrote any pipeline's checkpoint row
/// first). Runs in both echo modes: origins, and under least privilege the marker rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_chained_pipelines_each_replicate_what_the_other_wrote() {
    let dbs = support::fresh_dbs("chain").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    for t in ["m1", "m2", "m3"] {
        my.query_drop(format!(
            "CREATE TABLE {t} (id int PRIMARY KEY, v varchar(20))"
        ))
        .await
        .unwrap();
    }
    for t in ["p1", "p2", "p3"] {
        pg.batch_execute(&format!(
            "CREATE TABLE {t} (id integer PRIMARY KEY, v text)"
        ))
        .await
        .unwrap();
    }
    let forward = |m: &str, p: &str| {
        format!("[[table]]\nsource = \"{m}\"\ntarget = \"{p}\"\ncolumns = \"all\"\n")
    };
    let reverse = |m: &str, p: &str| {
        format!("[[table]]\nsource = \"{m}\"\ntarget = \"{p}\"\ndirection = \"reverse\"\n[table.column]\nid = \"id\"\nv = \"v\"\n")
    };
    let (a_name, b_name) = (
        support::harness::pipeline_name("chain_a", &dbs),
        support::harness::pipeline_name("chain_b", &dbs),
    );
    let a = Workdir::new(
        &dbs,
        &a_name,
        "UTC",
        &[
            ("f.toml", &forward("m1", "p1")),
            ("r.toml", &reverse("m2", "p2")),
        ],
    );
    let b = a.sibling(
        &b_name,
        &[
            ("f.toml", &forward("m2", "p3")),
            ("r.toml", &reverse("m3", "p1")),
        ],
    );
    a.setup();
    b.setup();
    let mut run_a = a.start();
    let mut run_b = b.start();
    for i in 1..=20 {
        my.query_drop(format!("INSERT INTO m1 VALUES ({i}, 'bitrix {i}')"))
            .await
            .unwrap();
        pg.batch_execute(&format!("INSERT INTO p2 VALUES ({i}, 'crm {i}')"))
            .await
            .unwrap();
    }
    my.query_drop("UPDATE m1 SET v = 'bitrix changed' WHERE id = 3; DELETE FROM m1 WHERE id = 4")
        .await
        .unwrap();
    let m_rows = |t: &'static str| {
        let dbs = dbs.clone();
        async move {
            support::harness::mysql_rows(
                &mut dbs.mysql().await,
                &format!("SELECT id, v FROM {t} ORDER BY id"),
            )
            .await
        }
    };
    let p_rows = |t: &'static str| {
        let pg = &pg;
        async move { pg_rows(pg, &format!("SELECT id::text, v FROM {t} ORDER BY {t}.id")).await }
    };
    wait_for(
        Duration::from_secs(60),
        "m1 through p1 into m3",
        &b,
        || async {
            let m1 = m_rows("m1").await;
            m1.len() == 19 && p_rows("p1").await == m1 && m_rows("m3").await == m1
        },
    )
    .await;
    wait_for(
        Duration::from_secs(60),
        "p2 through m2 into p3",
        &a,
        || async {
            let p2 = p_rows("p2").await;
            p2.len() == 20 && m_rows("m2").await == p2 && p_rows("p3").await == p2
        },
    )
    .await;
    // Nothing went where no mapping sends it: each table holds its own rows only.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(m_rows("m1").await.len(), 19);
    assert_eq!(p_rows("p2").await.len(), 20);
    assert_eq!(m_rows("m3").await, m_rows("m1").await);
    assert_eq!(p_rows("p3").await, p_rows("p2").await);
    stop_cleanly(&mut run_a, &a);
    stop_cleanly(&mut run_b, &b);
}

/// `duplex setup` ran with the replication origin functions (origins made, the checkpoint
/// table kept out of the publication), then `duplex run` logs in as a role without them: its
/// writes would carry the marker row, which the stream does not carry, and would come back as
/// changes. duplex refuses at start, naming the two ways out, instead of echoing silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echo_mode_other_than_setup_s_is_refused() {
    let dbs = support::fresh_dbs("echo_mismatch").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    let role = support::harness::pipeline_name("weak2_", &dbs);
    my.query_drop("CREATE TABLE t (id int PRIMARY KEY, v varchar(20))")
        .await
        .unwrap();
    pg.batch_execute(&format!(
        "CREATE ROLE {role} LOGIN REPLICATION PASSWORD 'weak-pw';
         GRANT CREATE ON DATABASE {db} TO {role};
         CREATE TABLE t (id integer PRIMARY KEY, v text);
         GRANT ALL ON t TO {role}",
        db = dbs.pg_db
    ))
    .await
    .unwrap();
    let pipeline = support::harness::pipeline_name("mm", &dbs);
    let work = Workdir::new(&dbs, &pipeline, "UTC", &[("t.toml", BOTH)]);
    // Setup as the servers' superuser: origins.
    let s = support::servers();
    std::fs::write(work.path().join("super.pw"), format!("{}\n", s.pg_password)).unwrap();
    work.set_login("postgres", &s.pg_user, "super.pw");
    work.setup();
    // Run as the role without the origin functions (with every right on duplex's own tables).
    pg.batch_execute(&format!(
        "GRANT USAGE, CREATE ON SCHEMA duplex TO {role}; GRANT ALL ON ALL TABLES IN SCHEMA duplex TO {role}"
    ))
    .await
    .unwrap();
    std::fs::write(work.path().join("weak.pw"), "weak-pw\n").unwrap();
    work.set_login("postgres", &role, "weak.pw");
    let mut child = work.start();
    let said = "would come back to MySQL as changes";
    wait_for(Duration::from_secs(30), "the refusal", &work, || async {
        work.log().contains(said)
    })
    .await;
    let status = support::harness::terminate(&mut child, Duration::from_secs(30));
    let log = work.log();
    assert!(
        status.is_some_and(|s| !s.success())
            && log.contains("GRANT EXECUTE ON FUNCTION pg_replication_origin_session_setup(text)")
            && log.contains("run `duplex setup` again as this account"),
        "{status:?}\n{log}"
    );
}

/// The copy's writer and then the stream's bind the same replication origin one right after the
/// other. An origin still held by a writer that is closing is bound as soon as it is free,
/// within the bind (no error, no restart of the pipeline); one held for good by a session of
/// another application is a transient error that names the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_freed_by_a_closing_writer_is_bound_without_an_error() {
    let dbs = support::fresh_dbs("origin_handover").await;
    let name = format!("duplex_{}_9", dbs.pg_db);
    let admin = dbs.pg().await;
    admin
        .execute("SELECT pg_replication_origin_create($1)", &[&name])
        .await
        .unwrap();
    let session = |app: &'static str| {
        let dbs = dbs.clone();
        async move {
            let c = dbs.pg().await;
            c.batch_execute(&format!("SET application_name = '{app}'"))
                .await
                .unwrap();
            c
        }
    };
    let copy = session("copy").await;
    copy.execute("SELECT pg_replication_origin_session_setup($1)", &[&name])
        .await
        .unwrap();
    // The copy's writer closes 300 ms later; its backend frees the origin when it exits.
    let closing = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(copy);
    });
    let stream = session("stream").await;
    duplex::origin::bind_session(&stream, &name)
        .await
        .expect("the origin is bound once the closing writer has freed it");
    closing.await.unwrap();
    let bound: bool = stream
        .query_one("SELECT pg_replication_origin_session_is_setup()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(bound, "the stream's session holds the origin");

    // Held for good by another application's session: not ended, and after about a second
    // of tries a transient error (the pipeline retries with backoff) naming the origin.
    let other = session("someone else").await;
    let started = std::time::Instant::now();
    let err = duplex::origin::bind_session(&other, &name)
        .await
        .expect_err("the origin is held by a live session");
    assert!(err.is_transient(), "{err}");
    assert!(
        err.to_string().contains(&name) && err.to_string().contains("already active"),
        "{err}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "gave up after {:?}",
        started.elapsed()
    );
    stream
        .batch_execute("SELECT pg_replication_origin_session_reset()")
        .await
        .unwrap();
    admin
        .execute("SELECT pg_replication_origin_drop($1)", &[&name])
        .await
        .unwrap();
}

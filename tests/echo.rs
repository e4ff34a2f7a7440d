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
        duplex::origin::own_prefix(&pipeline),
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

    // What the MySQL writer does: checkpoint row first, then the rows (an echo if replicated).
    let mut tx = my.start_transaction(Default::default()).await.unwrap();
    tx.query_drop(
        "INSERT INTO duplex.checkpoint (pipeline, direction, position, ord_major, ord_minor) \
         VALUES ('echomy_test', 'pg_to_mysql', 'pg:0/1', 0, 1) \
         ON DUPLICATE KEY UPDATE ord_minor = ord_minor + 1",
    )
    .await
    .unwrap();
    tx.query_drop("INSERT INTO t VALUES (10, 'echo')")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // A checkpoint write that is not first does not hide the transaction.
    let mut tx = my.start_transaction(Default::default()).await.unwrap();
    tx.query_drop("INSERT INTO t VALUES (11, 'real')")
        .await
        .unwrap();
    tx.query_drop(
        "UPDATE duplex.checkpoint SET ord_minor = ord_minor + 1 WHERE pipeline = 'echomy_test'",
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    wait_for(Duration::from_secs(30), "row 11", &work, || async {
        pg_count(&pg, "t").await >= 1
    })
    .await;
    assert_eq!(
        pg_rows(&pg, "SELECT id::text FROM t").await,
        vec![vec![Some("11".to_string())]]
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
    let (ok, out) = work.run_cmd(&["teardown"]);
    assert!(ok, "{out}");
}

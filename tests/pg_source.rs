//! The PostgreSQL source against a real server: committed transactions arrive as source
//! events with typed values (numeric exact, timestamptz, unchanged TOASTed columns), duplex's
//! own origin-tagged transactions are dropped (only an idle position remains), and the slot
//! confirms exactly the position the target reports as committed.

mod support;

use std::time::Duration;

use duplex::model::{Lsn, Op, Position, SourceEvent, Value};
use duplex::source::postgres::stream::ReplicationConn;
use duplex::source::postgres::PgSource;
use duplex::source::Source;
use tokio::sync::{mpsc, watch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_arrive_typed_and_own_writes_are_dropped() {
    let dbs = support::fresh_dbs("pgsrc").await;
    let pg = dbs.pg().await;
    pg.batch_execute(
        "CREATE TABLE t (id integer PRIMARY KEY, n numeric(18,4), ts timestamptz, ok boolean, doc jsonb, big text, u uuid);
         ALTER TABLE t ALTER COLUMN big SET STORAGE EXTERNAL;
         CREATE PUBLICATION p FOR TABLE t",
    )
    .await
    .unwrap();
    let slot = format!("s_{}", dbs.pg_db);
    let origin = format!("duplex_{}_1", dbs.pg_db);
    let mut conn = ReplicationConn::connect(&support::harness::pg_config(&dbs.pg_db), "test")
        .await
        .unwrap();
    conn.create_slot(&slot).await.unwrap();
    pg.execute("SELECT pg_replication_origin_create($1)", &[&origin])
        .await
        .unwrap();

    let (flushed_tx, flushed_rx) = watch::channel(Lsn(0));
    let (tx, mut rx) = mpsc::channel(64);
    let mut source = PgSource::new(
        support::harness::pg_config(&dbs.pg_db),
        slot.clone(),
        "p".into(),
        dbs.pg_db.clone(),
        1000,
        flushed_rx,
    );
    let reader = tokio::spawn(async move { source.run(None, tx).await });

    let big = "ж".repeat(5000);
    pg.execute(
        "INSERT INTO t VALUES (1, 12345678901234.5678, '2024-06-01 12:00:00.5+05', true, '{\"a\": [1, 2]}', $1, '01234567-89ab-cdef-0123-456789abcdef')",
        &[&big],
    )
    .await
    .unwrap();
    pg.batch_execute("UPDATE t SET n = 2 WHERE id = 1")
        .await
        .unwrap();
    // duplex's own write: a session with duplex's replication origin.
    let own = dbs.pg().await;
    own.execute("SELECT pg_replication_origin_session_setup($1)", &[&origin])
        .await
        .unwrap();
    own.batch_execute("INSERT INTO t (id, n) VALUES (2, 2)")
        .await
        .unwrap();
    pg.batch_execute("DELETE FROM t WHERE id = 1")
        .await
        .unwrap();

    let mut events = Vec::new();
    let mut idles = Vec::new();
    while events
        .iter()
        .filter(|e| matches!(e, SourceEvent::Commit(_)))
        .count()
        < 3
    {
        match tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("events")
            .expect("source alive")
        {
            SourceEvent::Idle(p) => idles.push(p),
            e => events.push(e),
        }
    }
    let mut rows = Vec::new();
    let mut commits = Vec::new();
    for e in &events {
        match e {
            SourceEvent::Rows(r) => rows.extend(r.iter().cloned()),
            SourceEvent::Commit(c) => commits.push(c.position.clone()),
            _ => {}
        }
    }
    assert_eq!(rows.len(), 3, "{rows:?}");
    let ins = rows[0].after.as_ref().unwrap();
    assert_eq!(rows[0].op, Op::Insert);
    assert_eq!(rows[0].table.name.to_string(), "public.t");
    assert_eq!(ins[0], Value::Int(1));
    assert_eq!(ins[1], Value::Decimal("12345678901234.5678".into()));
    assert_eq!(ins[2].to_string(), "2024-06-01 07:00:00.500000 UTC");
    assert_eq!(ins[3], Value::Bool(true));
    assert_eq!(ins[4], Value::Json("{\"a\": [1, 2]}".into()));
    assert_eq!(ins[5], Value::Text(big.clone()));
    assert_eq!(ins[6].to_string(), "01234567-89ab-cdef-0123-456789abcdef");
    let upd = rows[1].after.as_ref().unwrap();
    assert_eq!(rows[1].op, Op::Update);
    assert_eq!(upd[1], Value::Decimal("2.0000".into()));
    assert_eq!(upd[5], Value::Unchanged, "the TOASTed column was not sent");
    assert_eq!(rows[2].op, Op::Delete);
    assert_eq!(rows[2].before.as_ref().unwrap()[0], Value::Int(1));
    assert!(
        rows.iter()
            .all(|r| r.after.as_ref().is_none_or(|a| a[0] != Value::Int(2))),
        "own write echoed"
    );
    // The own transaction left an idle position between the second and third commits.
    assert!(
        idles
            .iter()
            .any(|p| p.is_after(&commits[1]) && commits[2].is_after(p)),
        "no idle position for the dropped transaction: {idles:?} {commits:?}"
    );

    // Report the first commit as flushed: the slot confirms exactly that.
    let Position::Postgres(first) = commits[0].clone() else {
        panic!()
    };
    flushed_tx.send(first).unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let confirmed: String = pg
            .query_one(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .unwrap()
            .get(0);
        if confirmed.parse::<Lsn>().unwrap() == first {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "slot confirmed {confirmed}, expected {first}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    reader.abort();
    let _ = reader.await;
    for _ in 0..50 {
        let mut c = ReplicationConn::connect(&support::harness::pg_config(&dbs.pg_db), "test")
            .await
            .unwrap();
        if c.drop_slot(&slot).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

//! The logical replication client against a real PostgreSQL: SCRAM start-up with
//! `replication=database`, IDENTIFY_SYSTEM, slot creation, START_REPLICATION with pgoutput,
//! WAL data for committed changes, keepalives, and standby status updates that move the slot's
//! confirmed position exactly as far as reported.

mod support;

use std::time::Duration;

use duplex::config::Secret;
use duplex::model::Lsn;
use duplex::source::postgres::stream::{ReplicationConn, ReplicationMessage};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_committed_changes_and_confirms_only_what_is_reported() {
    let dbs = support::fresh_dbs("pgrepl").await;
    let pg = dbs.pg().await;
    pg.batch_execute(
        "CREATE TABLE t (id integer PRIMARY KEY, v text); CREATE PUBLICATION p FOR TABLE t",
    )
    .await
    .unwrap();
    let slot = format!("s_{}", dbs.pg_db);

    let mut conn =
        ReplicationConn::connect(&support::harness::pg_config(&dbs.pg_db), "duplex test")
            .await
            .expect("SCRAM start-up");
    assert!(conn.server_version_num().await.unwrap() >= 150_000);
    let sys = conn.identify_system().await.unwrap();
    assert_eq!(sys.dbname.as_deref(), Some(dbs.pg_db.as_str()));
    assert!(sys.timeline >= 1 && sys.xlog_pos.0 > 0, "{sys:?}");
    let consistent = conn.create_slot(&slot).await.unwrap();
    assert!(consistent.0 > 0);

    pg.batch_execute("INSERT INTO t VALUES (1, 'one'), (2, 'two')")
        .await
        .unwrap();
    pg.batch_execute(
        "BEGIN; UPDATE t SET v = 'uno' WHERE id = 1; DELETE FROM t WHERE id = 2; COMMIT",
    )
    .await
    .unwrap();

    let mut stream = conn
        .start_replication(
            &slot,
            Lsn(0),
            &[("proto_version", "1"), ("publication_names", "p")],
        )
        .await
        .unwrap();
    // pgoutput tags in order: B R I I C, then B (R) U D C.
    let mut tags = Vec::new();
    let mut commit_end = Lsn(0);
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while tags.iter().filter(|t| **t == b'C').count() < 2 {
        assert!(
            std::time::Instant::now() < until,
            "only {:?}",
            String::from_utf8_lossy(&tags)
        );
        match tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a message")
            .unwrap()
        {
            ReplicationMessage::XLogData { data, .. } => {
                tags.push(data[0]);
                if data[0] == b'C' {
                    // Commit: flags(1) commit_lsn(8) end_lsn(8) time(8)
                    commit_end = Lsn(u64::from_be_bytes(data[10..18].try_into().unwrap()));
                }
            }
            ReplicationMessage::Keepalive { reply, wal_end, .. } => {
                if reply {
                    stream
                        .send_status(wal_end, Lsn(0), Lsn(0), false)
                        .await
                        .unwrap();
                }
            }
        }
    }
    let tags: String = tags
        .iter()
        .map(|b| *b as char)
        .filter(|c| *c != 'R')
        .collect();
    assert_eq!(tags, "BIICBUDC");

    // Report the first transaction only: the slot must confirm exactly that, not more.
    stream
        .send_status(commit_end, commit_end, commit_end, true)
        .await
        .unwrap();
    let confirmed = loop {
        let row = pg
            .query_one(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .unwrap();
        let lsn: Lsn = row.get::<_, String>(0).parse().unwrap();
        if lsn == commit_end || std::time::Instant::now() > until {
            break lsn;
        }
        // Keep the stream read so the server processes the update.
        let _ = tokio::time::timeout(Duration::from_millis(100), stream.next()).await;
    };
    assert_eq!(confirmed, commit_end);
    drop(stream);

    // The slot is released when the connection closes; drop it (retrying while it is active).
    let mut dropped = false;
    for _ in 0..50 {
        let mut c =
            ReplicationConn::connect(&support::harness::pg_config(&dbs.pg_db), "duplex test")
                .await
                .unwrap();
        match c.drop_slot(&slot).await {
            Ok(()) => {
                dropped = true;
                break;
            }
            Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("drop slot: {e}"),
        }
    }
    assert!(dropped);
    let left: i64 = pg
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_a_clear_definite_error() {
    let dbs = support::fresh_dbs("pgreplpw").await;
    let mut cfg = support::harness::pg_config(&dbs.pg_db);
    cfg.password = Secret::new("wrong");
    let e = ReplicationConn::connect(&cfg, "duplex test")
        .await
        .err()
        .expect("must fail");
    assert!(!e.is_transient(), "{e}");
    assert!(
        e.to_string().contains("password authentication failed"),
        "{e}"
    );
    assert!(e.to_string().contains("SQLSTATE 28P01"), "{e}");
}

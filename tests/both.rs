//! Both directions at once on a table mapped `both`: changes made in MariaDB reach PostgreSQL
//! and changes made in PostgreSQL reach MariaDB, Bitrix's own columns are kept, and nothing
//! echoes: triggers on both sides count every write, and each side sees exactly the writes
//! made there plus one per change made on the other side.

mod support;

use std::time::Duration;

use mysql_async::prelude::Queryable;
use support::harness::{mysql_rows, pg_count, pg_rows, stop_cleanly, wait_for, Workdir};

const BOTH: &str = r#"
[[table]]
source = "t"
target = "t"
direction = "both"

[table.column]
id = "id"
status = "status"
note = "note"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_directions_without_echo() {
    let dbs = support::fresh_dbs("both").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop(
        "CREATE TABLE t (id int PRIMARY KEY, status varchar(20), note varchar(50) CHARACTER SET utf8mb4, local_only varchar(20) NOT NULL DEFAULT 'keep');
         CREATE TABLE audit (n int AUTO_INCREMENT PRIMARY KEY, what varchar(10));
         CREATE TRIGGER t_i AFTER INSERT ON t FOR EACH ROW INSERT INTO audit (what) VALUES ('insert');
         CREATE TRIGGER t_u AFTER UPDATE ON t FOR EACH ROW INSERT INTO audit (what) VALUES ('update');
         CREATE TRIGGER t_d AFTER DELETE ON t FOR EACH ROW INSERT INTO audit (what) VALUES ('delete')",
    )
    .await
    .unwrap();
    pg.batch_execute(
        "CREATE TABLE t (id integer PRIMARY KEY, status text, note text);
         CREATE TABLE audit (n serial PRIMARY KEY, what text);
         CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO audit (what) VALUES (lower(TG_OP)); RETURN NULL; END $$;
         CREATE TRIGGER t_a AFTER INSERT OR UPDATE OR DELETE ON t FOR EACH ROW EXECUTE FUNCTION audit()",
    )
    .await
    .unwrap();
    let pipeline = support::harness::pipeline_name("b", &dbs);
    let work = Workdir::new(&dbs, &pipeline, "Asia/Almaty", &[("t.toml", BOTH)]);
    work.setup();
    // `duplex check` passes, and says which echo suppression is in use and why.
    let (ok, out) = work.run_cmd(&["check"]);
    assert!(ok, "{out}");
    if support::harness::least_privilege() {
        assert!(
            out.contains("ok    PostgreSQL: echo suppression by the checkpoint-row marker: this role may not execute pg_replication_origin_*"),
            "{out}"
        );
    } else {
        assert!(
            out.contains("ok    PostgreSQL: echo suppression by replication origin"),
            "{out}"
        );
    }
    let mut child = work.start();

    my.query_drop(
        "INSERT INTO t (id, status, note, local_only) VALUES (1, 'new', 'from bitrix', 'x')",
    )
    .await
    .unwrap();
    wait_for(
        Duration::from_secs(30),
        "row 1 in PostgreSQL",
        &work,
        || async { pg_count(&pg, "t").await == 1 },
    )
    .await;
    pg.batch_execute("UPDATE t SET status = 'paid' WHERE id = 1")
        .await
        .unwrap();
    pg.batch_execute("INSERT INTO t VALUES (2, 'new', 'from crm')")
        .await
        .unwrap();
    pg.batch_execute("DELETE FROM t WHERE id = 2")
        .await
        .unwrap();
    pg.batch_execute("INSERT INTO t VALUES (3, 'new', 'заказ из CRM 🌹')")
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(30),
        "the CRM's changes in MariaDB",
        &work,
        || {
            let my_rows = async {
                let mut c = dbs.mysql().await;
                mysql_rows(
                    &mut c,
                    "SELECT id, status, note, local_only FROM t ORDER BY id",
                )
                .await
            };
            async move {
                my_rows.await
                    == vec![
                        vec![
                            Some("1".into()),
                            Some("paid".into()),
                            Some("from bitrix".into()),
                            Some("x".into()),
                        ],
                        vec![
                            Some("3".into()),
                            Some("new".into()),
                            Some("заказ из CRM 🌹".into()),
                            Some("keep".into()),
                        ],
                    ]
            }
        },
    )
    .await;
    // Give an echo time to happen, then count every write on each side.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let my_audit = mysql_rows(&mut my, "SELECT what FROM audit ORDER BY n").await;
    let pg_audit = pg_rows(&pg, "SELECT what FROM audit ORDER BY n").await;
    let flat = |v: Vec<Vec<Option<String>>>| {
        v.into_iter()
            .map(|r| r[0].clone().unwrap())
            .collect::<Vec<_>>()
    };
    // MariaDB: its own insert, then the CRM's update, insert, delete, insert.
    assert_eq!(
        flat(my_audit),
        vec!["insert", "update", "insert", "delete", "insert"]
    );
    // PostgreSQL: Bitrix's insert, then its own four changes.
    assert_eq!(
        flat(pg_audit),
        vec!["insert", "update", "insert", "delete", "insert"]
    );
    assert_eq!(
        pg_rows(&pg, "SELECT id::text, status, note FROM t ORDER BY t.id").await,
        vec![
            vec![
                Some("1".into()),
                Some("paid".into()),
                Some("from bitrix".into())
            ],
            vec![
                Some("3".into()),
                Some("new".into()),
                Some("заказ из CRM 🌹".into())
            ],
        ]
    );
    stop_cleanly(&mut child, &work);

    // Teardown leaves no slot, publication or origin behind.
    let (ok, out) = work.run_cmd(&["teardown", "--yes"]);
    assert!(ok, "{out}");
    let slot = format!("duplex_{pipeline}");
    assert_eq!(
        pg_count(
            &pg,
            &format!("pg_replication_slots WHERE slot_name = '{slot}'")
        )
        .await,
        0
    );
    assert_eq!(
        pg_count(&pg, &format!("pg_publication WHERE pubname = '{slot}'")).await,
        0
    );
    assert_eq!(
        pg_count(
            &pg,
            &format!("pg_replication_origin WHERE roname = '{slot}_1'")
        )
        .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_slot_does_not_hold_wal() {
    let dbs = support::fresh_dbs("idle").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop("CREATE TABLE t (id int PRIMARY KEY, status varchar(20), note varchar(50))")
        .await
        .unwrap();
    pg.batch_execute("CREATE TABLE t (id integer PRIMARY KEY, status text, note text); CREATE TABLE other (id serial PRIMARY KEY, x text)")
        .await
        .unwrap();
    let pipeline = support::harness::pipeline_name("i", &dbs);
    let slot = format!("duplex_{pipeline}");
    let work = Workdir::new(&dbs, &pipeline, "UTC", &[("t.toml", BOTH)]);
    work.setup();
    let mut child = work.start();
    // WAL the slot does not publish: only another table changes.
    let before: String = pg
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    pg.batch_execute(
        "INSERT INTO other (x) SELECT repeat('x', 200) FROM generate_series(1, 20000)",
    )
    .await
    .unwrap();
    let before: duplex::model::Lsn = before.parse().unwrap();
    wait_for(Duration::from_secs(30), "the slot to confirm past the unpublished WAL", &work, || async {
        let c: String = pg
            .query_one("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
            .await
            .unwrap()
            .get(0);
        c.parse::<duplex::model::Lsn>().unwrap() > before
    })
    .await;
    stop_cleanly(&mut child, &work);
    let (ok, out) = work.run_cmd(&["teardown", "--yes"]);
    assert!(ok, "{out}");
}

const UUID_KEYED: &str = r#"
[[table]]
source = "r"
target = "crm_r"
direction = "reverse"

[table.column]
id = "bitrix_id"
v = "v"
"#;

/// A CRM table keyed by a uuid, mapped to Bitrix by a UNIQUE `bitrix_id`: the default replica
/// identity (the uuid) would leave the mapping key out of a DELETE's old row. `duplex setup`
/// gives the table REPLICA IDENTITY FULL, `duplex check` says so, and the CRM's deletes and
/// key-changing updates reach MariaDB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_and_key_changes_of_a_uuid_keyed_crm_table_reach_mysql() {
    let dbs = support::fresh_dbs("uuidkey").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    // Both sides hold the same rows already (the copy reads a table in primary-key order, and
    // the uuid is not mapped: it is not asked for here).
    my.query_drop(
        "CREATE TABLE r (id int PRIMARY KEY, v varchar(20));
         INSERT INTO r SELECT seq, CONCAT('v', seq) FROM seq_1_to_5",
    )
    .await
    .unwrap();
    pg.batch_execute(
        "CREATE TABLE crm_r (uid uuid PRIMARY KEY DEFAULT gen_random_uuid(), bitrix_id integer UNIQUE NOT NULL, v text);
         INSERT INTO crm_r (bitrix_id, v) SELECT g, 'v' || g FROM generate_series(1, 5) g",
    )
    .await
    .unwrap();
    let pipeline = support::harness::pipeline_name("uuidkey", &dbs);
    let work = Workdir::new(&dbs, &pipeline, "UTC", &[("r.toml", UUID_KEYED)]);
    work.append_config("[snapshot]\non_start = false\n");
    let (ok, out) = work.run_cmd(&["check"]);
    assert!(
        !ok && out.contains("FAIL  PostgreSQL: the replica identity of public.crm_r lacks the mapping key (bitrix_id)"),
        "{out}"
    );
    work.setup();
    let ident = pg_rows(
        &pg,
        "SELECT relreplident::text FROM pg_class WHERE relname = 'crm_r'",
    )
    .await;
    assert_eq!(ident, vec![vec![Some("f".to_string())]]);
    let (_, out) = work.run_cmd(&["check"]);
    assert!(
        out.contains("ok    PostgreSQL: the replica identity of public.crm_r carries the mapping key (bitrix_id)"),
        "{out}"
    );
    let mut child = work.start();
    let rows = |want: &'static [(i32, &'static str)]| {
        let dbs = &dbs;
        async move {
            let mut my = dbs.mysql().await;
            let got = mysql_rows(&mut my, "SELECT id, v FROM r ORDER BY id").await;
            let want: Vec<Vec<Option<String>>> = want
                .iter()
                .map(|(i, v)| vec![Some(i.to_string()), Some(v.to_string())])
                .collect();
            got == want
        }
    };
    assert!(rows(&[(1, "v1"), (2, "v2"), (3, "v3"), (4, "v4"), (5, "v5")]).await);
    pg.batch_execute(
        "DELETE FROM crm_r WHERE bitrix_id = 2;
         UPDATE crm_r SET bitrix_id = 50 WHERE bitrix_id = 3;
         INSERT INTO crm_r (bitrix_id, v) VALUES (6, 'v6')",
    )
    .await
    .unwrap();
    wait_for(
        Duration::from_secs(30),
        "the delete and the key change",
        &work,
        || rows(&[(1, "v1"), (4, "v4"), (5, "v5"), (6, "v6"), (50, "v3")]),
    )
    .await;
    stop_cleanly(&mut child, &work);
}

const EVENTS: &str = r#"
[[table]]
source = "ev"
target = "ev"
direction = "reverse"

[table.column]
id = "id"
at = "at"
note = "note"
"#;

/// PostgreSQL values MySQL has no counterpart for (`infinity`): in a column nothing maps it is
/// ignored; in a mapped one the row becomes a dead letter that shows the value, and the stream
/// goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_postgres_value_is_a_dead_letter_only_where_mapped() {
    let dbs = support::fresh_dbs("infinity").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop("CREATE TABLE ev (id int PRIMARY KEY, at datetime(6) NULL, note varchar(20))")
        .await
        .unwrap();
    pg.batch_execute(
        "CREATE TABLE ev (id integer PRIMARY KEY, at timestamptz, note text, extra timestamptz, amount numeric)",
    )
    .await
    .unwrap();
    let pipeline = support::harness::pipeline_name("infinity", &dbs);
    let work = Workdir::new(&dbs, &pipeline, "UTC", &[("ev.toml", EVENTS)]);
    work.setup();
    let mut child = work.start();
    pg.batch_execute(
        "INSERT INTO ev VALUES (1, '2026-12-01 10:00:00+00', 'a', 'infinity', 'NaN');
         INSERT INTO ev VALUES (2, '-infinity', 'b', now(), 1);
         INSERT INTO ev VALUES (3, '2026-12-01 11:00:00+00', 'c', '-infinity', 2)",
    )
    .await
    .unwrap();
    wait_for(Duration::from_secs(30), "rows 1 and 3", &work, || async {
        let mut my = dbs.mysql().await;
        mysql_rows(&mut my, "SELECT id, note FROM ev ORDER BY id").await
            == vec![
                vec![Some("1".to_string()), Some("a".to_string())],
                vec![Some("3".to_string()), Some("c".to_string())],
            ]
    })
    .await;
    let letters = mysql_rows(
        &mut my,
        "SELECT target_table, reason FROM duplex.dead_letter ORDER BY id",
    )
    .await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let reason = letters[0][1].as_deref().unwrap_or_default();
    assert!(
        reason.contains("column at") && reason.contains("-infinity"),
        "{reason}"
    );
    assert!(matches!(child.0.try_wait(), Ok(None)), "duplex stopped");
    stop_cleanly(&mut child, &work);
}

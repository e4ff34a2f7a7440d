//! Rows that cannot be applied go to `duplex.dead_letter` with the reason — a value that does not
//! fit the target type, a NUL byte PostgreSQL text cannot hold, a constraint the target enforces
//! — and everything else, before and after and in the same transactions, is applied.

mod support;

use std::time::Duration;

use mysql_async::prelude::Queryable;
use support::harness::{pg_count, pg_rows, stop_cleanly, wait_for, Workdir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_are_set_aside_with_their_reason_and_the_stream_goes_on() {
    let dbs = support::fresh_dbs("dlq").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop("CREATE TABLE t (id int PRIMARY KEY, a bigint NOT NULL, s varchar(50))")
        .await
        .unwrap();
    pg.batch_execute(
        "CREATE TABLE t (id integer PRIMARY KEY, a integer NOT NULL CHECK (a >= 0), s text)",
    )
    .await
    .unwrap();
    let work = Workdir::new(
        &dbs,
        "dlq",
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

    let txns = [
        "INSERT INTO t VALUES (1, 1, 'a'), (2, 2, 'b'), (3, 3, 'c'), (4, 4, 'd'), (5, 5, 'e')",
        // Out of range for integer, and a NUL byte, next to a good row.
        "INSERT INTO t VALUES (6, 5000000000, 'big'), (7, 7, CONCAT('nul', CHAR(0), 'byte')), (8, 8, 'fine')",
        // A row the target's CHECK constraint rejects, next to a good one.
        "INSERT INTO t VALUES (9, -1, 'negative'), (10, 10, 'fine too')",
        "INSERT INTO t VALUES (11, 11, 'k'), (12, 12, 'l'), (13, 13, 'm')",
        "UPDATE t SET s = 'updated' WHERE id IN (1, 13)",
    ];
    for q in txns {
        my.query_drop(q).await.unwrap();
    }
    wait_for(
        Duration::from_secs(30),
        "the good rows and three dead letters",
        &work,
        || async {
            pg_count(&pg, "t").await == 10 && pg_count(&pg, "duplex.dead_letter").await == 3
        },
    )
    .await;
    let ids = pg_rows(&pg, "SELECT string_agg(id::text, ',' ORDER BY id) FROM t").await;
    assert_eq!(ids[0][0].as_deref(), Some("1,2,3,4,5,8,10,11,12,13"));
    let updated = pg_rows(
        &pg,
        "SELECT string_agg(id::text, ',' ORDER BY id) FROM t WHERE s = 'updated'",
    )
    .await;
    assert_eq!(updated[0][0].as_deref(), Some("1,13"));

    let letters = pg_rows(&pg, "SELECT row_data->>'id', op, target_table, reason, position FROM duplex.dead_letter ORDER BY (row_data->>'id')::int").await;
    let ids: Vec<_> = letters.iter().map(|r| r[0].clone().unwrap()).collect();
    assert_eq!(ids, vec!["6", "7", "9"]);
    assert!(letters
        .iter()
        .all(|r| r[1].as_deref() == Some("insert") && r[2].as_deref() == Some("public.t")));
    let reason = |i: usize| letters[i][3].clone().unwrap();
    assert!(
        reason(0).contains("5000000000 is out of range for a integer column"),
        "{}",
        reason(0)
    );
    assert!(reason(0).contains("column a → public.t.a"), "{}", reason(0));
    assert!(reason(1).contains("NUL byte"), "{}", reason(1));
    assert!(
        reason(2).contains("violates check constraint"),
        "{}",
        reason(2)
    );
    assert!(
        letters
            .iter()
            .all(|r| r[4].as_deref().unwrap().starts_with("mysql:binlog.")),
        "{letters:?}"
    );

    stop_cleanly(&mut child, &work);
    assert!(
        work.log().contains("re-applying row by row"),
        "careful mode was not used"
    );
}

/// A target whose foreign key is `DEFERRABLE INITIALLY DEFERRED`: a row without its parent
/// fails at COMMIT, not at its statement. The fast path's commit fails, careful mode checks the
/// constraints at each row (`SET CONSTRAINTS ALL IMMEDIATE`), so that row becomes a dead letter
/// and the rest goes on; before, the careful commit failed the same way and duplex exited and
/// failed again at every start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_failing_a_deferred_constraint_at_commit_is_a_dead_letter() {
    let dbs = support::fresh_dbs("dlq_deferred").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop("CREATE TABLE c (id int PRIMARY KEY, pid int NOT NULL)")
        .await
        .unwrap();
    pg.batch_execute(
        "CREATE TABLE p (id integer PRIMARY KEY); INSERT INTO p VALUES (1);
         CREATE TABLE c (id integer PRIMARY KEY,
                         pid integer NOT NULL REFERENCES p (id) DEFERRABLE INITIALLY DEFERRED)",
    )
    .await
    .unwrap();
    let work = Workdir::new(
        &dbs,
        &support::harness::pipeline_name("deferred", &dbs),
        "UTC",
        &[(
            "c.toml",
            "[[table]]\nsource = \"c\"\ntarget = \"c\"\ncolumns = \"all\"\n",
        )],
    );
    work.append_config("[snapshot]\non_start = false\n");
    work.setup();
    let mut child = work.start();
    for q in [
        "INSERT INTO c VALUES (1, 1)",
        "INSERT INTO c VALUES (2, 99), (3, 1)",
        "INSERT INTO c VALUES (4, 1)",
    ] {
        my.query_drop(q).await.unwrap();
    }
    wait_for(
        Duration::from_secs(30),
        "rows 1, 3, 4 and one dead letter",
        &work,
        || async {
            pg_count(&pg, "c").await == 3 && pg_count(&pg, "duplex.dead_letter").await == 1
        },
    )
    .await;
    let ids = pg_rows(&pg, "SELECT string_agg(id::text, ',' ORDER BY id) FROM c").await;
    assert_eq!(ids[0][0].as_deref(), Some("1,3,4"));
    let reason = pg_rows(&pg, "SELECT reason FROM duplex.dead_letter").await;
    assert!(
        reason[0][0]
            .as_deref()
            .is_some_and(|r| r.contains("foreign key")),
        "{reason:?}"
    );
    assert!(matches!(child.0.try_wait(), Ok(None)), "{}", work.log());
    stop_cleanly(&mut child, &work);
}

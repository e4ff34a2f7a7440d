//! Streaming correctness: inserts, updates (also of the key), deletes and multi-statement
//! transactions reach PostgreSQL whole — a concurrent reader never sees half of a source
//! transaction — and both sides end equal row by row.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use rand::{RngExt, SeedableRng};
use support::harness::{mysql_rows, pg_count, pg_rows, stop_cleanly, wait_for, Workdir};

const ACCOUNTS: i64 = 100;
const START_BALANCE: i64 = 1000;
const GROUP_SIZE: i64 = 5;

const MAPPING: &str = r#"
[[table]]
source = "acct"
target = "acct"
columns = "all"

[[table]]
source = "grp"
target = "grp_rows"

[table.column]
id = "id"
g = "group_id"
k = "k"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_never_sees_half_a_transaction_and_both_sides_end_equal() {
    let dbs = support::fresh_dbs("stream").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop(
        "CREATE TABLE acct (id int PRIMARY KEY, balance bigint NOT NULL, note varchar(50));
         CREATE TABLE grp (id int AUTO_INCREMENT PRIMARY KEY, g int NOT NULL, k int NOT NULL, extra varchar(10))",
    )
    .await
    .unwrap();
    pg.batch_execute(
        "CREATE TABLE acct (id integer PRIMARY KEY, balance bigint NOT NULL, note text);
         CREATE TABLE grp_rows (id integer PRIMARY KEY, group_id integer NOT NULL, k integer NOT NULL)",
    )
    .await
    .unwrap();
    let work = Workdir::new(&dbs, "stream", "UTC", &[("m.toml", MAPPING)]);
    work.setup();
    let mut child = work.start();

    // The accounts arrive in one source transaction of 100 rows.
    let values: Vec<String> = (1..=ACCOUNTS)
        .map(|i| format!("({i}, {START_BALANCE}, 'acct {i}')"))
        .collect();
    my.query_drop(format!("INSERT INTO acct VALUES {}", values.join(",")))
        .await
        .unwrap();
    wait_for(Duration::from_secs(30), "the accounts", &work, || async {
        pg_count(&pg, "acct").await == ACCOUNTS
    })
    .await;

    // A reader checks two invariants in one snapshot as fast as it can: money is conserved
    // (every transfer is two updates) and every group has exactly GROUP_SIZE rows.
    let stop = Arc::new(AtomicBool::new(false));
    let checks = Arc::new(AtomicUsize::new(0));
    let reader = {
        let stop = stop.clone();
        let checks = checks.clone();
        let reader_pg = dbs.pg().await;
        tokio::spawn(async move {
            let mut violations = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                reader_pg
                    .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
                    .await
                    .unwrap();
                let sum: i64 = reader_pg
                    .query_one("SELECT sum(balance)::bigint FROM acct", &[])
                    .await
                    .unwrap()
                    .get(0);
                let bad = reader_pg
                    .query(
                        "SELECT group_id, count(*) FROM grp_rows GROUP BY group_id HAVING count(*) <> $1",
                        &[&GROUP_SIZE],
                    )
                    .await
                    .unwrap();
                reader_pg.batch_execute("COMMIT").await.unwrap();
                if sum != ACCOUNTS * START_BALANCE {
                    violations.push(format!("sum of balances {sum}"));
                }
                for r in bad {
                    let (g, n): (i32, i64) = (r.get(0), r.get(1));
                    violations.push(format!("group {g} has {n} rows"));
                }
                checks.fetch_add(1, Ordering::Relaxed);
            }
            violations
        })
    };

    // 600 source transactions of several statements each.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut live_groups: Vec<i32> = Vec::new();
    for g in 1..=600 {
        let from = rng.random_range(1..=ACCOUNTS);
        let to = rng.random_range(1..=ACCOUNTS);
        let amount = rng.random_range(1..50);
        let mut tx = my.start_transaction(Default::default()).await.unwrap();
        tx.exec_drop(
            "UPDATE acct SET balance = balance - ? WHERE id = ?",
            (amount, from),
        )
        .await
        .unwrap();
        tx.exec_drop(
            "UPDATE acct SET balance = balance + ?, note = ? WHERE id = ?",
            (amount, format!("from {from}"), to),
        )
        .await
        .unwrap();
        for k in 0..GROUP_SIZE {
            tx.exec_drop("INSERT INTO grp (g, k, extra) VALUES (?, ?, 'x')", (g, k))
                .await
                .unwrap();
        }
        live_groups.push(g);
        if g % 7 == 0 {
            // Delete a whole earlier group.
            let victim = live_groups.remove(rng.random_range(0..live_groups.len()));
            tx.exec_drop("DELETE FROM grp WHERE g = ?", (victim,))
                .await
                .unwrap();
        }
        if g % 11 == 0 {
            // Move a whole group to new keys (an update of the primary key).
            let moved = live_groups[rng.random_range(0..live_groups.len())];
            tx.exec_drop("UPDATE grp SET id = -id WHERE g = ? AND id > 0", (moved,))
                .await
                .unwrap();
        }
        if g % 13 == 0 {
            // An update that changes nothing the mapping sees, and one of an unmapped column.
            tx.exec_drop("UPDATE grp SET extra = 'y' WHERE g = ?", (g,))
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }

    let expected_groups = live_groups.len() as i64 * GROUP_SIZE;
    wait_for(Duration::from_secs(60), "all groups", &work, || async {
        pg_count(&pg, "grp_rows").await == expected_groups
    })
    .await;
    // Let the reader look at the final state too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let violations = reader.await.unwrap();
    let n = checks.load(Ordering::Relaxed);
    assert!(n > 20, "the reader ran only {n} checks");
    assert!(
        violations.is_empty(),
        "a reader saw half a transaction ({n} checks):\n{}",
        violations.join("\n")
    );

    let my_acct = mysql_rows(
        &mut my,
        "SELECT id, balance, note FROM acct ORDER BY acct.id",
    )
    .await;
    let pg_acct = pg_rows(
        &pg,
        "SELECT id::text, balance::text, note FROM acct ORDER BY acct.id",
    )
    .await;
    assert_eq!(my_acct, pg_acct, "acct differs");
    let my_grp = mysql_rows(&mut my, "SELECT id, g, k FROM grp ORDER BY id").await;
    let pg_grp = pg_rows(
        &pg,
        "SELECT id::text, group_id::text, k::text FROM grp_rows ORDER BY grp_rows.id",
    )
    .await;
    assert_eq!(my_grp.len() as i64, expected_groups);
    assert!(
        my_grp
            .iter()
            .any(|r| r[0].as_deref().unwrap().parse::<i64>().unwrap() < 0),
        "no key was moved"
    );
    assert_eq!(my_grp, pg_grp, "grp differs");

    stop_cleanly(&mut child, &work);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binlog_rotation_and_alter_table_mid_stream_keep_values_in_place() {
    let dbs = support::fresh_dbs("alter").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop("CREATE TABLE t (id int PRIMARY KEY, a int NOT NULL, b varchar(20))")
        .await
        .unwrap();
    pg.batch_execute("CREATE TABLE t (id integer PRIMARY KEY, a integer NOT NULL, b text)")
        .await
        .unwrap();
    let work = Workdir::new(&dbs, "alter", "UTC", &[("t.toml", "[[table]]\nsource = \"t\"\ntarget = \"t\"\n[table.column]\nid = \"id\"\na = \"a\"\nb = \"b\"\n")]);
    // This test is about the stream: rows written before the start are streamed, not copied.
    work.append_config("[snapshot]\non_start = false\n");
    work.setup();

    // Everything is written while duplex is stopped, so it reads events from before the ALTER
    // with the live table already changed, across a binlog rotation.
    for i in 1..=10 {
        my.query_drop(format!("INSERT INTO t VALUES ({i}, {}, 'v{i}')", i * 10))
            .await
            .unwrap();
    }
    my.query_drop("FLUSH BINARY LOGS").await.unwrap();
    for i in 11..=20 {
        my.query_drop(format!("INSERT INTO t VALUES ({i}, {}, 'v{i}')", i * 10))
            .await
            .unwrap();
    }
    my.query_drop("ALTER TABLE t ADD COLUMN z int NOT NULL DEFAULT 7 AFTER id")
        .await
        .unwrap();
    for i in 21..=30 {
        my.query_drop(format!(
            "INSERT INTO t (id, a, b, z) VALUES ({i}, {}, 'v{i}', 1)",
            i * 10
        ))
        .await
        .unwrap();
    }
    my.query_drop("UPDATE t SET b = 'after alter' WHERE id = 5")
        .await
        .unwrap();
    let expected = mysql_rows(&mut my, "SELECT id, a, b FROM t ORDER BY id").await;

    let mut child = work.start();
    wait_for(Duration::from_secs(30), "all 30 rows", &work, || async {
        pg_rows(&pg, "SELECT id::text, a::text, b FROM t ORDER BY t.id").await == expected
    })
    .await;

    // Dropping a mapped column: later rows of the table go to the dead-letter table with the
    // reason, the stream goes on.
    my.query_drop("ALTER TABLE t DROP COLUMN b").await.unwrap();
    my.query_drop("INSERT INTO t (id, a) VALUES (31, 310)")
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(30),
        "a dead letter for the row after DROP COLUMN",
        &work,
        || async { pg_count(&pg, "duplex.dead_letter").await == 1 },
    )
    .await;
    let letter = pg_rows(
        &pg,
        "SELECT source_table, op, reason, row_data->>'id' FROM duplex.dead_letter",
    )
    .await;
    assert_eq!(
        letter[0][0].as_deref(),
        Some(format!("{}.t", dbs.mysql_db).as_str())
    );
    assert_eq!(letter[0][1].as_deref(), Some("insert"));
    assert!(
        letter[0][2]
            .as_deref()
            .unwrap()
            .contains("column b (mapped at"),
        "{letter:?}"
    );
    assert!(
        letter[0][2]
            .as_deref()
            .unwrap()
            .contains("no longer exists"),
        "{letter:?}"
    );
    assert_eq!(letter[0][3].as_deref(), Some("31"));
    assert_eq!(pg_count(&pg, "t").await, 30);

    stop_cleanly(&mut child, &work);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_insert_batch_applied_again_after_a_rewind_ends_the_same() {
    let dbs = support::fresh_dbs("rewind").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop("CREATE TABLE t (id int PRIMARY KEY, v varchar(20) NOT NULL)")
        .await
        .unwrap();
    pg.batch_execute("CREATE TABLE t (id integer PRIMARY KEY, v text NOT NULL)")
        .await
        .unwrap();
    let work = Workdir::new(
        &dbs,
        "rewind",
        "UTC",
        &[(
            "t.toml",
            "[[table]]\nsource = \"t\"\ntarget = \"t\"\ncolumns = \"all\"\n",
        )],
    );
    // This test is about the stream: rows written before the start are streamed, not copied.
    work.append_config("[snapshot]\non_start = false\n");
    work.setup();
    let start = pg_rows(
        &pg,
        "SELECT position, ord_major::text, ord_minor::text FROM duplex.checkpoint",
    )
    .await;

    // 3000 rows in one transaction: written with a direct COPY the first time.
    let values: Vec<String> = (1..=3000).map(|i| format!("({i}, 'v{i}')")).collect();
    my.query_drop(format!("INSERT INTO t VALUES {}", values.join(",")))
        .await
        .unwrap();
    let mut child = work.start();
    wait_for(Duration::from_secs(30), "3000 rows", &work, || async {
        pg_count(&pg, "t").await == 3000
    })
    .await;
    stop_cleanly(&mut child, &work);

    // Rewind the checkpoint (as a restore of an older backup would) and damage some rows: the
    // same inserts arrive again, a direct COPY is refused, and the upsert path restores them.
    let (pos, major, minor) = (
        start[0][0].clone().unwrap(),
        start[0][1].clone().unwrap(),
        start[0][2].clone().unwrap(),
    );
    pg.batch_execute(&format!(
        "UPDATE duplex.checkpoint SET position = '{pos}', ord_major = {major}, ord_minor = {minor}; UPDATE t SET v = 'damaged' WHERE id % 100 = 0"
    ))
    .await
    .unwrap();
    let mut child = work.start();
    wait_for(
        Duration::from_secs(30),
        "the damaged rows restored",
        &work,
        || async { pg_count(&pg, "t WHERE v = 'damaged'").await == 0 },
    )
    .await;
    let expected = mysql_rows(&mut my, "SELECT id, v FROM t ORDER BY id").await;
    assert_eq!(
        pg_rows(&pg, "SELECT id::text, v FROM t ORDER BY t.id").await,
        expected
    );
    stop_cleanly(&mut child, &work);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_transaction_in_flight_and_exits_0() {
    let dbs = support::fresh_dbs("sigterm").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop("CREATE TABLE t (id int PRIMARY KEY, v varchar(20) NOT NULL)")
        .await
        .unwrap();
    pg.batch_execute("CREATE TABLE t (id integer PRIMARY KEY, v text NOT NULL)")
        .await
        .unwrap();
    let work = Workdir::new(
        &dbs,
        "sigterm",
        "UTC",
        &[(
            "t.toml",
            "[[table]]\nsource = \"t\"\ntarget = \"t\"\ncolumns = \"all\"\n",
        )],
    );
    work.setup();
    // One source transaction of 150k rows, many chunks long.
    my.query_drop("INSERT INTO t SELECT seq, CONCAT('v', seq) FROM seq_1_to_150000")
        .await
        .unwrap();
    let mut child = work.start();
    wait_for(
        Duration::from_secs(30),
        "duplex to be inside the transaction",
        &work,
        || async { work.log().contains("binlog stream started") },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_cleanly(&mut child, &work);
    // The transaction that was being applied was finished and checkpointed, not dropped.
    assert_eq!(pg_count(&pg, "t").await, 150_000, "{}", work.log());
    assert!(work
        .log()
        .contains("shutting down: finishing the transaction in flight"));
}

/// A change logged as a statement (a session with `binlog_format = STATEMENT`): for a table
/// nothing maps it is passed; for a mapped table duplex stops before its checkpoint passes it,
/// says what to do, and stops there again on a restart. After the fix (`duplex snapshot --table`
/// copies the table again) it passes the statement and both sides end equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_logged_change_of_a_mapped_table_stops_until_the_table_is_copied_again() {
    let (dbs, work) = support::harness::one_mapped_table(
        "stmt",
        "CREATE TABLE t (id int PRIMARY KEY, v varchar(20));
         CREATE TABLE u (id int PRIMARY KEY)",
        "CREATE TABLE t (id integer PRIMARY KEY, v text)",
    )
    .await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    let child = work.start();
    my.query_drop("INSERT INTO t VALUES (1, 'row')")
        .await
        .unwrap();
    let pg_t = || async { pg_rows(&pg, "SELECT id::text, v FROM t ORDER BY id").await };
    let row = |i: &str, v: &str| vec![Some(i.to_string()), Some(v.to_string())];
    wait_for(Duration::from_secs(30), "row 1", &work, || async {
        pg_t().await == vec![row("1", "row")]
    })
    .await;
    my.query_drop("SET SESSION binlog_format = 'STATEMENT'; INSERT INTO u VALUES (1)")
        .await
        .unwrap();
    my.query_drop("INSERT INTO t VALUES (2, 'stmt'); SET SESSION binlog_format = 'ROW'")
        .await
        .unwrap();
    my.query_drop("INSERT INTO t VALUES (3, 'row after')")
        .await
        .unwrap();
    let said = "is logged as a statement, not as rows";
    wait_for(Duration::from_secs(30), "the stop", &work, || async {
        work.log().contains(said)
    })
    .await;
    let log = work.log();
    let stop = &log[log.find(said).unwrap()..];
    assert!(
        stop.contains("duplex snapshot --table") && !log.contains("INSERT INTO u"),
        "{}",
        stop.lines().next().unwrap_or_default()
    );
    // Stopped before the statement: neither it nor what follows is applied.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(pg_t().await, vec![row("1", "row")]);
    // A restart stops at the same place; the fix: copy the table again. Then the statement is
    // passed and the stream goes on.
    support::harness::restart_stops_again_then_resync(&work, child, said, "t").await;
    let mut child = work.start();
    my.query_drop("INSERT INTO t VALUES (4, 'row later')")
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(30),
        "both sides equal",
        &work,
        || async {
            pg_t().await
                == vec![
                    row("1", "row"),
                    row("2", "stmt"),
                    row("3", "row after"),
                    row("4", "row later"),
                ]
        },
    )
    .await;
    assert_eq!(support::harness::stops(&work, said), 2);
    stop_cleanly(&mut child, &work);
}

/// A partial row image (`binlog_row_image = MINIMAL` in a session) of a mapped table: duplex
/// stops before its checkpoint passes it, stops there again on a restart, and passes it once
/// `duplex snapshot --table` copied the table again; both sides end equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minimal_row_image_stops_until_the_table_is_copied_again() {
    let (dbs, work) = support::harness::one_mapped_table(
        "minimal",
        "CREATE TABLE t (id int PRIMARY KEY, v varchar(20), w int)",
        "CREATE TABLE t (id integer PRIMARY KEY, v text, w integer)",
    )
    .await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    let child = work.start();
    my.query_drop("INSERT INTO t VALUES (1, 'a', 1), (2, 'b', 2)")
        .await
        .unwrap();
    let pg_t = || async { pg_rows(&pg, "SELECT id::text, v, w::text FROM t ORDER BY id").await };
    let row = |i: &str, v: &str, w: &str| {
        vec![
            Some(i.to_string()),
            Some(v.to_string()),
            Some(w.to_string()),
        ]
    };
    wait_for(Duration::from_secs(30), "rows 1 and 2", &work, || async {
        pg_t().await == vec![row("1", "a", "1"), row("2", "b", "2")]
    })
    .await;
    my.query_drop(
        "SET SESSION binlog_row_image = 'MINIMAL'; UPDATE t SET v = 'min' WHERE id = 1;
         SET SESSION binlog_row_image = 'FULL'; UPDATE t SET w = 20 WHERE id = 2",
    )
    .await
    .unwrap();
    let said = "binlog_row_image must be FULL";
    wait_for(Duration::from_secs(30), "the stop", &work, || async {
        work.log().contains(said)
    })
    .await;
    assert!(
        work.log().contains("duplex snapshot --table t"),
        "{}",
        work.log()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(pg_t().await, vec![row("1", "a", "1"), row("2", "b", "2")]);
    support::harness::restart_stops_again_then_resync(&work, child, said, "t").await;
    let mut child = work.start();
    my.query_drop("INSERT INTO t VALUES (3, 'c', 3)")
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(30),
        "both sides equal",
        &work,
        || async {
            pg_t().await
                == vec![
                    row("1", "min", "1"),
                    row("2", "b", "20"),
                    row("3", "c", "3"),
                ]
        },
    )
    .await;
    stop_cleanly(&mut child, &work);
}

/// `[apply] chunk_rows = 1` and one INSERT of 500 rows: the binlog's rows event holds more rows
/// than a chunk, and the encoder's budget (sized from `chunk_rows`) could never let it in: the
/// direction waited forever. Now one event asks for at most the whole budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_rows_1_and_a_multi_row_insert_do_not_wait_forever() {
    let (dbs, work) = support::harness::one_mapped_table(
        "chunk1",
        "CREATE TABLE t (id int PRIMARY KEY, v varchar(20))",
        "CREATE TABLE t (id integer PRIMARY KEY, v text)",
    )
    .await;
    work.append_config("[apply]\nchunk_rows = 1\n");
    let mut my = dbs.mysql().await;
    my.query_drop("INSERT INTO t VALUES (0, 'copied')")
        .await
        .unwrap();
    let mut child = work.start();
    let pg = dbs.pg().await;
    // The copy is done: what follows is streamed.
    support::harness::wait_for(Duration::from_secs(30), "the copy", &work, || async {
        support::harness::pg_count(&pg, "t").await == 1
    })
    .await;
    let values: Vec<String> = (1..=500).map(|i| format!("({i}, 'row {i}')")).collect();
    my.query_drop(format!("INSERT INTO t VALUES {}", values.join(", ")))
        .await
        .unwrap();
    support::harness::wait_for(Duration::from_secs(30), "501 rows", &work, || async {
        support::harness::pg_count(&pg, "t").await == 501
    })
    .await;
    support::harness::stop_cleanly(&mut child, &work);
}

/// One source transaction of 60,000 orders and their 100 users, the orders first: the look-ups
/// are resolved within the open target transaction every 50,000 keys (the key lists stay
/// bounded), and the orders written before their users get them once the users come. Every
/// order ends with its user's CRM id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_of_a_huge_transaction_are_resolved_in_bounded_steps() {
    let dbs = support::fresh_dbs("biglookup").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop(
        "CREATE TABLE u (id int PRIMARY KEY, login varchar(20));
         CREATE TABLE o (id int PRIMARY KEY, uid int)",
    )
    .await
    .unwrap();
    pg.batch_execute(
        "CREATE TABLE users (id serial PRIMARY KEY, bitrix_user_id integer UNIQUE, login text);
         CREATE TABLE orders (id integer PRIMARY KEY, bitrix_user_id integer, user_id integer)",
    )
    .await
    .unwrap();
    let mapping = r#"
[[table]]
source = "u"
target = "users"
[table.column]
id = "bitrix_user_id"
login = "login"

[[table]]
source = "o"
target = "orders"
[table.column]
id = "id"
uid = "bitrix_user_id"

[table.lookup.user_id]
from = "bitrix_user_id"
table = "users"
match = "bitrix_user_id"
take = "id"
"#;
    let work = Workdir::new(
        &dbs,
        &support::harness::pipeline_name("biglookup", &dbs),
        "UTC",
        &[("m.toml", mapping)],
    );
    work.setup();
    let mut child = work.start();
    wait_for(Duration::from_secs(30), "the stream", &work, || async {
        work.log().contains("binlog stream started")
    })
    .await;
    let mut tx = my.start_transaction(Default::default()).await.unwrap();
    for chunk in 0..12 {
        let values: Vec<String> = (1..=5000)
            .map(|i| chunk * 5000 + i)
            .map(|i| format!("({i}, {})", i % 100 + 1))
            .collect();
        tx.query_drop(format!("INSERT INTO o VALUES {}", values.join(", ")))
            .await
            .unwrap();
    }
    let users: Vec<String> = (1..=100).map(|i| format!("({i}, 'user {i}')")).collect();
    tx.query_drop(format!("INSERT INTO u VALUES {}", users.join(", ")))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    wait_for(Duration::from_secs(120), "60,000 orders", &work, || async {
        pg_count(&pg, "orders").await == 60_000
    })
    .await;
    let wrong = pg_rows(
        &pg,
        "SELECT count(*)::text FROM orders o LEFT JOIN users u ON u.id = o.user_id \
         WHERE u.bitrix_user_id IS DISTINCT FROM o.bitrix_user_id",
    )
    .await;
    assert_eq!(
        wrong[0][0].as_deref(),
        Some("0"),
        "orders without their user"
    );
    stop_cleanly(&mut child, &work);
}

/// Rows of one source transaction move ahead to join earlier statements of their table only
/// where nothing can differ: a child whose foreign key is mapped straight from the source (not a
/// look-up) stays behind the parent row it names, so the batch is never refused. (A child
/// moved ahead of its parent here would fail the foreign key and send the batch row by row.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_with_a_mapped_foreign_key_stays_behind_its_parent() {
    let dbs = support::fresh_dbs("fkorder").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop(
        "CREATE TABLE p (id int PRIMARY KEY, name varchar(20));
         CREATE TABLE c (id int PRIMARY KEY, pid int);
         INSERT INTO p VALUES (1, 'one')",
    )
    .await
    .unwrap();
    pg.batch_execute(
        "CREATE TABLE p (id integer PRIMARY KEY, name text);
         CREATE TABLE c (id integer PRIMARY KEY, pid integer NOT NULL REFERENCES p (id))",
    )
    .await
    .unwrap();
    let mapping = "[[table]]\nsource = \"p\"\ntarget = \"p\"\n[table.column]\nid = \"id\"\nname = \"name\"\n\n\
                   [[table]]\nsource = \"c\"\ntarget = \"c\"\n[table.column]\nid = \"id\"\npid = \"pid\"\n";
    let work = Workdir::new(
        &dbs,
        &support::harness::pipeline_name("fkorder", &dbs),
        "UTC",
        &[("m.toml", mapping)],
    );
    work.setup();
    let mut child = work.start();
    wait_for(Duration::from_secs(30), "the stream", &work, || async {
        work.log().contains("binlog stream started")
    })
    .await;
    let mut tx = my.start_transaction(Default::default()).await.unwrap();
    for i in 2..=40 {
        tx.query_drop(format!(
            "INSERT INTO c VALUES ({}, {}); INSERT INTO p VALUES ({i}, 'p{i}'); INSERT INTO c VALUES ({}, {i})",
            1000 + i,
            i - 1,
            2000 + i
        ))
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    wait_for(Duration::from_secs(60), "78 child rows", &work, || async {
        pg_count(&pg, "c").await == 78
    })
    .await;
    assert_eq!(pg_count(&pg, "p").await, 40);
    assert!(
        !work.log().contains("target rejected a batch"),
        "a batch was refused:\n{}",
        work.log()
    );
    stop_cleanly(&mut child, &work);
}

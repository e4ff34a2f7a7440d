//! The source changes under duplex: ALTER TABLE between a row's writing and its reading, the
//! binlog's column metadata switched off, TRUNCATE on either side. Each ends in one of two ways:
//! duplex follows it exactly, or it stops at the exact position saying what to do, and the
//! documented way forward (`duplex snapshot --table`) gets both sides equal.
//!
//! Some tests switch global server settings, so every test here holds [`support::exclusive`].

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use support::harness::{
    mysql_rows, pg_rows, restart_stops_again_then_resync, stop_cleanly, wait_for, Workdir,
};

const ALTERED: &str = r#"
[[table]]
source = "reorder"
target = "reorder"
[table.column]
id = "id"
x = "x"
y = "y"

[[table]]
source = "convert"
target = "convert"
[table.column]
id = "id"
s = "s"

[[table]]
source = "sign"
target = "sign"
[table.column]
id = "id"
n = "n"

[[table]]
source = "added"
target = "added"
[table.column]
id = "id"
a = "a"

[[table]]
source = "labels"
target = "labels"
[table.column]
id = "id"
e = "e"
"#;

type Rows = Vec<Vec<Option<String>>>;

fn rows(r: &[&[&str]]) -> Rows {
    r.iter()
        .map(|row| row.iter().map(|v| Some(v.to_string())).collect())
        .collect()
}

/// Rows written before an ALTER TABLE and read after it (duplex stopped during the ALTER) are
/// decoded with the definition they were written with, which the binlog carries: a reordered
/// column, a cp1251 → utf8mb4 conversion, a signedness change, a column added first, ENUM labels
/// inserted before the used one. Every value lands in its own column, exactly as written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn rows_written_before_an_alter_keep_the_columns_they_were_written_with() {
    let _serial = support::exclusive();
    let dbs = support::fresh_dbs("altered").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop(
        "CREATE TABLE reorder (id int PRIMARY KEY, x varchar(20), y varchar(20));
         CREATE TABLE `convert` (id int PRIMARY KEY, s varchar(40) CHARACTER SET cp1251);
         CREATE TABLE sign (id int PRIMARY KEY, n int);
         CREATE TABLE added (id int PRIMARY KEY, a varchar(20));
         CREATE TABLE labels (id int PRIMARY KEY, e enum('new','paid'))",
    )
    .await
    .unwrap();
    pg.batch_execute(
        "CREATE TABLE reorder (id integer PRIMARY KEY, x text, y text);
         CREATE TABLE \"convert\" (id integer PRIMARY KEY, s text);
         CREATE TABLE sign (id integer PRIMARY KEY, n bigint);
         CREATE TABLE added (id integer PRIMARY KEY, a text);
         CREATE TABLE labels (id integer PRIMARY KEY, e text)",
    )
    .await
    .unwrap();
    let pipeline = support::harness::pipeline_name("altered", &dbs);
    let work = Workdir::new(&dbs, &pipeline, "UTC", &[("t.toml", ALTERED)]);
    // The rows are streamed, not copied: the copy would read them as they are now.
    work.append_config("[snapshot]\non_start = false\n");
    work.setup();

    // Before the ALTERs, with duplex stopped.
    my.query_drop(
        "INSERT INTO reorder VALUES (1, 'a', 'b');
         INSERT INTO `convert` VALUES (1, 'Букет роз');
         INSERT INTO sign VALUES (1, -1), (2, 7);
         INSERT INTO added VALUES (1, 'before');
         INSERT INTO labels VALUES (1, 'paid'), (2, 'new')",
    )
    .await
    .unwrap();
    my.query_drop(
        "ALTER TABLE reorder MODIFY y varchar(10) AFTER id;
         ALTER TABLE `convert` CONVERT TO CHARACTER SET utf8mb4;
         ALTER TABLE sign MODIFY n int unsigned;
         ALTER TABLE added ADD COLUMN z int NOT NULL DEFAULT 9 FIRST;
         ALTER TABLE labels MODIFY e enum('draft','new','paid')",
    )
    .await
    .unwrap();
    // After them.
    my.query_drop(
        "INSERT INTO reorder (id, x, y) VALUES (2, 'c', 'd');
         INSERT INTO `convert` VALUES (2, 'Тюльпаны 🌷');
         INSERT INTO sign VALUES (3, 4000000000);
         INSERT INTO added (z, id, a) VALUES (5, 2, 'after');
         INSERT INTO labels VALUES (3, 'draft'), (4, 'paid')",
    )
    .await
    .unwrap();

    let mut child = work.start();
    let all = || async {
        [
            pg_rows(&pg, "SELECT id::text, x, y FROM reorder ORDER BY id").await,
            pg_rows(&pg, "SELECT id::text, s FROM \"convert\" ORDER BY id").await,
            pg_rows(&pg, "SELECT id::text, n::text FROM sign ORDER BY id").await,
            pg_rows(&pg, "SELECT id::text, a FROM added ORDER BY id").await,
            pg_rows(&pg, "SELECT id::text, e FROM labels ORDER BY id").await,
        ]
    };
    // The signed -1 was written as -1; the ALTER made MySQL's copy of it 0 without a row
    // event (a definition change is not a row change), so the value as written is what arrives.
    let expected = [
        rows(&[&["1", "a", "b"], &["2", "c", "d"]]),
        rows(&[&["1", "Букет роз"], &["2", "Тюльпаны 🌷"]]),
        rows(&[&["1", "-1"], &["2", "7"], &["3", "4000000000"]]),
        rows(&[&["1", "before"], &["2", "after"]]),
        rows(&[
            &["1", "paid"],
            &["2", "new"],
            &["3", "draft"],
            &["4", "paid"],
        ]),
    ];
    wait_for(Duration::from_secs(30), "every table", &work, || async {
        all().await == expected
    })
    .await;
    let log = work.log();
    assert!(
        log.contains("reading rows written with another definition of the table"),
        "{log}"
    );
    assert!(!log.contains("dead letter"), "{log}");
    // After the ALTERs the live definition is the binlog's: the rows that follow are read as
    // usual, and MySQL and PostgreSQL agree on everything written since.
    my.query_drop(
        "UPDATE reorder SET y = 'e' WHERE id = 1; UPDATE sign SET n = 3000000000 WHERE id = 1",
    )
    .await
    .unwrap();
    wait_for(
        Duration::from_secs(30),
        "the later updates",
        &work,
        || async {
            let now = all().await;
            now[0] == rows(&[&["1", "a", "e"], &["2", "c", "d"]])
                && now[2] == rows(&[&["1", "3000000000"], &["2", "7"], &["3", "4000000000"]])
        },
    )
    .await;
    assert_eq!(
        mysql_rows(&mut my, "SELECT id, x, y FROM reorder ORDER BY id").await,
        all().await[0]
    );
    stop_cleanly(&mut child, &work);
}

/// `binlog_row_metadata` switched off while duplex runs: the next row event of a mapped table
/// carries no column names, and duplex stops there (a restart stops again) instead of guessing
/// the definition. With FULL back and the table copied again (`duplex snapshot --table`), it
/// passes the events the copy holds and both sides end equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn rows_without_column_names_stop_until_the_table_is_copied_again() {
    let _serial = support::exclusive();
    let (dbs, work) = support::harness::one_mapped_table(
        "nonames",
        "CREATE TABLE t (id int PRIMARY KEY, v varchar(20))",
        "CREATE TABLE t (id integer PRIMARY KEY, v text)",
    )
    .await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    let child = work.start();
    my.query_drop("INSERT INTO t VALUES (1, 'named')")
        .await
        .unwrap();
    let pg_t = || async { pg_rows(&pg, "SELECT id::text, v FROM t ORDER BY id").await };
    wait_for(Duration::from_secs(30), "row 1", &work, || async {
        pg_t().await == rows(&[&["1", "named"]])
    })
    .await;
    my.query_drop("SET GLOBAL binlog_row_metadata = 'MINIMAL'")
        .await
        .unwrap();
    // A new session: the setting is read when a session starts logging.
    let mut other = dbs.mysql().await;
    let written = other
        .query_drop("INSERT INTO t VALUES (2, 'nameless'); UPDATE t SET v = 'renamed' WHERE id = 1")
        .await;
    my.query_drop("SET GLOBAL binlog_row_metadata = 'FULL'")
        .await
        .unwrap();
    written.unwrap();
    let said = "carries no column names for";
    wait_for(Duration::from_secs(30), "the stop", &work, || async {
        work.log().contains(said)
    })
    .await;
    assert!(
        work.log()
            .contains("SET GLOBAL binlog_row_metadata = 'FULL'")
            && work.log().contains("duplex snapshot --table t"),
        "{}",
        work.log()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(pg_t().await, rows(&[&["1", "named"]]));
    // A restart stops at the same place; the copy is the way past it.
    restart_stops_again_then_resync(&work, child, said, "t").await;
    let mut child = work.start();
    let mut third = dbs.mysql().await;
    third
        .query_drop("INSERT INTO t VALUES (3, 'named again')")
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(30),
        "both sides equal",
        &work,
        || async {
            pg_t().await == rows(&[&["1", "renamed"], &["2", "nameless"], &["3", "named again"]])
        },
    )
    .await;
    assert_eq!(
        mysql_rows(&mut my, "SELECT id, v FROM t ORDER BY id").await,
        pg_t().await
    );
    stop_cleanly(&mut child, &work);
}

const TRUNCATED: &str = r#"
[[table]]
source = "f"
target = "f"
columns = "all"

[[table]]
source = "r"
target = "r"
direction = "reverse"

[table.column]
id = "id"
v = "v"
"#;

/// TRUNCATE on either side stops the direction that reads it, before its checkpoint passes it,
/// saying what to do; the other side keeps its rows until the operator decides. Here the
/// operator follows the TRUNCATE with a resync (`duplex snapshot --table`): the copy removes the
/// rows the source no longer has, duplex passes the TRUNCATE, and both sides end equal, with the
/// rows written after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn truncate_on_either_side_stops_until_the_table_is_copied_again() {
    let _serial = support::exclusive();
    let dbs = support::fresh_dbs("truncate").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop(
        "CREATE TABLE f (id int PRIMARY KEY, v varchar(20));
         CREATE TABLE r (id int PRIMARY KEY, v varchar(20))",
    )
    .await
    .unwrap();
    pg.batch_execute(
        "CREATE TABLE f (id integer PRIMARY KEY, v text);
         CREATE TABLE r (id integer PRIMARY KEY, v text)",
    )
    .await
    .unwrap();
    let pipeline = support::harness::pipeline_name("trunc", &dbs);
    let work = Workdir::new(&dbs, &pipeline, "UTC", &[("t.toml", TRUNCATED)]);
    work.setup();
    let child = work.start();
    my.query_drop("INSERT INTO f VALUES (1, 'a'), (2, 'b')")
        .await
        .unwrap();
    pg.batch_execute("INSERT INTO r VALUES (1, 'x'), (2, 'y')")
        .await
        .unwrap();
    let pg_f = || async { pg_rows(&pg, "SELECT id::text, v FROM f ORDER BY id").await };
    const MY_R: &str = "SELECT id, v FROM r ORDER BY id";
    wait_for(Duration::from_secs(30), "both tables", &work, || async {
        let mut c = dbs.mysql().await;
        pg_f().await == rows(&[&["1", "a"], &["2", "b"]])
            && mysql_rows(&mut c, MY_R).await == rows(&[&["1", "x"], &["2", "y"]])
    })
    .await;

    // MySQL: TRUNCATE, then new rows.
    my.query_drop("TRUNCATE TABLE f; INSERT INTO f VALUES (3, 'c')")
        .await
        .unwrap();
    let said = "TRUNCATE of";
    wait_for(
        Duration::from_secs(30),
        "the forward stop",
        &work,
        || async {
            work.log()
                .contains("duplex does not empty the PostgreSQL tables")
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(pg_f().await, rows(&[&["1", "a"], &["2", "b"]]));
    restart_stops_again_then_resync(&work, child, said, "f").await;
    // The resync removed the rows MySQL no longer has and copied the one it has.
    assert_eq!(pg_f().await, rows(&[&["3", "c"]]));
    let child = work.start();
    wait_for(Duration::from_secs(30), "f equal", &work, || async {
        pg_f().await == rows(&[&["3", "c"]])
    })
    .await;

    // PostgreSQL: TRUNCATE, then new rows.
    pg.batch_execute("TRUNCATE r; INSERT INTO r VALUES (4, 'z')")
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(30),
        "the reverse stop",
        &work,
        || async {
            work.log()
                .contains("duplex does not empty the MySQL tables")
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        mysql_rows(&mut my, MY_R).await,
        rows(&[&["1", "x"], &["2", "y"]])
    );
    restart_stops_again_then_resync(&work, child, said, "r").await;
    assert_eq!(mysql_rows(&mut my, MY_R).await, rows(&[&["4", "z"]]));
    let mut child = work.start();
    my.query_drop("INSERT INTO f VALUES (5, 'e')")
        .await
        .unwrap();
    pg.batch_execute("INSERT INTO r VALUES (6, 'w')")
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(30),
        "both sides equal",
        &work,
        || async {
            let mut c = dbs.mysql().await;
            pg_f().await == rows(&[&["3", "c"], &["5", "e"]])
                && mysql_rows(&mut c, MY_R).await == rows(&[&["4", "z"], &["6", "w"]])
        },
    )
    .await;
    stop_cleanly(&mut child, &work);
}

/// A writer that changes rows 1..=200 of `t` at random (inserts, updates, deletes), each
/// transaction on a new session so it takes the global settings as they are then, until `stop`.
async fn random_writer(db: String, stop: Arc<AtomicBool>) -> usize {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    let mut done = 0;
    while !stop.load(Ordering::Relaxed) {
        let mut c = support::mysql_conn(Some(&db)).await;
        let id = rng.random_range(1..=200);
        let q = match rng.random_range(0..3) {
            0 => format!("INSERT INTO t VALUES ({id}, 'v{done}', {done}) ON DUPLICATE KEY UPDATE v = 'i{done}', n = n + 1"),
            1 => format!("UPDATE t SET v = 'u{done}', n = n + 1 WHERE id = {id}"),
            _ => format!("DELETE FROM t WHERE id = {id}"),
        };
        c.query_drop(q).await.unwrap();
        let _ = c.disconnect().await;
        done += 1;
    }
    done
}

/// `binlog_format` switched to STATEMENT and back, then `binlog_row_image` to MINIMAL and back,
/// globally, while a writer changes the rows: each time duplex stops before the first change it
/// cannot replicate, stops there again on a restart, and after `duplex snapshot --table t` both
/// sides are equal row by row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[allow(clippy::await_holding_lock)]
async fn format_and_image_switched_under_load_stop_and_resync_without_loss() {
    let _serial = support::exclusive();
    let (dbs, work) = support::harness::one_mapped_table(
        "switch",
        "CREATE TABLE t (id int PRIMARY KEY, v varchar(20), n int)",
        "CREATE TABLE t (id integer PRIMARY KEY, v text, n integer)",
    )
    .await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    let mut child = work.start();
    for (on, off, said) in [
        (
            "SET GLOBAL binlog_format = 'STATEMENT'",
            "SET GLOBAL binlog_format = 'ROW'",
            "is logged as a statement, not as rows",
        ),
        (
            "SET GLOBAL binlog_row_image = 'MINIMAL'",
            "SET GLOBAL binlog_row_image = 'FULL'",
            "binlog_row_image must be FULL",
        ),
    ] {
        let stop = Arc::new(AtomicBool::new(false));
        let writer = tokio::spawn(random_writer(dbs.mysql_db.clone(), stop.clone()));
        tokio::time::sleep(Duration::from_millis(700)).await;
        my.query_drop(on).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        my.query_drop(off).await.unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
        stop.store(true, Ordering::Relaxed);
        let written = writer.await.unwrap();
        assert!(written > 50, "only {written} transactions written");
        wait_for(Duration::from_secs(30), "the stop", &work, || async {
            work.log().contains(said)
        })
        .await;
        restart_stops_again_then_resync(&work, child, said, "t").await;
        child = work.start();
        let source = mysql_rows(&mut my, "SELECT id, v, n FROM t ORDER BY id").await;
        let what = format!("both sides equal after the stop on \"{said}\"");
        wait_for(Duration::from_secs(30), &what, &work, || async {
            pg_rows(&pg, "SELECT id::text, v, n::text FROM t ORDER BY t.id").await == source
        })
        .await;
    }
    // The stream goes on after both resyncs.
    my.query_drop("INSERT INTO t VALUES (1000, 'last', 1) ON DUPLICATE KEY UPDATE v = 'last'")
        .await
        .unwrap();
    wait_for(Duration::from_secs(30), "the last row", &work, || async {
        pg_rows(&pg, "SELECT v FROM t WHERE id = 1000").await == rows(&[&["last"]])
    })
    .await;
    stop_cleanly(&mut child, &work);
}

/// Numbers the binlog anew with the GTID state `state` carried over, as a promoted replica
/// holding exactly that history, or `RESET MASTER` followed by `SET GLOBAL gtid_binlog_state`,
/// do: the files start at 000001 again, the GTIDs go on.
async fn renumber_the_binlog(my: &mut mysql_async::Conn, state: &str) {
    my.query_drop(format!(
        "RESET MASTER; SET GLOBAL gtid_binlog_state = '{state}'"
    ))
    .await
    .unwrap();
    let now = mysql_rows(my, "SHOW MASTER STATUS").await;
    assert_eq!(now[0][0].as_deref(), Some("binlog.000001"), "{now:?}");
}

/// The GTID state of the forward checkpoint.
async fn checkpoint_gtids(pg: &tokio_postgres::Client) -> String {
    let at = pg_rows(
        pg,
        "SELECT position FROM duplex.checkpoint WHERE direction = 'mysql_to_pg'",
    )
    .await;
    let text = at[0][0].clone().expect("a forward checkpoint");
    text.split_once('@')
        .unwrap_or_else(|| panic!("a GTID state in {text}"))
        .1
        .to_string()
}

/// The binlog numbered anew with its GTIDs carried over (failover to a promoted replica,
/// `RESET MASTER` with the state set again, a new `log_bin` name): duplex resumes by GTID and
/// its checkpoint goes on from the lower file numbers (it refused them as "moving backward"
/// before); both sides end equal. Then `RESET MASTER` alone, which loses the binlog duplex has
/// not read: duplex stops and says how to start over, rather than read on from the wrong place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn a_binlog_numbered_anew_with_its_gtids_is_followed() {
    let _serial = support::exclusive();
    let (dbs, work) = support::harness::one_mapped_table(
        "renumber",
        "CREATE TABLE t (id int PRIMARY KEY, v varchar(20))",
        "CREATE TABLE t (id integer PRIMARY KEY, v text)",
    )
    .await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    let mut child = work.start();
    let equal = |n: usize| {
        let dbs = dbs.clone();
        let pg = &pg;
        async move {
            let m = mysql_rows(&mut dbs.mysql().await, "SELECT id, v FROM t ORDER BY id").await;
            let p = pg_rows(pg, "SELECT id::text, v FROM t ORDER BY t.id").await;
            m == p && m.len() == n
        }
    };
    my.query_drop("INSERT INTO t VALUES (1, 'a'), (2, 'b'); FLUSH BINARY LOGS; FLUSH BINARY LOGS; FLUSH BINARY LOGS; INSERT INTO t VALUES (3, 'c')")
        .await
        .unwrap();
    wait_for(Duration::from_secs(30), "rows 1-3", &work, || equal(3)).await;
    // The heartbeat held up, so that duplex reads the binlog to its end: the binlog numbered
    // anew holds everything after duplex's position, as a promoted replica does.
    let mut hold = support::mysql_conn(None).await;
    hold.query_drop("LOCK TABLES duplex.heartbeat READ")
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(30),
        "duplex at the binlog's end",
        &work,
        || async {
            let server = mysql_rows(
                &mut support::mysql_conn(None).await,
                "SELECT @@GLOBAL.gtid_binlog_state",
            )
            .await;
            server[0][0].as_deref() == Some(checkpoint_gtids(&pg).await.as_str())
        },
    )
    .await;
    stop_cleanly(&mut child, &work);
    renumber_the_binlog(&mut my, &checkpoint_gtids(&pg).await).await;
    hold.query_drop("UNLOCK TABLES").await.unwrap();
    my.query_drop("INSERT INTO t VALUES (4, 'd'); UPDATE t SET v = 'a2' WHERE id = 1; DELETE FROM t WHERE id = 2")
        .await
        .unwrap();
    let mut child = work.start();
    wait_for(
        Duration::from_secs(30),
        "rows after the renumbering",
        &work,
        || async {
            equal(3).await
                && pg_rows(&pg, "SELECT id::text, v FROM t ORDER BY t.id").await
                    == rows(&[&["1", "a2"], &["3", "c"], &["4", "d"]])
        },
    )
    .await;
    support::harness::wait_for(
        Duration::from_secs(30),
        "the checkpoint on the new numbering",
        &work,
        || async {
            pg_rows(
                &pg,
                "SELECT position FROM duplex.checkpoint WHERE direction = 'mysql_to_pg'",
            )
            .await[0][0]
                .as_deref()
                .is_some_and(|p| p.starts_with("mysql:binlog.000001:"))
        },
    )
    .await;
    assert!(
        matches!(child.0.try_wait(), Ok(None)),
        "duplex stopped:\n{}",
        work.log()
    );
    // RESET MASTER alone: the GTIDs start again, duplex's position is nowhere in the binlog.
    stop_cleanly(&mut child, &work);
    my.query_drop("RESET MASTER; INSERT INTO t VALUES (5, 'e')")
        .await
        .unwrap();
    let mut child = work.start();
    let said = "the binlog no longer holds duplex's position";
    wait_for(Duration::from_secs(30), "the stop", &work, || async {
        work.log().contains(said)
    })
    .await;
    let status = support::harness::terminate(&mut child, Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| !s.success()) && work.log().contains("duplex setup --start-over"),
        "{status:?}\n{}",
        work.log()
    );
    // The way out the message names: the pipeline starts over, the table is resynced.
    my.query_drop("DELETE FROM t WHERE id = 3").await.unwrap();
    let (ok, out) = work.run_cmd(&["setup", "--start-over"]);
    assert!(ok, "{out}");
    let mut child = work.start();
    // Rows 1, 4 and 5: row 5 written after the reset, row 3 deleted since.
    wait_for(
        Duration::from_secs(60),
        "both sides equal after the start-over",
        &work,
        || async { equal(3).await },
    )
    .await;
    my.query_drop("INSERT INTO t VALUES (7, 'g')")
        .await
        .unwrap();
    wait_for(Duration::from_secs(30), "row 7 streamed", &work, || {
        equal(4)
    })
    .await;
    stop_cleanly(&mut child, &work);
}

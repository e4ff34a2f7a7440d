//! The initial snapshot: existing rows are copied through the mappings while the applications
//! keep writing, and streaming takes over from exactly the point the copy saw.
//!
//! - 200k rows copied while a writer inserts, updates and deletes in the same tables: after
//!   catch-up both sides are equal row by row.
//! - kill -9 during the copy, again and again: every restart resumes after the last chunk that
//!   committed (a PostgreSQL trigger counts every insert attempt per row: each row exactly
//!   once), and the tables end equal.
//! - a row the target rejects and a row that cannot be encoded become dead letters with their
//!   reasons; the rest is copied, and the report says so.
//! - a table mapped PostgreSQL → MySQL is copied from the slot's exported snapshot while the
//!   CRM writes.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use rand::{RngExt, SeedableRng};
use support::harness::{kill9, mysql_rows, pg_rows, stop_cleanly, wait_for, Workdir};

/// `(state, rows_copied, rows_dead)` of a table's snapshot progress in PostgreSQL.
async fn progress(
    pg: &tokio_postgres::Client,
    pipeline: &str,
    table: &str,
) -> Option<(String, i64, i64)> {
    pg.query_opt(
        "SELECT state, rows_copied, rows_dead FROM duplex.snapshot WHERE pipeline = $1 AND source_table LIKE '%.' || $2",
        &[&pipeline, &table],
    )
    .await
    .ok()
    .flatten()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
}

/// A mapping of each (source, target) pair with all columns.
fn all_columns(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(s, t)| format!("[[table]]\nsource = \"{s}\"\ntarget = \"{t}\"\ncolumns = \"all\"\n"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn orders_mapping() -> String {
    all_columns(&[("orders", "orders"), ("props", "props")])
}

const ORDERS_MY: &str = "
    CREATE TABLE orders (id int AUTO_INCREMENT PRIMARY KEY, user_id int NOT NULL, price decimal(18,4) NOT NULL,
        status_id char(1) NOT NULL, payed char(1) NOT NULL DEFAULT 'N', date_insert datetime NOT NULL,
        comments text, kind enum('a','b','c') NOT NULL DEFAULT 'a') ENGINE=InnoDB;
    CREATE TABLE props (order_id int NOT NULL, code varchar(50) NOT NULL, value varchar(255),
        PRIMARY KEY (order_id, code)) ENGINE=InnoDB";

const ORDERS_PG: &str = "
    CREATE TABLE orders (id integer PRIMARY KEY, user_id integer NOT NULL, price numeric(18,4) NOT NULL,
        status_id text NOT NULL, payed text NOT NULL, date_insert timestamp NOT NULL, comments text, kind text NOT NULL);
    CREATE TABLE props (order_id integer NOT NULL, code text NOT NULL, value text, PRIMARY KEY (order_id, code));
    CREATE TABLE orders_audit (n bigserial PRIMARY KEY, id integer NOT NULL, price numeric NOT NULL);
    CREATE FUNCTION audit_price() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN INSERT INTO orders_audit (id, price) VALUES (NEW.id, NEW.price); RETURN NULL; END $$;
    CREATE TRIGGER orders_audit AFTER INSERT OR UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION audit_price()";

/// The writer only ever raises a price, so a price that goes down in PostgreSQL's history of
/// a row means an older change was applied over a newer copied row.
async fn assert_prices_never_went_back(pg: &tokio_postgres::Client) {
    let back = pg_rows(
        pg,
        "SELECT id::text, prev::text, price::text FROM (
             SELECT id, price, lag(price) OVER (PARTITION BY id ORDER BY n) AS prev FROM orders_audit) h
         WHERE price < prev ORDER BY id LIMIT 5",
    )
    .await;
    assert!(
        back.is_empty(),
        "older changes were applied over newer copied rows (id, before, after): {back:?}"
    );
    let writes: i64 = pg
        .query_one("SELECT count(*) FROM orders_audit", &[])
        .await
        .unwrap()
        .get(0);
    assert!(writes > 0, "the audit trigger saw nothing");
}

const ORDERS_MY_SELECT: &str =
    "SELECT id, user_id, price, status_id, payed, DATE_FORMAT(date_insert, '%Y-%m-%d %H:%i:%s'), comments, kind FROM orders ORDER BY orders.id";
const ORDERS_PG_SELECT: &str =
    "SELECT id::text, user_id::text, price::text, status_id, payed, date_insert::text, comments, kind FROM orders ORDER BY orders.id";
const PROPS_MY_SELECT: &str = "SELECT order_id, code, value FROM props ORDER BY order_id, code";
const PROPS_PG_SELECT: &str =
    "SELECT order_id::text, code, value FROM props ORDER BY props.order_id, props.code COLLATE \"C\"";

/// Fills `orders` with `n` rows and `props` with two rows for each of the first `n / 10`.
async fn fill_orders(my: &mut mysql_async::Conn, n: u32) {
    my.query_drop(format!(
        "INSERT INTO orders (id, user_id, price, status_id, payed, date_insert, comments, kind)
         SELECT seq, seq % 1000, seq * 1.25, ELT(1 + seq % 3, 'N', 'P', 'F'), IF(seq % 2 = 0, 'Y', 'N'),
                '2024-01-01' + INTERVAL seq MINUTE, IF(seq % 7 = 0, NULL, CONCAT('заказ ', seq)), 1 + seq % 3
         FROM seq_1_to_{n}"
    ))
    .await
    .unwrap();
    my.query_drop(format!(
        "INSERT INTO props (order_id, code, value)
         SELECT seq, c.code, CONCAT(c.code, ' ', seq) FROM seq_1_to_{} JOIN (SELECT 'PHONE' AS code UNION ALL SELECT 'ADDRESS') c",
        n / 10
    ))
    .await
    .unwrap();
}

/// Random small transactions on `orders` and `props` until `stop`: inserts of new orders,
/// updates and deletes anywhere in the existing key range (copied or not yet copied).
fn spawn_orders_writer(
    mut my: mysql_async::Conn,
    n: u32,
    seed: u64,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        while !stop.load(Ordering::Relaxed) {
            let id = rng.random_range(1..=n);
            let mut tx = my.start_transaction(Default::default()).await.unwrap();
            match rng.random_range(0..6) {
                0 => tx
                    .exec_drop(
                        "INSERT INTO orders (user_id, price, status_id, date_insert, comments) VALUES (?, ?, 'N', NOW(), ?)",
                        (id % 1000, format!("{}.5", id), format!("новый {id}")),
                    )
                    .await
                    .unwrap(),
                1 | 2 => tx
                    .exec_drop(
                        "UPDATE orders SET price = price + 1, status_id = 'P', comments = CONCAT('изменён ', id), kind = 'c' WHERE id = ?",
                        (id,),
                    )
                    .await
                    .unwrap(),
                3 => tx
                    .exec_drop("DELETE FROM orders WHERE id = ?", (id,))
                    .await
                    .unwrap(),
                4 => tx
                    .exec_drop(
                        "INSERT INTO props (order_id, code, value) VALUES (?, 'PHONE', ?) ON DUPLICATE KEY UPDATE value = VALUES(value)",
                        (id % (n / 10) + 1, format!("+7 700 {id}")),
                    )
                    .await
                    .unwrap(),
                _ => {
                    tx.exec_drop("DELETE FROM props WHERE order_id = ? AND code = 'ADDRESS'", (id % (n / 10) + 1,))
                        .await
                        .unwrap();
                    tx.exec_drop("UPDATE orders SET payed = 'Y' WHERE id = ?", (n + 1 - id,))
                        .await
                        .unwrap();
                }
            }
            tx.commit().await.unwrap();
            count.fetch_add(1, Ordering::Relaxed);
        }
    })
}

async fn wait_equal(
    work: &Workdir,
    my: &mut mysql_async::Conn,
    pg: &tokio_postgres::Client,
    checks: &[(&str, &str)],
) {
    let mut expected = Vec::new();
    for (my_sql, _) in checks {
        expected.push(mysql_rows(my, my_sql).await);
    }
    wait_for(
        Duration::from_secs(120),
        "PostgreSQL to equal MariaDB",
        work,
        || {
            let expected = &expected;
            async move {
                for ((_, pg_sql), want) in checks.iter().zip(expected) {
                    if pg_rows(pg, pg_sql).await != *want {
                        return false;
                    }
                }
                true
            }
        },
    )
    .await;
    // Say which rows differ if equality never came (wait_for has panicked otherwise).
    for ((_, pg_sql), want) in checks.iter().zip(&expected) {
        assert_eq!(pg_rows(pg, pg_sql).await.len(), want.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn copy_while_writing_ends_equal() {
    const N: u32 = 200_000;
    let dbs = support::fresh_dbs("snap").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop(ORDERS_MY).await.unwrap();
    pg.batch_execute(ORDERS_PG).await.unwrap();
    fill_orders(&mut my, N).await;
    let pipeline = support::harness::pipeline_name("snap", &dbs);
    let work = Workdir::new(
        &dbs,
        &pipeline,
        "UTC",
        &[("orders.toml", &orders_mapping())],
    );
    work.append_config("[snapshot]\nchunk_rows = 2000\n");
    work.setup();

    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writer = spawn_orders_writer(dbs.mysql().await, N, 7, stop.clone(), writes.clone());
    // Changes between `setup` (the stream's start) and the snapshot are in the stream and in
    // the copy: the handover must not apply them twice.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut child = work.start();

    // The writer runs through the whole copy, and on for a while after it.
    wait_for(Duration::from_secs(180), "both tables copied", &work, || {
        let pg = &pg;
        let pipeline = &pipeline;
        async move {
            matches!(progress(pg, pipeline, "orders").await, Some((s, _, _)) if s == "done")
                && matches!(progress(pg, pipeline, "props").await, Some((s, _, _)) if s == "done")
        }
    })
    .await;
    let during_copy = writes.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    wait_equal(
        &work,
        &mut my,
        &pg,
        &[
            (ORDERS_MY_SELECT, ORDERS_PG_SELECT),
            (PROPS_MY_SELECT, PROPS_PG_SELECT),
        ],
    )
    .await;
    stop_cleanly(&mut child, &work);
    assert_prices_never_went_back(&pg).await;

    assert!(
        during_copy >= 100,
        "only {during_copy} writes happened during the copy; the test needs them concurrent"
    );
    let (_, copied, dead) = progress(&pg, &pipeline, "orders").await.unwrap();
    assert_eq!(dead, 0);
    // Rows deleted before the snapshot are not copied; rows inserted before it are (the writer
    // ran a second before duplex started), later ones come by stream: at most one row per
    // write done by the copy's end on top of the N.
    assert!(
        copied > (N as i64) * 9 / 10 && copied <= N as i64 + during_copy as i64,
        "orders: copied {copied}, {during_copy} writes by the copy's end"
    );
    let letters: i64 = pg
        .query_one("SELECT count(*) FROM duplex.dead_letter", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(letters, 0, "no dead letters expected");
    let log = work.log();
    assert!(log.contains("copied"), "no report in the log:\n{log}");
    eprintln!("writes during the copy: {during_copy}; orders copied: {copied}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_the_copy_resumes_from_a_chunk_boundary() {
    const N: u32 = 100_000;
    let dbs = support::fresh_dbs("snapkill").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop(ORDERS_MY).await.unwrap();
    my.query_drop("CREATE TABLE big (id int PRIMARY KEY, n bigint NOT NULL, s varchar(40))")
        .await
        .unwrap();
    my.query_drop(format!(
        "INSERT INTO big SELECT seq, seq * 3, CONCAT('строка ', seq) FROM seq_1_to_{N}"
    ))
    .await
    .unwrap();
    fill_orders(&mut my, 20_000).await;
    pg.batch_execute(ORDERS_PG).await.unwrap();
    // Every insert attempt into big is counted per row, in the same transaction: a chunk
    // copied twice would count its rows twice.
    pg.batch_execute(
        "CREATE TABLE big (id integer PRIMARY KEY, n bigint NOT NULL, s text);
         CREATE TABLE big_inserts (id integer PRIMARY KEY, n integer NOT NULL);
         CREATE FUNCTION count_insert() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             INSERT INTO big_inserts VALUES (NEW.id, 1) ON CONFLICT (id) DO UPDATE SET n = big_inserts.n + 1;
             RETURN NEW;
         END $$;
         CREATE TRIGGER big_count BEFORE INSERT ON big FOR EACH ROW EXECUTE FUNCTION count_insert()",
    )
    .await
    .unwrap();
    let pipeline = support::harness::pipeline_name("snapkill", &dbs);
    let work = Workdir::new(
        &dbs,
        &pipeline,
        "UTC",
        &[
            ("big.toml", &all_columns(&[("big", "big")])),
            ("orders.toml", &orders_mapping()),
        ],
    );
    work.append_config("[snapshot]\nchunk_rows = 1000\n");
    work.setup();

    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writer = spawn_orders_writer(dbs.mysql().await, 20_000, 11, stop.clone(), writes.clone());

    // Kill at random moments until the copy is done; count the kills that hit it mid-way.
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut mid_copy_kills = 0;
    let mut child = work.start();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        let before = progress(&pg, &pipeline, "big").await;
        kill9(&mut child);
        if let Some((state, copied, _)) = &before {
            if state == "copying" && *copied > 0 && (*copied as u32) < N {
                mid_copy_kills += 1;
            }
        }
        child = work.start();
        let big_done =
            matches!(progress(&pg, &pipeline, "big").await, Some((s, _, _)) if s == "done");
        if big_done && mid_copy_kills >= 3 {
            break;
        }
    }
    assert!(
        mid_copy_kills >= 3,
        "only {mid_copy_kills} kills hit the copy mid-way"
    );
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    wait_equal(
        &work,
        &mut my,
        &pg,
        &[
            (
                "SELECT id, n, s FROM big ORDER BY id",
                "SELECT id::text, n::text, s FROM big ORDER BY big.id",
            ),
            (ORDERS_MY_SELECT, ORDERS_PG_SELECT),
            (PROPS_MY_SELECT, PROPS_PG_SELECT),
        ],
    )
    .await;
    stop_cleanly(&mut child, &work);
    assert_prices_never_went_back(&pg).await;

    let (state, copied, dead) = progress(&pg, &pipeline, "big").await.unwrap();
    assert_eq!((state.as_str(), copied, dead), ("done", N as i64, 0));
    let r = pg
        .query_one("SELECT count(*), max(n), min(n) FROM big_inserts", &[])
        .await
        .unwrap();
    let (rows, max, min): (i64, i32, i32) = (r.get(0), r.get(1), r.get(2));
    assert_eq!(rows, N as i64, "every row of big inserted");
    assert_eq!(
        (min, max),
        (1, 1),
        "a row of big was inserted more than once"
    );
    let log = work.log();
    assert!(
        log.contains("resuming an interrupted copy"),
        "no resumed copy in the log"
    );
    eprintln!("kills during the copy: {mid_copy_kills}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_rows_become_dead_letters_and_the_rest_is_copied() {
    let dbs = support::fresh_dbs("snapdlq").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop(
        "CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL, name varchar(40) CHARACTER SET utf8mb4);
         INSERT INTO items SELECT seq, seq % 50, CONCAT('item ', seq) FROM seq_1_to_3000;
         UPDATE items SET qty = -5 WHERE id = 1234;
         UPDATE items SET name = CONCAT('nul', CHAR(0), 'byte') WHERE id = 2500;",
    )
    .await
    .unwrap();
    pg.batch_execute(
        "CREATE TABLE items (id integer PRIMARY KEY, qty integer NOT NULL CONSTRAINT qty_not_negative CHECK (qty >= 0), name text)",
    )
    .await
    .unwrap();
    let pipeline = support::harness::pipeline_name("snapdlq", &dbs);
    let work = Workdir::new(
        &dbs,
        &pipeline,
        "UTC",
        &[("items.toml", &all_columns(&[("items", "items")]))],
    );
    work.append_config("[snapshot]\nchunk_rows = 1500\n");
    work.setup();
    let (ok, out) = work.run_cmd(&["snapshot"]);
    assert!(ok, "duplex snapshot failed:\n{out}");
    assert!(
        out.contains("items: copied 2998, dead-lettered 2"),
        "report missing:\n{out}"
    );
    let letters = pg_rows(
        &pg,
        "SELECT row_data->>'id', reason FROM duplex.dead_letter ORDER BY (row_data->>'id')::int",
    )
    .await;
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert_eq!(letters[0][0].as_deref(), Some("1234"));
    assert!(
        letters[0][1]
            .as_deref()
            .unwrap()
            .contains("qty_not_negative"),
        "{letters:?}"
    );
    assert_eq!(letters[1][0].as_deref(), Some("2500"));
    assert!(
        letters[1][1].as_deref().unwrap().contains("NUL"),
        "{letters:?}"
    );
    let want = mysql_rows(
        &mut my,
        "SELECT id, qty, name FROM items WHERE id NOT IN (1234, 2500) ORDER BY id",
    )
    .await;
    let got = pg_rows(
        &pg,
        "SELECT id::text, qty::text, name FROM items ORDER BY items.id",
    )
    .await;
    assert_eq!(got.len(), 2998);
    assert_eq!(got, want);

    // Nothing left to copy; then a re-copy on demand repairs drift in the target.
    let (ok, out) = work.run_cmd(&["snapshot"]);
    assert!(ok && out.contains("nothing to copy"), "{out}");
    pg.batch_execute("UPDATE items SET qty = 0, name = 'drift' WHERE id BETWEEN 100 AND 199")
        .await
        .unwrap();
    my.query_drop("UPDATE items SET qty = 7 WHERE id = 1234")
        .await
        .unwrap();
    let (ok, out) = work.run_cmd(&["snapshot", "--table", "items"]);
    assert!(ok, "{out}");
    assert!(out.contains("items: copied 2999, dead-lettered 1"), "{out}");
    let want = mysql_rows(
        &mut my,
        "SELECT id, qty, name FROM items WHERE id <> 2500 ORDER BY id",
    )
    .await;
    let got = pg_rows(
        &pg,
        "SELECT id::text, qty::text, name FROM items ORDER BY items.id",
    )
    .await;
    assert_eq!(got, want);
    let (ok, out) = work.run_cmd(&["snapshot", "--table", "no_such_table"]);
    assert!(
        !ok && out.contains("no mapped table is called no_such_table"),
        "{out}"
    );
}

const NOTES: &str = r#"
[[table]]
source = "notes"
target = "crm_notes"
direction = "reverse"
columns = "all"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_table_mapped_from_postgres_is_copied_at_the_slot_snapshot() {
    const N: i32 = 30_000;
    let dbs = support::fresh_dbs("snaprev").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop(
        "CREATE TABLE notes (id int PRIMARY KEY, body varchar(200) CHARACTER SET utf8mb4, amount decimal(12,2), created datetime(6))",
    )
    .await
    .unwrap();
    pg.batch_execute(&format!(
        "CREATE TABLE crm_notes (id integer PRIMARY KEY, body text, amount numeric(12,2), created timestamp);
         INSERT INTO crm_notes SELECT g, 'заметка ' || g, g / 7.0, timestamp '2024-03-01' + g * interval '1 second' FROM generate_series(1, {N}) g"
    ))
    .await
    .unwrap();
    let pipeline = support::harness::pipeline_name("snaprev", &dbs);
    let work = Workdir::new(&dbs, &pipeline, "UTC", &[("notes.toml", NOTES)]);
    work.append_config("[snapshot]\nchunk_rows = 1000\n");
    work.setup();

    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writer = {
        let stop = stop.clone();
        let writes = writes.clone();
        let wpg = dbs.pg().await;
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(3);
            let mut next = N + 1;
            while !stop.load(Ordering::Relaxed) {
                let id = rng.random_range(1..=N);
                let sql = match rng.random_range(0..4) {
                    0 => {
                        next += 1;
                        format!("INSERT INTO crm_notes VALUES ({next}, 'новая {next}', 1.5, now()::timestamp(0))")
                    }
                    1 => format!("DELETE FROM crm_notes WHERE id = {id}"),
                    _ => format!("UPDATE crm_notes SET body = 'изменена ' || id, amount = amount + 1 WHERE id = {id}"),
                };
                wpg.batch_execute(&sql).await.unwrap();
                writes.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let mut child = work.start();
    let mut state_conn = support::mysql_conn(None).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let state: Option<String> = state_conn
            .exec_first(
                "SELECT state FROM duplex.snapshot WHERE pipeline = ? AND source_table = 'public.crm_notes'",
                (&pipeline,),
            )
            .await
            .unwrap_or(None);
        if state.as_deref() == Some("done") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the copy did not finish:\n{}",
            work.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let during_copy = writes.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    let want = pg_rows(
        &pg,
        "SELECT id::text, body, amount::text, to_char(created, 'YYYY-MM-DD HH24:MI:SS') FROM crm_notes ORDER BY crm_notes.id",
    )
    .await;
    wait_for(Duration::from_secs(60), "MariaDB to equal PostgreSQL", &work, || {
        let want = &want;
        let db = dbs.mysql_db.clone();
        async move {
            let mut c = support::mysql_conn(Some(&db)).await;
            mysql_rows(
                &mut c,
                "SELECT id, body, amount, DATE_FORMAT(created, '%Y-%m-%d %H:%i:%s') FROM notes ORDER BY id",
            )
            .await
                == *want
        }
    })
    .await;
    stop_cleanly(&mut child, &work);
    assert!(
        during_copy >= 20,
        "only {during_copy} writes during the copy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_beside_a_running_pipeline_is_refused() {
    let dbs = support::fresh_dbs("snaplock").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop(
        "CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL);
         INSERT INTO items SELECT seq, seq FROM seq_1_to_100",
    )
    .await
    .unwrap();
    pg.batch_execute("CREATE TABLE items (id integer PRIMARY KEY, qty integer NOT NULL)")
        .await
        .unwrap();
    let pipeline = support::harness::pipeline_name("snaplock", &dbs);
    let work = Workdir::new(
        &dbs,
        &pipeline,
        "UTC",
        &[("items.toml", &all_columns(&[("items", "items")]))],
    );
    work.setup();
    let mut child = work.start();
    wait_for(
        Duration::from_secs(30),
        "the copy by run",
        &work,
        || async {
            matches!(progress(&pg, &pipeline, "items").await, Some((s, _, _)) if s == "done")
        },
    )
    .await;
    // While run holds the pipeline, a re-copy would race the stream: refused.
    let (ok, out) = work.run_cmd(&["snapshot", "--table", "items"]);
    assert!(
        !ok && out.contains("is in use by another duplex process"),
        "{out}"
    );
    stop_cleanly(&mut child, &work);
    // Stopped, the same command copies the table again (the stale row is repaired).
    pg.batch_execute("UPDATE items SET qty = -1 WHERE id = 7")
        .await
        .unwrap();
    let (ok, out) = work.run_cmd(&["snapshot", "--table", "items"]);
    assert!(
        ok && out.contains("items: copied 100, dead-lettered 0"),
        "{out}"
    );
    assert_eq!(
        pg_rows(&pg, "SELECT qty::text FROM items WHERE id = 7").await,
        vec![vec![Some("7".to_string())]]
    );
}

//! `duplex verify` and `duplex repair` on the cvety.kz mapping set (`mappings/bitrix/`) against
//! real MariaDB and PostgreSQL, with duplex streaming meanwhile: planted differences on both
//! sides are reported exactly (and nothing else), repaired, and gone; under load nothing is
//! reported that is only in flight; a cp1251 shop with hostile values verifies clean.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use rand::{RngExt, SeedableRng};
use support::harness::{mysql_rows, pg_rows, stop_cleanly, total, verify, wait_for, Workdir};
use support::shop;

/// (target, kind, key, differing columns) of one reported difference.
type Found = (String, String, String, Vec<String>);

/// Every difference of a report.
fn found(report: &serde_json::Value) -> BTreeSet<Found> {
    let mut out = BTreeSet::new();
    for e in report["entries"].as_array().expect("entries") {
        for d in e["differences"].as_array().expect("differences") {
            let cols = d["columns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["column"].as_str().unwrap().to_string())
                .collect();
            out.insert((
                e["target"].as_str().unwrap().to_string(),
                d["kind"].as_str().unwrap().to_string(),
                d["key"].as_str().unwrap().to_string(),
                cols,
            ));
        }
    }
    out
}

fn diff(target: &str, kind: &str, key: String, cols: &[&str]) -> Found {
    (
        format!("public.{target}"),
        kind.to_string(),
        key,
        cols.iter().map(|c| c.to_string()).collect(),
    )
}

/// Runs verify and checks that it finds exactly `want` (and exits 1); returns the report.
fn finds_only(work: &Workdir, want: Found) -> serde_json::Value {
    let (code, report) = verify(work, &[]);
    assert_eq!(found(&report), BTreeSet::from([want]), "{report:#}");
    assert_eq!(code, 1);
    report
}

async fn one(pg: &tokio_postgres::Client, sql: &str) -> String {
    pg_rows(pg, sql).await[0][0].clone().unwrap_or_default()
}

/// A generated shop, copied, duplex streaming; verify exits 0 once the copy is done.
async fn streaming_shop(
    prefix: &str,
    orders: usize,
) -> (
    support::TestDbs,
    Workdir,
    shop::Shop,
    support::harness::Duplex,
) {
    let (dbs, work) = shop::shop_dbs(prefix, |_, t| t).await;
    let mut my = dbs.mysql().await;
    let shop = shop::generate(&mut my, 5, 40, orders).await;
    work.setup();
    let child = work.start();
    wait_for(
        Duration::from_secs(120),
        "the initial copy",
        &work,
        || async {
            work.log().contains("b_sale_order_props_value: copied")
                && work.log().contains("b_sale_basket: copied")
        },
    )
    .await;
    wait_for(
        Duration::from_secs(60),
        "a clean verify after the copy",
        &work,
        || async { verify(&work, &[]).0 == 0 },
    )
    .await;
    (dbs, work, shop, child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_differences_on_both_sides_are_reported_exactly_then_repaired() {
    let (dbs, work, _shop, mut child) = streaming_shop("verify", 200).await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    // Orders and items to plant on, picked from the data.
    let ids: Vec<i64> = pg_rows(&pg, "SELECT bitrix_order_id::text FROM orders WHERE bitrix_order_id IS NOT NULL AND recipient_name IS NOT NULL ORDER BY bitrix_order_id LIMIT 5")
        .await
        .iter()
        .map(|r| r[0].as_ref().unwrap().parse().unwrap())
        .collect();
    let (a, b, c, d) = (ids[0], ids[1], ids[2], ids[3]);
    let items: Vec<(i64, i64)> = pg_rows(&pg, "SELECT bitrix_basket_id::text, bitrix_order_id::text FROM order_items ORDER BY bitrix_basket_id LIMIT 2")
        .await
        .iter()
        .map(|r| (r[0].as_ref().unwrap().parse().unwrap(), r[1].as_ref().unwrap().parse().unwrap()))
        .collect();
    let (x, (y, y_order)) = (items[0].0, items[1]);
    let other = one(&pg, &format!("SELECT id::text FROM orders WHERE bitrix_order_id IS NOT NULL AND bitrix_order_id <> {y_order} LIMIT 1")).await;
    let e: i64 = mysql_rows(&mut my, "SELECT ORDER_ID FROM b_sale_order_props_value WHERE CODE = 'EMAIL' AND VALUE <> '' ORDER BY ORDER_ID LIMIT 1")
        .await[0][0]
        .as_ref()
        .unwrap()
        .parse()
        .unwrap();
    let total_a = one(
        &pg,
        &format!("SELECT total_amount::text FROM orders WHERE bitrix_order_id = {a}"),
    )
    .await;
    let name_c = one(
        &pg,
        &format!("SELECT recipient_name FROM orders WHERE bitrix_order_id = {c}"),
    )
    .await;
    let lookup_y = one(
        &pg,
        &format!("SELECT order_id::text FROM order_items WHERE bitrix_basket_id = {y}"),
    )
    .await;

    // The CRM side: a mapped column, an unmapped one, a deleted row, an extra row, a pivoted
    // column, a look-up. None of them goes back to Bitrix (forward-only columns and tables).
    pg.batch_execute(&format!(
        "UPDATE orders SET total_amount = total_amount + 1 WHERE bitrix_order_id = {a};
         UPDATE orders SET crm_note = 'called the client' WHERE bitrix_order_id = {b};
         DELETE FROM order_items WHERE bitrix_basket_id = {x};
         INSERT INTO order_items (bitrix_basket_id, bitrix_order_id, name, price, quantity, currency)
             VALUES (9000001, {a}, 'not in Bitrix', 1, 1, 'KZT');
         UPDATE orders SET recipient_name = 'Wrong Name' WHERE bitrix_order_id = {c};
         UPDATE order_items SET order_id = '{other}' WHERE bitrix_basket_id = {y};"
    ))
    .await
    .unwrap();
    // The Bitrix side, written past the binlog: an order's price, a property.
    my.query_drop(format!(
        "SET SESSION sql_log_bin = 0;
         UPDATE b_sale_order SET PRICE = PRICE + 5 WHERE ID = {d};
         UPDATE b_sale_order_props_value SET VALUE = 'planted@cvety.kz' WHERE ORDER_ID = {e} AND CODE = 'EMAIL';
         SET SESSION sql_log_bin = 1"
    ))
    .await
    .unwrap();

    let (code, report) = verify(&work, &[]);
    let want: BTreeSet<Found> = [
        diff(
            "orders",
            "different",
            format!("bitrix_order_id={a}"),
            &["total_amount"],
        ),
        diff(
            "orders",
            "different",
            format!("bitrix_order_id={d}"),
            &["total_amount"],
        ),
        diff(
            "orders",
            "different",
            format!("bitrix_order_id={c}"),
            &["recipient_name"],
        ),
        diff(
            "orders",
            "different",
            format!("bitrix_order_id={e}"),
            &["recipient_email"],
        ),
        diff(
            "order_items",
            "missing",
            format!("bitrix_basket_id={x}"),
            &[],
        ),
        diff(
            "order_items",
            "extra",
            "bitrix_basket_id=9000001".into(),
            &[],
        ),
        diff(
            "order_items",
            "different",
            format!("bitrix_basket_id={y}"),
            &["order_id"],
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(found(&report), want, "{report:#}");
    assert_eq!(code, 1, "differences exit 1");
    assert!(
        report["online"].as_bool().unwrap(),
        "duplex run streams: an online verify"
    );
    assert_eq!(total(&report, "unsettled"), 0);
    assert_eq!(total(&report, "dead_lettered"), 0);
    // Both values and the position are shown.
    let text = report.to_string();
    assert!(
        text.contains("Wrong Name") && text.contains(&name_c),
        "{report:#}"
    );
    assert!(text.contains("planted@cvety.kz"), "{report:#}");
    assert!(report["entries"][0]["differences"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|d| !d["position"].as_str().unwrap().is_empty()));
    let (_, table_out, _) = work.run_split(&["verify"]);
    eprintln!("{table_out}");
    assert!(table_out.contains("the sides differ"), "{table_out}");

    // --dry-run changes nothing.
    let (code, out, err) = work.run_split(&["repair", "--dry-run"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert_eq!(found(&verify(&work, &[]).1).len(), 7);

    let (code, out, err) = work.run_split(&["repair"]);
    assert_eq!(code, Some(0), "repair then verify again:\n{out}\n{err}");
    let (code, report) = verify(&work, &[]);
    assert_eq!(code, 0, "{report:#}");
    assert!(found(&report).is_empty());
    // The data itself: every planted difference undone, the Bitrix-side ones carried over.
    assert_eq!(
        one(
            &pg,
            &format!("SELECT total_amount::text FROM orders WHERE bitrix_order_id = {a}")
        )
        .await,
        total_a
    );
    assert_eq!(
        one(
            &pg,
            &format!("SELECT recipient_name FROM orders WHERE bitrix_order_id = {c}")
        )
        .await,
        name_c
    );
    assert_eq!(
        one(
            &pg,
            &format!("SELECT order_id::text FROM order_items WHERE bitrix_basket_id = {y}")
        )
        .await,
        lookup_y
    );
    assert_eq!(
        one(
            &pg,
            &format!(
                "SELECT count(*)::text FROM order_items WHERE bitrix_basket_id IN ({x}, 9000001)"
            )
        )
        .await,
        "1"
    );
    assert_eq!(
        one(
            &pg,
            &format!("SELECT recipient_email FROM orders WHERE bitrix_order_id = {e}")
        )
        .await,
        "planted@cvety.kz"
    );
    let price_d = mysql_rows(
        &mut my,
        &format!("SELECT PRICE FROM b_sale_order WHERE ID = {d}"),
    )
    .await[0][0]
        .clone()
        .unwrap();
    assert_eq!(
        one(
            &pg,
            &format!(
                "SELECT total_amount::numeric(18,2)::text FROM orders WHERE bitrix_order_id = {d}"
            )
        )
        .await,
        one(&pg, &format!("SELECT '{price_d}'::numeric(18,2)::text")).await
    );
    // The CRM's own column is its own.
    assert_eq!(
        one(
            &pg,
            &format!("SELECT crm_note FROM orders WHERE bitrix_order_id = {b}")
        )
        .await,
        "called the client"
    );
    // Every repair is logged; the repairs did not come back to Bitrix as changes.
    assert_eq!(
        one(&pg, "SELECT count(*)::text FROM duplex.repair_log").await,
        "7"
    );
    let runs: i64 = one(&pg, "SELECT count(*)::text FROM duplex.verify_run")
        .await
        .parse()
        .unwrap();
    assert!(runs >= 6, "every run is recorded: {runs}");
    stop_cleanly(&mut child, &work);
}

/// Bitrix at about 50 transactions a second on orders 1..=250 — new orders (order, basket and
/// properties in one transaction), status changes, property and basket edits — until `stop`;
/// returns the transactions written.
async fn bitrix_load(dbs: support::TestDbs, mut shop: shop::Shop, stop: Arc<AtomicBool>) -> u64 {
    let mut my = dbs.mysql().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let codes = ["N", "AP", "P", "CO", "DE", "F"];
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let id = rng.random_range(1..=250);
        let sql = match n % 5 {
            0 => {
                let mut batch = shop::OrderBatch::default();
                shop::order_rows(&mut rng, &mut shop, &mut batch, None);
                my.query_drop("START TRANSACTION").await.unwrap();
                batch.write(&mut my).await;
                "COMMIT".to_string()
            }
            1 | 2 => format!(
                "UPDATE b_sale_order SET STATUS_ID = '{}', DATE_UPDATE = NOW() WHERE ID = {id}",
                codes[rng.random_range(0..codes.len())]
            ),
            3 => format!("UPDATE b_sale_order_props_value SET VALUE = 'Имя {n}' WHERE ORDER_ID = {id} AND CODE IN ('nameRecipient', 'FIO')"),
            _ => format!("UPDATE b_sale_basket SET QUANTITY = QUANTITY + 1 WHERE ORDER_ID = {id} ORDER BY ID LIMIT 1"),
        };
        my.query_drop(sql).await.unwrap();
        n += 1;
    }
    n
}

/// The CRM changing statuses of orders 1..=250, ten a second, until `stop`.
async fn crm_load(dbs: support::TestDbs, stop: Arc<AtomicBool>) -> u64 {
    let pg = dbs.pg().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let statuses = [
        "new",
        "confirmed",
        "paid",
        "assembled",
        "in_transit",
        "completed",
    ];
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let id: i32 = rng.random_range(1..=250);
        let status = statuses[rng.random_range(0..statuses.len())];
        pg.execute(
            "UPDATE orders SET status = $1 WHERE bitrix_order_id = $2",
            &[&status, &id],
        )
        .await
        .unwrap();
        n += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_nothing_in_flight_is_reported_and_a_planted_difference_still_is() {
    let (dbs, work, shop, mut child) = streaming_shop("verifyload", 300).await;
    let pg = dbs.pg().await;
    let stop = Arc::new(AtomicBool::new(false));
    let bitrix = tokio::spawn(bitrix_load(dbs.clone(), shop, stop.clone()));
    let crm = tokio::spawn(crm_load(dbs.clone(), stop.clone()));
    let load_started = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut checked = 0;
    // At least 5 runs, and runs for at least 8 s of load (a fast build finishes 5 runs sooner).
    let mut run = 0;
    while run < 5 || load_started.elapsed() < Duration::from_secs(8) {
        run += 1;
        let (code, report) = verify(&work, &[]);
        assert!(
            found(&report).is_empty(),
            "run {run} reported changes in flight as differences:\n{report:#}"
        );
        assert_eq!(total(&report, "unsettled"), 0, "run {run}: {report:#}");
        assert_eq!(code, 0, "run {run}: {report:#}");
        checked += total(&report, "rows_checked");
    }
    // Order 280 is one the writers leave alone.
    pg.batch_execute(
        "UPDATE orders SET delivery_fee = delivery_fee + 7 WHERE bitrix_order_id = 280",
    )
    .await
    .unwrap();
    finds_only(
        &work,
        diff(
            "orders",
            "different",
            "bitrix_order_id=280".into(),
            &["delivery_fee"],
        ),
    );
    stop.store(true, Ordering::Relaxed);
    let (written, changed) = (bitrix.await.unwrap(), crm.await.unwrap());
    eprintln!("under load: {written} Bitrix transactions, {changed} CRM status changes, {checked} keys compared in {run} runs");
    assert!(
        written > 300 && changed > 60,
        "the load ran: {written} Bitrix transactions, {changed} CRM changes"
    );
    // Once the load stops, the pair agrees but for the planted difference.
    let (code, out, err) = work.run_split(&["repair", "--table", "orders"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert_eq!(verify(&work, &[]).0, 0);
    stop_cleanly(&mut child, &work);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_verify_feeds_the_metrics_and_duplex_status() {
    let (dbs, work) = shop::shop_dbs("verifysched", |_, t| t).await;
    let port = support::harness::free_port();
    let config = work.path().join("duplex.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        ),
    )
    .unwrap();
    work.append_config("[verify]\ninterval = \"2s\"\n");
    let mut my = dbs.mysql().await;
    shop::generate(&mut my, 9, 20, 60).await;
    work.setup();
    let mut child = work.start();
    let metric = |name: &'static str, labels: &'static [(&'static str, &'static str)]| {
        let body = support::harness::http_get(port, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default();
        support::harness::metric(&body, name, labels)
    };
    wait_for(
        Duration::from_secs(120),
        "a scheduled verify that finds both sides equal",
        &work,
        || async {
            metric("duplex_verify_last_success_timestamp_seconds", &[]).unwrap_or(0.0) > 0.0
        },
    )
    .await;
    assert!(metric("duplex_verify_rows_checked_total", &[]).unwrap() > 60.0);
    assert_eq!(
        metric("duplex_verify_mismatches", &[("table", "public.orders")]),
        Some(0.0)
    );
    let pg = dbs.pg().await;
    pg.batch_execute("UPDATE orders SET delivery_fee = delivery_fee + 7 WHERE bitrix_order_id = 5")
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(60),
        "the next scheduled verify to find the planted difference",
        &work,
        || async { metric("duplex_verify_mismatches", &[("table", "public.orders")]) == Some(1.0) },
    )
    .await;
    let (_, status) = work.run_cmd(&["status"]);
    assert!(
        status.contains("verify   last run") && status.contains("1 differences"),
        "{status}"
    );
    assert!(work.log().contains("scheduled verify: the sides differ"));
    let (code, out, err) = work.run_split(&["repair", "--key", "5"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    wait_for(
        Duration::from_secs(60),
        "a scheduled verify after the repair",
        &work,
        || async { metric("duplex_verify_mismatches", &[("table", "public.orders")]) == Some(0.0) },
    )
    .await;
    let (_, status) = work.run_cmd(&["status"]);
    assert!(status.contains("both sides agree"), "{status}");
    stop_cleanly(&mut child, &work);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cp1251_shop_with_hostile_values_verifies_clean_and_dead_letters_are_no_differences() {
    // The shop's tables made in a cp1251 database, as old Bitrix installations have them.
    let dbs = support::fresh_dbs("verifycp").await;
    let mut my = dbs.mysql().await;
    // One byte a character keeps every VARCHAR inline: the wide order table passes InnoDB's
    // row size check only without strict mode, as on such installations.
    my.query_drop(format!(
        "SET SESSION innodb_strict_mode = 0; ALTER DATABASE `{}` CHARACTER SET cp1251",
        dbs.mysql_db
    ))
    .await
    .unwrap();
    shop::create_bitrix(&mut my).await;
    let charset = mysql_rows(&mut my, "SELECT CHARACTER_SET_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'b_sale_order' AND COLUMN_NAME = 'COMMENTS'").await;
    assert_eq!(charset[0][0].as_deref(), Some("cp1251"));
    let pg = dbs.pg().await;
    pg.batch_execute(shop::CRM_DDL).await.unwrap();
    let files = shop::mapping_files();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let pipeline = support::harness::pipeline_name("verifycp", &dbs);
    let work = Workdir::new(&dbs, &pipeline, "Asia/Almaty", &refs);
    shop::generate(&mut my, 13, 20, 120).await;
    // Hostile values: zero dates, HTML entities and cp1251's own punctuation, and NUL bytes
    // that PostgreSQL text cannot hold (an order's comment, a pivoted property).
    my.query_drop(
        "UPDATE b_sale_order SET DATE_CANCELED = '0000-00-00 00:00:00', DATE_STATUS = '0000-00-00 00:00:00' WHERE ID IN (3, 4);
         UPDATE b_sale_order SET COMMENTS = '&quot;Розы&quot; &amp; тюльпаны — №5 «к 9:00»', USER_DESCRIPTION = '&lt;b&gt;позвонить&lt;/b&gt;' WHERE ID = 5;
         UPDATE b_sale_basket SET NAME = 'Букет &laquo;Нежность&raquo; №7' WHERE ORDER_ID = 6;
         UPDATE b_sale_order SET USER_DESCRIPTION = CONCAT('до', CHAR(0 USING cp1251), 'ставка') WHERE ID = 7;
         UPDATE b_sale_order_props_value SET VALUE = CONCAT('Ан', CHAR(0 USING cp1251), 'на') WHERE CODE = 'EMAIL' AND ORDER_ID = \
           (SELECT id FROM (SELECT MIN(ORDER_ID) AS id FROM b_sale_order_props_value WHERE CODE = 'EMAIL' AND ORDER_ID >= 8) AS first)",
    )
    .await
    .unwrap();
    let nul_props = mysql_rows(
        &mut my,
        "SELECT COUNT(*) FROM b_sale_order_props_value WHERE LOCATE(CHAR(0 USING cp1251), VALUE) > 0",
    )
    .await;
    assert_eq!(
        nul_props[0][0].as_deref(),
        Some("1"),
        "one property holds a NUL"
    );
    work.setup();
    let mut child = work.start();
    wait_for(
        Duration::from_secs(120),
        "the initial copy",
        &work,
        || async {
            work.log().contains("b_sale_order_props_value: copied")
                && work.log().contains("b_sale_basket: copied")
        },
    )
    .await;
    assert_eq!(
        one(
            &pg,
            "SELECT courier_comment FROM orders WHERE bitrix_order_id = 5"
        )
        .await,
        "&quot;Розы&quot; &amp; тюльпаны — №5 «к 9:00»"
    );
    let letters: i64 = one(&pg, "SELECT count(*)::text FROM duplex.dead_letter")
        .await
        .parse()
        .unwrap();
    assert_eq!(letters, 2, "the two rows with NUL bytes are dead letters");
    let (code, report) = verify(&work, &[]);
    assert!(found(&report).is_empty(), "{report:#}");
    assert_eq!(total(&report, "dead_lettered"), 2, "{report:#}");
    let listed = report.to_string();
    assert!(
        listed.contains("до\\\\0ставка") || listed.contains("до\\0ставка"),
        "the dead letters are listed readable: {report:#}"
    );
    assert_eq!(code, 0, "{report:#}");
    // A change to a cp1251 value after the copy still compares equal once streamed, and a
    // planted one on the CRM side is found with both values readable.
    my.query_drop("UPDATE b_sale_order SET COMMENTS = 'Ёлки — «зелёные» &amp; №1' WHERE ID = 9")
        .await
        .unwrap();
    pg.batch_execute("UPDATE orders SET courier_comment = 'Ёлки' WHERE bitrix_order_id = 10")
        .await
        .unwrap();
    let report = finds_only(
        &work,
        diff(
            "orders",
            "different",
            "bitrix_order_id=10".into(),
            &["courier_comment"],
        ),
    );
    assert!(report.to_string().contains("Ёлки"));
    stop_cleanly(&mut child, &work);
}

const CRM_TASKS: &str = r#"
[map.stage.values]
N = "new"
W = "work"
WX = "work"
D = "done"

[map.stage.reverse]
work = "W"

[[table]]
source = "b_crm_task"
target = "crm_task"
direction = "reverse"

[table.column]
ID = "id"
TITLE = "title"
AMOUNT = "amount"
DONE = { to = "done", transform = "yes_no" }
DUE = "due_at"
STAGE = { to = "stage", map = "stage" }
TAGS = "tags"
"#;

/// The CRM updating tasks 1..=200 about 40 times a second until `stop`: amounts with four
/// decimals, times with microseconds, stages and tags in any order.
async fn task_load(dbs: support::TestDbs, stop: Arc<AtomicBool>) -> u64 {
    let pg = dbs.pg().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let id: i32 = rng.random_range(1..=200);
        let sql = match n % 3 {
            0 => format!(
                "UPDATE crm_task SET amount = {}.{:04}, due_at = now() WHERE id = {id}",
                rng.random_range(0..10_000),
                rng.random_range(0..10_000)
            ),
            1 => format!("UPDATE crm_task SET stage = (ARRAY['new','work','done'])[{}], tags = 'c,a' WHERE id = {id}", rng.random_range(1..=3)),
            _ => format!("UPDATE crm_task SET done = NOT done, title = 'Задача {n}' WHERE id = {id}"),
        };
        pg.batch_execute(&sql).await.unwrap();
        n += 1;
    }
    n
}

/// A table mapped `reverse` only (the CRM's tasks into a Bitrix table): verify reads the
/// PostgreSQL rows, maps them backwards and compares what MySQL stores (decimals at the column's
/// scale, cut fractional seconds, SET order, a map with two codes for one value), with the CRM
/// writing the same rows meanwhile; differences planted on MySQL are found exactly and repaired
/// there; a value cp1251 cannot hold is a dead letter, not a difference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reverse_only_table_is_verified_from_postgres_and_repaired_on_mysql() {
    let dbs = support::fresh_dbs("verifyback").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop(
        "CREATE TABLE b_crm_task (ID int PRIMARY KEY, TITLE varchar(60) CHARACTER SET cp1251,
             AMOUNT decimal(12,2), DONE char(1), DUE datetime, STAGE varchar(2), TAGS set('a','b','c'))",
    )
    .await
    .unwrap();
    pg.batch_execute(
        "CREATE TABLE crm_task (id int PRIMARY KEY, title text, amount numeric(14,4), done boolean,
             due_at timestamptz, stage text, tags text);
         INSERT INTO crm_task SELECT g, 'Задача ' || g, g + 0.3456, g % 2 = 0,
             '2026-12-01 10:00:00.7+00'::timestamptz + g * interval '1 minute',
             (ARRAY['new','work','done'])[g % 3 + 1], 'b,a'
         FROM generate_series(1, 300) g;
         UPDATE crm_task SET title = 'Готово ✓' WHERE id = 250",
    )
    .await
    .unwrap();
    let pipeline = support::harness::pipeline_name("verifyback", &dbs);
    let work = Workdir::new(&dbs, &pipeline, "UTC", &[("t.toml", CRM_TASKS)]);
    work.setup();
    let mut child = work.start();
    wait_for(
        Duration::from_secs(60),
        "the copy to MySQL",
        &work,
        || async {
            let mut my = dbs.mysql().await;
            mysql_rows(&mut my, "SELECT COUNT(*) FROM b_crm_task").await[0][0].as_deref()
                == Some("299")
        },
    )
    .await;
    let target = format!("{}.b_crm_task", dbs.mysql_db);
    let (code, report) = verify(&work, &[]);
    assert_eq!(code, 0, "{report:#}");
    let entry = &report["entries"][0];
    assert_eq!(entry["direction"], "pg_to_mysql", "{report:#}");
    assert_eq!(entry["rows_checked"], 300, "{report:#}");
    assert_eq!(entry["equal"], 299, "{report:#}");
    assert_eq!(entry["dead_lettered"], 1, "{report:#}");
    assert!(
        entry["dead_letters"][0]
            .as_str()
            .unwrap()
            .starts_with("250: "),
        "{report:#}"
    );
    // The CRM writes the same rows while verify runs: nothing in flight is reported.
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(task_load(dbs.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    for run in 0..3 {
        let (code, report) = verify(&work, &[]);
        assert!(found(&report).is_empty(), "run {run}:\n{report:#}");
        assert_eq!(total(&report, "unsettled"), 0, "run {run}: {report:#}");
        assert_eq!(code, 0, "run {run}: {report:#}");
    }
    stop.store(true, Ordering::Relaxed);
    let updates = load.await.unwrap();
    assert!(updates > 50, "the load ran: {updates} updates");
    // Planted on MySQL, where nothing flows back: a changed amount and title, a deleted row, a
    // row the CRM does not have; and a second code of a mapped value, which is no difference.
    my.query_drop(
        "UPDATE b_crm_task SET AMOUNT = AMOUNT + 1 WHERE ID = 203;
         UPDATE b_crm_task SET TITLE = 'чужое' WHERE ID = 205;
         DELETE FROM b_crm_task WHERE ID = 204;
         INSERT INTO b_crm_task (ID, TITLE) VALUES (9999, 'лишняя');
         UPDATE b_crm_task SET STAGE = 'WX' WHERE STAGE = 'W' AND ID > 200 LIMIT 3",
    )
    .await
    .unwrap();
    let want = |kind: &str, key: &str, cols: &[&str]| -> Found {
        (
            target.clone(),
            kind.to_string(),
            key.to_string(),
            cols.iter().map(|c| c.to_string()).collect(),
        )
    };
    let (code, report) = verify(&work, &["--table", "crm_task"]);
    assert_eq!(
        found(&report),
        BTreeSet::from([
            want("different", "ID=203", &["AMOUNT"]),
            want("different", "ID=205", &["TITLE"]),
            want("missing", "ID=204", &[]),
            want("extra", "ID=9999", &[]),
        ]),
        "{report:#}"
    );
    assert_eq!(code, 1);
    let d = report["entries"][0]["differences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["key"] == "ID=205")
        .unwrap()
        .clone();
    assert_eq!(d["columns"][0]["source"], "Задача 205", "{d:#}");
    assert_eq!(d["columns"][0]["target"], "чужое", "{d:#}");
    assert!(
        d["position"].as_str().unwrap().contains('/'),
        "an LSN: {d:#}"
    );
    let (code, out, err) = work.run_split(&["repair", "--dry-run"]);
    assert_eq!(
        code,
        Some(1),
        "the differences are still there: {out}\n{err}"
    );
    assert!(out.contains("delete") && out.contains("9999"), "{out}");
    assert_eq!(
        mysql_rows(&mut my, "SELECT COUNT(*) FROM b_crm_task WHERE ID = 9999").await[0][0]
            .as_deref(),
        Some("1"),
        "a dry run changes nothing"
    );
    let (code, out, err) = work.run_split(&["repair"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    let rows = mysql_rows(
        &mut my,
        "SELECT ID, TITLE, AMOUNT FROM b_crm_task WHERE ID IN (203, 204, 205, 9999) ORDER BY ID",
    )
    .await;
    let crm = pg_rows(
        &pg,
        "SELECT id::text, title, round(amount, 2)::text FROM crm_task WHERE id IN (203, 204, 205) ORDER BY id",
    )
    .await;
    assert_eq!(rows, crm, "MySQL holds the CRM's rows again, and not 9999");
    let logged = one(
        &pg,
        "SELECT count(*)::text FROM duplex.repair_log WHERE target_table LIKE '%b_crm_task'",
    )
    .await;
    assert_eq!(logged, "4");
    let (code, report) = verify(&work, &[]);
    assert_eq!(code, 0, "{report:#}");
    stop_cleanly(&mut child, &work);
}

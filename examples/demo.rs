//! The demo: local MariaDB and PostgreSQL, a generated cvety.kz shop in the real Bitrix tables
//! (thousands of orders with basket rows and properties, users, shops, products, statuses,
//! cities), the CRM schema from `mappings/bitrix/crm.sql`, and duplex with the shipped mapping
//! set: it copies the shop, then streams both ways while the shop takes new orders and the CRM
//! moves orders through their statuses. A live summary every 2 s.
//! Run with `bash scripts/demo.sh`; stops after `DEMO_SECONDS` (default 120) or Ctrl-C.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use rand::{RngExt, SeedableRng};
use support::harness::{terminate, Workdir};
use support::shop;

/// Orders the shop holds before duplex starts (the old integration migrated 20 of 53; this
/// shop has a few thousand).
const EXISTING_ORDERS: usize = 3000;

/// The CRM statuses the demo's florists move orders to.
const CRM_MOVES: &[&str] = &["confirmed", "assembled", "in_transit", "completed", "paid"];

async fn pg_count(pg: &tokio_postgres::Client, sql: &str) -> i64 {
    pg.query_one(sql, &[]).await.map(|r| r.get(0)).unwrap_or(-1)
}

async fn my_count(my: &mut mysql_async::Conn, sql: &str) -> i64 {
    my.query_first::<i64, _>(sql)
        .await
        .ok()
        .flatten()
        .unwrap_or(-1)
}

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::var("DEMO_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    // The demo's servers run as production would (every commit flushed): the lag it shows
    // is duplex's own, not a deferred flush of the servers'.
    std::env::set_var("DUPLEX_SERVERS_DURABLE", "1");
    println!(
        "Starting private MariaDB and PostgreSQL servers (durable commits, as in production)…"
    );
    let s = support::servers();
    let dbs = support::fresh_dbs("demo").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    shop::create_bitrix(&mut my).await;
    pg.batch_execute(shop::CRM_DDL)
        .await
        .expect("create the CRM schema (mappings/bitrix/crm.sql)");
    println!("Generating the shop: {EXISTING_ORDERS} orders with basket rows and properties…");
    let mut shop = shop::generate(&mut my, 2026, 500, EXISTING_ORDERS).await;

    let files = shop::mapping_files();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let metrics_port = support::harness::free_port();
    let work = Workdir::with_metrics(
        &dbs,
        "demo",
        "Asia/Almaty",
        &refs,
        &format!("127.0.0.1:{metrics_port}"),
    );
    work.setup();
    let copy_started = Instant::now();
    let mut duplex = work.start();
    // The copy comes first; each table reports what it copied.
    // Each source table reports once (`source = "b_…"` lines; several entries may share one).
    let tables = files
        .iter()
        .flat_map(|(_, text)| text.lines().filter(|l| l.starts_with("source = \"b_")))
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    loop {
        if work.log().matches("dead-lettered").count() >= tables {
            break;
        }
        if copy_started.elapsed() > Duration::from_secs(180) {
            panic!(
                "duplex did not finish the initial copy; log:\n{}",
                work.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "\nduplex copied the shop in {:.1} s:",
        copy_started.elapsed().as_secs_f64()
    );
    for line in work.log().lines().filter(|l| l.contains("dead-lettered")) {
        // `… mysql_to_pg <db>.<table>: copied N, dead-lettered M in T s`
        let report = line.split("mysql_to_pg ").nth(1).unwrap_or(line);
        println!("  {}", report.split_once('.').map_or(report, |(_, t)| t));
    }

    println!();
    println!("duplex replicates mappings/bitrix/*.toml both ways. Where to look:");
    println!("  CRM:        psql '{}' -c 'SELECT bitrix_order_id, status, recipient_name, recipient_phone, delivery_date, total_amount FROM orders ORDER BY bitrix_order_id DESC LIMIT 5'", s.pg_url(&dbs.pg_db));
    println!("  Bitrix:     mariadb -h127.0.0.1 -P{} -u{} -p{} {} -e 'SELECT ID, STATUS_ID, DATE_STATUS, CANCELED, PRICE FROM b_sale_order ORDER BY DATE_STATUS DESC LIMIT 5'", s.mysql_port, s.mysql_user, s.mysql_password, dbs.mysql_db);
    println!(
        "  dead letters: psql '{}' -c 'SELECT source_table, reason FROM duplex.dead_letter'",
        s.pg_url(&dbs.pg_db)
    );
    println!("  metrics:    curl -s http://127.0.0.1:{metrics_port}/metrics | grep ^duplex_");
    println!(
        "  status:     duplex status -c {}   (also /health, /ready, /status on the metrics port)",
        work.config.display()
    );
    println!("  duplex log: {}", work.path().join("duplex.log").display());
    println!("  config:     {}", work.config.display());
    println!("New orders arrive in the shop and florists change statuses in the CRM for {seconds} s (Ctrl-C stops)…\n");

    let started = Instant::now();
    let start_local = (chrono::Utc::now() + chrono::Duration::hours(5))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    let mut rng = rand::rngs::StdRng::seed_from_u64(2027);
    let mut written = 0u64;
    let mut moved = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut report = Instant::now();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut ctrl_c => break,
        }
        // The shop: an order saved the way Bitrix saves it (order, basket, properties).
        let mut batch = shop::OrderBatch::default();
        shop::order_rows(&mut rng, &mut shop, &mut batch, Some("N"));
        my.query_drop("START TRANSACTION").await.expect("begin");
        batch.write(&mut my).await;
        my.query_drop("COMMIT").await.expect("commit");
        written += 1;
        // The CRM: a florist moves an order on.
        if rng.random_bool(0.5) {
            let id = shop.orders[rng.random_range(0..shop.orders.len())];
            let status = CRM_MOVES[rng.random_range(0..CRM_MOVES.len())];
            moved += pg
                .execute(
                    "UPDATE orders SET status = $1 WHERE bitrix_order_id = $2 AND status IS DISTINCT FROM $1",
                    &[&status, &(id as i32)],
                )
                .await
                .expect("change a status in the CRM");
        }
        if report.elapsed() >= Duration::from_secs(2) {
            report = Instant::now();
            let b_orders = my_count(&mut my, "SELECT count(*) FROM b_sale_order").await;
            let c_orders =
                pg_count(&pg, "SELECT count(*) FROM orders WHERE status IS NOT NULL").await;
            let c_items = pg_count(
                &pg,
                "SELECT count(*) FROM order_items WHERE order_id IS NOT NULL",
            )
            .await;
            let back = my_count(
                &mut my,
                &format!("SELECT count(*) FROM b_sale_order WHERE DATE_STATUS >= '{start_local}'"),
            )
            .await;
            let dead = pg_count(&pg, "SELECT count(*) FROM duplex.dead_letter").await;
            // duplex's own heartbeat lag, each way.
            let lag = |direction: &str| {
                support::harness::http_get(metrics_port, "/metrics")
                    .ok()
                    .and_then(|(_, body)| {
                        support::harness::metric(
                            &body,
                            "duplex_lag_seconds",
                            &[("direction", direction)],
                        )
                    })
                    .map(|s| format!("{:.0} ms", s * 1000.0))
                    .unwrap_or_else(|| "-".into())
            };
            println!(
                "[{:>4}s] shop orders {b_orders:>5} → CRM orders {c_orders:>5} (items {c_items:>5}) | CRM status changes {moved:>4} → in Bitrix {back:>4} | dead letters {dead} | lag {} / {}",
                started.elapsed().as_secs(),
                lag("mysql_to_pg"),
                lag("pg_to_mysql")
            );
        }
    }
    // Wait until both sides agree, then stop duplex the way a DBA would.
    let until = Instant::now() + Duration::from_secs(30);
    let total = my_count(&mut my, "SELECT count(*) FROM b_sale_order").await;
    let mut in_crm = -1;
    while Instant::now() < until {
        in_crm = pg_count(
            &pg,
            "SELECT count(*) FROM orders WHERE order_number IS NOT NULL",
        )
        .await;
        if in_crm == total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Proof that both sides agree, through the mappings, while duplex still streams.
    let (verified, report, err) = work.run_split(&["verify"]);
    println!("\n$ duplex verify\n{report}");
    if verified != Some(0) {
        eprintln!("duplex verify did not find both sides equal:\n{err}");
    }
    // What a DBA sees.
    let (_, table) = work.run_cmd(&["status"]);
    println!("\n$ duplex status\n{table}");
    let status = terminate(&mut duplex, Duration::from_secs(30));
    println!("\nThe shop took {written} new orders and the CRM made {moved} status changes; Bitrix has {total} orders, the CRM {in_crm}. duplex exited with {status:?}.");
    if in_crm != total || verified != Some(0) {
        eprintln!(
            "the CRM did not catch up or differs; see {}",
            work.path().join("duplex.log").display()
        );
        std::process::exit(1);
    }
    if std::env::var("DEMO_KEEP").is_ok() {
        let kept = work.dir.keep();
        println!("kept {}", kept.display());
    }
}

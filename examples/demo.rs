//! The demo: local MariaDB and PostgreSQL, a Bitrix-shaped `b_sale_order` table, duplex
//! replicating live into a CRM-shaped `orders` table while orders are written, and a live
//! summary. Run with `bash scripts/demo.sh`; stops after `DEMO_SECONDS` (default 120) or Ctrl-C.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use rand::Rng;
use support::harness::{terminate, Workdir};

const BITRIX_DDL: &str = "CREATE TABLE b_sale_order (
  ID int NOT NULL AUTO_INCREMENT PRIMARY KEY,
  LID char(2) NOT NULL,
  PERSON_TYPE_ID int NOT NULL,
  PAYED char(1) NOT NULL DEFAULT 'N',
  CANCELED char(1) NOT NULL DEFAULT 'N',
  STATUS_ID varchar(2) NOT NULL,
  DATE_STATUS datetime NOT NULL,
  PRICE_DELIVERY decimal(18,4) NOT NULL DEFAULT '0.0000',
  PRICE decimal(18,4) NOT NULL,
  CURRENCY char(3) NOT NULL,
  DISCOUNT_VALUE decimal(18,4) NOT NULL DEFAULT '0.0000',
  USER_ID int NOT NULL,
  DATE_INSERT datetime NOT NULL,
  DATE_UPDATE datetime NOT NULL,
  USER_DESCRIPTION varchar(2000) NULL,
  ACCOUNT_NUMBER varchar(100) NULL,
  UNIQUE KEY IXS_ACCOUNT_NUMBER (ACCOUNT_NUMBER)
) ENGINE=InnoDB";

const CRM_DDL: &str = "CREATE TABLE orders (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  bitrix_order_id integer UNIQUE,
  order_number text,
  bitrix_status varchar(2),
  total_amount numeric(18,4),
  delivery_fee numeric(18,4),
  discount_amount numeric(18,4),
  currency text,
  payed char(1),
  canceled char(1),
  bitrix_user_id integer,
  comment text,
  created_at timestamptz,
  updated_at timestamptz,
  status_changed_at timestamptz,
  crm_note text
)";

const COMMENTS: &[&str] = &[
    "Позвоните за час до доставки",
    "Букет на юбилей 🌹",
    "Без открытки",
    "Доставить к 18:00, домофон 25",
    "",
];

/// Orders the shop holds before duplex starts.
const EXISTING_ORDERS: usize = 53;

/// Places one order the way the shop does (numbered after the insert).
async fn new_order(my: &mut mysql_async::Conn, rng: &mut impl Rng) {
    let price = rng.gen_range(5_000..80_000) as f64 + rng.gen_range(0..100) as f64 / 100.0;
    let comment = COMMENTS[rng.gen_range(0..COMMENTS.len())];
    my.exec_drop(
        "INSERT INTO b_sale_order (LID, PERSON_TYPE_ID, STATUS_ID, DATE_STATUS, PRICE, PRICE_DELIVERY, CURRENCY, USER_ID, DATE_INSERT, DATE_UPDATE, USER_DESCRIPTION, ACCOUNT_NUMBER) \
         VALUES ('s1', 1, 'N', '0000-00-00 00:00:00', ?, 1500, 'KZT', ?, NOW(), NOW(), ?, NULL)",
        (format!("{price:.2}"), rng.gen_range(1..500), comment),
    )
    .await
    .expect("insert an order");
    my.query_drop(
        "UPDATE b_sale_order SET ACCOUNT_NUMBER = CONCAT('2026-', ID) WHERE ID = LAST_INSERT_ID()",
    )
    .await
    .expect("number the order");
}

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::var("DEMO_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    println!("Starting private MariaDB and PostgreSQL servers…");
    let s = support::servers();
    let dbs = support::fresh_dbs("demo").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop(BITRIX_DDL)
        .await
        .expect("create b_sale_order");
    pg.batch_execute(CRM_DDL).await.expect("create orders");

    let mapping = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/mappings/demo/orders.toml"
    ))
    .expect("read mappings/demo/orders.toml");
    let metrics_port = support::harness::free_port();
    let work = Workdir::with_metrics(
        &dbs,
        "demo",
        "Asia/Almaty",
        &[("orders.toml", &mapping)],
        &format!("127.0.0.1:{metrics_port}"),
    );
    work.setup();
    // The shop's existing orders (the old integration migrated 20 of 53): duplex copies them
    // all first, then streams from the point its copy saw.
    let mut rng = rand::thread_rng();
    for _ in 0..EXISTING_ORDERS {
        new_order(&mut my, &mut rng).await;
    }
    my.query_drop("UPDATE b_sale_order SET STATUS_ID = 'F', PAYED = 'Y' WHERE ID % 3 = 0")
        .await
        .expect("age the existing orders");
    let copy_started = Instant::now();
    let mut duplex = work.start();
    // The copy of the existing orders comes first; its report is in the log.
    let report = loop {
        if let Some(line) = work.log().lines().find(|l| l.contains("dead-lettered")) {
            break line
                .split("mysql_to_pg ")
                .last()
                .unwrap_or(line)
                .to_string();
        }
        if copy_started.elapsed() > Duration::from_secs(60) {
            panic!(
                "duplex did not finish copying the existing orders; log:\n{}",
                work.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    println!();
    println!("duplex is replicating b_sale_order (MariaDB) → orders (PostgreSQL). Where to look:");
    println!("  PostgreSQL: psql '{}' -c 'SELECT bitrix_order_id, bitrix_status, total_amount, created_at, comment FROM orders ORDER BY bitrix_order_id DESC LIMIT 5'", s.pg_url(&dbs.pg_db));
    println!("  MariaDB:    mariadb -h127.0.0.1 -P{} -u{} -p{} {} -e 'SELECT ID, STATUS_ID, PRICE, DATE_INSERT FROM b_sale_order ORDER BY ID DESC LIMIT 5'", s.mysql_port, s.mysql_user, s.mysql_password, dbs.mysql_db);
    println!("  metrics:    curl -s http://127.0.0.1:{metrics_port}/metrics | grep ^duplex_");
    println!("  duplex log: {}", work.path().join("duplex.log").display());
    println!("  config:     {}", work.config.display());
    println!("The shop already held {EXISTING_ORDERS} orders; duplex copied them first: {report}");
    println!("Writing orders for {seconds} s (Ctrl-C stops)…\n");

    let started = Instant::now();
    let mut written = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut report = Instant::now();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut ctrl_c => break,
        }
        // A new order, and now and then a status change or cancellation of an older one.
        new_order(&mut my, &mut rng).await;
        written += 1;
        if rng.gen_bool(0.3) {
            let status = ["P", "F", "F"][rng.gen_range(0..3)];
            my.exec_drop(
                "UPDATE b_sale_order SET STATUS_ID = ?, DATE_STATUS = NOW(), DATE_UPDATE = NOW(), PAYED = 'Y' WHERE ID = (SELECT ID FROM (SELECT ID FROM b_sale_order ORDER BY RAND() LIMIT 1) x)",
                (status,),
            )
            .await
            .expect("change a status");
        }
        if rng.gen_bool(0.05) {
            my.query_drop("UPDATE b_sale_order SET CANCELED = 'Y', DATE_UPDATE = NOW() WHERE ID = (SELECT ID FROM (SELECT ID FROM b_sale_order ORDER BY RAND() LIMIT 1) x)").await.expect("cancel");
        }
        if report.elapsed() >= Duration::from_secs(2) {
            report = Instant::now();
            let in_pg: i64 = pg
                .query_one("SELECT count(*) FROM orders", &[])
                .await
                .map(|r| r.get(0))
                .unwrap_or(-1);
            let in_my: Option<i64> = my
                .query_first("SELECT count(*) FROM b_sale_order")
                .await
                .unwrap_or(None);
            let statuses = pg
                .query(
                    "SELECT bitrix_status, count(*) FROM orders GROUP BY 1 ORDER BY 1",
                    &[],
                )
                .await
                .map(|rows| {
                    rows.iter()
                        .map(|r| {
                            format!(
                                "{}={}",
                                r.get::<_, Option<String>>(0).unwrap_or_default(),
                                r.get::<_, i64>(1)
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            println!("[{:>4}s] MariaDB b_sale_order: {:>5} | PostgreSQL orders: {:>5} | statuses in CRM: {statuses}", started.elapsed().as_secs(), in_my.unwrap_or(-1), in_pg);
        }
    }
    // Wait until the CRM has everything, then stop duplex the way a DBA would.
    let until = Instant::now() + Duration::from_secs(30);
    let total: Option<i64> = my
        .query_first("SELECT count(*) FROM b_sale_order")
        .await
        .unwrap_or(None);
    while Instant::now() < until {
        let in_pg: i64 = pg
            .query_one("SELECT count(*) FROM orders", &[])
            .await
            .map(|r| r.get(0))
            .unwrap_or(-1);
        if Some(in_pg) == total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let in_pg: i64 = pg
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or(-1);
    let status = terminate(&mut duplex, Duration::from_secs(30));
    println!("\nWrote {written} orders; MariaDB has {}, PostgreSQL has {in_pg}. duplex exited with {status:?}.", total.unwrap_or(-1));
    if Some(in_pg) != total {
        eprintln!(
            "the CRM did not catch up; see {}",
            work.path().join("duplex.log").display()
        );
        std::process::exit(1);
    }
    // The work dir is a temporary directory that is removed now; keep the log if asked.
    if std::env::var("DEMO_KEEP").is_ok() {
        let kept = work.dir.keep();
        println!("kept {}", kept.display());
    }
}

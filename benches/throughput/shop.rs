//! The mapping-set measurement: `duplex snapshot` of a generated cvety.kz shop through the
//! shipped `mappings/bitrix/` set (filters, maps, transforms, look-ups, the property pivot, three
//! entries feeding `products`), next to the raw limits of the same rows in the same run.
//!
//! - The shop: `BENCH_SHOP_ORDERS` orders (default 30,000) with their basket rows and
//!   properties, plus users, shops, products, statuses and cities (`tests/support/shop.rs`).
//! - Raw read: `SELECT *` of every source table over the binary protocol.
//! - Raw write: one text `COPY` per table of the same rows into plain PostgreSQL tables with the
//!   same column names, all `text` (no keys, no mapping).
//! - duplex: `duplex setup` then `duplex snapshot` (release build) into the CRM schema of
//!   `mappings/bitrix/crm.sql`; per-table times from its reports. The CRM ends with one row per
//!   order and no dead letters (checked).
//!
//! `BENCH_SHOP=0` skips it.

use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use futures_util::SinkExt;
use mysql_async::prelude::Queryable;

use super::support::harness::Workdir;
use super::support::{self, shop};
use super::{per_second, progress, thousands, verdict, Line};

/// Targets (issue 19): the mapped copy at this share of the slower raw read, and the stream
/// this many times as fast as the shop's one connection writing the orders.
const TARGET_COPY_RATIO: f64 = 0.15;
const TARGET_STREAM_RATIO: f64 = 1.5;

/// The Bitrix tables the set reads.
const TABLES: &[&str] = &[
    "b_sale_order",
    "b_sale_order_props_value",
    "b_sale_basket",
    "b_user",
    "b_iblock_element",
    "b_iblock_element_property",
    "b_catalog_price",
    "b_sale_status",
    "b_sale_status_lang",
    "b_sale_location",
    "b_sale_loc_name",
];

pub struct Shop {
    orders: usize,
    /// (table, rows) of the source tables.
    rows: Vec<(String, i64)>,
    select: Duration,
    copy: Duration,
    duplex: Duration,
    /// (table, rows, seconds) from duplex's reports.
    reports: Vec<(String, i64, f64)>,
    crm_orders: i64,
    dead_letters: i64,
    /// Orders written as their own transactions while duplex was stopped, and their rows.
    stream_orders: usize,
    stream_rows: i64,
    /// MariaDB taking those transactions (one connection).
    stream_write: Duration,
    /// `duplex run` from spawn to the last order visible.
    stream: Duration,
    stream_dead: i64,
    /// Order items left without their order after the stream (0 expected).
    stream_items: i64,
    /// `duplex verify` of the whole shop after the stream (unless `BENCH_VERIFY=0`).
    pub verify: Option<super::verify::Verify>,
}

impl Shop {
    fn total_rows(&self) -> i64 {
        self.rows.iter().map(|(_, n)| n).sum()
    }
}

pub async fn run(orders: usize) -> Shop {
    let dbs = support::fresh_dbs("bench_shop").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    shop::create_bitrix(&mut my).await;
    progress(&format!(
        "shop: generating {orders} orders with baskets and properties"
    ));
    let mut state = shop::generate(&mut my, 2026, 2000, orders).await;
    pg.batch_execute(shop::CRM_DDL)
        .await
        .expect("create the CRM schema");

    // Raw read.
    progress("shop: raw read (SELECT * of every source table)");
    let mut rows = Vec::new();
    let started = Instant::now();
    for t in TABLES {
        let mut result = my
            .exec_iter(format!("SELECT * FROM {t}"), ())
            .await
            .expect("SELECT *");
        let mut n = 0i64;
        while let Some(row) = result.next().await.expect("fetch a row") {
            n += 1;
            std::hint::black_box(row.unwrap_raw());
        }
        drop(result);
        rows.push((t.to_string(), n));
    }
    let select = started.elapsed();

    // Raw write: the same rows as text into plain tables.
    progress("shop: raw write (text COPY of the same rows)");
    let mut buffers = Vec::new();
    for t in TABLES {
        let data: Vec<mysql_async::Row> = my
            .query(format!("SELECT * FROM {t}"))
            .await
            .expect("read rows");
        let cols: Vec<String> = data
            .first()
            .map(|r| {
                r.columns_ref()
                    .iter()
                    .map(|c| format!("\"{}\"", c.name_str()))
                    .collect()
            })
            .unwrap_or_default();
        pg.batch_execute(&format!(
            "CREATE TABLE raw_{t} ({})",
            cols.iter()
                .map(|c| format!("{c} text"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .await
        .expect("create a raw table");
        let mut buf = BytesMut::new();
        for r in &data {
            for i in 0..r.len() {
                if i > 0 {
                    buf.put_u8(b'\t');
                }
                match r.as_ref(i) {
                    Some(mysql_async::Value::Bytes(b)) => {
                        for &c in b {
                            match c {
                                b'\\' => buf.put_slice(b"\\\\"),
                                b'\t' => buf.put_slice(b"\\t"),
                                b'\n' => buf.put_slice(b"\\n"),
                                b'\r' => buf.put_slice(b"\\r"),
                                _ => buf.put_u8(c),
                            }
                        }
                    }
                    _ => buf.put_slice(b"\\N"),
                }
            }
            buf.put_u8(b'\n');
        }
        buffers.push((t.to_string(), cols.join(", "), buf.freeze()));
    }
    let started = Instant::now();
    for (t, cols, buf) in buffers {
        let sink = pg
            .copy_in(&format!("COPY raw_{t} ({cols}) FROM STDIN"))
            .await
            .expect("COPY");
        futures_util::pin_mut!(sink);
        for chunk in buf.chunks(1 << 20) {
            sink.send(bytes::Bytes::copy_from_slice(chunk))
                .await
                .expect("COPY data");
        }
        sink.as_mut().finish().await.expect("COPY end");
    }
    let copy = started.elapsed();

    // duplex through the mapping set.
    let files = shop::mapping_files();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let work = Workdir::new(&dbs, "shopbench", "Asia/Almaty", &refs);
    work.setup();
    progress("shop: duplex snapshot through mappings/bitrix");
    let started = Instant::now();
    let (ok, out) = work.run_cmd(&["snapshot"]);
    let duplex = started.elapsed();
    assert!(ok, "duplex snapshot failed:\n{out}\n{}", work.log());
    for l in out
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
    {
        progress(&format!(
            "shop: duplex said: {}",
            super::snapshot::strip_ansi(l)
        ));
    }
    let reports = out
        .lines()
        .filter_map(|l| {
            // `… mysql_to_pg <db>.<table>: copied N, dead-lettered M in T s`
            let l = super::snapshot::strip_ansi(l);
            let (_, rest) = l.split_once("mysql_to_pg ")?;
            let (name, rest) = rest.split_once(": copied ")?;
            let (n, rest) = rest.split_once(',')?;
            let secs = rest.split_once(" in ")?.1.split_once(" s")?.0;
            let table = name.split_once('.').map_or(name, |(_, t)| t).to_string();
            Some((table, n.trim().parse().ok()?, secs.trim().parse().ok()?))
        })
        .collect();
    let one = |sql: &'static str| {
        let pg = &pg;
        async move {
            pg.query_one(sql, &[])
                .await
                .map(|r| r.get::<_, i64>(0))
                .unwrap_or(-1)
        }
    };
    let crm_orders = one("SELECT count(*) FROM orders WHERE order_number IS NOT NULL").await;
    let dead_letters = one("SELECT count(*) FROM duplex.dead_letter").await;
    progress(&format!("shop: took {:.1} s", duplex.as_secs_f64()));

    // The stream: new orders saved the way Bitrix saves them (one transaction each: the order,
    // its basket rows, its properties) while duplex is stopped; then `duplex run` catches up.
    let stream_orders = (orders / 6).max(1000);
    progress(&format!(
        "shop: writing {stream_orders} orders, one transaction each (duplex stopped)"
    ));
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(99);
    let mut stream_rows = 0i64;
    let started = Instant::now();
    for _ in 0..stream_orders {
        let mut batch = shop::OrderBatch::default();
        shop::order_rows(&mut rng, &mut state, &mut batch, None);
        stream_rows += (batch.orders.len() + batch.baskets.len() + batch.props.len()) as i64;
        my.query_drop("START TRANSACTION").await.expect("begin");
        batch.write(&mut my).await;
        my.query_drop("COMMIT").await.expect("commit");
    }
    let stream_write = started.elapsed();
    let last = state.orders.last().copied().unwrap_or_default();
    progress("shop: duplex run catching up");
    let started = Instant::now();
    let mut child = work.start();
    loop {
        let done = pg
            .query_one(
                "SELECT count(*) FROM orders WHERE bitrix_order_id = $1 AND order_number IS NOT NULL",
                &[&(last as i32)],
            )
            .await
            .map(|r| r.get::<_, i64>(0) == 1)
            .unwrap_or(false);
        if done {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "duplex did not catch up with the shop's stream:\n{}",
            work.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stream = started.elapsed();
    super::support::harness::terminate(&mut child, Duration::from_secs(30));
    let stream_dead = one("SELECT count(*) FROM duplex.dead_letter").await;
    let stream_items = one("SELECT count(*) FROM order_items WHERE order_id IS NULL").await;
    progress(&format!("shop: caught up in {:.1} s", stream.as_secs_f64()));
    let verify = if super::env_flag("BENCH_VERIFY", true) {
        let sources: Vec<&str> = rows.iter().map(|(t, _)| t.as_str()).collect();
        let total: i64 = rows.iter().map(|(_, n)| n).sum::<i64>() + stream_rows;
        let what = format!(
            "the mapping-set shop ({} source rows, 12 entries)",
            super::thousands(total as f64)
        );
        Some(
            super::verify::run(
                (&what, false),
                &work,
                &dbs,
                total,
                (
                    &sources,
                    &[
                        "orders",
                        "order_items",
                        "products",
                        "sellers",
                        "users",
                        "cities",
                        "order_statuses",
                    ],
                ),
            )
            .await,
        )
    } else {
        None
    };
    Shop {
        verify,
        stream_orders,
        stream_rows,
        stream_write,
        stream,
        stream_dead,
        stream_items,
        orders,
        rows,
        select,
        copy,
        duplex,
        reports,
        crm_orders,
        dead_letters,
    }
}

pub fn lines(s: &Shop) -> Vec<Line> {
    let total = s.total_rows();
    let rate = per_second(total, s.duplex);
    let slower = per_second(total, s.select.max(s.copy));
    let ratio = rate / slower.max(1e-9);
    let mut out = vec![[
        format!(
            "mapping set: `duplex snapshot` of a generated shop through mappings/bitrix ({} orders; {} rows in 11 tables)",
            thousands(s.orders as f64),
            thousands(total as f64)
        ),
        format!("{} rows/s ({:.1} s)", thousands(rate), s.duplex.as_secs_f64()),
        format!(
            "SELECT * {} rows/s ({:.1} s); text COPY {} rows/s ({:.1} s)",
            thousands(per_second(total, s.select)),
            s.select.as_secs_f64(),
            thousands(per_second(total, s.copy)),
            s.copy.as_secs_f64()
        ),
        format!("{ratio:.3} of the slower"),
        format!("≥ {TARGET_COPY_RATIO} of the slower"),
        verdict(ratio >= TARGET_COPY_RATIO),
    ]];
    let mut seen = std::collections::BTreeSet::new();
    for (table, rows, secs) in &s.reports {
        if *rows >= 10_000 && seen.insert(table) {
            out.push([
                format!("mapping set: {table} ({} rows)", thousands(*rows as f64)),
                format!(
                    "{} rows/s ({secs:.1} s)",
                    thousands(*rows as f64 / secs.max(1e-9))
                ),
                "—".into(),
                "—".into(),
                "informational".into(),
                "—".into(),
            ]);
        }
    }
    let rate = per_second(s.stream_rows, s.stream);
    let source = per_second(s.stream_rows, s.stream_write);
    out.push([
        format!(
            "mapping set: stream catch-up, {} orders saved as Bitrix does (order + basket + properties, one txn each; {} rows)",
            thousands(s.stream_orders as f64),
            thousands(s.stream_rows as f64)
        ),
        format!(
            "{} rows/s, {} orders/s ({:.1} s)",
            thousands(rate),
            thousands(s.stream_orders as f64 / s.stream.as_secs_f64().max(1e-9)),
            s.stream.as_secs_f64()
        ),
        format!(
            "MariaDB taking those txns: {} rows/s ({:.1} s, 1 connection)",
            thousands(source),
            s.stream_write.as_secs_f64()
        ),
        format!("{:.2}", rate / source.max(1e-9)),
        format!("≥ {TARGET_STREAM_RATIO} of the shop's one connection"),
        verdict(rate >= TARGET_STREAM_RATIO * source),
    ]);
    out.push([
        "mapping set: dead letters / order items without their order after the stream".into(),
        format!("{} / {}", s.stream_dead, s.stream_items),
        "—".into(),
        "—".into(),
        "0 / 0".into(),
        verdict(s.stream_dead == 0 && s.stream_items == 0),
    ]);
    out.push([
        "mapping set: CRM orders / dead letters after the copy".into(),
        format!("{} / {}", thousands(s.crm_orders as f64), s.dead_letters),
        "—".into(),
        "—".into(),
        format!("{} / 0", thousands(s.orders as f64)),
        verdict(s.crm_orders == s.orders as i64 && s.dead_letters == 0),
    ]);
    out
}

pub fn notes(_s: &Shop) -> String {
    "- mapping set: the raw legs move the same rows with no mapping at all (text in, text out, no keys, no indexes), so the ratio says what the mapping costs, not how close duplex gets to the hardware: duplex filters, maps and parses each row, upserts into keyed and indexed CRM tables, keeps every property value in `duplex.pivot` and recomputes the pivoted columns from it, and resolves the look-ups of every row it writes. The plain one-table copy is the snapshot line above.\n".into()
}

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
use super::{median, per_second, progress, seconds, thousands, verdict, Line};

/// Targets (issue 19): the mapped copy at this share of the slower raw read, and the stream
/// this many times as fast as the shop's one connection writing the orders.
const TARGET_COPY_RATIO: f64 = 0.15;
const TARGET_STREAM_RATIO: f64 = 1.5;
/// Interleaved rounds of each measurement (raw, duplex, raw, duplex, …); ratios use medians.
const RUNS: usize = 3;

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
    /// Each round's raw read, raw write and `duplex snapshot`, in the order run.
    selects: Vec<Duration>,
    copies: Vec<Duration>,
    duplexes: Vec<Duration>,
    /// CPU split of the last `duplex snapshot`.
    copy_cpu: String,
    /// (table, rows, seconds) from the last snapshot's reports.
    reports: Vec<(String, i64, f64)>,
    crm_orders: i64,
    dead_letters: i64,
    /// Orders written as their own transactions while duplex was stopped in each round, and
    /// the last round's rows.
    stream_orders: usize,
    stream_rows: i64,
    /// Each round's MariaDB taking those transactions (one connection).
    writes: Vec<Duration>,
    /// Each round's `duplex run` from spawn to the last order visible.
    streams: Vec<Duration>,
    /// CPU split of the last catch-up.
    stream_cpu: String,
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
    let buffers = raw_tables(&mut my, &pg).await;

    let files = shop::mapping_files();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let work = Workdir::new(&dbs, "shopbench", "Asia/Almaty", &refs);
    work.setup();

    // The copy: interleaved rounds (raw read, raw write, duplex, raw read, …); rounds after the
    // first empty the CRM, the pivot and the copy progress, so each copies all into empty tables.
    let mut rows = Vec::new();
    let (mut selects, mut copies, mut duplexes) = (Vec::new(), Vec::new(), Vec::new());
    let (mut reports, mut copy_cpu) = (Vec::new(), String::new());
    for round in 0..RUNS {
        let (r, select) = raw_read(&mut my).await;
        rows = r;
        selects.push(select);
        copies.push(raw_write(&pg, &buffers).await);
        if round > 0 {
            pg.batch_execute(
                "TRUNCATE orders, order_items, products, sellers, users, cities, order_statuses, \
                 duplex.pivot, duplex.newest, duplex.dead_letter, duplex.snapshot CASCADE",
            )
            .await
            .expect("empty the CRM for the next round");
        }
        let (took, cpu, r) = snapshot(&work).await;
        duplexes.push(took);
        (copy_cpu, reports) = (cpu, r);
    }
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

    // The stream: new orders saved the way Bitrix saves them (one transaction each: the order,
    // its basket rows, its properties) while duplex is stopped; then `duplex run` catches up.
    // Interleaved rounds of new orders (write, catch up, write, …).
    let stream_orders = (orders / 6).max(1000);
    // The rounds' TRUNCATEs of the CRM reset the bench; they are no change for Bitrix, and
    // `orders` is `both`: duplex refuses to follow a TRUNCATE of it into MySQL (and stops, as it
    // should). With duplex stopped, the slot is moved past them and past the three copies,
    // whose rows are duplex's own (the reverse direction would read and drop them during the
    // measured catch-ups).
    pg.execute(
        "SELECT pg_replication_slot_advance($1, pg_current_wal_lsn())",
        &[&duplex::model::slot_name("shopbench")],
    )
    .await
    .expect("move the slot past the bench's resets of the CRM");
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(99);
    let (mut writes, mut streams) = (Vec::new(), Vec::new());
    let (mut stream_rows, mut written_rows, mut stream_cpu) = (0i64, 0i64, String::new());
    for _ in 0..RUNS {
        progress(&format!(
            "shop: writing {stream_orders} orders, one transaction each (duplex stopped)"
        ));
        stream_rows = 0;
        let started = Instant::now();
        for _ in 0..stream_orders {
            let mut batch = shop::OrderBatch::default();
            shop::order_rows(&mut rng, &mut state, &mut batch, None);
            stream_rows += (batch.orders.len() + batch.baskets.len() + batch.props.len()) as i64;
            my.query_drop("START TRANSACTION").await.expect("begin");
            batch.write(&mut my).await;
            my.query_drop("COMMIT").await.expect("commit");
        }
        writes.push(started.elapsed());
        written_rows += stream_rows;
        let last = state.orders.last().copied().unwrap_or_default();
        let (took, cpu) = catch_up(&work, &pg, last).await;
        streams.push(took);
        stream_cpu = cpu;
    }
    let stream_dead = one("SELECT count(*) FROM duplex.dead_letter").await;
    let stream_items = one("SELECT count(*) FROM order_items WHERE order_id IS NULL").await;
    let verify = if super::env_flag("BENCH_VERIFY", true) {
        let sources: Vec<&str> = rows.iter().map(|(t, _)| t.as_str()).collect();
        let total: i64 = rows.iter().map(|(_, n)| n).sum::<i64>() + written_rows;
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
        writes,
        streams,
        stream_cpu,
        stream_dead,
        stream_items,
        orders,
        rows,
        selects,
        copies,
        duplexes,
        copy_cpu,
        reports,
        crm_orders,
        dead_letters,
    }
}

/// Creates the raw write's plain text tables and returns each table's COPY text: (table,
/// column list, rows).
async fn raw_tables(
    my: &mut mysql_async::Conn,
    pg: &tokio_postgres::Client,
) -> Vec<(String, String, bytes::Bytes)> {
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
    buffers
}

/// Raw read: `SELECT *` of every source table over the binary protocol: ((table, rows), time).
async fn raw_read(my: &mut mysql_async::Conn) -> (Vec<(String, i64)>, Duration) {
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
    (rows, started.elapsed())
}

/// Raw write: the same rows as text COPY into the emptied plain tables.
async fn raw_write(
    pg: &tokio_postgres::Client,
    buffers: &[(String, String, bytes::Bytes)],
) -> Duration {
    progress("shop: raw write (text COPY of the same rows)");
    let names: Vec<String> = buffers.iter().map(|(t, _, _)| format!("raw_{t}")).collect();
    pg.batch_execute(&format!("TRUNCATE {}", names.join(", ")))
        .await
        .expect("empty the raw tables");
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
    started.elapsed()
}

/// `duplex snapshot` through the mapping set, to its exit: (time, CPU split, (table, rows,
/// seconds) from its reports).
async fn snapshot(work: &Workdir) -> (Duration, String, Vec<(String, i64, f64)>) {
    progress("shop: duplex snapshot through mappings/bitrix");
    let log_before = work.log().len();
    let mut split = String::new();
    let (took, ..) = super::snapshot::duplex_snapshot(work, &["snapshot"], &mut split).await;
    let log = work.log();
    let out = &log[log_before..];
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
    (took, split, reports)
}

/// `duplex run` from spawn until order `last` is in the CRM: (time, CPU split).
async fn catch_up(work: &Workdir, pg: &tokio_postgres::Client, last: i64) -> (Duration, String) {
    progress("shop: duplex run catching up");
    let started = Instant::now();
    let mut child = work.start();
    let cpu_start = super::cpu::sample(child.id());
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
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!(
                "duplex run exited ({status}) before catching up with the shop's stream:\n{}",
                work.log()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "duplex did not catch up with the shop's stream:\n{}",
            work.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    let cpu = cpu_start.until(&super::cpu::sample(child.id()));
    super::support::harness::terminate(&mut child, Duration::from_secs(30));
    progress(&format!("shop: caught up in {:.1} s", took.as_secs_f64()));
    (took, cpu)
}

pub fn lines(s: &Shop) -> Vec<Line> {
    let total = s.total_rows();
    let (select, copy, duplex) = (median(&s.selects), median(&s.copies), median(&s.duplexes));
    let rate = per_second(total, duplex);
    let slower = per_second(total, select.max(copy));
    let ratio = rate / slower.max(1e-9);
    let mut out = vec![[
        format!(
            "mapping set: `duplex snapshot` of a generated shop through mappings/bitrix ({} orders; {} rows in 11 tables), median of {RUNS} interleaved runs",
            thousands(s.orders as f64),
            thousands(total as f64)
        ),
        format!(
            "{} rows/s ({:.1} s; runs {})",
            thousands(rate),
            duplex.as_secs_f64(),
            seconds(&s.duplexes)
        ),
        format!(
            "SELECT * {} rows/s ({:.1} s; runs {}); text COPY {} rows/s ({:.1} s; runs {})",
            thousands(per_second(total, select)),
            select.as_secs_f64(),
            seconds(&s.selects),
            thousands(per_second(total, copy)),
            copy.as_secs_f64(),
            seconds(&s.copies)
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
    let (stream, write) = (median(&s.streams), median(&s.writes));
    let rate = per_second(s.stream_rows, stream);
    let source = per_second(s.stream_rows, write);
    out.push([
        format!(
            "mapping set: stream catch-up, {} orders saved as Bitrix does (order + basket + properties, one txn each; {} rows), median of {RUNS} interleaved runs",
            thousands(s.stream_orders as f64),
            thousands(s.stream_rows as f64)
        ),
        format!(
            "{} rows/s, {} orders/s ({:.1} s; runs {})",
            thousands(rate),
            thousands(s.stream_orders as f64 / stream.as_secs_f64().max(1e-9)),
            stream.as_secs_f64(),
            seconds(&s.streams)
        ),
        format!(
            "MariaDB taking those txns: {} rows/s ({:.1} s, 1 connection; runs {})",
            thousands(source),
            write.as_secs_f64(),
            seconds(&s.writes)
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

pub fn notes(s: &Shop) -> String {
    format!("- CPU, % of one core (2 cores = 200 %), mapping set, last round: copy (spawn → exit) {}; stream catch-up (spawn → last order visible) {}.\n", s.copy_cpu, s.stream_cpu)
    + "- mapping set: the raw legs move the same rows with no mapping at all (text in, text out, no keys, no indexes), so the ratio says what the mapping costs, not how close duplex gets to the hardware: duplex filters, maps and parses each row, upserts into keyed and indexed CRM tables, keeps every property value in `duplex.pivot` and recomputes the pivoted columns from it, and resolves the look-ups of every row it writes. The plain one-table copy is the snapshot line above. Stream rounds each write new orders (duplex stopped) and then catch up; copy rounds after the first empty the CRM tables, `duplex.pivot` and the copy progress first.\n"
}

//! The cost of TLS: the MariaDB → PostgreSQL catch-up of `BENCH_TLS_ROWS` `b_sale_order` rows
//! (default 200,000) with both sides on `sslmode = "verify-full"` (binlog stream, PostgreSQL
//! writes, TLSv1.3 against the test CA), next to the same catch-up in plain text, on fresh
//! databases each time; medians of 3 interleaved runs of each. `BENCH_TLS=0` skips it.

use std::time::Duration;

use super::support::harness::Workdir;
use super::support::{self};
use super::{
    catch_up, create_tables, median, per_second, progress, thousands, write_orders, Line,
    Replicator, BASKET, ORDER, PROPS_VALUE, STREAM_STARTED,
};

pub struct Tls {
    rows: i64,
    plain: Vec<Duration>,
    tls: Vec<Duration>,
}

async fn once(rows: i64, tls: bool) -> Duration {
    let dbs = support::fresh_dbs("bench_tls").await;
    let pg = dbs.pg().await;
    create_tables(&dbs, &pg).await;
    let mappings = [ORDER.mapping(), BASKET.mapping(), PROPS_VALUE.mapping()].join("\n");
    let work = Workdir::new(&dbs, "benchtls", "UTC", &[("sale.toml", &mappings)]);
    work.append_config("[snapshot]\non_start = false\n");
    if tls {
        let ca = support::servers().tls_dir.join("ca.pem");
        let text = std::fs::read_to_string(&work.config)
            .expect("the config")
            .replace(
                "host = \"127.0.0.1\"",
                &format!(
                    "host = \"localhost\"\nsslmode = \"verify-full\"\nsslrootcert = \"{}\"",
                    ca.display()
                ),
            );
        std::fs::write(&work.config, text).expect("the config");
    }
    work.setup();
    write_orders(&dbs, rows).await;
    let mut duplex = Replicator::new(work, &[STREAM_STARTED], false);
    let (elapsed, _) = catch_up(&mut duplex, &pg, rows).await;
    if tls {
        let encrypted: bool = pg
            .query_one(
                "SELECT bool_and(s.ssl) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
                 WHERE a.application_name LIKE 'duplex%'",
                &[],
            )
            .await
            .expect("pg_stat_ssl")
            .get::<_, Option<bool>>(0)
            .unwrap_or(false);
        assert!(encrypted, "duplex's PostgreSQL sessions are not encrypted");
    }
    duplex.stop();
    elapsed
}

pub async fn run(rows: i64) -> Tls {
    let mut out = Tls {
        rows,
        plain: Vec::new(),
        tls: Vec::new(),
    };
    for round in 1..=3 {
        progress(&format!("tls: round {round} of 3, plain"));
        out.plain.push(once(rows, false).await);
        progress(&format!("tls: round {round} of 3, verify-full"));
        out.tls.push(once(rows, true).await);
    }
    out
}

pub fn lines(t: &Tls) -> Vec<Line> {
    let (plain, tls) = (median(&t.plain), median(&t.tls));
    let ratio = per_second(t.rows, tls) / per_second(t.rows, plain).max(1e-9);
    vec![[
        format!(
            "TLS: catch-up of {} rows with both sides on verify-full (TLSv1.3), medians of 3",
            thousands(t.rows as f64)
        ),
        format!(
            "{} rows/s ({:.1} s)",
            thousands(per_second(t.rows, tls)),
            tls.as_secs_f64()
        ),
        format!(
            "plain text, same run: {} rows/s ({:.1} s)",
            thousands(per_second(t.rows, plain)),
            plain.as_secs_f64()
        ),
        format!("{ratio:.2} of plain"),
        "informational".into(),
        "—".into(),
    ]]
}

//! Property test of the PostgreSQL binary encoder against PostgreSQL itself: thousands of random
//! values are encoded by duplex, sent as binary parameters, and compared with what PostgreSQL
//! makes of the same value given as text (its own parser is the oracle).

mod support;

use duplex::model::value::{Date, DateTime};
use duplex::model::{TargetKind, Value};
use duplex::sink::postgres::encode::{encode, Cell};
use rand::{RngExt, SeedableRng};

const N: usize = 3000;

fn random_decimal(rng: &mut impl rand::Rng) -> String {
    let int_digits = rng.random_range(0..=28);
    let frac_digits = rng.random_range(0..=28);
    let mut s = String::new();
    if rng.random_bool(0.5) {
        s.push('-');
    }
    if int_digits == 0 {
        s.push('0');
    }
    for i in 0..int_digits {
        // Leading zeros now and then, and runs of zeros that make whole zero groups.
        let d = if rng.random_bool(0.3) {
            0
        } else {
            rng.random_range(0..10)
        };
        if i == 0 && d == 0 && rng.random_bool(0.5) {
            s.push('0');
        } else {
            s.push(char::from(b'0' + d));
        }
    }
    if frac_digits > 0 {
        s.push('.');
        for _ in 0..frac_digits {
            let d = if rng.random_bool(0.3) {
                0
            } else {
                rng.random_range(0..10)
            };
            s.push(char::from(b'0' + d));
        }
    }
    s
}

fn random_datetime(rng: &mut impl rand::Rng, years: std::ops::RangeInclusive<u16>) -> DateTime {
    let year = rng.random_range(years);
    let month = rng.random_range(1..=12u8);
    let dim = chrono::NaiveDate::from_ymd_opt(year as i32, month as u32 % 12 + 1, 1)
        .map(|d| d.pred_opt().unwrap())
        .unwrap_or_else(|| chrono::NaiveDate::from_ymd_opt(year as i32, 12, 31).unwrap());
    let dim = if month == 12 {
        31
    } else {
        chrono::Datelike::day(&dim) as u8
    };
    DateTime {
        date: Date {
            year,
            month,
            day: rng.random_range(1..=dim),
        },
        hour: rng.random_range(0..24),
        minute: rng.random_range(0..60),
        second: rng.random_range(0..60),
        micro: if rng.random_bool(0.5) {
            0
        } else {
            rng.random_range(0..1_000_000)
        },
    }
}

/// Sends each value encoded for `kind` and asks PostgreSQL whether it equals `oracle_sql($2)`,
/// where $2 is the same value as text.
async fn check(
    client: &tokio_postgres::Client,
    kind: TargetKind,
    pg_type: &str,
    oracle: &str,
    cases: Vec<(Value, String)>,
) {
    let oracle = oracle.replace("$2", "($2::text)");
    let sql = format!("SELECT ($1::{pg_type} IS NOT DISTINCT FROM {oracle}), $1::{pg_type}::text");
    let stmt = client.prepare(&sql).await.unwrap();
    let mut failures = Vec::new();
    for (v, text) in &cases {
        let mut buf = Vec::new();
        let not_null = encode(v, &kind, chrono_tz::Asia::Almaty, &mut buf)
            .unwrap_or_else(|e| panic!("encode {v:?}: {e}"));
        let cell = Cell(not_null.then_some(buf.as_slice()));
        let row = client
            .query_one(&stmt, &[&cell, &text.as_str()])
            .await
            .unwrap_or_else(|e| panic!("{v:?}: {e}"));
        let same: bool = row.get(0);
        if !same {
            failures.push(format!(
                "{v:?} ({text}) arrived as {:?}",
                row.get::<_, Option<String>>(1)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} {pg_type} values differ:\n{}",
        failures.len(),
        cases.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_values_encode_exactly_as_postgres_parses_them() {
    let dbs = support::fresh_dbs("encode").await;
    let client = dbs.pg().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261126);

    // numeric: exact, with scale kept (text comparison, as 1.50 and 1.5 are equal numerically).
    let cases = (0..N)
        .map(|_| {
            let d = random_decimal(&mut rng);
            (Value::Decimal(d.clone()), d)
        })
        .collect();
    check(
        &client,
        TargetKind::Numeric,
        "numeric",
        "$2::numeric",
        cases,
    )
    .await;
    let cases = (0..N)
        .map(|_| {
            let d = random_decimal(&mut rng);
            (Value::Decimal(d.clone()), d)
        })
        .collect();
    check(
        &client,
        TargetKind::Numeric,
        "numeric",
        "$2::numeric AND $1::numeric::text = $2::numeric::text",
        cases,
    )
    .await;

    // integers of every width and sign into numeric and int8.
    let cases = (0..N)
        .map(|_| {
            let u: u64 = rng.random();
            (Value::UInt(u), u.to_string())
        })
        .collect();
    check(
        &client,
        TargetKind::Numeric,
        "numeric",
        "$2::numeric",
        cases,
    )
    .await;
    let cases = (0..N)
        .map(|_| {
            let i: i64 = rng.random();
            (Value::Int(i), i.to_string())
        })
        .collect();
    check(&client, TargetKind::Int8, "int8", "$2::int8", cases).await;

    // doubles: the shortest text that round-trips.
    let cases = (0..N)
        .map(|_| {
            let f = f64::from_bits(
                rng.random::<u64>() & !(0x7ffu64 << 52)
                    | (rng.random_range(0x300u64..0x4ffu64) << 52),
            );
            (Value::Double(f), format!("{f:e}"))
        })
        .collect();
    check(&client, TargetKind::Float8, "float8", "$2::float8", cases).await;

    // text: random Unicode without NUL.
    let cases = (0..N)
        .map(|_| {
            let len = rng.random_range(0..40);
            let s: String = (0..len)
                .map(|_| loop {
                    if let Some(c) = char::from_u32(rng.random_range(1..0x1FFFF)) {
                        break c;
                    }
                })
                .collect();
            (Value::Text(s.clone()), s)
        })
        .collect();
    check(&client, TargetKind::Text, "text", "$2::text", cases).await;

    // timestamp (zoneless) and date over the whole calendar PostgreSQL shares with MySQL.
    let cases = (0..N)
        .map(|_| {
            let dt = random_datetime(&mut rng, 1000..=9999);
            (Value::DateTime(dt), dt.to_string())
        })
        .collect();
    check(
        &client,
        TargetKind::Timestamp,
        "timestamp",
        "$2::timestamp",
        cases,
    )
    .await;
    let cases = (0..N)
        .map(|_| {
            let dt = random_datetime(&mut rng, 1000..=9999);
            (Value::Date(dt.date), dt.date.to_string())
        })
        .collect();
    check(&client, TargetKind::Date, "date", "$2::date", cases).await;

    // timestamptz: Bitrix wall time read in Asia/Almaty, compared with PostgreSQL's own
    // AT TIME ZONE, including the hour that happened twice on 2024-02-29 (UTC+6 → UTC+5) and
    // the old daylight-saving years.
    let mut cases: Vec<(Value, String)> = (0..N)
        .map(|_| {
            let dt = random_datetime(&mut rng, 1970..=2037);
            (Value::DateTime(dt), dt.to_string())
        })
        .collect();
    for minute in [0, 30, 59] {
        let dt = DateTime {
            date: Date {
                year: 2024,
                month: 2,
                day: 29,
            },
            hour: 23,
            minute,
            second: 0,
            micro: 0,
        };
        cases.push((Value::DateTime(dt), dt.to_string()));
    }
    check(
        &client,
        TargetKind::Timestamptz,
        "timestamptz",
        "($2::timestamp AT TIME ZONE 'Asia/Almaty')",
        cases,
    )
    .await;

    // time and interval (MySQL TIME spans ±838:59:59).
    let cases = (0..N)
        .map(|_| {
            let us: i64 = rng.random_range(
                -(838 * 3600 + 3599) * 1_000_000i64..=(838 * 3600 + 3599) * 1_000_000,
            );
            (Value::Time(us), duplex::model::value::format_time(us))
        })
        .collect();
    check(
        &client,
        TargetKind::Interval,
        "interval",
        "$2::interval",
        cases,
    )
    .await;
}

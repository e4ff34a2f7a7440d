//! Every PostgreSQL type the CRM uses reaches the mapped MariaDB column with edge values:
//! (PostgreSQL type, MariaDB type, value written in PostgreSQL, text MariaDB shows).

mod support;

use std::time::Duration;

use mysql_async::prelude::Queryable;
use support::harness::{mysql_rows, stop_cleanly, wait_for, Workdir};

struct Case {
    name: &'static str,
    pg: &'static str,
    mysql: &'static str,
    values: Vec<(&'static str, Option<&'static str>)>,
}

fn cases() -> Vec<Case> {
    let c = |name, pg, mysql, values| Case {
        name,
        pg,
        mysql,
        values,
    };
    vec![
        c(
            "i2",
            "smallint",
            "smallint",
            vec![
                ("-32768", Some("-32768")),
                ("32767", Some("32767")),
                ("NULL", None),
            ],
        ),
        c(
            "i4",
            "integer",
            "int",
            vec![
                ("-2147483648", Some("-2147483648")),
                ("2147483647", Some("2147483647")),
            ],
        ),
        c(
            "i8",
            "bigint",
            "bigint",
            vec![
                ("-9223372036854775808", Some("-9223372036854775808")),
                ("9223372036854775807", Some("9223372036854775807")),
            ],
        ),
        c(
            "i8u",
            "bigint",
            "bigint unsigned",
            vec![("9223372036854775807", Some("9223372036854775807"))],
        ),
        c(
            "n184",
            "numeric(18,4)",
            "decimal(18,4)",
            vec![
                ("12345678901234.5678", Some("12345678901234.5678")),
                ("-0.0001", Some("-0.0001")),
            ],
        ),
        c(
            "n",
            "numeric",
            "decimal(65,30)",
            vec![(
                "12345678901234567890123456789012345.123456789012345678901234567890",
                Some("12345678901234567890123456789012345.123456789012345678901234567890"),
            )],
        ),
        c(
            "f8",
            "double precision",
            "double",
            vec![
                ("1.7976931348623157e308", Some("1.7976931348623157e308")),
                ("-0.5", Some("-0.5")),
            ],
        ),
        c(
            "b",
            "boolean",
            "tinyint(1)",
            vec![("true", Some("1")), ("false", Some("0"))],
        ),
        c(
            "t",
            "text",
            "varchar(255) character set utf8mb4",
            vec![("'🌹 розы'", Some("🌹 розы")), ("''", Some(""))],
        ),
        c(
            "vc",
            "varchar(50)",
            "varchar(50) character set cp1251",
            vec![("'Букет «Нежность»'", Some("Букет «Нежность»"))],
        ),
        c(
            "u",
            "uuid",
            "char(36)",
            vec![(
                "'01234567-89ab-cdef-0123-456789abcdef'",
                Some("01234567-89ab-cdef-0123-456789abcdef"),
            )],
        ),
        c(
            "ub",
            "uuid",
            "binary(16)",
            vec![(
                "'01234567-89ab-cdef-0123-456789abcdef'",
                Some("0123456789ABCDEF0123456789ABCDEF"),
            )],
        ),
        c(
            "d",
            "date",
            "date",
            vec![
                ("'2024-02-29'", Some("2024-02-29")),
                ("'1000-01-01'", Some("1000-01-01")),
            ],
        ),
        c(
            "ts",
            "timestamp(6)",
            "datetime(6)",
            vec![(
                "'2024-03-01 00:30:00.123456'",
                Some("2024-03-01 00:30:00.123456"),
            )],
        ),
        c(
            "tz",
            "timestamptz",
            "datetime(6)",
            vec![
                (
                    "'2024-06-01 07:00:00.5+00'",
                    Some("2024-06-01 12:00:00.500000"),
                ),
                (
                    "'2023-06-01 06:00:00+00'",
                    Some("2023-06-01 12:00:00.000000"),
                ),
            ],
        ),
        c(
            "tzt",
            "timestamptz",
            "timestamp(3) null",
            vec![(
                "'2024-01-01 00:00:00.5+00'",
                Some("2024-01-01 00:00:00.500"),
            )],
        ),
        c(
            "tm",
            "time",
            "time(6)",
            vec![("'23:59:59.999999'", Some("23:59:59.999999"))],
        ),
        c(
            "iv",
            "interval",
            "time",
            vec![
                ("'-838:59:59'", Some("-838:59:59")),
                ("'1 day 02:03:04'", Some("26:03:04")),
            ],
        ),
        c(
            "j",
            "jsonb",
            "json",
            vec![(r#"'{"a": [1, 2.5, "x"]}'"#, Some(r#"{"a": [1, 2.5, "x"]}"#))],
        ),
        c("by", "bytea", "blob", vec![("'\\x00ff10'", Some("00FF10"))]),
        c(
            "bt",
            "bit varying(10)",
            "bit(10)",
            vec![("B'1000000001'", Some("1000000001"))],
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crm_type_round_trips_into_the_mapped_mysql_column() {
    let dbs = support::fresh_dbs("rtypes").await;
    let cases = cases();
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    let my_cols: Vec<String> = cases
        .iter()
        .map(|c| format!("c_{} {}", c.name, c.mysql))
        .collect();
    my.query_drop(format!(
        "CREATE TABLE t (id int PRIMARY KEY, {})",
        my_cols.join(", ")
    ))
    .await
    .unwrap();
    let pg_cols: Vec<String> = cases
        .iter()
        .map(|c| format!("c_{} {}", c.name, c.pg))
        .collect();
    pg.batch_execute(&format!(
        "CREATE TABLE t (id integer PRIMARY KEY, {})",
        pg_cols.join(", ")
    ))
    .await
    .unwrap();
    let pipeline = support::harness::pipeline_name("r", &dbs);
    let work = Workdir::new(
        &dbs,
        &pipeline,
        "Asia/Almaty",
        &[(
            "t.toml",
            "[[table]]\nsource = \"t\"\ntarget = \"t\"\ndirection = \"both\"\ncolumns = \"all\"\n",
        )],
    );
    work.setup();
    let mut child = work.start();

    let mut expected = Vec::new();
    let mut id = 0;
    for c in &cases {
        for (lit, want) in &c.values {
            id += 1;
            pg.batch_execute(&format!(
                "INSERT INTO t (id, c_{}) VALUES ({id}, {lit})",
                c.name
            ))
            .await
            .unwrap_or_else(|e| panic!("insert {} {lit}: {e}", c.name));
            expected.push((id, c.name, *lit, want.map(str::to_string)));
        }
    }
    let total = id;
    wait_for(
        Duration::from_secs(60),
        "every row in MariaDB",
        &work,
        || async {
            let mut c = dbs.mysql().await;
            let n: Option<i64> = c.query_first("SELECT count(*) FROM t").await.unwrap();
            n == Some(total as i64)
        },
    )
    .await;
    let mut failures = Vec::new();
    for (id, name, lit, want) in &expected {
        let expr = match *name {
            "ub" | "by" => format!("HEX(c_{name})"),
            "bt" => format!("BIN(c_{name})"),
            _ => format!("c_{name}"),
        };
        let rows = mysql_rows(&mut my, &format!("SELECT {expr} FROM t WHERE id = {id}")).await;
        let got = rows[0][0].clone();
        let got = match (*name, got) {
            ("bt", Some(g)) => Some(format!("{g:0>10}")),
            (_, g) => g,
        };
        if &got != want {
            failures.push(format!(
                "{name}: wrote {lit}, MariaDB shows {got:?}, expected {want:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "type round-trip failures:\n{}",
        failures.join("\n")
    );
    stop_cleanly(&mut child, &work);
    let (ok, out) = work.run_cmd(&["teardown", "--yes"]);
    assert!(ok, "{out}");
}

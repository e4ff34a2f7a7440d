//! Every MySQL/MariaDB column type Bitrix uses reaches PostgreSQL with the right value:
//! a table of (MySQL type, PostgreSQL type, value written in MariaDB, text PostgreSQL shows).

mod support;

use std::time::Duration;

use mysql_async::prelude::Queryable;
use support::harness::{pg_count, pg_rows, stop_cleanly, wait_for, Workdir};

struct Case {
    name: &'static str,
    mysql: &'static str,
    pg: &'static str,
    /// (MySQL literal, expected `::text` in PostgreSQL with TimeZone=UTC; None = NULL)
    values: Vec<(&'static str, Option<&'static str>)>,
}

fn cases() -> Vec<Case> {
    let c = |name, mysql, pg, values| Case {
        name,
        mysql,
        pg,
        values,
    };
    vec![
        c(
            "ti",
            "tinyint",
            "smallint",
            vec![
                ("-128", Some("-128")),
                ("127", Some("127")),
                ("0", Some("0")),
                ("NULL", None),
            ],
        ),
        c(
            "tiu",
            "tinyint unsigned",
            "smallint",
            vec![("255", Some("255")), ("0", Some("0"))],
        ),
        c(
            "si",
            "smallint",
            "smallint",
            vec![("-32768", Some("-32768")), ("32767", Some("32767"))],
        ),
        c(
            "siu",
            "smallint unsigned",
            "integer",
            vec![("65535", Some("65535"))],
        ),
        c(
            "mi",
            "mediumint",
            "integer",
            vec![("-8388608", Some("-8388608")), ("8388607", Some("8388607"))],
        ),
        c(
            "miu",
            "mediumint unsigned",
            "integer",
            vec![("16777215", Some("16777215"))],
        ),
        c(
            "i",
            "int",
            "integer",
            vec![
                ("-2147483648", Some("-2147483648")),
                ("2147483647", Some("2147483647")),
            ],
        ),
        c(
            "iu",
            "int unsigned",
            "bigint",
            vec![("4294967295", Some("4294967295"))],
        ),
        c(
            "bi",
            "bigint",
            "bigint",
            vec![
                ("-9223372036854775808", Some("-9223372036854775808")),
                ("9223372036854775807", Some("9223372036854775807")),
            ],
        ),
        c(
            "biu",
            "bigint unsigned",
            "numeric(20,0)",
            vec![
                ("18446744073709551615", Some("18446744073709551615")),
                ("0", Some("0")),
            ],
        ),
        c(
            "d184",
            "decimal(18,4)",
            "numeric(18,4)",
            vec![
                ("12345678901234.5678", Some("12345678901234.5678")),
                ("-0.0001", Some("-0.0001")),
                ("0", Some("0.0000")),
            ],
        ),
        c(
            "d182",
            "decimal(18,2)",
            "numeric(18,2)",
            vec![
                ("-9999999999999999.99", Some("-9999999999999999.99")),
                ("10000", Some("10000.00")),
            ],
        ),
        c(
            "d6530",
            "decimal(65,30)",
            "numeric(65,30)",
            vec![
                (
                    "12345678901234567890123456789012345.123456789012345678901234567890",
                    Some("12345678901234567890123456789012345.123456789012345678901234567890"),
                ),
                (
                    "-0.000000000000000000000000000001",
                    Some("-0.000000000000000000000000000001"),
                ),
            ],
        ),
        c(
            "dbl",
            "double",
            "double precision",
            vec![
                ("1.7976931348623157e308", Some("1.7976931348623157e+308")),
                ("-0.5", Some("-0.5")),
                ("3.14159", Some("3.14159")),
            ],
        ),
        c(
            "dbl184",
            "double(18,4)",
            "numeric(18,4)",
            vec![("2.5", Some("2.5000"))],
        ),
        c(
            "flt",
            "float",
            "real",
            vec![("1.5", Some("1.5")), ("-3.25", Some("-3.25"))],
        ),
        c(
            "u3",
            "varchar(255) character set utf8mb3",
            "text",
            vec![("'Привет, мир'", Some("Привет, мир")), ("''", Some(""))],
        ),
        c(
            "u4",
            "varchar(255) character set utf8mb4",
            "text",
            vec![("'🌹 розы 💐'", Some("🌹 розы 💐"))],
        ),
        c(
            "cp",
            "varchar(255) character set cp1251",
            "text",
            vec![("'Букет «Нежность» — №5'", Some("Букет «Нежность» — №5"))],
        ),
        c(
            "l1",
            "varchar(255) character set latin1",
            "text",
            vec![("'café €'", Some("café €"))],
        ),
        c(
            "yn",
            "char(1)",
            "character(1)",
            vec![("'Y'", Some("Y")), ("'N'", Some("N"))],
        ),
        c(
            "mt",
            "mediumtext character set cp1251",
            "text",
            vec![("REPEAT('Ж', 70000)", None)],
        ),
        c(
            "dt",
            "date",
            "date",
            vec![
                ("'2024-02-29'", Some("2024-02-29")),
                ("'0000-00-00'", None),
                ("'1000-01-01'", Some("1000-01-01")),
            ],
        ),
        c(
            "dtm",
            "datetime",
            "timestamp",
            vec![
                ("'2024-03-01 00:30:00'", Some("2024-03-01 00:30:00")),
                ("'0000-00-00 00:00:00'", None),
            ],
        ),
        c(
            "dtz",
            "datetime(6)",
            "timestamptz",
            vec![
                (
                    "'2024-06-01 12:00:00.123456'",
                    Some("2024-06-01 07:00:00.123456+00"),
                ),
                ("'2023-06-01 12:00:00'", Some("2023-06-01 06:00:00+00")),
                ("'0000-00-00 00:00:00'", None),
            ],
        ),
        c(
            "ts",
            "timestamp(3) null",
            "timestamptz",
            vec![("'2024-01-01 00:00:00.5'", Some("2024-01-01 00:00:00.5+00"))],
        ),
        c(
            "tm",
            "time",
            "interval",
            vec![
                ("'-838:59:59'", Some("-838:59:59")),
                ("'12:34:56'", Some("12:34:56")),
            ],
        ),
        c(
            "tm6",
            "time(6)",
            "time",
            vec![("'23:59:59.999999'", Some("23:59:59.999999"))],
        ),
        c(
            "yr",
            "year",
            "smallint",
            vec![("2024", Some("2024")), ("0", Some("0"))],
        ),
        c(
            "en",
            "enum('new','paid','done')",
            "text",
            vec![("'paid'", Some("paid")), ("'done'", Some("done"))],
        ),
        c(
            "st",
            "set('a','b','c')",
            "text",
            vec![("'a,c'", Some("a,c")), ("''", Some(""))],
        ),
        c(
            "js",
            "json",
            "jsonb",
            vec![(
                r#"'{"a": [1, 2.5, "x"], "b": null}'"#,
                Some(r#"{"a": [1, 2.5, "x"], "b": null}"#),
            )],
        ),
        c(
            "bt",
            "bit(10)",
            "bit varying(10)",
            vec![
                ("b'1000000001'", Some("1000000001")),
                ("b'0'", Some("0000000000")),
            ],
        ),
        c(
            "b1",
            "bit(1)",
            "boolean",
            vec![("b'1'", Some("true")), ("b'0'", Some("false"))],
        ),
        c(
            "bl",
            "blob",
            "bytea",
            vec![("x'00FF10'", Some("\\x00ff10")), ("''", Some("\\x"))],
        ),
        c(
            "vb",
            "varbinary(16)",
            "bytea",
            vec![("x'DEADBEEF'", Some("\\xdeadbeef"))],
        ),
        c(
            "bu",
            "binary(16)",
            "uuid",
            vec![(
                "UNHEX('0123456789abcdef0123456789abcdef')",
                Some("01234567-89ab-cdef-0123-456789abcdef"),
            )],
        ),
        c(
            "cu",
            "char(36)",
            "uuid",
            vec![(
                "'123e4567-e89b-12d3-a456-426614174000'",
                Some("123e4567-e89b-12d3-a456-426614174000"),
            )],
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bitrix_type_round_trips_into_the_right_postgres_type() {
    let dbs = support::fresh_dbs("types").await;
    let cases = cases();
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    let my_cols: Vec<String> = cases
        .iter()
        .map(|c| format!("c_{} {}", c.name, c.mysql))
        .collect();
    my.query_drop(format!(
        "CREATE TABLE t (id int NOT NULL PRIMARY KEY, {}) ENGINE=InnoDB",
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

    let work = Workdir::new(
        &dbs,
        "types",
        "Asia/Almaty",
        &[(
            "t.toml",
            "[[table]]\nsource = \"t\"\ntarget = \"t\"\ncolumns = \"all\"\n",
        )],
    );
    work.setup();
    let mut child = work.start();

    // One row per (case, value), written in a few transactions while duplex streams.
    my.query_drop("SET time_zone = '+00:00'").await.unwrap();
    let mut expected = Vec::new();
    let mut id = 0;
    for c in &cases {
        for (lit, want) in &c.values {
            id += 1;
            my.query_drop(format!(
                "INSERT INTO t (id, c_{}) VALUES ({id}, {lit})",
                c.name
            ))
            .await
            .unwrap_or_else(|e| panic!("insert {} {lit}: {e}", c.name));
            let want = if c.name == "mt" {
                Some("Ж".repeat(70000))
            } else {
                want.map(str::to_string)
            };
            expected.push((id, c.name, *lit, want));
        }
    }
    let total = id as i64;
    wait_for(
        Duration::from_secs(60),
        "every row in PostgreSQL",
        &work,
        || async { pg_count(&pg, "t").await == total },
    )
    .await;

    pg.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    let mut failures = Vec::new();
    for (id, name, lit, want) in &expected {
        let rows = pg_rows(
            &pg,
            &format!("SELECT c_{name}::text FROM t WHERE id = {id}"),
        )
        .await;
        let got = rows[0][0].clone();
        if &got != want {
            failures.push(format!(
                "{name}: wrote {lit}, PostgreSQL shows {got:?}, expected {want:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "type round-trip failures:\n{}",
        failures.join("\n")
    );

    // Updates and deletes of typed rows by key.
    my.query_drop("UPDATE t SET c_u4 = 'обновлено ✓', c_biu = 18446744073709551614 WHERE id = 1")
        .await
        .unwrap();
    my.query_drop("DELETE FROM t WHERE id = 2").await.unwrap();
    wait_for(
        Duration::from_secs(30),
        "update and delete applied",
        &work,
        || async {
            let r = pg_rows(&pg, "SELECT c_u4, c_biu::text FROM t WHERE id = 1").await;
            r == vec![vec![
                Some("обновлено ✓".to_string()),
                Some("18446744073709551614".to_string()),
            ]] && pg_count(&pg, "t").await == total - 1
        },
    )
    .await;

    stop_cleanly(&mut child, &work);
}

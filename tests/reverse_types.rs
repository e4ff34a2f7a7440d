//! Every PostgreSQL type the CRM uses reaches the mapped MariaDB column with edge values:
//! (PostgreSQL type, MariaDB type, value written in PostgreSQL, text MariaDB shows).

mod support;

use std::time::Duration;

use mysql_async::prelude::Queryable;
use support::harness::{mysql_rows, stop_cleanly, total, verify, wait_for, Workdir};

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

/// MariaDB's count of `LOAD DATA` statements run.
async fn loads(my: &mut mysql_async::Conn) -> i64 {
    let rows = mysql_rows(my, "SHOW GLOBAL STATUS LIKE 'Com_load'").await;
    rows[0][1].as_deref().unwrap_or("0").parse().unwrap()
}

/// `duplex verify --json`: exit code and (equal, different + missing + extra, dead-lettered).
fn verify_counts(work: &Workdir) -> (i32, u64, u64, u64) {
    let (code, report) = verify(work, &[]);
    let sum = |field: &str| total(&report, field);
    (
        code,
        sum("equal"),
        sum("different") + sum("missing") + sum("extra"),
        sum("dead_lettered"),
    )
}

/// A run of new rows (one CRM transaction of hundreds of INSERTs) goes to MariaDB as one
/// `LOAD DATA LOCAL`, and what MariaDB holds is what the mapping makes of the CRM's rows
/// (`duplex verify`, which reads both sides and does not share the write path): tabs,
/// newlines, backslashes and Cyrillic in a cp1251 column, decimals, microsecond datetimes,
/// dates, doubles, times, enums and NULLs. A run of rows that exist already goes the
/// `INSERT … ON DUPLICATE KEY UPDATE` way (the load is rolled back); so does a run with a value
/// the column cannot hold, whose row becomes a dead letter, as without loading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_new_rows_is_loaded_and_reads_back_as_the_crm_wrote_it() {
    let dbs = support::fresh_dbs("rload").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    for t in ["r", "q", "s", "b"] {
        my.query_drop(format!(
            "CREATE TABLE {t} (id int PRIMARY KEY, name varchar(60) CHARACTER SET cp1251, \
             amount decimal(12,2), at datetime(6), day date, ratio double, dur time, \
             flag enum('Y','N'), note text, qty int unsigned)"
        ))
        .await
        .unwrap();
        pg.batch_execute(&format!(
            "CREATE TABLE {t} (id integer PRIMARY KEY, name text, amount numeric(12,2), \
             at timestamp, day date, ratio float8, dur time, flag text, note text, qty bigint)"
        ))
        .await
        .unwrap();
    }
    let mapping = |t: &str| {
        format!("[[table]]\nsource = \"{t}\"\ntarget = \"{t}\"\ndirection = \"reverse\"\ncolumns = \"all\"\n")
    };
    let (r, q, s3) = (mapping("r"), mapping("q"), mapping("s"));
    // Mapped both ways: the CRM's inserts carry conflict guards.
    let b = "[[table]]\nsource = \"b\"\ntarget = \"b\"\ndirection = \"both\"\ncolumns = \"all\"\n";
    let pipeline = support::harness::pipeline_name("rl", &dbs);
    let work = Workdir::new(
        &dbs,
        &pipeline,
        "Asia/Almaty",
        &[
            ("r.toml", r.as_str()),
            ("q.toml", q.as_str()),
            ("s.toml", s3.as_str()),
            ("b.toml", b),
        ],
    );
    work.setup();
    let mut child = work.start();
    wait_for(Duration::from_secs(60), "the stream", &work, || async {
        work.log()
            .contains("pipeline starting direction=\"pg_to_mysql\"")
    })
    .await;
    let before = loads(&mut my).await;
    let rows = |t: &str, from: i32, to: i32, qty: &str| {
        format!(
            "INSERT INTO {t} SELECT g, \
               CASE WHEN g % 5 = 0 THEN NULL ELSE 'Роза' || chr(9) || '№' || g || chr(10) || 'a\\b' END, \
               g * 1.25, timestamp '2026-01-01 08:00:00' + g * interval '1.000001 second', \
               date '2026-02-01' + g, g / 7.0, time '00:00:01' * g, \
               CASE WHEN g % 2 = 0 THEN 'Y' ELSE 'N' END, \
               CASE WHEN g % 3 = 0 THEN '' ELSE 'строка ' || repeat('x', g % 40) END, {qty} \
             FROM generate_series({from}, {to}) g"
        )
    };
    pg.batch_execute(&rows("r", 1, 500, "g")).await.unwrap();
    let count = |t: &'static str, n: i64| {
        let dbs = dbs.clone();
        move || {
            let dbs = dbs.clone();
            async move {
                let mut c = dbs.mysql().await;
                let got: Option<i64> = c
                    .query_first(format!("SELECT count(*) FROM {t}"))
                    .await
                    .unwrap();
                got == Some(n)
            }
        }
    };
    wait_for(
        Duration::from_secs(60),
        "500 rows in MariaDB",
        &work,
        count("r", 500),
    )
    .await;
    assert!(
        loads(&mut my).await > before,
        "the run of 500 new rows was not loaded"
    );
    let (code, equal, differ, dead) = verify_counts(&work);
    assert_eq!((code, equal, differ, dead), (0, 500, 0, 0));

    // The CRM changes every row in one transaction: a run of upserts of existing rows, which
    // the load does not insert; it is rolled back and the run written as upserts.
    let loaded = loads(&mut my).await;
    pg.batch_execute("UPDATE r SET qty = qty + 1000, note = note || '+'")
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(60),
        "the rewritten rows in MariaDB",
        &work,
        || async {
            let mut c = dbs.mysql().await;
            let got: Option<i64> = c
                .query_first("SELECT count(*) FROM r WHERE qty > 1000")
                .await
                .unwrap();
            got == Some(500)
        },
    )
    .await;
    assert!(
        loads(&mut my).await > loaded,
        "the run was not tried as a load"
    );
    let (code, equal, differ, dead) = verify_counts(&work);
    assert_eq!((code, equal, differ, dead), (0, 500, 0, 0));

    // A run with a row the shop refuses (a trigger's error) and a value the column clips (a
    // warning under Bitrix's sql_mode = ''): the load is rolled back for either, and the run
    // written as without loading: the refused row is a dead letter with the shop's reason, the
    // clipped value is what MariaDB's INSERT makes of it.
    my.query_drop(
        "CREATE TRIGGER q_refuse BEFORE INSERT ON q FOR EACH ROW \
         IF NEW.qty = 4242 THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by the shop'; END IF",
    )
    .await
    .unwrap();
    let loaded = loads(&mut my).await;
    pg.batch_execute(&rows(
        "q",
        1,
        300,
        "CASE g WHEN 150 THEN 4242 WHEN 151 THEN -1 ELSE g END",
    ))
    .await
    .unwrap();
    wait_for(
        Duration::from_secs(60),
        "299 rows in MariaDB",
        &work,
        count("q", 299),
    )
    .await;
    assert!(
        loads(&mut my).await > loaded,
        "the run was not tried as a load"
    );
    let dead_letter = mysql_rows(
        &mut my,
        "SELECT JSON_VALUE(row_data, '$.id'), reason FROM duplex.dead_letter WHERE target_table LIKE '%q'",
    )
    .await;
    assert_eq!(dead_letter.len(), 1, "{dead_letter:?}");
    assert!(
        dead_letter[0][0].as_deref() == Some("150")
            && dead_letter[0][1]
                .as_deref()
                .unwrap_or("")
                .contains("refused by the shop"),
        "{dead_letter:?}"
    );
    let clipped = mysql_rows(&mut my, "SELECT qty FROM q WHERE id = 151").await;
    assert_eq!(clipped[0][0].as_deref(), Some("0"));

    // The DBA turns LOCAL off (MySQL's own default); MariaDB applies it to new sessions, so
    // duplex is restarted. The run is written with INSERTs, and duplex says why it does not
    // load (MariaDB's error 4166).
    my.query_drop("SET GLOBAL local_infile = 0").await.unwrap();
    stop_cleanly(&mut child, &work);
    let mut child = work.start();
    pg.batch_execute(&rows("s", 1, 200, "g")).await.unwrap();
    wait_for(
        Duration::from_secs(60),
        "200 rows in MariaDB",
        &work,
        count("s", 200),
    )
    .await;
    my.query_drop("SET GLOBAL local_infile = 1").await.unwrap();
    assert!(
        work.log().contains("does not allow LOAD DATA LOCAL"),
        "{}",
        work.log()
    );
    // A table mapped both ways: the CRM's 200 new rows are loaded too (an insert of an absent
    // row meets no conflict), and read back the same on both sides.
    stop_cleanly(&mut child, &work);
    let mut child = work.start();
    let loaded = loads(&mut my).await;
    pg.batch_execute(&rows("b", 1, 200, "g")).await.unwrap();
    wait_for(
        Duration::from_secs(60),
        "200 rows in MariaDB",
        &work,
        count("b", 200),
    )
    .await;
    assert!(
        loads(&mut my).await > loaded,
        "the guarded run was not loaded"
    );
    let conflicts = mysql_rows(&mut my, "SELECT COUNT(*) FROM duplex.conflict").await;
    assert_eq!(conflicts[0][0].as_deref(), Some("0"));

    // Every row as the CRM wrote it, but the clipped one (a difference verify reports: MariaDB
    // holds 0 for the CRM's -1) and the refused one (a dead letter).
    let (code, equal, differ, dead) = verify_counts(&work);
    assert_eq!(
        (code, equal, differ, dead),
        (1, 500 + 298 + 200 + 200, 1, 1)
    );
    stop_cleanly(&mut child, &work);
    let (ok, out) = work.run_cmd(&["teardown", "--yes"]);
    assert!(ok, "{out}");
}

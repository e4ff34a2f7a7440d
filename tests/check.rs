//! `duplex check` and `duplex run` say what is wrong, in words an operator can act on: a mapping
//! error names file, line and key; an unsafe server setting names the setting and the fix.
//! This binary changes MariaDB's global settings, so it has its own servers (its own process)
//! and a single test.

mod support;

use mysql_async::prelude::Queryable;
use support::harness::Workdir;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mapping_errors_and_unsafe_settings_are_reported_with_the_fix() {
    let dbs = support::fresh_dbs("check").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop("CREATE TABLE b_sale_order (ID int PRIMARY KEY, PRICE decimal(18,4) NOT NULL, LID char(2) NOT NULL)")
        .await
        .unwrap();
    pg.batch_execute("CREATE TABLE orders (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), bitrix_order_id integer UNIQUE, total numeric(18,4), lid integer)")
        .await
        .unwrap();

    // A good mapping passes every check.
    let good = "[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\n\n[table.column]\nID = \"bitrix_order_id\"\nPRICE = \"total\"\n";
    let work = Workdir::new(&dbs, "check", "Asia/Almaty", &[("orders.toml", good)]);
    work.setup();
    let (ok, out) = work.run_cmd(&["check"]);
    assert!(ok, "check of a good setup failed:\n{out}");
    assert!(
        out.contains("ok    MySQL: binlog_format = ROW (needs ROW)"),
        "{out}"
    );
    assert!(
        out.contains("1 table(s) compiled against both schemas"),
        "{out}"
    );
    assert!(
        out.contains("ok    MySQL: a consistent snapshot with its binlog position (binlog."),
        "{out}"
    );

    // A mapping with a misspelt column, an impossible conversion and a bad key.
    let bad = "[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\n\n[table.column]\nID = \"bitrix_order_id\"\nPRCE = \"total\"\nLID = \"lid\"\n";
    let work_bad = Workdir::new(&dbs, "check", "Asia/Almaty", &[("orders.toml", bad)]);
    let (ok, out) = work_bad.run_cmd(&["check"]);
    assert!(!ok, "check passed a bad mapping:\n{out}");
    let file = work_bad.path().join("mappings/orders.toml");
    let f = file.display();
    assert!(
        out.contains(&format!("FAIL  mapping: {f}:7: key `table[0].column.PRCE`: column PRCE does not exist in source table {}.b_sale_order", dbs.mysql_db)),
        "{out}"
    );
    assert!(
        out.contains(&format!("FAIL  mapping: {f}:8: key `table[0].column.LID`: cannot convert text (utf8mb3) column LID (char(2)) to integer column public.orders.lid")),
        "{out}"
    );
    let (ok, out) = work_bad.run_cmd(&["run"]);
    assert!(!ok, "run started with a bad mapping");
    assert!(
        out.contains(&format!("{f}:7: key `table[0].column.PRCE`")),
        "{out}"
    );

    // A syntax-level mistake: an unknown key in a table entry.
    let typo = "[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\ncolums = \"all\"\n";
    let work_typo = Workdir::new(&dbs, "check", "Asia/Almaty", &[("orders.toml", typo)]);
    let (ok, out) = work_typo.run_cmd(&["check"]);
    assert!(!ok);
    let f = work_typo.path().join("mappings/orders.toml");
    assert!(
        out.contains(&format!(
            "{}:4: key `table[0].colums`: unknown field `colums`",
            f.display()
        )),
        "{out}"
    );

    // Unsafe server settings: statement-based logging and minimal row images.
    my.query_drop("SET GLOBAL binlog_format = 'STATEMENT'")
        .await
        .unwrap();
    my.query_drop("SET GLOBAL binlog_row_image = 'MINIMAL'")
        .await
        .unwrap();
    let (ok, out) = work.run_cmd(&["check"]);
    let (run_ok, run_out) = work.run_cmd(&["run"]);
    my.query_drop("SET GLOBAL binlog_format = 'ROW'")
        .await
        .unwrap();
    my.query_drop("SET GLOBAL binlog_row_image = 'FULL'")
        .await
        .unwrap();
    assert!(!ok, "check passed with binlog_format=STATEMENT:\n{out}");
    assert!(
        out.contains("FAIL  MySQL: binlog_format = STATEMENT (needs ROW)"),
        "{out}"
    );
    assert!(
        out.contains("fix: SET GLOBAL binlog_format = 'ROW'"),
        "{out}"
    );
    assert!(
        out.contains("FAIL  MySQL: binlog_row_image = MINIMAL (needs FULL)"),
        "{out}"
    );
    assert!(!run_ok, "run started with binlog_format=STATEMENT");
    assert!(
        run_out.contains("refusing to replicate from this MySQL server"),
        "{run_out}"
    );
    assert!(
        run_out.contains("binlog_format = STATEMENT (needs ROW)"),
        "{run_out}"
    );

    // Missing privileges: a user with SELECT only.
    my.query_drop("CREATE USER 'weak'@'%' IDENTIFIED BY 'weak-pw'")
        .await
        .unwrap();
    my.query_drop(format!(
        "GRANT SELECT ON `{}`.* TO 'weak'@'%'",
        dbs.mysql_db
    ))
    .await
    .unwrap();
    let text = std::fs::read_to_string(&work.config).unwrap();
    let weak_cfg = work.path().join("weak.toml");
    std::fs::write(
        &weak_cfg,
        text.replace(
            "user = \"duplex\"\npassword_env = \"DUPLEX_TEST_MYSQL_PASSWORD\"",
            "user = \"weak\"\npassword_env = \"WEAK_PW\"",
        ),
    )
    .unwrap();
    let out = std::process::Command::new(support::harness::duplex_bin())
        .args(["check", "-c"])
        .arg(&weak_cfg)
        .env("WEAK_PW", "weak-pw")
        .env(support::harness::PG_PW_ENV, &support::servers().pg_password)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        text.contains("FAIL  MySQL: privilege REPLICATION SLAVE"),
        "{text}"
    );
    assert!(
        text.contains("fix: GRANT REPLICATION SLAVE ON *.* TO 'weak'@'%'"),
        "{text}"
    );
    assert!(
        text.contains("FAIL  MySQL: privilege BINLOG MONITOR"),
        "{text}"
    );
    // Nor anything on duplex's own database, with the exact statement that grants it.
    assert!(
        text.contains(
            "fix: GRANT CREATE, ALTER, SELECT, INSERT, UPDATE, DELETE ON `duplex`.* TO 'weak'@'%';"
        ),
        "{text}"
    );

    // A config with an unknown key names its path.
    std::fs::write(
        work.path().join("typo.toml"),
        std::fs::read_to_string(&work.config)
            .unwrap()
            .replace("[metrics]", "[metrics]\nlisen = \"x\""),
    )
    .unwrap();
    let out = std::process::Command::new(support::harness::duplex_bin())
        .args(["check", "-c"])
        .arg(work.path().join("typo.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        text.contains("key `metrics.lisen`: unknown field `lisen`"),
        "{text}"
    );
}

//! `duplex check` tests every privilege `setup` and `run` will use, for the mapping set as
//! configured, on both sides: with accounts that have exactly those, each one is taken away in
//! turn, and check fails naming it with the statement that grants it; `setup` then refuses and
//! creates nothing (no slot, no schema). With all of them, setup and run work both ways.

mod support;

use std::time::Duration;

use mysql_async::prelude::Queryable;
use support::harness::{mysql_rows, pg_rows, pipeline_name, stop_cleanly, wait_for, Workdir};

const MAPPING: &str = r#"
[[table]]
source = "t"
target = "t"
direction = "both"
[table.column]
id = "id"
v = "v"

[[table]]
source = "f"
target = "f"
[table.column]
id = "id"
n = "n"
"#;

/// One privilege taken away: the statements that take it and give it back, and what check's
/// FAIL line and fix say.
struct Case {
    side: &'static str,
    revoke: String,
    grant: String,
    fails: String,
    fix: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_each_missing_privilege_and_setup_creates_nothing_until_all_are_there() {
    let dbs = support::fresh_dbs("grants").await;
    let mut root_my = dbs.mysql().await;
    let pg = dbs.pg().await;
    let user = format!("gr_{}", &dbs.pg_db[dbs.pg_db.len() - 8..]);
    let (my_db, pg_db) = (dbs.mysql_db.clone(), dbs.pg_db.clone());
    let pw = "grants-pw";
    let duplex_schema = format!("duplex_{user}");
    root_my
        .query_drop(format!(
            "CREATE TABLE t (id int PRIMARY KEY, v varchar(20));
             CREATE TABLE f (id int PRIMARY KEY, n int);
             INSERT INTO f VALUES (1, 10);
             CREATE USER '{user}'@'%' IDENTIFIED BY '{pw}';
             GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '{user}'@'%';
             GRANT SELECT, INSERT, UPDATE, DELETE ON `{my_db}`.t TO '{user}'@'%';
             GRANT SELECT ON `{my_db}`.f TO '{user}'@'%';
             GRANT ALL PRIVILEGES ON `duplex`.* TO '{user}'@'%'"
        ))
        .await
        .unwrap();
    pg.batch_execute(&format!(
        "CREATE ROLE {user} LOGIN REPLICATION PASSWORD '{pw}';
         GRANT CREATE ON DATABASE {pg_db} TO {user};
         CREATE TABLE t (id int PRIMARY KEY, v text);
         ALTER TABLE t OWNER TO {user};
         CREATE TABLE f (id int PRIMARY KEY, n int);
         GRANT SELECT, INSERT, UPDATE, DELETE ON f TO {user}"
    ))
    .await
    .unwrap();
    let pipeline = pipeline_name("grants", &dbs);
    let work = Workdir::new(&dbs, &pipeline, "UTC", &[("t.toml", MAPPING)]);
    std::fs::write(work.path().join("lp.pw"), pw).unwrap();
    work.set_login("mysql", &user, "lp.pw");
    work.set_login("postgres", &user, "lp.pw");
    // A duplex schema of its own: none exists yet, so setup needs CREATE on the database.
    let config = std::fs::read_to_string(work.path().join("duplex.toml")).unwrap();
    std::fs::write(
        work.path().join("duplex.toml"),
        config.replace(
            "[postgres]",
            &format!("[postgres]\nduplex_schema = \"{duplex_schema}\""),
        ),
    )
    .unwrap();
    let account = format!("'{user}'@'%'");
    let cases = vec![
        Case {
            side: "mysql",
            revoke: format!("REVOKE UPDATE ON `{my_db}`.t FROM {account}"),
            grant: format!("GRANT UPDATE ON `{my_db}`.t TO {account}"),
            fails: format!("MySQL: UPDATE on {my_db}.t missing (PostgreSQL → MySQL updates rows)"),
            fix: format!("GRANT UPDATE ON `{my_db}`.`t` TO {account};"),
        },
        Case {
            side: "mysql",
            revoke: format!("REVOKE INSERT, DELETE ON `{my_db}`.t FROM {account}"),
            grant: format!("GRANT INSERT, DELETE ON `{my_db}`.t TO {account}"),
            fails: format!("MySQL: DELETE, INSERT on {my_db}.t missing"),
            fix: format!("GRANT DELETE, INSERT ON `{my_db}`.`t` TO {account};"),
        },
        Case {
            side: "mysql",
            revoke: format!(
                "REVOKE ALL PRIVILEGES ON `duplex`.* FROM {account}; GRANT SELECT, INSERT, UPDATE, DELETE ON `duplex`.* TO {account}"
            ),
            grant: format!("GRANT ALL PRIVILEGES ON `duplex`.* TO {account}"),
            fails: "MySQL: CREATE, ALTER on duplex's database duplex missing".into(),
            fix: format!(
                "GRANT CREATE, ALTER, SELECT, INSERT, UPDATE, DELETE ON `duplex`.* TO {account};"
            ),
        },
        Case {
            side: "mysql",
            revoke: format!("REVOKE REPLICATION SLAVE ON *.* FROM {account}"),
            grant: format!("GRANT REPLICATION SLAVE ON *.* TO {account}"),
            fails: "MySQL: privilege REPLICATION SLAVE".into(),
            fix: format!("GRANT REPLICATION SLAVE ON *.* TO {account}"),
        },
        Case {
            side: "pg",
            revoke: format!("REVOKE UPDATE ON f FROM {user}"),
            grant: format!("GRANT UPDATE ON f TO {user}"),
            fails: "PostgreSQL: UPDATE on public.f missing (MySQL → PostgreSQL updates rows)"
                .into(),
            fix: format!("GRANT UPDATE ON public.f TO {user};"),
        },
        Case {
            side: "pg",
            revoke: format!("REVOKE INSERT ON f FROM {user}"),
            grant: format!("GRANT INSERT ON f TO {user}"),
            fails: "PostgreSQL: INSERT on public.f missing".into(),
            fix: format!("GRANT INSERT ON public.f TO {user};"),
        },
        Case {
            side: "pg",
            revoke: format!(
                "ALTER TABLE t OWNER TO CURRENT_USER; GRANT SELECT, INSERT, UPDATE, DELETE ON t TO {user}"
            ),
            grant: format!("ALTER TABLE t OWNER TO {user}"),
            fails: format!(
                "PostgreSQL: {user} owns public.t (setup publishes it and sets its replica identity)"
            ),
            fix: format!("ALTER TABLE public.t OWNER TO {user};"),
        },
    ];
    let slots = || async {
        pg_rows(
            &pg,
            &format!("SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = 'duplex_{pipeline}'"),
        )
        .await[0][0]
            .clone()
            .unwrap()
    };
    let schemas = || async {
        pg_rows(
            &pg,
            &format!("SELECT count(*)::text FROM pg_namespace WHERE nspname = '{duplex_schema}'"),
        )
        .await[0][0]
            .clone()
            .unwrap()
    };
    // Before the first setup: each gap makes setup refuse, naming it, and create nothing.
    let first = [
        (
            "pg",
            format!("REVOKE CREATE ON DATABASE {pg_db} FROM {user}"),
            format!("GRANT CREATE ON DATABASE {pg_db} TO {user}"),
            format!("GRANT CREATE ON DATABASE {pg_db} TO {user};"),
        ),
        (
            "mysql",
            format!("REVOKE ALL PRIVILEGES ON `duplex`.* FROM {account}; GRANT SELECT, INSERT, UPDATE, DELETE ON `duplex`.* TO {account}"),
            format!("GRANT ALL PRIVILEGES ON `duplex`.* TO {account}"),
            format!("GRANT CREATE, ALTER, SELECT, INSERT, UPDATE, DELETE ON `duplex`.* TO {account};"),
        ),
    ];
    for (side, revoke, grant, fix) in &first {
        match *side {
            "mysql" => root_my.query_drop(revoke).await.unwrap(),
            _ => pg.batch_execute(revoke).await.unwrap(),
        }
        let (code, _, err) = work.run_split(&["setup"]);
        assert_eq!(code, Some(78), "{err}");
        assert!(
            err.contains("nothing was set up") && err.contains(fix.as_str()),
            "{err}"
        );
        assert_eq!(slots().await, "0", "a refused setup left a slot");
        assert_eq!(schemas().await, "0", "a refused setup made duplex's schema");
        match *side {
            "mysql" => root_my.query_drop(grant).await.unwrap(),
            _ => pg.batch_execute(grant).await.unwrap(),
        }
    }
    // A table the account may not read looks absent to MySQL's catalog: the mapping's line
    // says so, with the GRANT that would show it.
    root_my
        .query_drop(format!("REVOKE SELECT ON `{my_db}`.f FROM {account}"))
        .await
        .unwrap();
    let (ok, out) = work.run_cmd(&["check"]);
    assert!(!ok);
    assert!(
        out.contains(&format!("GRANT SELECT ON `{my_db}`.`f` TO {account}")),
        "{out}"
    );
    let (code, _, err) = work.run_split(&["setup"]);
    assert_eq!(code, Some(78), "{err}");
    assert_eq!((slots().await, schemas().await), ("0".into(), "0".into()));
    root_my
        .query_drop(format!("GRANT SELECT ON `{my_db}`.f TO {account}"))
        .await
        .unwrap();
    work.setup();
    assert_eq!(slots().await, "1");
    let (ok, out) = work.run_cmd(&["check"]);
    assert!(ok, "with every privilege granted, check passes:\n{out}");
    // Set up: each gap in turn is the one line check fails, with its fix.
    for c in &cases {
        match c.side {
            "mysql" => root_my.query_drop(&c.revoke).await.unwrap(),
            _ => pg.batch_execute(&c.revoke).await.unwrap(),
        }
        let (ok, out) = work.run_cmd(&["check"]);
        assert!(!ok, "check passed without it ({}):\n{out}", c.revoke);
        let line = out
            .lines()
            .position(|l| l.starts_with("FAIL") && l.contains(&c.fails))
            .unwrap_or_else(|| panic!("no FAIL line with {:?}:\n{out}", c.fails));
        let fix = out.lines().nth(line + 1).unwrap_or_default();
        assert!(
            fix.contains(&c.fix),
            "fix {fix:?} lacks {:?}:\n{out}",
            c.fix
        );
        assert_eq!(
            out.lines().filter(|l| l.starts_with("FAIL")).count(),
            1,
            "only this gap fails ({}):\n{out}",
            c.revoke
        );
        match c.side {
            "mysql" => root_my.query_drop(&c.grant).await.unwrap(),
            _ => pg.batch_execute(&c.grant).await.unwrap(),
        }
    }
    // All granted again: run works both ways under these accounts.
    let (ok, out) = work.run_cmd(&["check"]);
    assert!(ok, "{out}");
    let mut child = work.start();
    wait_for(Duration::from_secs(60), "the copy of f", &work, || async {
        pg_rows(&pg, "SELECT n::text FROM f WHERE id = 1").await == vec![vec![Some("10".into())]]
    })
    .await;
    pg.batch_execute("INSERT INTO t VALUES (1, 'from crm')")
        .await
        .unwrap();
    root_my
        .query_drop("INSERT INTO t VALUES (2, 'from bitrix'); UPDATE f SET n = 11 WHERE id = 1")
        .await
        .unwrap();
    wait_for(Duration::from_secs(30), "both ways", &work, || async {
        let mut my = dbs.mysql().await;
        mysql_rows(&mut my, "SELECT v FROM t WHERE id = 1").await
            == vec![vec![Some("from crm".into())]]
            && pg_rows(&pg, "SELECT v FROM t WHERE id = 2").await
                == vec![vec![Some("from bitrix".into())]]
            && pg_rows(&pg, "SELECT n::text FROM f WHERE id = 1").await
                == vec![vec![Some("11".into())]]
    })
    .await;
    stop_cleanly(&mut child, &work);
    let (ok, out) = work.run_cmd(&["teardown", "--yes"]);
    assert!(ok, "{out}");
}

//! Passwords come from environment variables or files only and never appear in duplex's
//! output: not in its logs (at debug level, through a full run both ways with a snapshot, a
//! dead letter, a reload and a stop), not in `check`, `status`, `dlq` or error messages (a wrong
//! password included), and not in the configuration's `Debug` form.

mod support;

use std::time::Duration;

use mysql_async::prelude::Queryable;
use support::harness::{pg_count, pipeline_name, stop_cleanly, wait_for, Workdir};

const MY_PW: &str = "Zq9-my-s3cret-7741";
const PG_PW: &str = "Zq9-pg-s3cret-5528";
const WRONG_PW: &str = "Zq9-wrong-s3cret-9090";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_never_reach_logs_output_or_errors() {
    let dbs = support::fresh_dbs("secrets").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    let user = pipeline_name("sec_", &dbs);
    my.query_drop(format!(
        "CREATE USER '{user}'@'%' IDENTIFIED BY '{MY_PW}';
         GRANT ALL PRIVILEGES ON *.* TO '{user}'@'%';
         CREATE TABLE t (id int PRIMARY KEY, v varchar(50), n bigint);
         INSERT INTO t VALUES (1, 'before', 1)"
    ))
    .await
    .unwrap();
    pg.batch_execute(&format!(
        "CREATE ROLE {user} LOGIN SUPERUSER PASSWORD '{PG_PW}';
         CREATE TABLE t (id integer PRIMARY KEY, v text, n smallint)"
    ))
    .await
    .unwrap();
    let pipeline = pipeline_name("sec", &dbs);
    let work = Workdir::new(
        &dbs,
        &pipeline,
        "UTC",
        &[(
            "t.toml",
            "[[table]]\nsource = \"t\"\ntarget = \"t\"\ndirection = \"both\"\ncolumns = \"all\"\n",
        )],
    );
    // MySQL's password from a file, PostgreSQL's from the environment (set on the child only).
    std::fs::write(work.path().join("my.pw"), format!("{MY_PW}\n")).unwrap();
    work.set_login("mysql", &user, "my.pw");
    let s = support::servers();
    let text = std::fs::read_to_string(&work.config).unwrap();
    let text = text.replacen(
        &format!(
            "user = \"{}\"\npassword_env = \"DUPLEX_TEST_PG_PASSWORD\"",
            s.pg_user
        ),
        &format!("user = \"{user}\"\npassword_env = \"SECRETS_TEST_PG_PW\""),
        1,
    );
    std::fs::write(&work.config, text).unwrap();
    let mut outputs = Vec::new();
    let run = |args: &[&str], pg_pw: &str| {
        let out = std::process::Command::new(support::harness::duplex_bin())
            .args(args)
            .arg("-c")
            .arg(&work.config)
            .env("SECRETS_TEST_PG_PW", pg_pw)
            .env("RUST_LOG", "debug")
            .output()
            .unwrap();
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    };
    for args in [&["setup"][..], &["check"]] {
        let (ok, out) = run(args, PG_PW);
        assert!(ok, "{args:?}: {out}");
        outputs.push(out);
    }
    let log = std::fs::File::create(work.path().join("run.log")).unwrap();
    let mut child = support::harness::Duplex(
        std::process::Command::new(support::harness::duplex_bin())
            .args(["run", "-c"])
            .arg(&work.config)
            .env("SECRETS_TEST_PG_PW", PG_PW)
            .env("RUST_LOG", "debug")
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    // A copied row, streamed rows both ways, and a dead letter (40000 overflows smallint).
    my.query_drop("INSERT INTO t VALUES (2, 'shop', 2), (3, 'too big', 40000)")
        .await
        .unwrap();
    pg.batch_execute("INSERT INTO t VALUES (4, 'crm', 4)")
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(30),
        "rows and a dead letter",
        &work,
        || async {
            pg_count(&pg, "t").await == 3 && pg_count(&pg, "duplex.dead_letter").await == 1
        },
    )
    .await;
    for args in [&["status"][..], &["dlq", "list"], &["dlq", "retry"]] {
        outputs.push(run(args, PG_PW).1);
    }
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_cleanly(&mut child, &work);
    outputs.push(std::fs::read_to_string(work.path().join("run.log")).unwrap());
    // A wrong password: the error says which login failed, never with what.
    let (ok, out) = run(&["check"], WRONG_PW);
    assert!(!ok);
    assert!(out.contains("password authentication failed"), "{out}");
    outputs.push(out);
    std::fs::write(work.path().join("my.pw"), WRONG_PW).unwrap();
    let (ok, out) = run(&["check"], PG_PW);
    assert!(!ok);
    assert!(out.contains("Access denied"), "{out}");
    outputs.push(out);
    std::fs::write(work.path().join("my.pw"), MY_PW).unwrap();

    let all = outputs.join("\n");
    assert!(
        all.len() > 10_000,
        "too little output to mean anything: {} bytes",
        all.len()
    );
    assert!(all.contains("mysql_to_pg"), "the run log is missing");
    for pw in [MY_PW, PG_PW, WRONG_PW] {
        assert!(!all.contains(pw), "password {pw} found in duplex's output");
    }
    // The configuration's Debug form.
    std::env::set_var("SECRETS_TEST_PG_PW", PG_PW);
    let cfg = duplex::config::Config::load(&work.config).unwrap();
    let debug = format!("{cfg:?}");
    assert!(debug.contains("password: ***"), "{debug}");
    assert!(!debug.contains(MY_PW) && !debug.contains(PG_PW), "{debug}");
    let (ok, out) = run(&["teardown", "--yes"], PG_PW);
    assert!(ok, "{out}");
}

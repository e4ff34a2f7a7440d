//! The service conventions a DBA relies on: systemd's notifications (`READY=1` once both
//! directions stream, the watchdog fed while healthy, `STOPPING=1`), exit status 78 for what a
//! restart cannot mend, logs without colour codes off a terminal or as JSON lines, and
//! confirmation before `teardown`.

mod support;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use support::harness::{pipeline_name, stop_cleanly, terminate, wait_for, Workdir};

const BOTH: &str = "[[table]]\nsource = \"t\"\ntarget = \"t\"\ndirection = \"both\"\n[table.column]\nid = \"id\"\nv = \"v\"\n";

async fn both_ways(prefix: &str) -> (support::TestDbs, Workdir) {
    both_ways_listening(prefix, "127.0.0.1:0").await
}

/// [`both_ways`] with the metrics listener at `metrics`.
async fn both_ways_listening(prefix: &str, metrics: &str) -> (support::TestDbs, Workdir) {
    let dbs = support::fresh_dbs(prefix).await;
    use mysql_async::prelude::Queryable;
    dbs.mysql()
        .await
        .query_drop("CREATE TABLE t (id int PRIMARY KEY, v varchar(20))")
        .await
        .unwrap();
    dbs.pg()
        .await
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await
        .unwrap();
    let work = Workdir::with_metrics(
        &dbs,
        &pipeline_name(prefix, &dbs),
        "UTC",
        &[("t.toml", BOTH)],
        metrics,
    );
    work.setup();
    (dbs, work)
}

/// The messages received on a notify socket until `until` returns true or `within` passes.
fn receive(
    socket: &UnixDatagram,
    within: Duration,
    until: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    while started.elapsed() < within && !until(&got) {
        if let Ok(n) = socket.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_once_both_directions_stream_then_the_watchdog_then_stopping() {
    let (_dbs, work) = both_ways("notify").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let mut child = work.start_env(
        &["run"],
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "3000000"),
        ],
    );
    let got = receive(&socket, Duration::from_secs(60), |m| {
        m.iter().any(|x| x.contains("READY=1"))
    });
    let ready = got
        .iter()
        .find(|m| m.contains("READY=1"))
        .unwrap_or_else(|| panic!("no READY=1 within 60 s: {got:?}\n{}", work.log()));
    assert!(
        ready.contains("STATUS=mysql_to_pg streaming; pg_to_mysql streaming"),
        "{ready}"
    );
    // The watchdog is fed at least every second while healthy.
    let fed = receive(&socket, Duration::from_secs(4), |_| false);
    let beats = fed.iter().filter(|m| m.as_str() == "WATCHDOG=1").count();
    assert!(beats >= 3, "watchdog fed {beats} times in 4 s: {fed:?}");
    let status = terminate(&mut child, Duration::from_secs(40));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let last = receive(&socket, Duration::from_secs(2), |m| {
        m.iter().any(|x| x.contains("STOPPING=1"))
    });
    assert!(
        last.iter().any(|m| m.contains("STOPPING=1")),
        "no STOPPING=1 on SIGTERM: {last:?}"
    );
}

/// A mapping that names a column the MySQL table does not have: `run` exits 78 (EX_CONFIG),
/// which the systemd unit does not restart on, and says which column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapping_error_exits_78_for_the_unit_not_to_restart() {
    let (_dbs, work) = both_ways("exit78").await;
    std::fs::write(
        work.path().join("mappings").join("t.toml"),
        BOTH.replace("v = \"v\"", "nope = \"v\""),
    )
    .unwrap();
    let (code, _, err) = work.run_split(&["run"]);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("nope"), "{err}");
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/duplex.service"),
    )
    .unwrap();
    assert!(
        unit.contains("RestartPreventExitStatus=78"),
        "the unit knows 78"
    );
    assert!(unit.contains("Type=notify"), "the unit waits for READY");
}

/// Logs written to a file carry no ANSI colour codes; `--log-format json` writes one JSON
/// object per line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_off_a_terminal_are_plain_or_json() {
    let (_dbs, work) = both_ways("logfmt").await;
    let both = || async { work.log().matches("pipeline starting").count() >= 2 };
    let mut child = work.start_env(&["--log-format", "json", "run"], &[]);
    wait_for(Duration::from_secs(60), "both directions", &work, both).await;
    stop_cleanly(&mut child, &work);
    let json = work.log();
    let lines: Vec<&str> = json.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 2, "{json}");
    for l in &lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{l}");
    }
    let mut child = work.start();
    wait_for(Duration::from_secs(60), "a text log", &work, || async {
        work.log().matches("pipeline starting").count() >= 4
    })
    .await;
    stop_cleanly(&mut child, &work);
    let text = work.log();
    assert!(
        text.len() > json.len() && !text.contains('\u{1b}'),
        "colour codes in a log file"
    );
}

/// On a terminal the copy draws a bar per table (rows of the estimate, rate, time left), full
/// when it is done, and log lines are printed above it; off a terminal the same copy writes log
/// lines only, without a redraw or colour code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_copy_draws_a_bar_on_a_terminal_and_log_lines_off_it() {
    use mysql_async::prelude::Queryable;
    let (dbs, work) = both_ways("bar").await;
    let mut my = dbs.mysql().await;
    my.query_drop("INSERT INTO t SELECT seq, CONCAT('v', seq) FROM seq_1_to_5000")
        .await
        .unwrap();
    let (ok, screen) = work.run_on_terminal(&["snapshot", "--table", "t"]);
    assert!(ok, "{screen}");
    let full = format!("[{}]", "#".repeat(30));
    let bar = screen
        .split(['\r', '\n'])
        .rfind(|l| l.contains("mysql_to_pg") && l.contains(&full))
        .unwrap_or_else(|| panic!("no full bar for the table on the terminal:\n{screen:?}"));
    assert!(bar.contains("5,000 / ~5,000"), "{bar:?}");
    assert!(bar.contains(" rows/s  ETA "), "{bar:?}");
    assert!(
        screen.contains("copied 5000"),
        "the log line of the copy is on the terminal too:\n{screen}"
    );

    // Off a terminal: the same copy again logs, and draws no bar.
    my.query_drop("INSERT INTO t VALUES (5001, 'x')")
        .await
        .unwrap();
    let (code, stdout, stderr) = work.run_split(&["snapshot", "--table", "t"]);
    assert_eq!(code, Some(0), "{stderr}");
    let text = stdout + &stderr;
    assert!(text.contains("copied 5001"), "{text}");
    assert!(
        !text.contains('\u{1b}') && !text.contains('\r') && !text.contains(&full),
        "redraws off a terminal: {text:?}"
    );
}

/// `teardown` without a terminal to ask on refuses unless `--yes`, and the slot stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_asks_and_refuses_without_yes() {
    let (dbs, work) = both_ways("confirm").await;
    let pg = dbs.pg().await;
    let slots = || async {
        pg.query_one("SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'duplex_%' AND database = current_database()", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    assert_eq!(slots().await, 1);
    let (code, _, err) = work.run_split(&["teardown"]);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("pass --yes"), "{err}");
    assert_eq!(slots().await, 1, "nothing dropped without --yes");
    let (code, out, err) = work.run_split(&["teardown", "--yes"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(slots().await, 0);
}

/// `/metrics` carries `duplex_build_info{version,commit}` and the process metrics in
/// Prometheus' standard names; `--version` names the same commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_say_which_build_runs_and_what_the_process_uses() {
    let port = support::harness::free_port();
    let (_dbs, work) = both_ways_listening("buildinfo", &format!("127.0.0.1:{port}")).await;
    let mut child = work.start();
    let mut body = String::new();
    for _ in 0..100 {
        if let Ok((200, b)) = support::harness::http_get(port, "/metrics") {
            body = b;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_cleanly(&mut child, &work);
    let (_, version, _) = work.run_split(&["--version"]);
    let commit = version
        .split("commit ")
        .nth(1)
        .and_then(|c| c.strip_suffix(")\n"))
        .unwrap_or_else(|| panic!("{version}"));
    assert!(commit.len() >= 7 && commit != "unknown", "{version}");
    assert!(
        body.contains(&format!(
            "duplex_build_info{{version=\"{}\",commit=\"{commit}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{body}"
    );
    for name in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        let v: f64 = body
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing:\n{body}"))
            .parse()
            .unwrap();
        assert!(v > 0.0, "{name} = {v}");
    }
}

/// A re-run `setup` logs nothing at info about what already exists: PostgreSQL's NOTICEs
/// ("relation … already exists, skipping") are debug lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_of_a_rerun_setup_are_debug_lines() {
    let (_dbs, work) = both_ways("notices").await;
    let s = support::servers();
    let setup = |level: &str| {
        let out = std::process::Command::new(support::harness::duplex_bin())
            .args(["--log-level", level, "setup", "-c"])
            .arg(work.path().join("duplex.toml"))
            .env_remove("RUST_LOG")
            .env(support::harness::MYSQL_PW_ENV, &s.mysql_password)
            .env(support::harness::PG_PW_ENV, &s.pg_password)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let info = setup("info");
    assert!(!info.contains("already exists"), "{info}");
    let debug = setup("debug");
    assert!(debug.contains("already exists, skipping"), "{debug}");
}

//! Operations: the heartbeat lag, `/health`, `/ready`, `/status`, `/metrics`, `duplex status`,
//! and the dead-letter tables with `duplex dlq list|show|retry|drop`.

mod support;

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use support::harness::{
    free_port, http_get, metric, pg_count, pg_rows, pipeline_name, stop_cleanly, wait_for, Workdir,
};

fn get(port: u16, path: &str) -> (u16, String) {
    http_get(port, path).expect("the metrics listener answers")
}

fn lag(port: u16, direction: &str) -> f64 {
    let (_, body) = get(port, "/metrics");
    metric(&body, "duplex_lag_seconds", &[("direction", direction)])
        .unwrap_or_else(|| panic!("no lag for {direction}:\n{body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_lag_health_ready_and_status() {
    let dbs = support::fresh_dbs("ops").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop("CREATE TABLE t (id int PRIMARY KEY, v varchar(50))")
        .await
        .unwrap();
    pg.batch_execute("CREATE TABLE t (id integer PRIMARY KEY, v text)")
        .await
        .unwrap();
    let port = free_port();
    let pipeline = pipeline_name("ops", &dbs);
    let work = Workdir::with_metrics(
        &dbs,
        &pipeline,
        "UTC",
        &[(
            "t.toml",
            "[[table]]\nsource = \"t\"\ntarget = \"t\"\ndirection = \"both\"\ncolumns = \"all\"\n",
        )],
        &format!("127.0.0.1:{port}"),
    );
    let config = std::fs::read_to_string(&work.config).unwrap();
    std::fs::write(
        &work.config,
        config.replace("[metrics]\n", "[metrics]\nready_max_lag_s = 2\n"),
    )
    .unwrap();
    work.setup();
    let mut child = work.start();
    wait_for(
        Duration::from_secs(60),
        "/ready to answer 200",
        &work,
        || async {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && get(port, "/ready").0 == 200
        },
    )
    .await;
    assert_eq!(get(port, "/health"), (200, "ok\n".to_string()));
    // The gauges read from the databases every 5 s keep one session, not a new one each time.
    let monitor = format!(
        "SELECT backend_start::text FROM pg_stat_activity WHERE application_name = 'duplex {pipeline} status'"
    );
    let first_session = pg_rows(&pg, &monitor).await;
    assert_eq!(first_session.len(), 1, "{first_session:?}");
    assert_eq!(get(port, "/nope").0, 404);

    my.query_drop("INSERT INTO t VALUES (1, 'shop')")
        .await
        .unwrap();
    pg.batch_execute("INSERT INTO t VALUES (2, 'crm')")
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(30),
        "both rows on both sides",
        &work,
        || async {
            let mut c = dbs.mysql().await;
            pg_count(&pg, "t").await == 2
                && support::harness::mysql_rows(&mut c, "SELECT count(*) FROM t").await[0][0]
                    .as_deref()
                    == Some("2")
        },
    )
    .await;

    // Idle for 3 s: the heartbeat keeps the lag exact (transit time, not time since a change).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, body) = get(port, "/metrics");
    for direction in ["mysql_to_pg", "pg_to_mysql"] {
        let l = metric(&body, "duplex_lag_seconds", &[("direction", direction)]).unwrap();
        assert!(l < 1.0, "{direction} lag {l} s while idle");
        let beats = metric(
            &body,
            "duplex_heartbeats_received_total",
            &[("direction", direction)],
        )
        .unwrap();
        assert!(beats >= 3.0, "{direction}: {beats} heartbeats in 3+ s");
        assert_eq!(
            metric(
                &body,
                "duplex_pipeline_state",
                &[("direction", direction), ("state", "streaming")]
            ),
            Some(1.0)
        );
        assert_eq!(
            metric(
                &body,
                "duplex_pipeline_state",
                &[("direction", direction), ("state", "retrying")]
            ),
            Some(0.0)
        );
        assert_eq!(
            metric(&body, "duplex_retry_attempt", &[("direction", direction)]),
            Some(0.0)
        );
        // Heartbeats are duplex's own: one transaction applied per side.
        assert_eq!(
            metric(
                &body,
                "duplex_transactions_applied_total",
                &[("direction", direction)]
            ),
            Some(1.0),
            "{body}"
        );
    }
    assert_eq!(metric(&body, "duplex_ready", &[]), Some(1.0));
    assert_eq!(
        metric(
            &body,
            "duplex_dead_letters_unresolved",
            &[("direction", "mysql_to_pg")]
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(&body, "duplex_binlog_files_behind", &[]),
        Some(0.0),
        "{body}"
    );
    let retained = metric(
        &body,
        "duplex_slot_retained_wal_bytes",
        &[("slot", &format!("duplex_{pipeline}"))],
    )
    .unwrap_or_else(|| panic!("no slot WAL gauge:\n{body}"));
    assert!(retained >= 0.0);
    assert!(
        body.contains(
            "duplex_apply_batch_duration_seconds_bucket{direction=\"mysql_to_pg\",le=\"0.005\"}"
        ),
        "the batch duration is a histogram with buckets:\n{body}"
    );

    // `duplex status`, JSON and table.
    let (ok, out) = work.run_cmd(&["status", "--json"]);
    assert!(ok, "{out}");
    let json_text = &out[out.find('{').unwrap()..=out.rfind('}').unwrap()];
    let v: serde_json::Value = serde_json::from_str(json_text).unwrap();
    assert_eq!(v["process"]["ready"], true, "{v}");
    assert_eq!(v["process"]["pid"], child.id());
    let dirs = v["process"]["directions"].as_array().unwrap();
    assert_eq!(dirs.len(), 2);
    assert!(
        dirs.iter()
            .all(|d| d["state"] == "streaming" && d["lag_seconds"].as_f64().unwrap() < 1.0),
        "{v}"
    );
    assert!(
        v["record"]["forward"]["position"]
            .as_str()
            .unwrap()
            .starts_with("mysql:binlog."),
        "{v}"
    );
    assert!(
        v["record"]["reverse"]["position"]
            .as_str()
            .unwrap()
            .starts_with("pg:"),
        "{v}"
    );
    assert_eq!(v["record"]["forward"]["dead_letters_unresolved"], 0);
    assert_eq!(v["record"]["slot_active"], true);
    let (ok, out) = work.run_cmd(&["status"]);
    assert!(ok, "{out}");
    assert!(out.contains("ready"), "{out}");
    assert_eq!(out.matches("streaming").count(), 2, "{out}");
    assert!(
        out.contains(&format!("slot     duplex_{pipeline}: active")),
        "{out}"
    );

    // The target stalls: PostgreSQL holds the checkpoint table locked for 5 s. The forward lag
    // grows in real time, /ready turns 503 above 2 s, and both recover once it is released.
    let locker = dbs.pg().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE duplex.checkpoint IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let locked = Instant::now();
    my.query_drop("INSERT INTO t VALUES (3, 'during the stall')")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let stalled = lag(port, "mysql_to_pg");
    let waited = locked.elapsed().as_secs_f64();
    // The oldest heartbeat not arrived was written within 1 s of the stall's start (before it,
    // when its commit was the one caught by the lock), and the gauge is refreshed every 250 ms.
    assert!(
        stalled > waited - 1.5 && stalled < waited + 1.25,
        "forward lag {stalled} s after a {waited:.1} s stall"
    );
    let (code, why) = get(port, "/ready");
    assert_eq!(code, 503, "{why}");
    assert!(why.contains("mysql_to_pg: lag"), "{why}");
    assert!(
        lag(port, "pg_to_mysql") < 1.0,
        "the other direction is not stalled"
    );
    locker.batch_execute("COMMIT").await.unwrap();
    let released = Instant::now();
    wait_for(
        Duration::from_secs(10),
        "the forward lag back under 1 s",
        &work,
        || async { lag(port, "mysql_to_pg") < 1.0 },
    )
    .await;
    let recovered = released.elapsed();
    assert!(
        recovered < Duration::from_secs(3),
        "lag took {recovered:?} to recover"
    );
    wait_for(
        Duration::from_secs(10),
        "/ready back to 200",
        &work,
        || async { get(port, "/ready").0 == 200 },
    )
    .await;
    assert_eq!(pg_count(&pg, "t").await, 3);

    assert_eq!(
        pg_rows(&pg, &monitor).await,
        first_session,
        "the monitor's session was replaced"
    );

    // Stopped: status still reads both databases, and says no process answers.
    stop_cleanly(&mut child, &work);
    let (ok, out) = work.run_cmd(&["status"]);
    assert!(!ok, "status exits 1 when no process answers:\n{out}");
    assert!(out.contains("none answers"), "{out}");
    assert!(out.contains("mysql_to_pg  stopped"), "{out}");
    assert!(out.contains("mysql:binlog."), "{out}");
    // The heartbeat rows of this pipeline, on both sources.
    let beats = pg_rows(
        &pg,
        &format!("SELECT written_us::text FROM duplex.heartbeat WHERE pipeline = '{pipeline}'"),
    )
    .await;
    assert_eq!(beats.len(), 1);
    let (ok, out) = work.run_cmd(&["teardown", "--yes"]);
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_have_defined_outcomes_and_dlq_retries_them_after_a_fix() {
    let dbs = support::fresh_dbs("dlqops").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop("CREATE TABLE t (id int PRIMARY KEY, a bigint NOT NULL, s varchar(50)) CHARACTER SET utf8mb4")
        .await
        .unwrap();
    pg.batch_execute(
        "CREATE TABLE t (id integer PRIMARY KEY, a smallint NOT NULL CONSTRAINT a_not_negative CHECK (a >= 0), s text)",
    )
    .await
    .unwrap();
    let work = Workdir::new(
        &dbs,
        &pipeline_name("dlq", &dbs),
        "UTC",
        &[(
            "t.toml",
            "[[table]]\nsource = \"t\"\ntarget = \"t\"\ncolumns = \"all\"\n",
        )],
    );
    work.append_config("[snapshot]\non_start = false\n");
    work.setup();
    let mut child = work.start();
    // Invalid UTF-8 in a utf8mb4 column: stored as sent when the session says it sends binary
    // and the server does not check (no strict mode).
    my.query_drop("SET SESSION sql_mode = ''").await.unwrap();
    for q in [
        "INSERT INTO t VALUES (1, 1, 'good')",
        // Overflows smallint.
        "INSERT INTO t VALUES (2, 40000, 'too big')",
        // A NUL byte, which PostgreSQL text cannot hold.
        "INSERT INTO t VALUES (3, 3, CONCAT('nul', CHAR(0), 'byte'))",
        // The target's CHECK constraint rejects it.
        "INSERT INTO t VALUES (4, -1, 'negative')",
        "INSERT INTO t VALUES (5, 5, 'good too')",
    ] {
        my.query_drop(q).await.unwrap();
    }
    wait_for(
        Duration::from_secs(30),
        "2 rows and 3 dead letters",
        &work,
        || async {
            pg_count(&pg, "t").await == 2 && pg_count(&pg, "duplex.dead_letter").await == 3
        },
    )
    .await;

    let (ok, out) = work.run_cmd(&["dlq", "list"]);
    assert!(ok, "{out}");
    assert!(out.contains("out of range for a smallint column"), "{out}");
    assert!(out.contains("NUL byte"), "{out}");
    assert!(out.contains("a_not_negative"), "{out}");
    let (ok, out) = work.run_cmd(&["dlq", "list", "--json"]);
    assert!(ok, "{out}");
    let letters: serde_json::Value =
        serde_json::from_str(&out[out.find('[').unwrap()..=out.rfind(']').unwrap()]).unwrap();
    let letters = letters.as_array().unwrap();
    assert_eq!(letters.len(), 3);
    let id_of = |row_id: &str| {
        letters
            .iter()
            .find(|l| l["row"]["id"] == row_id)
            .unwrap_or_else(|| panic!("no letter for row {row_id}: {letters:?}"))["id"]
            .as_i64()
            .unwrap()
    };
    let (big, nul, negative) = (id_of("2"), id_of("3"), id_of("4"));
    for l in letters {
        assert_eq!(l["attempts"], 1);
        assert_eq!(l["resolved"], false);
        assert_eq!(l["direction"], "mysql_to_pg");
        assert!(l["position"].as_str().unwrap().starts_with("mysql:binlog."));
    }
    let (ok, out) = work.run_cmd(&["dlq", "show", &big.to_string()]);
    assert!(ok, "{out}");
    assert!(out.contains("\"a\": \"40000\""), "{out}");
    assert!(out.contains("source table  "), "{out}");
    let (ok, out) = work.run_cmd(&["dlq", "show", "999999"]);
    assert!(!ok);
    assert!(out.contains("no dead letter with id 999999"), "{out}");
    let (ok, out) = work.run_cmd(&["dlq", "drop"]);
    assert!(!ok);
    assert!(out.contains("say which letters to drop"), "{out}");

    // The fix: the CRM widens the column and drops the constraint. Retry applies two of the
    // three; the NUL byte still cannot go in.
    pg.batch_execute(
        "ALTER TABLE t ALTER COLUMN a TYPE integer; ALTER TABLE t DROP CONSTRAINT a_not_negative",
    )
    .await
    .unwrap();
    let (ok, out) = work.run_cmd(&["dlq", "retry"]);
    assert!(
        !ok,
        "a retry that leaves a letter failing exits non-zero:\n{out}"
    );
    assert!(
        out.contains("2 of 3 letter(s) applied and resolved; 1 still failing"),
        "{out}"
    );
    let rows = pg_rows(&pg, "SELECT id::text, a::text FROM t ORDER BY id").await;
    let ids: Vec<_> = rows.iter().map(|r| r[0].clone().unwrap()).collect();
    assert_eq!(ids, ["1", "2", "4", "5"]);
    assert_eq!(rows[1][1].as_deref(), Some("40000"));
    let state = pg_rows(&pg, "SELECT id::text, resolved::text, attempts::text, reason FROM duplex.dead_letter ORDER BY id").await;
    for r in &state {
        let id: i64 = r[0].as_deref().unwrap().parse().unwrap();
        if id == nul {
            assert_eq!(r[1].as_deref(), Some("false"));
            assert_eq!(
                r[2].as_deref(),
                Some("2"),
                "a failed retry counts an attempt"
            );
            assert!(r[3].as_deref().unwrap().contains("NUL byte"), "{r:?}");
        } else {
            assert!(id == big || id == negative);
            assert_eq!(r[1].as_deref(), Some("true"), "{r:?}");
        }
    }

    // The shop fixes its row; the stream brings it, and a retry of the letter reads the current
    // row and resolves it. Then the resolved letters are dropped.
    my.query_drop("UPDATE t SET s = 'nul byte' WHERE id = 3")
        .await
        .unwrap();
    wait_for(Duration::from_secs(30), "the fixed row", &work, || async {
        pg_count(&pg, "t").await == 5
    })
    .await;
    let (ok, out) = work.run_cmd(&["dlq", "retry", &nul.to_string()]);
    assert!(ok, "{out}");
    assert!(out.contains("1 of 1 letter(s) applied"), "{out}");
    let (ok, out) = work.run_cmd(&["dlq", "list"]);
    assert!(ok);
    assert!(out.contains("no dead letters"), "{out}");
    let (ok, out) = work.run_cmd(&["dlq", "drop", "--resolved"]);
    assert!(ok, "{out}");
    assert!(out.contains("dropped 3 dead letter(s)"), "{out}");
    assert_eq!(pg_count(&pg, "duplex.dead_letter").await, 0);

    // A letter whose row is gone from the source applies its deletion.
    pg.batch_execute("ALTER TABLE t ADD CONSTRAINT small CHECK (a < 500) NOT VALID")
        .await
        .unwrap();
    my.query_drop("INSERT INTO t VALUES (6, 600, 'rejected')")
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(30),
        "a new dead letter",
        &work,
        || async { pg_count(&pg, "duplex.dead_letter").await == 1 },
    )
    .await;
    my.query_drop("DELETE FROM t WHERE id = 6").await.unwrap();
    pg.batch_execute("ALTER TABLE t DROP CONSTRAINT small")
        .await
        .unwrap();
    let (ok, out) = work.run_cmd(&["dlq", "retry"]);
    assert!(ok, "{out}");
    assert!(out.contains("the row is gone from the source"), "{out}");
    assert_eq!(pg_count(&pg, "t").await, 5);
    stop_cleanly(&mut child, &work);
}

/// Dead letters on both sides: `dlq list`, `show` and `retry` read MySQL's letters too (its
/// TIMESTAMP columns once made them panic), a retry that leaves letters failing exits non-zero,
/// and copying a table again does not double its letters (the earlier ones are resolved as
/// superseded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_on_both_sides_are_listed_retried_and_not_doubled_by_recopies() {
    let dbs = support::fresh_dbs("dlqboth").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop(
        "CREATE TABLE t (id int PRIMARY KEY, a bigint NOT NULL);
         INSERT INTO t VALUES (1, 1), (2, 40000);
         CREATE TABLE r (id int PRIMARY KEY, d datetime)",
    )
    .await
    .unwrap();
    pg.batch_execute(
        "CREATE TABLE t (id integer PRIMARY KEY, a smallint NOT NULL);
         CREATE TABLE r (id integer PRIMARY KEY, d timestamp);
         INSERT INTO r VALUES (1, '2026-01-02 03:04:05'), (2, 'infinity')",
    )
    .await
    .unwrap();
    let mapping = "[[table]]\nsource = \"t\"\ntarget = \"t\"\ncolumns = \"all\"\n\n\
                   [[table]]\nsource = \"r\"\ntarget = \"r\"\ndirection = \"reverse\"\n[table.column]\nid = \"id\"\nd = \"d\"\n";
    let work = Workdir::new(
        &dbs,
        &pipeline_name("dlqboth", &dbs),
        "UTC",
        &[("t.toml", mapping)],
    );
    work.setup();
    // The copies set aside one row each way.
    let (ok, out) = work.run_cmd(&["snapshot"]);
    assert!(ok, "{out}");
    let unresolved = |work: &Workdir| {
        let (ok, out) = work.run_cmd(&["dlq", "list", "--json"]);
        assert!(ok, "{out}");
        let v: serde_json::Value =
            serde_json::from_str(&out[out.find('[').unwrap()..=out.rfind(']').unwrap()]).unwrap();
        v.as_array().unwrap().clone()
    };
    let letters = unresolved(&work);
    assert_eq!(letters.len(), 2, "{letters:?}");
    let of = |way: &str| {
        letters
            .iter()
            .find(|l| l["direction"] == way)
            .unwrap_or_else(|| panic!("no {way} letter: {letters:?}"))
            .clone()
    };
    let (forward, reverse) = (of("mysql_to_pg"), of("pg_to_mysql"));
    assert_eq!(forward["row"]["id"], "2");
    assert_eq!(reverse["row"]["id"], "2");
    assert!(!reverse["first_attempt"].as_str().unwrap().is_empty());
    let (ok, out) = work.run_cmd(&["dlq", "list"]);
    assert!(
        ok && out.contains("pg_to_mysql") && out.contains("mysql_to_pg"),
        "{out}"
    );
    let id = reverse["id"].as_i64().unwrap().to_string();
    let (ok, out) = work.run_cmd(&["dlq", "show", &id, "--direction", "pg_to_mysql"]);
    assert!(ok && out.contains("infinity"), "{out}");

    // Nothing fixed yet: the retry applies neither and says so with its exit status.
    let (ok, out) = work.run_cmd(&["dlq", "retry"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("0 of 2 letter(s) applied and resolved; 2 still failing"),
        "{out}"
    );

    // Copying both tables again, twice: still one unresolved letter each way.
    for _ in 0..2 {
        for table in ["t", "r"] {
            let (ok, out) = work.run_cmd(&["snapshot", "--table", table]);
            assert!(ok, "{out}");
        }
    }
    let letters = unresolved(&work);
    assert_eq!(letters.len(), 2, "{letters:?}");
    let (ok, out) = work.run_cmd(&["dlq", "list", "--all", "--json"]);
    assert!(ok && out.contains("superseded"), "{out}");

    // The fix on each side; the retry applies both and exits 0.
    pg.batch_execute("ALTER TABLE t ALTER COLUMN a TYPE integer; UPDATE r SET d = '2026-05-06 07:08:09' WHERE id = 2")
        .await
        .unwrap();
    let (ok, out) = work.run_cmd(&["dlq", "retry"]);
    assert!(ok, "{out}");
    assert!(out.contains("2 of 2 letter(s) applied"), "{out}");
    assert_eq!(
        pg_rows(&pg, "SELECT a::text FROM t WHERE id = 2").await,
        vec![vec![Some("40000".to_string())]]
    );
    let d: Option<String> = my
        .query_first("SELECT CAST(d AS CHAR) FROM r WHERE id = 2")
        .await
        .unwrap();
    assert_eq!(d.as_deref(), Some("2026-05-06 07:08:09"));
}

/// SIGTERM while duplex waits for an unreachable MySQL at start-up: it exits 0 within 2 s
/// (the retry loop watches the stop signal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_the_start_up_retry_loop_exits_at_once() {
    let dbs = support::fresh_dbs("termwait").await;
    let work = Workdir::new(
        &dbs,
        &pipeline_name("termwait", &dbs),
        "UTC",
        &[(
            "t.toml",
            "[[table]]\nsource = \"t\"\ntarget = \"t\"\ncolumns = \"all\"\n",
        )],
    );
    // MySQL on a port nothing listens on.
    let text = std::fs::read_to_string(&work.config).unwrap();
    let mysql = text.find("[mysql]").unwrap();
    let port_at = mysql + text[mysql..].find("port = ").unwrap();
    let end = port_at + text[port_at..].find('\n').unwrap();
    let text = format!("{}port = {}{}", &text[..port_at], free_port(), &text[end..]);
    std::fs::write(&work.config, text).unwrap();
    let mut child = work.start();
    wait_for(Duration::from_secs(20), "the retry loop", &work, || async {
        work.log().contains("MySQL not reachable yet")
    })
    .await;
    let sent = Instant::now();
    let status = support::harness::terminate(&mut child, Duration::from_secs(10));
    let took = sent.elapsed();
    assert!(
        status.is_some_and(|s| s.success()),
        "exit status {status:?}:\n{}",
        work.log()
    );
    assert!(
        took < Duration::from_secs(2),
        "SIGTERM took {took:?} to stop duplex"
    );
}

/// A privilege the reverse direction lacks (UPDATE on its MySQL target) is not a row error: no
/// dead letters, the direction retries with the reason in `/ready` (503) and its state
/// "retrying", and after the GRANT it goes on by itself, the change applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_privilege_is_retried_with_its_reason_not_dead_lettered() {
    let dbs = support::fresh_dbs("noupd").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop(
        "CREATE TABLE r (id int PRIMARY KEY, v varchar(20)); INSERT INTO r VALUES (1, 'a')",
    )
    .await
    .unwrap();
    pg.batch_execute(
        "CREATE TABLE r (id integer PRIMARY KEY, v text); INSERT INTO r VALUES (1, 'a')",
    )
    .await
    .unwrap();
    let port = free_port();
    let pipeline = pipeline_name("noupd", &dbs);
    let work = Workdir::with_metrics(
        &dbs,
        &pipeline,
        "UTC",
        &[(
            "r.toml",
            "[[table]]\nsource = \"r\"\ntarget = \"r\"\ndirection = \"reverse\"\n[table.column]\nid = \"id\"\nv = \"v\"\n",
        )],
        &format!("127.0.0.1:{port}"),
    );
    work.append_config("[snapshot]\non_start = false\n");
    work.setup();
    // A MySQL account with everything duplex needs but UPDATE on the target.
    let user = format!("nu{}", &dbs.pg_db[dbs.pg_db.len() - 8..]);
    let pw = support::servers().mysql_password.clone();
    for q in [
        format!("CREATE USER '{user}'@'%' IDENTIFIED BY '{pw}'"),
        format!("GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '{user}'@'%'"),
        format!("GRANT ALL ON `duplex`.* TO '{user}'@'%'"),
        format!(
            "GRANT SELECT, INSERT, DELETE ON `{}`.* TO '{user}'@'%'",
            dbs.mysql_db
        ),
    ] {
        my.query_drop(q).await.unwrap();
    }
    let text = std::fs::read_to_string(&work.config).unwrap();
    let at = text.find("[mysql]").unwrap();
    let from = at + text[at..].find("user = \"").unwrap();
    let to = from + text[from..].find('\n').unwrap();
    std::fs::write(
        &work.config,
        format!("{}user = \"{user}\"{}", &text[..from], &text[to..]),
    )
    .unwrap();
    let mut child = work.start();
    wait_for(Duration::from_secs(30), "/ready 200", &work, || async {
        matches!(http_get(port, "/ready"), Ok((200, _)))
    })
    .await;

    pg.batch_execute("UPDATE r SET v = 'b' WHERE id = 1")
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(30),
        "/ready 503 with the reason",
        &work,
        || async {
            let (code, why) = get(port, "/ready");
            code == 503 && why.contains("UPDATE command denied")
        },
    )
    .await;
    // Its state says so too (between attempts: each attempt starts as "streaming").
    wait_for(
        Duration::from_secs(30),
        "the state retrying",
        &work,
        || async {
            let (_, body) = get(port, "/metrics");
            metric(
                &body,
                "duplex_pipeline_state",
                &[("direction", "pg_to_mysql"), ("state", "retrying")],
            ) == Some(1.0)
        },
    )
    .await;
    let letters = support::harness::mysql_rows(
        &mut my,
        &format!("SELECT count(*) FROM duplex.dead_letter WHERE pipeline = '{pipeline}'"),
    )
    .await;
    assert_eq!(letters[0][0].as_deref(), Some("0"), "no dead letters");

    my.query_drop(format!(
        "GRANT UPDATE ON `{}`.* TO '{user}'@'%'",
        dbs.mysql_db
    ))
    .await
    .unwrap();
    wait_for(
        Duration::from_secs(60),
        "the change after the GRANT",
        &work,
        || async {
            let mut c = dbs.mysql().await;
            support::harness::mysql_rows(&mut c, "SELECT v FROM r WHERE id = 1").await
                == vec![vec![Some("b".to_string())]]
                && get(port, "/ready").0 == 200
        },
    )
    .await;
    stop_cleanly(&mut child, &work);
    my.query_drop(format!("DROP USER '{user}'@'%'"))
        .await
        .unwrap();
}

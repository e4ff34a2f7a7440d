//! The test support's server restarts: each private server stops (cleanly, or as a crash)
//! and comes back on the same port, with its data, as a child of this process.
//!
//! A binary of its own because stopping a server disturbs every other test that uses it;
//! the tests here still take `support::exclusive()` against each other.

mod support;

use std::path::Path;
use std::time::Instant;

use mysql_async::prelude::Queryable;
use support::Stop;

#[tokio::test]
#[allow(clippy::await_holding_lock)]
async fn mariadb_restarts_on_its_port_with_its_data() {
    let _serial = support::exclusive();
    let port = support::servers().mysql_port;
    let dbs = support::fresh_dbs("restart_my").await;
    let mut conn = dbs.mysql().await;
    conn.query_drop("CREATE TABLE t (id INT PRIMARY KEY, how VARCHAR(10)) ENGINE=InnoDB")
        .await
        .expect("create table");
    conn.disconnect().await.expect("disconnect");

    let mut expected = Vec::new();
    for (id, how) in [(1, Stop::Clean), (2, Stop::Crash)] {
        let mut conn = dbs.mysql().await;
        conn.exec_drop("INSERT INTO t VALUES (?, ?)", (id, format!("{how:?}")))
            .await
            .expect("insert before the stop");
        expected.push((id, format!("{how:?}")));

        let started = Instant::now();
        support::stop_mysql(how);
        let stopped = started.elapsed();
        assert!(
            mysql_async::Conn::new(support::mysql_opts(None))
                .await
                .is_err(),
            "MariaDB still answers after stop_mysql({how:?})"
        );
        assert!(
            conn.ping().await.is_err(),
            "an old connection outlived the stop"
        );
        support::stop_mysql(how);

        let started = Instant::now();
        support::start_mysql();
        eprintln!(
            "MariaDB {how:?}: stop {:.2}s, start {:.2}s",
            stopped.as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
        support::start_mysql();

        let mut conn = dbs.mysql().await;
        let served: Option<u16> = conn.query_first("SELECT @@port").await.expect("@@port");
        assert_eq!(served, Some(port));
        let rows: Vec<(i32, String)> = conn
            .query("SELECT id, how FROM t ORDER BY id")
            .await
            .expect("select after the restart");
        assert_eq!(rows, expected, "after a {how:?} stop");
        conn.disconnect().await.expect("disconnect");
        assert_child_of_this_process(&support::servers().mysql_dir.join("mysqld.pid"));
    }
}

#[tokio::test]
#[allow(clippy::await_holding_lock)]
async fn postgres_restarts_on_its_port_with_its_data() {
    let _serial = support::exclusive();
    let port = support::servers().pg_port;
    let dbs = support::fresh_dbs("restart_pg").await;
    dbs.pg()
        .await
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, how text NOT NULL)")
        .await
        .expect("create table");

    let mut expected = Vec::new();
    for (id, how) in [(1, Stop::Clean), (2, Stop::Crash)] {
        let pg = dbs.pg().await;
        // The server runs with synchronous_commit=off: without this, a crash loses the
        // commits of its last few hundred milliseconds (see `Stop::Crash`).
        pg.batch_execute("SET synchronous_commit = on")
            .await
            .expect("SET synchronous_commit");
        pg.execute("INSERT INTO t VALUES ($1, $2)", &[&id, &format!("{how:?}")])
            .await
            .expect("insert before the stop");
        expected.push((id, format!("{how:?}")));

        let started = Instant::now();
        support::stop_postgres(how);
        let stopped = started.elapsed();
        assert!(
            support::pg_config("postgres")
                .connect(tokio_postgres::NoTls)
                .await
                .is_err(),
            "PostgreSQL still answers after stop_postgres({how:?})"
        );
        assert!(
            pg.simple_query("SELECT 1").await.is_err(),
            "an old connection outlived the stop"
        );
        support::stop_postgres(how);

        let started = Instant::now();
        support::start_postgres();
        eprintln!(
            "PostgreSQL {how:?}: stop {:.2}s, start {:.2}s",
            stopped.as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
        support::start_postgres();

        let pg = dbs.pg().await;
        let served: String = pg.query_one("SHOW port", &[]).await.expect("port").get(0);
        assert_eq!(served, port.to_string());
        let rows: Vec<(i32, String)> = pg
            .query("SELECT id, how FROM t ORDER BY id", &[])
            .await
            .expect("select after the restart")
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        assert_eq!(rows, expected, "after a {how:?} stop");
        assert_child_of_this_process(&support::servers().pg_dir.join("data/postmaster.pid"));
    }
}

/// The server whose pid the file names is our child (the keeper thread's), so it keeps
/// its parent-death signal.
fn assert_child_of_this_process(pid_file: &Path) {
    let text = std::fs::read_to_string(pid_file)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", pid_file.display()));
    let pid = text.lines().next().unwrap_or_default().trim();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("server pid {pid} from {}: {e}", pid_file.display()));
    let ppid = status
        .lines()
        .find_map(|line| line.strip_prefix("PPid:"))
        .map(str::trim)
        .unwrap_or_default();
    assert_eq!(
        ppid,
        std::process::id().to_string(),
        "parent of server {pid}"
    );
}

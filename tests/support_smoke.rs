//! Smoke test of the test support itself: the private servers start, are configured the
//! way the CDC code relies on, and real data round-trips through fresh databases.

mod support;

use std::time::Duration;

use mysql_async::prelude::Queryable;
use support::proxy::Proxy;
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_is_configured_for_row_binlog_and_bitrix() {
    let dbs = support::fresh_dbs("smoke_my").await;
    let mut conn = dbs.mysql().await;

    let settings: Option<(String, String, String, String, i64)> = conn
        .query_first(
            "SELECT @@binlog_format, @@binlog_row_image, @@binlog_row_metadata, @@sql_mode, \
             @@log_bin",
        )
        .await
        .expect("query server settings");
    assert_eq!(
        settings,
        Some((
            "ROW".to_string(),
            "FULL".to_string(),
            "FULL".to_string(),
            String::new(),
            1
        ))
    );

    let charset: Option<String> = conn
        .query_first("SELECT @@character_set_database")
        .await
        .expect("query database charset");
    assert_eq!(charset.as_deref(), Some("utf8mb3"));

    let gtid: Option<String> = conn
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .expect("query gtid_binlog_pos");
    assert!(gtid.is_some(), "gtid_binlog_pos is readable");

    conn.query_drop(
        "CREATE TABLE t (id INT PRIMARY KEY, d DATETIME NOT NULL, s VARCHAR(20)) ENGINE=InnoDB",
    )
    .await
    .expect("create table");
    conn.query_drop("INSERT INTO t VALUES (1, '0000-00-00 00:00:00', 'привет')")
        .await
        .expect("insert a zero date");

    // Text protocol: the zero date comes back verbatim.
    let text: Option<(String, String)> = conn
        .query_first("SELECT d, s FROM t WHERE id = 1")
        .await
        .expect("select over the text protocol");
    assert_eq!(
        text,
        Some(("0000-00-00 00:00:00".to_string(), "привет".to_string()))
    );

    // Binary protocol: the zero date is an all-zero Date value.
    let binary: Option<mysql_async::Value> = conn
        .exec_first("SELECT d FROM t WHERE id = ?", (1,))
        .await
        .expect("select over the binary protocol");
    assert_eq!(binary, Some(mysql_async::Value::Date(0, 0, 0, 0, 0, 0, 0)));

    conn.disconnect().await.expect("disconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_is_logical_and_round_trips_a_row() {
    let dbs = support::fresh_dbs("smoke_pg").await;
    let pg = dbs.pg().await;

    let wal_level: String = pg
        .query_one("SHOW wal_level", &[])
        .await
        .expect("SHOW wal_level")
        .get(0);
    assert_eq!(wal_level, "logical");

    let current: String = pg
        .query_one("SELECT current_database()", &[])
        .await
        .expect("current_database()")
        .get(0);
    assert_eq!(current, dbs.pg_db);

    pg.batch_execute("CREATE TABLE t (id int PRIMARY KEY, name text NOT NULL)")
        .await
        .expect("create table");
    pg.execute(
        "INSERT INTO t VALUES ($1, $2)",
        &[&1_i32, &"привет".to_string()],
    )
    .await
    .expect("insert");
    let row = pg
        .query_one("SELECT id, name FROM t", &[])
        .await
        .expect("select");
    assert_eq!(row.get::<_, i32>(0), 1);
    assert_eq!(row.get::<_, String>(1), "привет");
}

#[tokio::test]
async fn fresh_dbs_are_distinct_and_well_formed() {
    let a = support::fresh_dbs("Smoke-Unique").await;
    let b = support::fresh_dbs("Smoke-Unique").await;
    assert_ne!(a.mysql_db, b.mysql_db);
    assert_ne!(a.pg_db, b.pg_db);
    for name in [&a.mysql_db, &b.mysql_db] {
        assert!(name.len() <= 50, "{name} is too long");
        assert!(name.starts_with("smoke_unique_"), "{name}");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{name}"
        );
    }

    let long = support::fresh_dbs(&"x".repeat(80)).await;
    assert!(long.pg_db.len() <= 50, "{}", long.pg_db);
    // Both databases of the long name really exist.
    long.mysql().await.disconnect().await.expect("disconnect");
    long.pg().await;
}

#[test]
fn servers_are_shared_and_server_ids_unique() {
    let first = support::servers();
    let second = support::servers();
    assert!(std::ptr::eq(first, second));
    assert_ne!(first.mysql_port, first.pg_port);
    assert!(first
        .root
        .ends_with(format!("duplex-test-{}", std::process::id())));

    let ids: std::collections::HashSet<u32> = (0..100).map(|_| support::next_server_id()).collect();
    assert_eq!(ids.len(), 100);
    assert!(!ids.contains(&1));
}

/// How long a query may hang in the proxy's blackhole before we call it held back.
const HELD: Duration = Duration::from_secs(2);
/// Generous bound for anything that should finish once traffic flows.
const FLOWS: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_passes_holds_back_and_resets_postgres() {
    let proxy = Proxy::start(support::servers().pg_port).await;
    let config = support::pg_config_on_port("postgres", proxy.port());

    let (client, connection) = pg_connect(&config)
        .await
        .expect("connect through the proxy");
    assert_eq!(select_int(&client, 1).await.expect("query in pass mode"), 1);
    // Bulk both ways, beyond any socket buffer.
    let big = "ж".repeat(4 << 20);
    let echoed: String = client
        .query_one("SELECT $1::text", &[&big])
        .await
        .expect("a large value through the proxy")
        .get(0);
    assert!(echoed == big, "a large value came back changed");

    // Blackhole: a query on an open connection and a new connection both hang...
    proxy.blackhole();
    let held_query = select_int(&client, 2);
    tokio::pin!(held_query);
    assert!(
        timeout(HELD, &mut held_query).await.is_err(),
        "a query went through the blackhole"
    );
    let held_connect = pg_connect(&config);
    tokio::pin!(held_connect);
    assert!(
        timeout(HELD, &mut held_connect).await.is_err(),
        "a connection was made through the blackhole"
    );
    // ...and both complete once traffic passes again.
    proxy.pass();
    let two = timeout(FLOWS, held_query)
        .await
        .expect("the held-back query completes after pass()")
        .expect("the held-back query succeeds");
    assert_eq!(two, 2);
    let (late, _late_connection) = timeout(FLOWS, held_connect)
        .await
        .expect("the held-back connect completes after pass()")
        .expect("the held-back connect succeeds");
    assert_eq!(
        select_int(&late, 3)
            .await
            .expect("query on the late client"),
        3
    );

    // Reset: the open connection dies with a RST, and so does a new one.
    proxy.reset();
    let err = select_int(&client, 4)
        .await
        .expect_err("a query survived reset()");
    assert!(err.is_closed(), "expected a closed connection, got: {err}");
    let ended = timeout(FLOWS, connection)
        .await
        .expect("the connection task ends")
        .expect("the connection task does not panic")
        .expect_err("the connection ends with an error");
    assert_reset(&ended);
    let refused = match timeout(FLOWS, pg_connect(&config)).await {
        Ok(Ok(_)) => panic!("connected through a proxy in reset mode"),
        Ok(Err(e)) => e,
        Err(_) => panic!("a connect in reset mode hung instead of failing"),
    };
    assert_reset(&refused);

    proxy.pass();
    let (fresh, _fresh_connection) = pg_connect(&config).await.expect("connect after pass()");
    assert_eq!(select_int(&fresh, 5).await.expect("query after reset"), 5);
    assert_eq!(proxy.connections(), 4);

    let port = proxy.port();
    drop(proxy);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "the proxy still listens after being dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_passes_and_resets_mariadb() {
    let proxy = Proxy::start(support::servers().mysql_port).await;
    let opts = || -> mysql_async::Opts {
        mysql_async::OptsBuilder::from_opts(support::mysql_opts(None))
            .tcp_port(proxy.port())
            .into()
    };
    let mut conn = mysql_async::Conn::new(opts())
        .await
        .expect("connect through the proxy");
    let one: Option<i32> = conn
        .query_first("SELECT 1")
        .await
        .expect("query in pass mode");
    assert_eq!(one, Some(1));

    proxy.blackhole();
    {
        let held = conn.query_first::<i32, _>("SELECT 2");
        tokio::pin!(held);
        assert!(
            timeout(HELD, &mut held).await.is_err(),
            "a query went through the blackhole"
        );
        proxy.pass();
        let two = timeout(FLOWS, held)
            .await
            .expect("the held-back query completes after pass()")
            .expect("the held-back query succeeds");
        assert_eq!(two, Some(2));
    }

    proxy.reset();
    let err = conn
        .query_first::<i32, _>("SELECT 3")
        .await
        .expect_err("a query survived reset()");
    assert!(
        matches!(err, mysql_async::Error::Io(_)),
        "expected an I/O error, got: {err}"
    );
    let err = mysql_async::Conn::new(opts())
        .await
        .expect_err("connected through a proxy in reset mode");
    assert_reset(&err);

    proxy.pass();
    let mut conn = mysql_async::Conn::new(opts())
        .await
        .expect("connect after pass()");
    let four: Option<i32> = conn
        .query_first("SELECT 4")
        .await
        .expect("query after reset");
    assert_eq!(four, Some(4));
    conn.disconnect().await.expect("disconnect");
    assert_eq!(proxy.connections(), 3);
}

async fn pg_connect(
    config: &tokio_postgres::Config,
) -> Result<
    (
        tokio_postgres::Client,
        tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    ),
    tokio_postgres::Error,
> {
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    Ok((client, tokio::spawn(connection)))
}

async fn select_int(client: &tokio_postgres::Client, n: i32) -> Result<i32, tokio_postgres::Error> {
    Ok(client.query_one("SELECT $1::int", &[&n]).await?.get(0))
}

/// Somewhere in `err`'s chain is an I/O error "connection reset by peer", the mark of a
/// RST (a plain close would read as an unexpected end of file).
fn assert_reset(err: &(dyn std::error::Error + 'static)) {
    let mut cause = Some(err);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            assert_eq!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset,
                "{err}: {io:?}"
            );
            return;
        }
        cause = e.source();
    }
    panic!("no I/O error behind: {err} ({err:?})");
}

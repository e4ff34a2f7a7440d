//! Smoke test of the test support itself: the private servers start, are configured the
//! way the CDC code relies on, and real data round-trips through fresh databases.

mod support;

use mysql_async::prelude::Queryable;

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

//! Managed PostgreSQL (Supabase) specifics that `duplex check` must recognise: a connection
//! pooler in front of the database (the well-known transaction pooler port 6543, and a pooler
//! that refuses replication connections the way PgBouncer does).

mod support;

use mysql_async::prelude::Queryable;
use support::harness::Workdir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BOTH: &str =
    "[[table]]\nsource = \"t\"\ntarget = \"t\"\ndirection = \"both\"\ncolumns = \"all\"\n";

/// A stand-in for PgBouncer in front of the test PostgreSQL: ordinary sessions pass through,
/// a replication start-up gets PgBouncer's answer. Returns its port.
async fn pooler(upstream: u16) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut len = [0u8; 4];
                if client.read_exact(&mut len).await.is_err() {
                    return;
                }
                let mut startup = vec![0u8; (u32::from_be_bytes(len) as usize).saturating_sub(4)];
                if client.read_exact(&mut startup).await.is_err() {
                    return;
                }
                if startup.windows(12).any(|w| w == b"replication\0") {
                    let mut fields = Vec::new();
                    for (tag, value) in [
                        (b'S', "FATAL"),
                        (b'V', "FATAL"),
                        (b'C', "08P01"),
                        (b'M', "unsupported startup parameter: replication"),
                    ] {
                        fields.push(tag);
                        fields.extend_from_slice(value.as_bytes());
                        fields.push(0);
                    }
                    fields.push(0);
                    let mut msg = vec![b'E'];
                    msg.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
                    msg.extend_from_slice(&fields);
                    let _ = client.write_all(&msg).await;
                    return;
                }
                let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    return;
                };
                let _ = server.write_all(&len).await;
                let _ = server.write_all(&startup).await;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_recognises_a_connection_pooler() {
    let dbs = support::fresh_dbs("pooler").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop("CREATE TABLE t (id int PRIMARY KEY, v varchar(20))")
        .await
        .unwrap();
    pg.batch_execute("CREATE TABLE t (id integer PRIMARY KEY, v text)")
        .await
        .unwrap();
    let s = support::servers();
    let direct = "fix: connect [postgres] to the database directly: on Supabase the \"Direct connection\" host db.<project>.supabase.co, port 5432 (or the session pooler on port 5432), not the transaction pooler on 6543";

    // Through a pooler that refuses replication: ordinary sessions work, the replication
    // connection fails, and check names the pooler.
    let port = pooler(s.pg_port).await;
    let work = Workdir::new(&dbs, "pooler", "UTC", &[("t.toml", BOTH)]);
    let text = std::fs::read_to_string(&work.config).unwrap().replace(
        &format!("port = {}\n", s.pg_port),
        &format!("port = {port}\n"),
    );
    std::fs::write(&work.config, text).unwrap();
    let (ok, out) = work.run_cmd(&["check"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "FAIL  PostgreSQL at 127.0.0.1:{port} answers like a connection pooler (PgBouncer, Supavisor): replication connection to PostgreSQL at 127.0.0.1:{port} as duplex: unsupported startup parameter: replication"
        )),
        "{out}"
    );
    assert!(out.contains(direct), "{out}");
    assert!(
        out.contains("ok    PostgreSQL: connection not encrypted (sslmode disable)"),
        "ordinary sessions pass the pooler:\n{out}"
    );

    // Directly: the replication connection works.
    let work = Workdir::new(&dbs, "pooler", "UTC", &[("t.toml", BOTH)]);
    let (_, out) = work.run_cmd(&["check"]);
    assert!(
        out.contains("ok    PostgreSQL: a replication connection works (system "),
        "{out}"
    );

    // Port 6543: Supabase's transaction pooler, named before anything is tried.
    let work = Workdir::new(&dbs, "pooler", "UTC", &[("t.toml", BOTH)]);
    let text = std::fs::read_to_string(&work.config)
        .unwrap()
        .replace(&format!("port = {}\n", s.pg_port), "port = 6543\n");
    std::fs::write(&work.config, text).unwrap();
    let (ok, out) = work.run_cmd(&["check"]);
    assert!(!ok);
    assert!(
        out.contains("FAIL  PostgreSQL: port 6543 is the well-known port of Supabase's transaction pooler (Supavisor)"),
        "{out}"
    );
    assert!(out.contains(direct), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_level_security_that_hides_rows_stops_the_copy() {
    let dbs = support::fresh_dbs("rls").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    let role = support::harness::pipeline_name("rls_", &dbs);
    my.query_drop("CREATE TABLE t (id int PRIMARY KEY, v varchar(20))")
        .await
        .unwrap();
    // duplex's role owns the table, but the table forces row-level security on its owner too,
    // and the only policy shows it the rows marked 'mine'.
    pg.batch_execute(&format!(
        "CREATE ROLE {role} LOGIN REPLICATION PASSWORD 'rls-pw';
         GRANT CREATE ON DATABASE {db} TO {role};
         CREATE TABLE t (id integer PRIMARY KEY, v text);
         INSERT INTO t VALUES (1, 'mine'), (2, 'theirs'), (3, 'theirs');
         ALTER TABLE t OWNER TO {role};
         ALTER TABLE t ENABLE ROW LEVEL SECURITY;
         ALTER TABLE t FORCE ROW LEVEL SECURITY;
         CREATE POLICY only_mine ON t FOR SELECT USING (v = 'mine')",
        db = dbs.pg_db
    ))
    .await
    .unwrap();
    let pipeline = support::harness::pipeline_name("rls", &dbs);
    let work = Workdir::new(
        &dbs,
        &pipeline,
        "UTC",
        &[(
            "t.toml",
            "[[table]]\nsource = \"t\"\ntarget = \"t\"\ndirection = \"reverse\"\ncolumns = \"all\"\n",
        )],
    );
    std::fs::write(work.path().join("pg.pw"), "rls-pw\n").unwrap();
    work.set_login("postgres", &role, "pg.pw");
    work.setup();

    let (ok, out) = work.run_cmd(&["check"]);
    assert!(!ok, "{out}");
    let refusal = format!(
        "row-level security on public.t may hide rows from role {role} (no BYPASSRLS, not the owner, no policy USING (true) for it): a copy could silently miss rows, so it is refused"
    );
    assert!(
        out.contains(&format!("FAIL  PostgreSQL: {refusal}")),
        "{out}"
    );
    let (ok, out) = work.run_cmd(&["snapshot"]);
    assert!(!ok, "{out}");
    assert!(out.contains(&refusal), "{out}");
    let copied = support::harness::mysql_rows(&mut my, "SELECT count(*) FROM t").await;
    assert_eq!(copied[0][0].as_deref(), Some("0"), "nothing copied");

    // A policy that shows duplex every row: the check passes and the copy takes all three.
    pg.batch_execute(&format!(
        "CREATE POLICY duplex_reads ON t FOR SELECT TO {role} USING (true)"
    ))
    .await
    .unwrap();
    let (_, out) = work.run_cmd(&["check"]);
    assert!(
        out.contains(&format!(
            "ok    PostgreSQL: role {role} sees every row of the 1 table(s) replicated from PostgreSQL"
        )),
        "{out}"
    );
    let (ok, out) = work.run_cmd(&["snapshot"]);
    assert!(ok, "{out}");
    assert!(out.contains("copied 3, dead-lettered 0"), "{out}");
    let copied = support::harness::mysql_rows(&mut my, "SELECT count(*) FROM t").await;
    assert_eq!(copied[0][0].as_deref(), Some("3"));
    let (ok, out) = work.run_cmd(&["teardown", "--yes"]);
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_accepts_and_says_nothing_times_out_the_replication_start_up() {
    let dbs = support::fresh_dbs("silent").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let mut cfg = support::harness::pg_config(&dbs.pg_db);
    cfg.port = port;
    cfg.connect_timeout_s = 1;
    let started = std::time::Instant::now();
    let e = duplex::source::postgres::stream::ReplicationConn::connect(&cfg, "test")
        .await
        .err()
        .expect("no start-up from a silent server");
    assert!(
        e.to_string().ends_with(&format!(
            "at 127.0.0.1:{port} as duplex: no answer within 1 s during start-up"
        )),
        "{e}"
    );
    assert!(e.is_transient(), "retried like a lost connection");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

//! TLS on every connection: the test servers carry certificates from a test CA
//! (`support::Servers::tls_dir`). With `verify-full` everything — MySQL queries, writes and the
//! binlog stream, PostgreSQL queries, writes and the replication stream — runs encrypted and
//! verified; a wrong host name, an untrusted CA, and `require` against a server without TLS fail
//! with messages that say what to do.

mod support;

use std::time::Duration;

use mysql_async::prelude::Queryable;
use support::harness::{mysql_rows, pg_rows, pipeline_name, stop_cleanly, wait_for, Workdir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BOTH: &str =
    "[[table]]\nsource = \"t\"\ntarget = \"t\"\ndirection = \"both\"\ncolumns = \"all\"\n";

/// Rewrites one side's section of the config: `host` and extra settings.
fn set_side(work: &Workdir, section: &str, host: &str, extra: &str) {
    let text = std::fs::read_to_string(&work.config).unwrap();
    let start = text.find(&format!("[{section}]")).unwrap();
    let (head, tail) = text.split_at(start);
    let tail = tail.replacen(
        "host = \"127.0.0.1\"",
        &format!("host = \"{host}\"\n{extra}"),
        1,
    );
    std::fs::write(&work.config, format!("{head}{tail}")).unwrap();
}

fn verify_full(ca: &str) -> String {
    let dir = &support::servers().tls_dir;
    format!(
        "sslmode = \"verify-full\"\nsslrootcert = \"{}\"",
        dir.join(ca).display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_encrypts_every_connection_both_ways() {
    let dbs = support::fresh_dbs("tls").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop("CREATE TABLE t (id int PRIMARY KEY, v varchar(50))")
        .await
        .unwrap();
    pg.batch_execute("CREATE TABLE t (id integer PRIMARY KEY, v text)")
        .await
        .unwrap();
    // A MySQL account that the server only lets in over TLS: the binlog stream too.
    let user = pipeline_name("tls_", &dbs);
    my.query_drop(format!(
        "CREATE USER '{user}'@'%' IDENTIFIED BY 'tls-pw' REQUIRE SSL;
         GRANT ALL PRIVILEGES ON *.* TO '{user}'@'%'"
    ))
    .await
    .unwrap();
    let pipeline = pipeline_name("tls", &dbs);
    let work = Workdir::new(&dbs, &pipeline, "UTC", &[("t.toml", BOTH)]);
    std::fs::write(work.path().join("my.pw"), "tls-pw").unwrap();
    work.set_login("mysql", &user, "my.pw");
    set_side(&work, "mysql", "localhost", &verify_full("ca.pem"));
    set_side(&work, "postgres", "localhost", &verify_full("ca.pem"));

    work.setup();
    let (ok, out) = work.run_cmd(&["check"]);
    assert!(ok, "{out}");
    for side in ["MySQL", "PostgreSQL"] {
        assert!(
            out.contains(&format!("ok    {side}: connection encrypted (TLSv1.3, sslmode verify-full: certificate and host name verified)")),
            "{out}"
        );
    }
    let mut child = work.start();
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
            mysql_rows(&mut c, "SELECT id, v FROM t ORDER BY id").await
                == pg_rows(&pg, "SELECT id::text, v FROM t ORDER BY t.id").await
                && pg_rows(&pg, "SELECT count(*)::text FROM t").await[0][0].as_deref() == Some("2")
        },
    )
    .await;
    // Every PostgreSQL session of duplex, the walsender of its slot included, is encrypted.
    let sessions = pg_rows(
        &pg,
        "SELECT a.backend_type, s.ssl::text, s.version FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
         WHERE a.application_name LIKE 'duplex%' ORDER BY 1",
    )
    .await;
    assert!(
        sessions
            .iter()
            .any(|r| r[0].as_deref() == Some("walsender")),
        "{sessions:?}"
    );
    assert!(sessions.len() >= 2, "{sessions:?}");
    assert!(
        sessions
            .iter()
            .all(|r| r[1].as_deref() == Some("true") && r[2].as_deref() == Some("TLSv1.3")),
        "{sessions:?}"
    );
    stop_cleanly(&mut child, &work);
    assert!(!work.log().contains("tls-pw"), "the password is in the log");
    let (ok, out) = work.run_cmd(&["teardown", "--yes"]);
    assert!(ok, "{out}");
}

/// A PostgreSQL that answers every SSLRequest with `N`, and a MySQL whose handshake does not
/// offer TLS: servers without TLS. Returns their ports.
async fn servers_without_tls() -> (u16, u16) {
    let pg = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pg_port = pg.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = pg.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 8];
                if s.read_exact(&mut request).await.is_ok() {
                    let _ = s.write_all(b"N").await;
                    // A client that goes on in plain text sends its start-up: hang up on it.
                    let mut startup = [0u8; 4];
                    let _ = s.read_exact(&mut startup).await;
                }
            });
        }
    });
    let my = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let my_port = my.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = my.accept().await {
            tokio::spawn(async move {
                // Protocol 10 handshake: long password, protocol 41, secure connection and
                // plugin auth, but no CLIENT_SSL (0x0800).
                let mut p = vec![10u8];
                p.extend_from_slice(b"5.5.5-10.11.0-no-tls\0");
                p.extend_from_slice(&1u32.to_le_bytes());
                p.extend_from_slice(b"abcdefgh\0");
                p.extend_from_slice(&0x8201u16.to_le_bytes());
                p.push(0x21);
                p.extend_from_slice(&2u16.to_le_bytes());
                p.extend_from_slice(&0x0008u16.to_le_bytes());
                p.push(21);
                p.extend_from_slice(&[0u8; 10]);
                p.extend_from_slice(b"ijklmnopqrst\0");
                p.extend_from_slice(b"mysql_native_password\0");
                let mut packet = (p.len() as u32).to_le_bytes()[..3].to_vec();
                packet.push(0);
                packet.extend_from_slice(&p);
                let _ = s.write_all(&packet).await;
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest).await;
            });
        }
    });
    (pg_port, my_port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_host_untrusted_ca_and_no_tls_fail_with_the_fix() {
    let dbs = support::fresh_dbs("tlsbad").await;
    let s = support::servers();
    let check = |work: &Workdir| {
        let (ok, out) = work.run_cmd(&["check"]);
        assert!(!ok, "check passed:\n{out}");
        out
    };

    // By address: the certificate names only localhost.
    let work = Workdir::new(&dbs, "tlsbad", "UTC", &[("t.toml", BOTH)]);
    set_side(&work, "mysql", "127.0.0.1", &verify_full("ca.pem"));
    set_side(&work, "postgres", "127.0.0.1", &verify_full("ca.pem"));
    let out = check(&work);
    for side in ["MySQL", "PostgreSQL"] {
        assert!(
            out.contains(&format!("FAIL  {side}: connecting to {side} at 127.0.0.1:"))
                && out.contains("TLS: the server's certificate does not name host \"127.0.0.1\" (sslmode verify-full): connect by a name the certificate holds, or use sslmode = \"verify-ca\""),
            "{side}:\n{out}"
        );
    }
    // verify-ca accepts the same certificate by address.
    let work = Workdir::new(&dbs, "tlsbad", "UTC", &[("t.toml", BOTH)]);
    let ca = support::servers().tls_dir.join("ca.pem");
    set_side(
        &work,
        "mysql",
        "127.0.0.1",
        &format!(
            "sslmode = \"verify-ca\"\nsslrootcert = \"{}\"",
            ca.display()
        ),
    );
    set_side(
        &work,
        "postgres",
        "127.0.0.1",
        &format!(
            "sslmode = \"verify-ca\"\nsslrootcert = \"{}\"",
            ca.display()
        ),
    );
    let (_, out) = work.run_cmd(&["check"]);
    for side in ["MySQL", "PostgreSQL"] {
        assert!(
            out.contains(&format!("ok    {side}: connection encrypted (TLSv1.3, sslmode verify-ca: certificate verified, host name not)")),
            "{out}"
        );
    }

    // A CA that signed neither server's certificate.
    let work = Workdir::new(&dbs, "tlsbad", "UTC", &[("t.toml", BOTH)]);
    set_side(&work, "mysql", "localhost", &verify_full("other-ca.pem"));
    set_side(&work, "postgres", "localhost", &verify_full("other-ca.pem"));
    let out = check(&work);
    let other = s.tls_dir.join("other-ca.pem");
    for side in ["MySQL", "PostgreSQL"] {
        assert!(
            out.contains(&format!("FAIL  {side}: connecting to {side} at localhost:")),
            "{out}"
        );
    }
    for side in ["MySQL", "PostgreSQL"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("FAIL  {side}: connecting")))
            .unwrap();
        assert!(
            line.ends_with(&format!(
                "TLS: the server's certificate is not signed by a CA in sslrootcert {} (sslmode verify-full)",
                other.display()
            )),
            "{out}"
        );
    }
    assert!(
        out.contains(
            "fix: see the message; [mysql] sslmode, sslrootcert, sslcert and sslkey set TLS"
        ),
        "{out}"
    );

    // require against servers that do not offer TLS: refused, not silently plain.
    let (pg_port, my_port) = servers_without_tls().await;
    let work = Workdir::new(&dbs, "tlsbad", "UTC", &[("t.toml", BOTH)]);
    let text = std::fs::read_to_string(&work.config)
        .unwrap()
        .replace(
            &format!("port = {}\n", s.mysql_port),
            &format!("port = {my_port}\n"),
        )
        .replace(
            &format!("port = {}\n", s.pg_port),
            &format!("port = {pg_port}\n"),
        );
    std::fs::write(&work.config, text).unwrap();
    set_side(&work, "mysql", "127.0.0.1", "sslmode = \"require\"");
    set_side(&work, "postgres", "127.0.0.1", "sslmode = \"require\"");
    let out = check(&work);
    for (side, port) in [("MySQL", my_port), ("PostgreSQL", pg_port)] {
        assert!(
            out.contains(
                "TLS: the server at 127.0.0.1 does not offer TLS, and sslmode require requires it: enable TLS on the server, or set sslmode = \"prefer\" or \"disable\""
            ) && out.contains(&format!("{side} at 127.0.0.1:{port}")),
            "{side}:\n{out}"
        );
    }
    // The replication connection (our own client) refuses the same way.
    let mut pg_cfg = support::harness::pg_config(&dbs.pg_db);
    pg_cfg.port = pg_port;
    pg_cfg.tls.mode = duplex::tls::SslMode::Require;
    let e = duplex::source::postgres::stream::ReplicationConn::connect(&pg_cfg, "test")
        .await
        .err()
        .expect("a replication connection without TLS under require");
    assert!(
        e.to_string()
            .contains("does not offer TLS, and sslmode require requires it"),
        "{e}"
    );
    // prefer takes the plain connection those servers offer (and then fails to log in to a
    // fake server, which is not about TLS).
    pg_cfg.tls.mode = duplex::tls::SslMode::Prefer;
    let e = duplex::source::postgres::stream::ReplicationConn::connect(&pg_cfg, "test")
        .await
        .err()
        .unwrap();
    assert!(!e.to_string().contains("TLS"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_sent_when_the_account_demands_one() {
    let dbs = support::fresh_dbs("tlscert").await;
    let mut my = dbs.mysql().await;
    let user = pipeline_name("x509_", &dbs);
    my.query_drop(format!(
        "CREATE USER '{user}'@'%' IDENTIFIED BY 'x509-pw' REQUIRE X509;
         GRANT ALL PRIVILEGES ON *.* TO '{user}'@'%'"
    ))
    .await
    .unwrap();
    let dir = &support::servers().tls_dir;
    let work = Workdir::new(&dbs, "tlscert", "UTC", &[("t.toml", BOTH)]);
    std::fs::write(work.path().join("my.pw"), "x509-pw").unwrap();
    work.set_login("mysql", &user, "my.pw");
    set_side(&work, "mysql", "localhost", &verify_full("ca.pem"));
    // Without the certificate the server refuses the login.
    let (ok, out) = work.run_cmd(&["check"]);
    assert!(!ok);
    assert!(
        out.contains("FAIL  MySQL: connecting to MySQL at localhost:")
            && out.contains("Access denied"),
        "{out}"
    );
    // With it, the login works over verified TLS.
    let text = std::fs::read_to_string(&work.config).unwrap().replacen(
        "sslmode = \"verify-full\"",
        &format!(
            "sslmode = \"verify-full\"\nsslcert = \"{}\"\nsslkey = \"{}\"",
            dir.join("client.pem").display(),
            dir.join("client.key").display()
        ),
        1,
    );
    std::fs::write(&work.config, text).unwrap();
    let (_, out) = work.run_cmd(&["check"]);
    assert!(
        out.contains("ok    MySQL: connection encrypted (TLSv1.3, sslmode verify-full: certificate and host name verified)"),
        "{out}"
    );
    // Half a client identity is a configuration error.
    let text = std::fs::read_to_string(&work.config).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("sslkey = "))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&work.config, text).unwrap();
    let (ok, out) = work.run_cmd(&["check"]);
    assert!(!ok);
    assert!(
        out.contains("sslcert and sslkey go together: set both or neither"),
        "{out}"
    );
}

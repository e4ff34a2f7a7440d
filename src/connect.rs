//! Sessions to both databases: a MySQL/MariaDB connection ([`mysql`]) and a PostgreSQL client
//! ([`postgres`]), each with the configured timeout and TLS (`sslmode` per side), errors
//! classified at the edge (transient: retried; a TLS failure: a configuration error with the fix
//! in its message). Every part of duplex that talks to a database opens its sessions here; the
//! replication connection, which speaks its own protocol, is `source::postgres::stream`.
//!
//! May use: the configuration, the error type and `tls`; every module that talks to a database uses
//! it.

use mysql_async::{Conn, Opts, OptsBuilder};
use tokio_postgres::{Client, NoTls};

use crate::config::{MysqlConfig, PostgresConfig};
use crate::error::{Error, ErrorKind, Result};

/// Connection options for queries (no default database unless given).
fn mysql_opts(cfg: &MysqlConfig, db: Option<&str>, ssl: Option<mysql_async::SslOpts>) -> Opts {
    OptsBuilder::default()
        .ip_or_hostname(cfg.host.clone())
        .tcp_port(cfg.port)
        .user(Some(cfg.user.clone()))
        .pass(Some(cfg.password.expose().to_string()))
        .db_name(db.map(str::to_string))
        .prefer_socket(false)
        .wait_timeout(Some(28_800))
        // A peer gone without a reset (a blackholed address) is noticed by TCP too while the
        // connection is idle; a wait on a silent peer is bounded by `read_timeout_s` above it.
        .tcp_keepalive(Some(keepalive_idle(cfg.read_timeout_s)))
        .ssl_opts(ssl)
        .into()
}

/// TCP keepalive's idle time for a read timeout: probes start at a third of it.
fn keepalive_idle(read_timeout_s: u64) -> std::time::Duration {
    std::time::Duration::from_secs((read_timeout_s / 3).max(1))
}

/// Connects with a timeout, over TLS as `[mysql] sslmode` says (queries, writes and the binlog
/// stream alike); errors are classified as transient when retryable. A TLS failure is a
/// configuration error with the fix in its message.
pub async fn mysql(cfg: &MysqlConfig, db: Option<&str>, sink: bool) -> Result<Conn> {
    let what = format!(
        "connecting to MySQL at {}:{} as {}",
        cfg.host, cfg.port, cfg.user
    );
    let ssl = cfg.tls.mysql_opts()?;
    let attempt = |ssl: Option<mysql_async::SslOpts>| {
        tokio::time::timeout(
            std::time::Duration::from_secs(cfg.connect_timeout_s),
            Conn::new(mysql_opts(cfg, db, ssl)),
        )
    };
    let tls = ssl.is_some();
    let mut result = attempt(ssl.clone()).await;
    // sslmode = verify-ca: mysql_async cannot skip the name check with this rustls (it looks
    // for the old error text), so the certificate is checked against the first name it
    // presents: chain and that name verified, which is no weaker than verify-ca.
    if cfg.tls.mode == crate::tls::SslMode::VerifyCa {
        if let (Ok(Err(e)), Some(ssl)) = (&result, ssl) {
            if let Some(name) = presented_name(&format!("{e:?}")) {
                result = attempt(Some(ssl.with_danger_tls_hostname_override(Some(name)))).await;
            }
        }
    }
    // sslmode = prefer: a server that does not offer TLS gets a plain connection.
    if cfg.tls.mode == crate::tls::SslMode::Prefer {
        if let Ok(Err(e)) = &result {
            if crate::tls::offers_no_tls(&format!("{e:?} {e}")) {
                result = attempt(None).await;
            }
        }
    }
    match result {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => {
            if tls {
                if let Some(why) = cfg.tls.explain(&format!("{e:?} {e}"), &cfg.host) {
                    return Err(Error::new(ErrorKind::Config, format!("{what}: {why}")));
                }
            }
            Err(Error::from_mysql(e, sink, &what))
        }
        Err(_) => Err(Error::new(
            if sink {
                ErrorKind::SinkTransient
            } else {
                ErrorKind::SourceTransient
            },
            format!("{what}: timed out after {} s", cfg.connect_timeout_s),
        )),
    }
}

/// The first DNS name a certificate presents, from a failed name check's message.
fn presented_name(debug: &str) -> Option<String> {
    if !debug.contains("NotValidForName") {
        return None;
    }
    // `presented: ["DnsName(\"localhost\")"]`: the quotes come escaped.
    let start = debug.find("DnsName(")? + "DnsName(".len();
    let name: String = debug[start..]
        .trim_start_matches(['\\', '"'])
        .chars()
        .take_while(|c| *c != '\\' && *c != '"')
        .collect();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
#[test]
fn presented_names_are_read_from_the_error() {
    let debug = r#"Io(Io(Custom { kind: InvalidData, error: InvalidCertificate(NotValidForNameContext { expected: IpAddress(V4(Ipv4Addr([127, 0, 0, 1]))), presented: ["DnsName(\"localhost\")"] }) }))"#;
    assert_eq!(presented_name(debug).as_deref(), Some("localhost"));
    assert_eq!(presented_name("UnknownIssuer"), None);
}

/// Connects to PostgreSQL; the connection task is spawned on the current runtime.
pub async fn postgres(cfg: &PostgresConfig, application: &str) -> Result<Client> {
    let mut pg = tokio_postgres::Config::new();
    pg.host(&cfg.host)
        .port(cfg.port)
        .user(&cfg.user)
        .dbname(&cfg.dbname)
        .application_name(application)
        .connect_timeout(std::time::Duration::from_secs(cfg.connect_timeout_s))
        // A peer gone without a reset: keepalive probes while idle, and data unacknowledged
        // for the read timeout closes the connection (Linux TCP_USER_TIMEOUT).
        .keepalives(true)
        .keepalives_idle(keepalive_idle(cfg.read_timeout_s))
        .keepalives_interval(keepalive_idle(cfg.read_timeout_s))
        .keepalives_retries(3)
        .tcp_user_timeout(std::time::Duration::from_secs(cfg.read_timeout_s));
    if !cfg.password.expose().is_empty() {
        pg.password(cfg.password.expose());
    }
    let what = format!(
        "connecting to PostgreSQL at {}:{} as {} (database {})",
        cfg.host, cfg.port, cfg.user, cfg.dbname
    );
    let tls_failed = |e: tokio_postgres::Error| {
        let text = format!("{e:?} {e}");
        match cfg.tls.explain(&text, &cfg.host) {
            Some(why) => Error::new(ErrorKind::Config, format!("{what}: {why}")),
            None => Error::from_pg(e, true, &what),
        }
    };
    let client = match cfg.tls.client_config()? {
        None => {
            let (client, conn) = pg
                .connect(NoTls)
                .await
                .map_err(|e| Error::from_pg(e, true, &what))?;
            spawn_connection(conn);
            client
        }
        Some(tls) => {
            pg.ssl_mode(if cfg.tls.required() {
                tokio_postgres::config::SslMode::Require
            } else {
                tokio_postgres::config::SslMode::Prefer
            });
            let connector = tokio_postgres_rustls::MakeRustlsConnect::new((*tls).clone());
            let (client, conn) = pg.connect(connector).await.map_err(tls_failed)?;
            spawn_connection(conn);
            client
        }
    };
    Ok(client)
}

fn spawn_connection<S, T>(conn: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "PostgreSQL connection closed");
        }
    });
}

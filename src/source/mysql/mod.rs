//! The MySQL/MariaDB source: connection settings, server checks and the current binlog position;
//! the stream itself is in [`binlog`], value decoding in [`decode`], table definitions in
//! [`schema`].
//!
//! Owns the MySQL connection options (TLS included) and the server checks. May use the
//! configuration, errors, the model's positions and [`crate::tls`].

pub mod binlog;
pub mod decode;
pub mod rows;
pub mod schema;
mod txn;

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, OptsBuilder};

use crate::config::MysqlConfig;
use crate::error::{Error, Result};
use crate::model::{GtidState, MariaGtidList, MysqlGtidSet, MysqlPosition};

pub use binlog::MysqlSource;

/// Connection options for queries (no default database unless given).
pub fn opts(cfg: &MysqlConfig, db: Option<&str>, ssl: Option<mysql_async::SslOpts>) -> Opts {
    OptsBuilder::default()
        .ip_or_hostname(cfg.host.clone())
        .tcp_port(cfg.port)
        .user(Some(cfg.user.clone()))
        .pass(Some(cfg.password.expose().to_string()))
        .db_name(db.map(str::to_string))
        .prefer_socket(false)
        .wait_timeout(Some(28_800))
        .ssl_opts(ssl)
        .into()
}

/// Connects with a timeout, over TLS as `[mysql] sslmode` says (queries, writes and the binlog
/// stream alike); errors are classified as transient when retryable. A TLS failure is a
/// configuration error with the fix in its message.
pub async fn connect(cfg: &MysqlConfig, db: Option<&str>, sink: bool) -> Result<Conn> {
    let what = format!(
        "connecting to MySQL at {}:{} as {}",
        cfg.host, cfg.port, cfg.user
    );
    let ssl = cfg.tls.mysql_opts()?;
    let attempt = |ssl: Option<mysql_async::SslOpts>| {
        tokio::time::timeout(
            std::time::Duration::from_secs(cfg.connect_timeout_s),
            Conn::new(opts(cfg, db, ssl)),
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
                    return Err(Error::new(
                        crate::error::ErrorKind::Config,
                        format!("{what}: {why}"),
                    ));
                }
            }
            Err(Error::from_mysql(e, sink, &what))
        }
        Err(_) => Err(Error::new(
            if sink {
                crate::error::ErrorKind::SinkTransient
            } else {
                crate::error::ErrorKind::SourceTransient
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

/// Whether the server is MariaDB (as opposed to MySQL).
pub async fn is_mariadb(conn: &mut Conn) -> Result<bool> {
    let v: Option<String> = conn
        .query_first("SELECT VERSION()")
        .await
        .map_err(|e| Error::from_mysql(e, false, "reading the server version"))?;
    Ok(v.unwrap_or_default()
        .to_ascii_lowercase()
        .contains("mariadb"))
}

/// The server's current end of binlog, with the matching GTID list on MariaDB.
pub async fn current_position(conn: &mut Conn) -> Result<MysqlPosition> {
    let mariadb = is_mariadb(conn).await?;
    let status: Option<mysql_async::Row> = match conn.query_first("SHOW MASTER STATUS").await {
        Ok(r) => r,
        // MySQL 8.4 renamed it.
        Err(_) => conn
            .query_first("SHOW BINARY LOG STATUS")
            .await
            .map_err(|e| Error::from_mysql(e, false, "reading the binlog position"))?,
    };
    let row = status.ok_or_else(|| {
        Error::new(
            crate::error::ErrorKind::ServerSetting,
            "SHOW MASTER STATUS returned nothing: binary logging is off; start the server with log_bin",
        )
    })?;
    let file: String = row.get(0).unwrap_or_default();
    let pos: u64 = row.get(1).unwrap_or_default();
    let mut position = MysqlPosition::new(file.clone(), pos);
    if !mariadb {
        // MySQL reports the executed GTID set in the same row, consistent with file:pos.
        let executed: Option<String> = row.get_opt(4).and_then(|r| r.ok());
        if let Some(set) = executed.filter(|s| !s.trim().is_empty()) {
            position.gtid = Some(GtidState::Mysql(set.parse::<MysqlGtidSet>()?));
        }
    } else {
        let gtid: Option<Option<String>> = conn
            .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (file, pos))
            .await
            .map_err(|e| Error::from_mysql(e, false, "reading the GTID position"))?;
        if let Some(Some(g)) = gtid {
            position.gtid = Some(GtidState::Maria(g.parse::<MariaGtidList>()?));
        }
    }
    Ok(position)
}

/// One finding of a server check: what is wrong and how to fix it.
#[derive(Debug, Clone)]
pub struct Finding {
    pub ok: bool,
    pub what: String,
    pub fix: String,
}

/// Checks the server settings that make row-based change capture safe, and the privileges.
pub async fn check_server(conn: &mut Conn) -> Result<Vec<Finding>> {
    let mariadb = is_mariadb(conn).await?;
    let mut out = Vec::new();
    let vars: Vec<(String, String)> = conn
        .query(
            "SHOW GLOBAL VARIABLES WHERE Variable_name IN \
             ('log_bin','binlog_format','binlog_row_image','binlog_row_metadata', \
              'binlog_row_value_options','server_id','log_bin_compress','binlog_transaction_compression')",
        )
        .await
        .map_err(|e| Error::from_mysql(e, false, "reading server variables"))?;
    let get = |n: &str| {
        vars.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let mut expect = |name: &str, want: &str, fix: &str| {
        let have = get(name).unwrap_or_else(|| "(not set)".into());
        let ok = have.eq_ignore_ascii_case(want);
        out.push(Finding {
            ok,
            what: format!("{name} = {have} (needs {want})"),
            fix: fix.to_string(),
        });
    };
    expect(
        "log_bin",
        "ON",
        "enable binary logging: log_bin = ON (with a log_bin base name) in the server config, then restart",
    );
    expect(
        "binlog_format",
        "ROW",
        "SET GLOBAL binlog_format = 'ROW' and binlog_format = ROW in the server config (statement-based logging cannot be captured row by row)",
    );
    expect(
        "binlog_row_image",
        "FULL",
        "SET GLOBAL binlog_row_image = 'FULL' and binlog_row_image = FULL in the server config (updates must carry every column)",
    );
    if mariadb {
        if get("log_bin_compress").is_some_and(|v| v.eq_ignore_ascii_case("ON")) {
            out.push(Finding {
                ok: false,
                what: "log_bin_compress = ON".into(),
                fix: "SET GLOBAL log_bin_compress = OFF (compressed row events are not read)"
                    .into(),
            });
        }
    } else if let Some(v) = get("binlog_row_value_options") {
        if !v.is_empty() {
            out.push(Finding {
                ok: false,
                what: format!("binlog_row_value_options = {v}"),
                fix: "SET GLOBAL binlog_row_value_options = '' (partial JSON updates lose data)"
                    .into(),
            });
        }
    }
    // Privileges: REPLICATION SLAVE for the stream, REPLICATION CLIENT / BINLOG MONITOR for the
    // position, SELECT on information_schema (always granted for own tables).
    let grants: Vec<String> = conn
        .query("SHOW GRANTS FOR CURRENT_USER()")
        .await
        .map_err(|e| Error::from_mysql(e, false, "reading grants"))?;
    let all = grants.join("\n").to_ascii_uppercase();
    let global: Vec<&str> = all.lines().filter(|l| l.contains(" ON *.* ")).collect();
    let has = |p: &str| {
        global
            .iter()
            .any(|l| l.contains("ALL PRIVILEGES") || l.contains(p))
    };
    out.push(Finding {
        ok: has("REPLICATION SLAVE"),
        what: "privilege REPLICATION SLAVE (read the binlog as a replica)".into(),
        fix: "GRANT REPLICATION SLAVE ON *.* TO <duplex user>".into(),
    });
    out.push(Finding {
        ok: has("REPLICATION CLIENT") || has("BINLOG MONITOR") || has("SUPER"),
        what: if mariadb {
            "privilege BINLOG MONITOR (read the binlog position)".into()
        } else {
            "privilege REPLICATION CLIENT (read the binlog position)".into()
        },
        fix: if mariadb {
            "GRANT BINLOG MONITOR ON *.* TO <duplex user>".into()
        } else {
            "GRANT REPLICATION CLIENT ON *.* TO <duplex user>".into()
        },
    });
    Ok(out)
}

//! The MySQL/MariaDB source: server checks and the current binlog position; the stream itself is
//! in [`binlog`], value decoding in [`decode`], table definitions in [`schema`].
//!
//! Owns the server checks. May use the configuration, errors, the model, sessions from
//! [`crate::connect`], table definitions from [`crate::catalog`] and duplex's own table names
//! from [`crate::state`].

pub mod binlog;
pub mod decode;
pub mod rows;
pub mod schema;
pub mod statement;
mod txn;

use mysql_async::prelude::*;
use mysql_async::Conn;

use crate::error::{Error, Result};
use crate::model::{GtidState, MariaGtidList, MysqlGtidSet, MysqlPosition};

pub use binlog::MysqlSource;

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
    expect(
        "binlog_row_metadata",
        "FULL",
        "SET GLOBAL binlog_row_metadata = 'FULL' and binlog_row_metadata = FULL in the server config (MariaDB 10.5+, MySQL 8.0+): each row event then carries the column names, signedness and charsets it was written with, so rows written before an ALTER TABLE are read right after it",
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
    } else {
        if let Some(v) = get("binlog_row_value_options") {
            if !v.is_empty() {
                out.push(Finding {
                    ok: false,
                    what: format!("binlog_row_value_options = {v}"),
                    fix:
                        "SET GLOBAL binlog_row_value_options = '' (partial JSON updates lose data)"
                            .into(),
                });
            }
        }
        if get("binlog_transaction_compression").is_some_and(|v| v.eq_ignore_ascii_case("ON")) {
            out.push(Finding {
                ok: false,
                what: "binlog_transaction_compression = ON".into(),
                fix: "SET GLOBAL binlog_transaction_compression = OFF (compressed transactions are not read)"
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

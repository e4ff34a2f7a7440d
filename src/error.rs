//! One error type for the whole crate, with a closed-but-growable kind.
//!
//! Errors are classified where they are born (the edge that talks to a server) into a
//! [`ErrorKind`]; [`Error::is_transient`] is the single place that decides whether an
//! operation is retried with backoff or treated as definite (dead letter / stop the table).
//!
//! May use: nothing of duplex; every module uses it.

use std::fmt;

/// What went wrong, coarsely: enough for the retry policy and for metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The configuration file is wrong (unknown key, missing value, bad secret source).
    Config,
    /// A mapping file is wrong or does not match the live schemas.
    Mapping,
    /// A server setting makes change data capture unsafe.
    ServerSetting,
    /// Reading from the source failed because of the network or a restart: retried.
    SourceTransient,
    /// The source sent something we cannot interpret: stop.
    SourceDefinite,
    /// Writing to the target failed because of the network, a restart, a deadlock: retried.
    SinkTransient,
    /// The target rejected a value or a row (constraint, type, range): dead letter.
    SinkDefinite,
    /// A value cannot be converted to the target type.
    Convert,
    /// Our own bookkeeping is inconsistent (a checkpoint would move backward, ...).
    Invariant,
}

impl ErrorKind {
    /// Short stable name, used as a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Config => "config",
            ErrorKind::Mapping => "mapping",
            ErrorKind::ServerSetting => "server_setting",
            ErrorKind::SourceTransient => "source_transient",
            ErrorKind::SourceDefinite => "source_definite",
            ErrorKind::SinkTransient => "sink_transient",
            ErrorKind::SinkDefinite => "sink_definite",
            ErrorKind::Convert => "convert",
            ErrorKind::Invariant => "invariant",
        }
    }
}

/// The crate's error: a kind and a message that names the thing (file and line, table and key,
/// position) so the operator knows where to look.
#[derive(Debug, thiserror::Error)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    /// The server refused a privilege (or the login): only a GRANT mends it.
    privilege: bool,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            privilege: false,
        }
    }

    /// Whether the server refused a privilege or the login.
    pub fn is_privilege(&self) -> bool {
        self.privilege
    }

    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    pub fn mapping(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Mapping, message)
    }

    pub fn convert(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Convert, message)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Adds context in front of the message, keeping the kind.
    pub fn context(self, what: impl fmt::Display) -> Self {
        Error {
            kind: self.kind,
            message: format!("{what}: {}", self.message),
            privilege: self.privilege,
        }
    }

    /// The one retry decision: transient errors are retried with backoff, the rest are not.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::SourceTransient | ErrorKind::SinkTransient
        )
    }

    /// Classifies a MySQL/MariaDB client error. `sink` says which side of the pipeline saw it.
    pub fn from_mysql(err: mysql_async::Error, sink: bool, what: &str) -> Self {
        let transient = match &err {
            mysql_async::Error::Io(_) => true,
            mysql_async::Error::Driver(_) => true,
            mysql_async::Error::Server(e) => mysql_errno_is_transient(e.code),
            mysql_async::Error::Other(_) => false,
            mysql_async::Error::Url(_) => false,
        };
        let kind = match (sink, transient) {
            (false, true) => ErrorKind::SourceTransient,
            (false, false) => ErrorKind::SourceDefinite,
            (true, true) => ErrorKind::SinkTransient,
            (true, false) => ErrorKind::SinkDefinite,
        };
        let privilege = matches!(&err, mysql_async::Error::Server(e) if matches!(e.code, 1044 | 1045 | 1142 | 1143 | 1227 | 1370));
        Error {
            privilege,
            ..Error::new(kind, format!("{what}: {err}"))
        }
    }

    /// Classifies a PostgreSQL client error by SQLSTATE. `sink` says which side saw it.
    pub fn from_pg(err: tokio_postgres::Error, sink: bool, what: &str) -> Self {
        let transient = match err.code() {
            Some(code) => sqlstate_is_transient(code.code()),
            // No SQLSTATE: the connection itself failed or closed.
            None => true,
        };
        let kind = match (sink, transient) {
            (false, true) => ErrorKind::SourceTransient,
            (false, false) => ErrorKind::SourceDefinite,
            (true, true) => ErrorKind::SinkTransient,
            (true, false) => ErrorKind::SinkDefinite,
        };
        let detail = match err.as_db_error() {
            Some(db) => {
                let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
                if let Some(d) = db.detail() {
                    s.push_str(": ");
                    s.push_str(d);
                }
                s
            }
            None => err.to_string(),
        };
        let privilege = err
            .code()
            .is_some_and(|c| matches!(c.code(), "42501" | "28000" | "28P01"));
        Error {
            privilege,
            ..Error::new(kind, format!("{what}: {detail}"))
        }
    }
}

/// SQLSTATE classes and codes that a retry can cure: the connection and concurrency, and the
/// environment a row does not choose — a missing privilege, table or column, a statement timeout,
/// a read-only server, a full disk. Those would fail every row alike; as row errors they turned
/// every change into a dead letter while the checkpoint moved on. Retried instead, the
/// direction shows the reason in `duplex status` and `/ready` (503) and goes on by itself once
/// the cause is fixed (a GRANT, say).
pub fn sqlstate_is_transient(code: &str) -> bool {
    matches!(
        code,
        "42501" // insufficient_privilege
            | "42P01" // undefined_table
            | "42703" // undefined_column
            | "42883" // undefined_function
            | "3F000" // invalid_schema_name
            | "57014" // query_canceled (statement_timeout)
            | "25006" // read_only_sql_transaction (a standby after a failover)
            | "53100" // disk_full
            | "53200" // out_of_memory
            | "40001" // serialization_failure
            | "40P01" // deadlock_detected
            | "55P03" // lock_not_available
            | "55006" // object_in_use (replication slot active)
            | "57P01" // admin_shutdown
            | "57P02" // crash_shutdown
            | "57P03" // cannot_connect_now
            | "53300" // too_many_connections
            | "53400" // configuration_limit_exceeded
    ) || code.starts_with("08") // connection exceptions
}

/// MySQL/MariaDB error numbers that a retry can cure; as [`sqlstate_is_transient`], the
/// environment's errors too (privileges, missing objects, timeouts, read-only, full).
pub fn mysql_errno_is_transient(code: u16) -> bool {
    matches!(
        code,
        1142 // ER_TABLEACCESS_DENIED_ERROR
            | 1143 // ER_COLUMNACCESS_DENIED_ERROR
            | 1044 // ER_DBACCESS_DENIED_ERROR
            | 1227 // ER_SPECIFIC_ACCESS_DENIED_ERROR
            | 1146 // ER_NO_SUCH_TABLE
            | 1054 // ER_BAD_FIELD_ERROR
            | 1290 // ER_OPTION_PREVENTS_STATEMENT (read_only)
            | 1792 // ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
            | 1969 // ER_STATEMENT_TIMEOUT (MariaDB max_statement_time)
            | 3024 // ER_QUERY_TIMEOUT (MySQL max_execution_time)
            | 1021 // ER_DISK_FULL
            | 1114 // ER_RECORD_FILE_FULL
            | 1205 // ER_LOCK_WAIT_TIMEOUT
            | 1213 // ER_LOCK_DEADLOCK
            | 1040 // ER_CON_COUNT_ERROR
            | 1053 // ER_SERVER_SHUTDOWN
            | 2002 | 2003 | 2006 | 2013 // client: can't connect, gone away, lost
            | 1927 // ER_CONNECTION_KILLED (MariaDB)
            | 1317 // ER_QUERY_INTERRUPTED
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert!(sqlstate_is_transient("40P01"));
        assert!(sqlstate_is_transient("08006"));
        assert!(!sqlstate_is_transient("23505"));
        assert!(!sqlstate_is_transient("22003"));
        assert!(mysql_errno_is_transient(1213));
        assert!(!mysql_errno_is_transient(1062));
        let e = Error::config("x").context("duplex.toml");
        assert_eq!(e.to_string(), "duplex.toml: x");
        assert!(!e.is_transient());
        assert!(Error::new(ErrorKind::SinkTransient, "y").is_transient());
    }
}

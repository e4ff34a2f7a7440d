//! Which way a pipeline runs, and the names derived from a pipeline's name: the labels its
//! checkpoints and dead letters are stored under, its replication slot and publication, and its
//! replication origins. Every layer uses these; they depend on nothing but [`crate::error`].

use crate::error::{Error, ErrorKind};

/// The direction label of MySQL/MariaDB → PostgreSQL, stored with checkpoints, dead letters and
/// snapshot progress.
pub const FORWARD: &str = "mysql_to_pg";
/// The direction label of PostgreSQL → MySQL/MariaDB.
pub const REVERSE: &str = "pg_to_mysql";

/// Which way a pipeline runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// MySQL/MariaDB binlog → PostgreSQL.
    Forward,
    /// PostgreSQL slot → MySQL/MariaDB.
    Reverse,
}

impl Way {
    pub fn as_str(self) -> &'static str {
        match self {
            Way::Forward => FORWARD,
            Way::Reverse => REVERSE,
        }
    }

    /// The server whose failure `e` reports: the source's on a source error, else the target's.
    pub fn failed_side(self, e: &Error) -> &'static str {
        let source = matches!(
            e.kind(),
            ErrorKind::SourceTransient | ErrorKind::SourceDefinite
        );
        match (self, source) {
            (Way::Forward, true) | (Way::Reverse, false) => "mysql",
            (Way::Forward, false) | (Way::Reverse, true) => "postgres",
        }
    }
}

/// The replication slot and publication of a pipeline's reverse direction.
pub fn slot_name(pipeline: &str) -> String {
    format!("duplex_{pipeline}")
}

/// The origin name of writer `n` of a pipeline.
pub fn origin_name(pipeline: &str, n: u32) -> String {
    format!("{}{n}", own_prefix(pipeline))
}

/// The writer that applies the stream (and copies).
pub const STREAM_WRITER: u32 = 1;
/// The writer of `duplex dlq retry`, which runs beside the stream's (an origin is active in one
/// session at a time).
pub const DLQ_WRITER: u32 = 2;

/// Whether an origin is one of `pipeline`'s writers: `duplex_<pipeline>_<n>` exactly, so that
/// pipeline `shop` does not take `duplex_shop_eu_1` (pipeline `shop_eu`) for its own.
pub fn is_own_origin(pipeline_prefix: &str, name: &str) -> bool {
    name.strip_prefix(pipeline_prefix)
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The prefix of every origin of a pipeline: what its readers drop.
pub fn own_prefix(pipeline: &str) -> String {
    format!("duplex_{pipeline}_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_origins_are_exact() {
        let p = own_prefix("shop");
        assert!(is_own_origin(&p, "duplex_shop_1"));
        assert!(is_own_origin(&p, "duplex_shop_2"));
        assert!(!is_own_origin(&p, "duplex_shop_eu_1"));
        assert!(!is_own_origin(&p, "duplex_shop_"));
        assert!(!is_own_origin(&p, "duplex_sho_1"));
    }
}

//! The `newest` policy's clocks: for each column whose conflicts the newer change wins, the last
//! change each source made to it, with that source's commit time, kept in `<duplex>.newest` on
//! both sides. Each direction writes the half of its own source there (in its target
//! transaction, so exactly once) and tells the other direction about it inside that same
//! transaction — on PostgreSQL with a transactional logical message (prefix
//! [`MESSAGE_PREFIX`]), on MySQL through the binlog row of its `newest` table. The other
//! direction copies the half it learns into its own target's table and decides again.
//!
//! Each side thus ends up knowing both last changes of a column, and each direction sets its
//! own target to the newer one's value — where the target holds a value it can place: either
//! change's, the one it wrote last (`written`), or the before value of the change it applies.
//! Any other value is a change of the target's own side not yet known here; its half is on the
//! way, and the decision is taken again when it arrives. Clocks: Bitrix's is the binlog event time in whole
//! seconds; the CRM's is PostgreSQL's commit time in microseconds. They are compared in whole
//! seconds; a tie (the same second) goes to the CRM.
//!
//! Owns the table's DDL in both dialects, the relay's shape and the comparison.

use serde::{Deserialize, Serialize};

use super::conflict::Conflict;
use crate::model::{my_ident, pg_ident, RowChange, TableName, Value};

/// The table's name in duplex's schema (PostgreSQL) and database (MySQL).
pub const TABLE: &str = "newest";

/// The prefix of the logical messages carrying the forward direction's half.
pub const MESSAGE_PREFIX: &str = "duplex_newest";

/// DDL on PostgreSQL.
pub fn pg_ddl(schema: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {}.{TABLE} (
             pipeline      text NOT NULL,
             tbl           text NOT NULL,
             pk            text NOT NULL,
             col           text NOT NULL,
             my_key        text,
             bitrix_value  text,
             bitrix_source text,
             bitrix_ts     bigint,
             crm_value     text,
             crm_source    text,
             crm_ts        bigint,
             written       text,
             written_ts    bigint,
             PRIMARY KEY (pipeline, tbl, pk, col)
         )",
        pg_ident(schema)
    )
}

/// DDL on MySQL/MariaDB.
pub fn my_ddl(database: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {}.{TABLE} (
             pipeline      varchar(64) NOT NULL,
             tbl           varchar(190) NOT NULL,
             pk            varchar(190) NOT NULL,
             col           varchar(128) NOT NULL,
             my_key        varchar(190),
             bitrix_value  text,
             bitrix_source text,
             bitrix_ts     bigint,
             crm_value     text,
             crm_source    text,
             crm_ts        bigint,
             written       text,
             written_ts    bigint,
             PRIMARY KEY (pipeline, tbl, pk, col)
         ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
        my_ident(database)
    )
}

/// One source's last change of one column, as one direction tells the other. The row and
/// column are named the CRM's way (`tbl`, `pk`, `col`); `my_key` is the row's Bitrix key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Relay {
    pub pipeline: String,
    pub tbl: String,
    pub pk: String,
    pub col: String,
    pub my_key: Option<String>,
    /// The value in its source's own terms (Bitrix's for the forward direction's half).
    pub value: Option<String>,
    /// Its source commit time, µs since the epoch.
    pub ts: i64,
}

/// How a direction decided a `newest` column it wrote: the value written over the one the row
/// held, and both sides' last changes' times.
#[derive(Debug, Clone)]
pub struct Decided {
    pub current: Option<String>,
    pub written: Option<String>,
    pub crm: bool,
    pub bitrix_ts: Option<i64>,
    pub crm_ts: Option<i64>,
}

impl Decided {
    /// Both sides' changes were weighed: a conflict. (A value the copy brought has no time, 0:
    /// it is older than any change, and meeting it is no conflict.)
    pub fn both(&self) -> bool {
        self.bitrix_ts.is_some_and(|t| t > 0) && self.crm_ts.is_some_and(|t| t > 0)
    }

    /// The conflict log row: `row` is (table, key, column) on the target, `forward` whether
    /// the target is PostgreSQL (then the source's time is Bitrix's), `change` the applied
    /// change's before value and transaction (none when a relay decided).
    pub fn conflict(
        self,
        row: (String, String, String),
        forward: bool,
        change: Option<(Option<String>, String)>,
    ) -> Conflict {
        let (bitrix, crm) = (self.bitrix_ts.unwrap_or(0), self.crm_ts.unwrap_or(0));
        let (commit_time_us, other_commit_us) = if forward {
            (bitrix, crm)
        } else {
            (crm, bitrix)
        };
        let (before, txn_id) = change.unwrap_or_else(|| (None, "newest relay".into()));
        Conflict {
            target_table: row.0,
            key: row.1,
            column: row.2,
            before,
            incoming: self.written,
            current: self.current,
            policy: "newest",
            winner: if self.crm { "crm" } else { "bitrix" },
            txn_id,
            commit_time_us,
            other_commit_us,
        }
    }
}

/// Whether the CRM's change wins over Bitrix's: the later one by source commit time, compared
/// in whole seconds (Bitrix's binlog clock); a tie goes to the CRM. A side that made no change
/// known here loses.
pub fn crm_wins(bitrix_ts: Option<i64>, crm_ts: Option<i64>) -> bool {
    match (bitrix_ts, crm_ts) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(b), Some(c)) => c.div_euclid(1_000_000) >= b.div_euclid(1_000_000),
    }
}

/// A source value as the text a relay carries (`None` for NULL).
pub fn source_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        other => Some(other.to_string()),
    }
}

/// A `newest` column as a direction finds its row and state: whether the row holds Bitrix's
/// last change, the CRM's, the value written last; both halves (value in this side's terms,
/// time); and whether the row held the before value of the change just stored (`plain`).
pub struct Found {
    pub plain: bool,
    pub is_bitrix: bool,
    pub is_crm: bool,
    pub is_written: bool,
    pub bitrix: (Option<String>, Option<i64>),
    pub crm: (Option<String>, Option<i64>),
}

impl Found {
    /// What to write: whether the CRM's change won, its value and time; `None` when the row
    /// already holds the newer value, or holds one none of these is (a change of this side not
    /// known here yet, on its way: the column is decided again when it arrives).
    pub fn choose(self) -> Option<(bool, Option<String>, Option<i64>)> {
        let is_bitrix = self.is_bitrix && self.bitrix.1.is_some();
        let is_crm = self.is_crm && self.crm.1.is_some();
        let crm = crm_wins(self.bitrix.1, self.crm.1);
        let placed = self.plain || is_bitrix || is_crm || self.is_written;
        if !placed || (crm && is_crm) || (!crm && is_bitrix) {
            return None;
        }
        let (value, ts) = if crm { self.crm } else { self.bitrix };
        Some((crm, value, ts))
    }
}

/// The synthetic table the PostgreSQL reader gives a relay message (never a real table: its
/// schema is empty).
pub fn message_table() -> TableName {
    TableName {
        schema: String::new(),
        name: MESSAGE_PREFIX.to_string(),
    }
}

/// The relay in a logical message's content.
pub fn from_message(content: &[u8]) -> Option<Relay> {
    serde_json::from_slice(content).ok()
}

/// The message content of a relay.
pub fn to_message(relay: &Relay) -> String {
    serde_json::to_string(relay).expect("a relay serialises")
}

/// The CRM half a row of MySQL's `newest` table (read from the binlog) tells, when that row
/// changed it: `table` is that table's name.
pub fn crm_half_of(change: &RowChange, table: &TableName, pipeline: &str) -> Option<Relay> {
    if change.table.name != *table {
        return None;
    }
    let after = change.after.as_ref()?;
    let col = |row: &[Value], name: &str| source_text(row.get(change.table.column_index(name)?)?);
    if col(after, "pipeline").as_deref() != Some(pipeline) {
        return None;
    }
    let half = |row: &[Value]| (col(row, "crm_source"), col(row, "crm_ts"));
    let now = half(after);
    if change.before.as_deref().map(half) == Some(now.clone()) {
        return None; // the row changed in its other half only
    }
    Some(Relay {
        pipeline: pipeline.to_string(),
        tbl: col(after, "tbl")?,
        pk: col(after, "pk")?,
        col: col(after, "col")?,
        my_key: col(after, "my_key"),
        value: now.0,
        ts: now.1?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_wins_in_whole_seconds_ties_to_the_crm() {
        let s = 1_000_000;
        assert!(crm_wins(Some(10 * s), Some(11 * s)));
        assert!(!crm_wins(Some(11 * s), Some(10 * s + 999_999)));
        // The same second: the CRM.
        assert!(crm_wins(Some(10 * s), Some(10 * s + 1)));
        assert!(crm_wins(Some(10 * s), Some(10 * s)));
        assert!(crm_wins(None, Some(0)));
        assert!(!crm_wins(Some(0), None));
        assert!(!crm_wins(None, None));
    }

    #[test]
    fn a_column_takes_the_newer_value_only_where_it_holds_a_known_one() {
        let s = 1_000_000;
        let found = |plain, is_bitrix, is_crm, is_written| Found {
            plain,
            is_bitrix,
            is_crm,
            is_written,
            bitrix: (Some("b".into()), Some(11 * s)),
            crm: (Some("c".into()), Some(10 * s)),
        };
        // Holds the CRM's older value: Bitrix's newer one is written.
        assert_eq!(
            found(false, false, true, false).choose(),
            Some((false, Some("b".into()), Some(11 * s)))
        );
        // Already holds the newer one, or an unknown value: nothing.
        assert_eq!(found(false, true, false, false).choose(), None);
        assert_eq!(found(false, false, false, false).choose(), None);
        // The value written last, or the change's before value, is placed too.
        assert!(found(false, false, false, true).choose().is_some());
        assert!(found(true, false, false, false).choose().is_some());
    }

    #[test]
    fn relays_round_trip_as_messages() {
        let r = Relay {
            pipeline: "p".into(),
            tbl: "public.orders".into(),
            pk: "42".into(),
            col: "status".into(),
            my_key: Some("42".into()),
            value: Some("N'\"x".into()),
            ts: 17,
        };
        assert_eq!(from_message(to_message(&r).as_bytes()), Some(r));
        assert_eq!(from_message(b"{"), None);
    }
}

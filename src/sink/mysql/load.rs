//! The `LOAD DATA LOCAL` path for runs of new rows: a run of upserts is sent as one stream of
//! text rows from memory (no file is involved: the connection's handler for that one statement
//! answers whatever name the server asks for with the rows), which MySQL parses several times
//! faster than the literals of multi-row `INSERT`s.
//!
//! `LOAD DATA LOCAL` never replaces a row (a duplicate key is skipped) and turns a value the
//! column cannot hold into a warning, so the rows are loaded under a savepoint: unless every row
//! was inserted without a warning, the savepoint is rolled back and the run goes through
//! `INSERT … ON DUPLICATE KEY UPDATE` as before (which updates existing rows, and refuses a bad
//! value with its error). A table whose run fell back is not tried again for a while; a server
//! that does not allow `LOCAL` (MySQL's default `local_infile = OFF`) is not tried again at all.
//!
//! Only runs whose columns all read text the same way as a literal are loaded: not BIT (read as
//! bytes, not a number), binary and blob columns, nor binary strings.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use mysql_async::prelude::Queryable;
use mysql_async::Value as My;

use super::MyChange;
use crate::mapping::ReversePlan;
use crate::model::SourceType;

/// Runs shorter than this go as `INSERT`s (a savepoint and a load cost two round trips).
pub const MIN_ROWS: usize = 64;
/// Rows per load.
pub const MAX_ROWS: usize = 10_000;
/// Rows formatted at a time while a load streams.
const CHUNK_ROWS: usize = 256;
/// Runs of a table that fell back skip loading for this many runs.
const COOL_RUNS: u32 = 64;

/// Whether loading is allowed, and which tables rest.
#[derive(Debug, Default)]
pub struct Loader {
    /// The server refused `LOCAL` once: never again on this connection's server.
    refused: bool,
    /// Per reverse plan table, runs left before loading is tried again.
    resting: HashMap<usize, u32>,
}

/// What a load attempt did.
pub enum Loaded {
    /// Every row of the run is in the table.
    All,
    /// Nothing was written: the run goes the `INSERT` way.
    No,
}

impl Loader {
    /// Whether a run of `len` rows of `t` (index `table`) with the `sent` columns is worth
    /// loading; counts down the table's rest.
    pub fn wants(&mut self, table: usize, t: &ReversePlan, sent: &[bool], len: usize) -> bool {
        if self.refused || len < MIN_ROWS {
            return false;
        }
        if let Some(left) = self.resting.get_mut(&table) {
            *left -= 1;
            if *left == 0 {
                self.resting.remove(&table);
            }
            return false;
        }
        t.columns
            .iter()
            .zip(sent)
            .filter(|(_, s)| **s)
            .all(|(c, _)| loads_as_text(&c.my.ty))
            && t.set.iter().all(|s| loads_as_text(&s.column.ty))
    }

    /// Loads `run` into `t` under a savepoint on `conn` (inside the sink's transaction).
    pub async fn load(
        &mut self,
        conn: &mut mysql_async::Conn,
        table: usize,
        t: &ReversePlan,
        run: Run,
        sent: &[bool],
    ) -> Result<Loaded, mysql_async::Error> {
        let rows = run.rows.len();
        if !run.changes[run.rows.clone()].iter().all(loadable) {
            return Ok(Loaded::No);
        }
        let sql = load_sql(t, sent, !run.changes[run.rows.start].at.is_empty());
        conn.query_drop("SAVEPOINT duplex_load").await?;
        conn.set_infile_handler(async move { Ok(run.stream()) });
        match conn.query_drop(sql).await {
            Ok(()) => {
                let (inserted, warnings) = (conn.affected_rows(), conn.get_warnings());
                if inserted == rows as u64 && warnings == 0 {
                    return Ok(Loaded::All);
                }
                tracing::debug!(
                    table = %t.target,
                    run = rows,
                    inserted,
                    warnings,
                    "LOAD DATA did not take the run as it is (existing rows or warnings): written with INSERT … ON DUPLICATE KEY UPDATE"
                );
                self.resting.insert(table, COOL_RUNS);
            }
            Err(mysql_async::Error::Server(e)) if refuses_local(e.code) => {
                tracing::info!(
                    code = e.code,
                    message = %e.message,
                    "the MySQL server does not allow LOAD DATA LOCAL (local_infile = OFF): runs of new rows are written with multi-row INSERTs"
                );
                self.refused = true;
            }
            Err(mysql_async::Error::Server(e)) => {
                tracing::debug!(table = %t.target, code = e.code, message = %e.message, "LOAD DATA failed: written with INSERT");
                self.resting.insert(table, COOL_RUNS);
            }
            // A broken connection: the INSERT way would fail the same, and report it.
            Err(e) => return Err(e),
        }
        conn.query_drop("ROLLBACK TO SAVEPOINT duplex_load").await?;
        Ok(Loaded::No)
    }
}

/// A run of changes to load: rows `rows` of the sink's current changes.
pub struct Run {
    pub changes: Arc<Vec<MyChange>>,
    pub rows: Range<usize>,
}

impl Run {
    /// The rows as LOAD DATA text, made a chunk at a time as the connection sends them, so that
    /// formatting the next rows overlaps the server parsing the last ones.
    fn stream(self) -> mysql_async::InfileData {
        Box::pin(futures_util::stream::unfold(
            (self, 0usize),
            |(run, done)| async move {
                let at = run.rows.start + done;
                if at >= run.rows.end {
                    return None;
                }
                let end = (at + CHUNK_ROWS).min(run.rows.end);
                let chunk = rows_text(&run.changes[at..end]);
                Some((Ok(chunk), (run, done + (end - at))))
            },
        ))
    }
}

/// Server errors meaning `LOCAL` is not allowed: 1148 (ER_NOT_ALLOWED_COMMAND, older servers),
/// 3948 (MySQL 8: loading local data is disabled), 4166 (MariaDB: the local infile capability
/// is disabled). Servers check `local_infile` when a session starts.
fn refuses_local(code: u16) -> bool {
    matches!(code, 1148 | 3948 | 4166)
}

/// Whether values of a column of type `ty` are read from text as their literals are.
fn loads_as_text(ty: &SourceType) -> bool {
    match ty {
        SourceType::Binary | SourceType::Bit(_) => false,
        SourceType::Text { charset } => charset != "binary",
        _ => true,
    }
}

/// `LOAD DATA LOCAL INFILE … INTO TABLE t CHARACTER SET utf8mb4 (sent columns, change-time
/// columns)`. The field and line format is LOAD DATA's default (tab, newline, backslash
/// escapes), which does not depend on the session's sql_mode.
pub fn load_sql(t: &ReversePlan, sent: &[bool], timed: bool) -> String {
    format!(
        "LOAD DATA LOCAL INFILE 'duplex' INTO TABLE {} CHARACTER SET utf8mb4 ({})",
        t.target.my_quoted(),
        super::statements::row_columns(t, sent, timed).join(", ")
    )
}

/// Whether every value of `c` has a text form LOAD DATA reads back the same: not bytes that
/// are not UTF-8, nor a non-finite float.
fn loadable(c: &MyChange) -> bool {
    c.values
        .iter()
        .flatten()
        .chain(c.at.iter())
        .all(|v| match v {
            My::Bytes(b) => simdutf8::basic::from_utf8(b).is_ok(),
            My::Float(x) => x.is_finite(),
            My::Double(x) => x.is_finite(),
            _ => true,
        })
}

/// Rows in LOAD DATA's default text format: the sent values, then the change-time values
/// (every value [`loadable`]).
pub fn rows_text(run: &[MyChange]) -> Bytes {
    let mut out: Vec<u8> = Vec::with_capacity(run.len() * 512);
    for c in run {
        let mut first = true;
        for v in c.values.iter().flatten().chain(c.at.iter()) {
            if !first {
                out.push(b'\t');
            }
            first = false;
            push_field(&mut out, v);
        }
        out.push(b'\n');
    }
    Bytes::from(out)
}

fn push_field(out: &mut Vec<u8>, v: &My) {
    use std::io::Write;
    match v {
        My::NULL => out.extend_from_slice(b"\\N"),
        My::Bytes(b) => {
            // Most values have nothing to escape: copied whole.
            if !b.iter().any(|c| matches!(c, b'\\' | b'\t' | b'\n' | 0)) {
                out.extend_from_slice(b);
                return;
            }
            for &byte in b {
                match byte {
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b'\t' => out.extend_from_slice(b"\\t"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    0 => out.extend_from_slice(b"\\0"),
                    _ => out.push(byte),
                }
            }
        }
        My::Int(i) => {
            let _ = write!(out, "{i}");
        }
        My::UInt(u) => {
            let _ = write!(out, "{u}");
        }
        My::Float(x) => {
            let _ = write!(out, "{x:e}");
        }
        My::Double(x) => {
            let _ = write!(out, "{x:e}");
        }
        // As the literals of the INSERT way: a DATE column would warn about a time part.
        My::Date(y, mo, d, 0, 0, 0, 0) => {
            let _ = write!(out, "{y:04}-{mo:02}-{d:02}");
        }
        My::Date(y, mo, d, h, mi, s, 0) => {
            let _ = write!(out, "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}");
        }
        My::Date(y, mo, d, h, mi, s, us) => {
            let _ = write!(out, "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}");
        }
        My::Time(neg, days, h, mi, s, us) => {
            let sign = if *neg { "-" } else { "" };
            let hours = *days * 24 + u32::from(*h);
            let _ = write!(out, "{sign}{hours:02}:{mi:02}:{s:02}");
            if *us > 0 {
                let _ = write!(out, ".{us:06}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(values: Vec<My>) -> MyChange {
        MyChange {
            table: 0,
            kind: super::super::MyKind::Upsert,
            values: values.into_iter().map(Some).collect(),
            at: Vec::new(),
            same: Vec::new(),
            guard: None,
            relay: None,
        }
    }

    #[test]
    fn rows_are_tab_separated_with_escapes_and_null() {
        let run = [
            row(vec![
                My::Int(-7),
                My::Bytes("a\tb\nc\\d\0é".as_bytes().to_vec()),
                My::NULL,
                My::Date(2026, 3, 8, 9, 5, 1, 42),
                My::Double(0.1),
                My::Time(true, 1, 2, 3, 4, 0),
            ]),
            row(vec![
                My::UInt(u64::MAX),
                My::Bytes(Vec::new()),
                My::Date(2026, 3, 8, 0, 0, 0, 0),
                My::Date(2026, 3, 8, 9, 5, 1, 0),
            ]),
        ];
        assert!(run.iter().all(loadable));
        let text = rows_text(&run);
        assert_eq!(
            std::str::from_utf8(&text).unwrap(),
            "-7\ta\\tb\\nc\\\\d\\0é\t\\N\t2026-03-08 09:05:01.000042\t1e-1\t-26:03:04\n18446744073709551615\t\t2026-03-08\t2026-03-08 09:05:01\n"
        );
    }

    #[test]
    fn what_text_cannot_carry_is_not_loaded() {
        assert!(!loadable(&row(vec![My::Bytes(vec![0xff, 0x00])])));
        assert!(!loadable(&row(vec![My::Double(f64::NAN)])));
        assert!(!loads_as_text(&SourceType::Bit(8)));
        assert!(!loads_as_text(&SourceType::Binary));
        assert!(loads_as_text(&SourceType::Text {
            charset: "cp1251".into()
        }));
    }
}

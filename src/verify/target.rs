//! Reading what the target holds for one mapping entry: its rows by key, by key range or in key
//! order, as cells in PostgreSQL's binary format (compared with [`super::cells::same`]), and
//! the same cells as text for a report.
//!
//! Owns [`Shape`] (the columns and conditions read for an entry) and [`TargetReader`] (its
//! statements). Uses the sink's encoder for key parameters.

use std::collections::HashMap;

use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{Client, Statement};

use crate::error::{Error, Result};
use crate::model::{pg_ident, TableName, TargetColumn, TargetKind, Value};
use crate::sink::postgres::encode::{Cell, EncodedRow};
use crate::state::progress::KeyValue;

/// Keys read per statement (lists are padded to it, so one statement serves every list).
pub const KEYS_AT_ONCE: usize = 500;

/// What verify reads of one entry on the target.
#[derive(Debug, Clone)]
pub struct Shape {
    pub table: TableName,
    /// The columns compared, in the order of the expected rows.
    pub cols: Vec<TargetColumn>,
    /// Positions in `cols` of the key columns.
    pub key: Vec<usize>,
    /// Per look-up column: its name, and SQL (over alias `t`) of the value it should hold.
    pub lookups: Vec<(String, String)>,
    /// SQL (over alias `t`) that holds for the rows the entry has written into (for the scan
    /// that finds rows the source does not have).
    pub held: String,
}

impl Shape {
    /// The compared columns as one record (one cell to take apart instead of one per column),
    /// then the look-up checks.
    fn select(&self) -> String {
        let cols: Vec<String> = self
            .cols
            .iter()
            .map(|c| format!("t.{}", pg_ident(&c.name)))
            .collect();
        let mut out = vec![format!("ROW({})", cols.join(", "))];
        for (name, pick) in &self.lookups {
            out.push(format!("t.{} IS NOT DISTINCT FROM {pick}", pg_ident(name)));
        }
        format!(
            "SELECT {} FROM {} t",
            out.join(", "),
            self.table.pg_quoted()
        )
    }

    fn key_tuple(&self) -> String {
        let k: Vec<String> = self
            .key
            .iter()
            .map(|&i| format!("t.{}", pg_ident(&self.cols[i].name)))
            .collect();
        format!("({})", k.join(", "))
    }

    /// The key of a row read (its key cells), comparable with an expected row's key.
    pub fn key_of(&self, row: &EncodedRow) -> Vec<u8> {
        let mut k = EncodedRow::with_bytes(16 * self.key.len());
        for &i in &self.key {
            k.push_encoded(row.cell(i));
        }
        k.into_identity()
    }

    /// The key values of a row read (integer and text keys only; `None` for others).
    pub fn key_values(&self, row: &EncodedRow) -> Option<Vec<KeyValue>> {
        self.key
            .iter()
            .map(|&i| {
                let b = row.cell(i)?;
                Some(match self.cols[i].kind {
                    TargetKind::Int2 => KeyValue::I(i16::from_be_bytes(b.try_into().ok()?) as i64),
                    TargetKind::Int4 => KeyValue::I(i32::from_be_bytes(b.try_into().ok()?) as i64),
                    TargetKind::Int8 => KeyValue::I(i64::from_be_bytes(b.try_into().ok()?)),
                    TargetKind::Text => KeyValue::S(String::from_utf8(b.to_vec()).ok()?),
                    _ => return None,
                })
            })
            .collect()
    }

    /// Key values encoded as the target's key columns, for statement parameters.
    pub fn encode_key(&self, key: &[KeyValue], tz: chrono_tz::Tz) -> Result<EncodedRow> {
        let mut row = EncodedRow::with_capacity(key.len());
        for (k, &i) in key.iter().zip(&self.key) {
            let v = match k {
                KeyValue::I(i) => Value::Int(*i),
                KeyValue::U(u) => Value::UInt(*u),
                KeyValue::B(b) => Value::Bytes(b.clone()),
                KeyValue::S(s) => Value::Text(s.clone()),
            };
            row.push(&v, &self.cols[i].kind, tz)?;
        }
        Ok(row)
    }
}

/// A target row as read: its cells (in [`Shape::cols`] order) and, per look-up column,
/// whether it holds what the look-up gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub row: EncodedRow,
    pub lookups_ok: Vec<bool>,
}

/// The fields of a record in binary (`int4` count, then per field its type oid, `int4` length
/// or -1, and the bytes) as cells; `None` unless it has `n` well-formed fields.
fn cells_of_record(record: &[u8], n: usize) -> Option<EncodedRow> {
    let word = |at: usize| -> Option<i32> {
        Some(i32::from_be_bytes(record.get(at..at + 4)?.try_into().ok()?))
    };
    if word(0)? as usize != n {
        return None;
    }
    let mut row = EncodedRow::with_bytes(record.len());
    let mut at = 4;
    for _ in 0..n {
        let len = word(at + 4)?;
        at += 8;
        if len < 0 {
            row.push_encoded(None);
        } else {
            let end = at + len as usize;
            row.push_encoded(Some(record.get(at..end)?));
            at = end;
        }
    }
    Some(row)
}

/// A cell as the server sent it.
struct Raw<'a>(Option<&'a [u8]>);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(
        _: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(Some(raw)))
    }

    fn from_sql_null(
        _: &Type,
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// How an entry's rows are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Query {
    Keys,
    /// By range of the single key: with a lower bound, with an upper bound.
    Range(bool, bool),
    /// The held rows after a key, in key order (first: no key).
    Scan(bool),
    Text,
}

/// Reads target rows on one session, with its statements prepared once per entry.
pub struct TargetReader {
    pub client: Client,
    statements: HashMap<(usize, Query), Statement>,
}

/// Rows per scan statement.
const SCAN_ROWS: usize = 5000;

impl TargetReader {
    pub fn new(client: Client) -> TargetReader {
        TargetReader {
            client,
            statements: HashMap::new(),
        }
    }

    async fn statement(&mut self, entry: usize, shape: &Shape, q: Query) -> Result<Statement> {
        if let Some(s) = self.statements.get(&(entry, q)) {
            return Ok(s.clone());
        }
        let kt = self.key_tuple_params(shape, 1);
        let sql = match q {
            Query::Keys => {
                let n = shape.key.len();
                let lists: Vec<String> = (0..KEYS_AT_ONCE)
                    .map(|i| self.key_tuple_params(shape, 1 + i * n))
                    .collect();
                format!(
                    "{} WHERE {} IN ({})",
                    shape.select(),
                    shape.key_tuple(),
                    lists.join(", ")
                )
            }
            Query::Range(lo, hi) => {
                let k = shape.key_tuple();
                let mut cond = vec![format!("{k} IS NOT NULL")];
                if lo {
                    cond.push(format!("{k} > ($1)"));
                }
                if hi {
                    cond.push(format!("{k} <= (${})", if lo { 2 } else { 1 }));
                }
                format!("{} WHERE {}", shape.select(), cond.join(" AND "))
            }
            Query::Scan(after) => format!(
                "{} WHERE ({}){} ORDER BY {} LIMIT {SCAN_ROWS}",
                shape.select(),
                shape.held,
                if after {
                    format!(" AND {} > {kt}", shape.key_tuple())
                } else {
                    String::new()
                },
                shape
                    .key_tuple()
                    .trim_start_matches('(')
                    .trim_end_matches(')'),
            ),
            Query::Text => {
                let mut out: Vec<String> = shape
                    .cols
                    .iter()
                    .map(|c| format!("t.{}::text", pg_ident(&c.name)))
                    .collect();
                for (name, pick) in &shape.lookups {
                    out.push(format!("t.{}::text", pg_ident(name)));
                    out.push(format!("({pick})::text"));
                }
                format!(
                    "SELECT {} FROM {} t WHERE {} = {kt}",
                    out.join(", "),
                    shape.table.pg_quoted(),
                    shape.key_tuple()
                )
            }
        };
        let s = self.client.prepare(&sql).await.map_err(|e| {
            Error::from_pg(
                e,
                true,
                &format!("preparing verify's read of {}", shape.table),
            )
        })?;
        self.statements.insert((entry, q), s.clone());
        Ok(s)
    }

    fn key_tuple_params(&self, shape: &Shape, first: usize) -> String {
        let p: Vec<String> = (0..shape.key.len())
            .map(|i| format!("${}", first + i))
            .collect();
        format!("({})", p.join(", "))
    }

    async fn run(&self, st: &Statement, params: &[Cell<'_>], shape: &Shape) -> Result<Vec<Held>> {
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
            .iter()
            .map(|c| c as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let rows = self.client.query(st, &refs).await.map_err(|e| {
            Error::from_pg(e, true, &format!("reading {} to verify it", shape.table))
        })?;
        rows.iter()
            .map(|r| {
                let record = r.get::<_, Raw>(0).0.unwrap_or_default();
                let row = cells_of_record(record, shape.cols.len()).ok_or_else(|| {
                    Error::new(
                        crate::error::ErrorKind::Invariant,
                        format!("a row of {} came back malformed", shape.table),
                    )
                })?;
                let lookups_ok = (1..r.len())
                    .map(|i| r.get::<_, Option<bool>>(i).unwrap_or(false))
                    .collect();
                Ok(Held { row, lookups_ok })
            })
            .collect()
    }

    /// The rows with these keys (key values encoded for the target, see [`Shape::encode_key`]).
    pub async fn by_keys(
        &mut self,
        entry: usize,
        shape: &Shape,
        keys: &[EncodedRow],
    ) -> Result<Vec<Held>> {
        let mut out = Vec::new();
        if keys.is_empty() {
            return Ok(out);
        }
        let st = self.statement(entry, shape, Query::Keys).await?;
        for part in keys.chunks(KEYS_AT_ONCE) {
            let mut params: Vec<Cell<'_>> = Vec::with_capacity(KEYS_AT_ONCE * shape.key.len());
            for i in 0..KEYS_AT_ONCE {
                let k = &part[i.min(part.len() - 1)];
                params.extend(k.cells().map(Cell));
            }
            out.extend(self.run(&st, &params, shape).await?);
        }
        Ok(out)
    }

    /// The rows whose single key lies in `(after, upto]` (`None`: that end open).
    pub async fn by_range(
        &mut self,
        entry: usize,
        shape: &Shape,
        after: Option<&EncodedRow>,
        upto: Option<&EncodedRow>,
    ) -> Result<Vec<Held>> {
        let st = self
            .statement(entry, shape, Query::Range(after.is_some(), upto.is_some()))
            .await?;
        let params: Vec<Cell<'_>> = after
            .into_iter()
            .chain(upto)
            .flat_map(|k| k.cells().map(Cell))
            .collect();
        self.run(&st, &params, shape).await
    }

    /// The next rows the entry holds after `after` (its key cells), in key order.
    pub async fn scan(
        &mut self,
        entry: usize,
        shape: &Shape,
        after: Option<&EncodedRow>,
    ) -> Result<Vec<Held>> {
        let st = self
            .statement(entry, shape, Query::Scan(after.is_some()))
            .await?;
        let params: Vec<Cell<'_>> = after
            .into_iter()
            .flat_map(|k| k.cells().map(Cell))
            .collect();
        self.run(&st, &params, shape).await
    }

    /// The row with this key as text: each column, then per look-up its value and the value it
    /// should hold. `None` when there is no such row.
    pub async fn text(
        &mut self,
        entry: usize,
        shape: &Shape,
        key: &EncodedRow,
    ) -> Result<Option<Vec<Option<String>>>> {
        let st = self.statement(entry, shape, Query::Text).await?;
        let params: Vec<Cell<'_>> = key.cells().map(Cell).collect();
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
            .iter()
            .map(|c| c as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let row = self.client.query_opt(&st, &refs).await.map_err(|e| {
            Error::from_pg(e, true, &format!("reading {} to report it", shape.table))
        })?;
        Ok(row.map(|r| {
            (0..r.len())
                .map(|i| r.get::<_, Option<String>>(i))
                .collect()
        }))
    }

    /// Rows per scan statement: a scan is done when it returns fewer.
    pub fn scan_rows() -> usize {
        SCAN_ROWS
    }
}

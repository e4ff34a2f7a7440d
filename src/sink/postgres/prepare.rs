//! Mapping and encoding of source row changes into [`PgChange`]s, done on its own task ahead of
//! the writer so that encoding the next rows overlaps with PostgreSQL applying the previous ones.
//!
//! A row decoded under another version of its source table (after an ALTER TABLE) is mapped by
//! column name ([`crate::mapping::TablePlan::bind`]); the binding is worked out once per table
//! version.

use std::sync::Arc;

use super::encode::EncodedRow;
use super::{Kind, PgChange};
use crate::error::{Error, Result};
use crate::mapping::{Bindings, Plan, TablePlan};
use crate::model::{Op, RowChange, TableSchema, Value};
use crate::sink::Encoder;

pub struct PgEncoder {
    plan: Arc<Plan>,
    tz: chrono_tz::Tz,
    bindings: Bindings,
    /// Bytes of the widest row encoded yet: a row's buffer starts that large, so a wide row
    /// is not grown (and copied) several times.
    row_bytes: std::cell::Cell<usize>,
}

impl PgEncoder {
    pub fn new(plan: Arc<Plan>, tz: chrono_tz::Tz) -> Self {
        PgEncoder {
            plan,
            tz,
            bindings: Bindings::default(),
            row_bytes: std::cell::Cell::new(0),
        }
    }

    /// Encodes the columns at `cols` (plan column numbers) of a source row whose mapped columns
    /// sit at `idx`.
    fn encode(
        &self,
        table: &TablePlan,
        idx: &[usize],
        cols: impl Iterator<Item = usize>,
        values: &[Value],
    ) -> Result<EncodedRow> {
        let mut row = EncodedRow::with_bytes((idx.len() * 12).max(self.row_bytes.get()));
        for i in cols {
            let c = &table.columns[i];
            let v = values.get(idx[i]).unwrap_or(&Value::Null);
            row.push(v, &c.target.kind, self.tz).map_err(|e| {
                e.context(format!(
                    "column {} → {}.{}",
                    c.source_name, table.target, c.target.name
                ))
            })?;
        }
        self.row_bytes.set(
            self.row_bytes
                .get()
                .max(row.byte_len() + row.byte_len() / 8),
        );
        Ok(row)
    }

    /// Source column positions of table `t` for the table version a row was decoded with.
    fn binding(&mut self, t: usize, schema: &Arc<TableSchema>) -> Result<Arc<Vec<usize>>> {
        let plan = &self.plan.tables[t];
        self.bindings.get(t, schema, |s| plan.bind(s))
    }

    /// The key bytes of an upsert row (its key cells).
    fn upsert_key(t: &TablePlan, row: &EncodedRow) -> Vec<u8> {
        let mut k = EncodedRow::with_bytes(16 * t.key.len());
        for &i in &t.key {
            k.push_encoded(row.cell(i));
        }
        k.into_identity()
    }
}

impl Encoder for PgEncoder {
    type Change = PgChange;

    fn prepare(
        &mut self,
        change: &RowChange,
    ) -> std::result::Result<Vec<PgChange>, (String, Error)> {
        let mut out = Vec::new();
        for i in 0..self.plan.tables.len() {
            let t = self.plan.tables[i].clone();
            if t.source != change.table.name || !t.direction.forward() {
                continue;
            }
            let fail = |e: Error| (t.target.to_string(), e);
            let idx = self.binding(i, &change.table).map_err(fail)?;
            let none = Vec::new();
            let before = change.before.as_ref().unwrap_or(&none);
            let after = change.after.as_ref().unwrap_or(&none);
            let from_insert = change.op == Op::Insert;
            let upsert = |enc: &Self, values: &[Value]| -> Result<PgChange> {
                let row = enc.encode(&t, &idx, 0..t.columns.len(), values)?;
                Ok(PgChange {
                    table: i,
                    kind: Kind::Upsert,
                    key: Self::upsert_key(&t, &row),
                    row,
                    from_insert,
                })
            };
            let delete = |old_key: EncodedRow| PgChange {
                table: i,
                kind: Kind::Delete,
                key: old_key.identity(),
                row: old_key,
                from_insert: false,
            };
            match change.op {
                Op::Insert => out.push(upsert(self, after).map_err(fail)?),
                Op::Update => {
                    let old_key = self
                        .encode(&t, &idx, t.key.iter().copied(), before)
                        .map_err(fail)?;
                    let new = upsert(self, after).map_err(fail)?;
                    if old_key.identity() != new.key {
                        out.push(delete(old_key));
                    }
                    out.push(new);
                }
                Op::Delete => {
                    let old_key = self
                        .encode(&t, &idx, t.key.iter().copied(), before)
                        .map_err(fail)?;
                    out.push(delete(old_key));
                }
            }
        }
        Ok(out)
    }

    fn target_of(&self, change: &PgChange) -> String {
        self.plan.tables[change.table].target.to_string()
    }
}

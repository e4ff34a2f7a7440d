//! Mapping and encoding of source row changes into [`PgChange`]s, done on its own task ahead of
//! the writer so that encoding the next rows overlaps with PostgreSQL applying the previous ones.
//!
//! A row decoded under another version of its source table (after an ALTER TABLE) is mapped by
//! column name ([`crate::mapping::TablePlan::bind`]); the binding is worked out once per table
//! version.
//!
//! The row filter decides per image: a row that starts passing is upserted, one that stops
//! passing is removed the way the entry's `on_delete` says. Rows of a pivot entry become one
//! [`PivotCell`] per target column their property code feeds.

use std::sync::Arc;

use super::encode::EncodedRow;
use super::{Guard, Kind, PgChange};
use crate::error::{Error, Result};
use crate::mapping::{Bindings, ColumnSource, OnDelete, Plan, TablePlan};
use crate::model::{Op, RowChange, TableSchema, TargetKind, Value};
use crate::sink::Encoder;
use crate::state::newest;

pub struct PgEncoder {
    plan: Arc<Plan>,
    tz: chrono_tz::Tz,
    bindings: Bindings,
    /// Per plan table: whether changes carry their key as text (look-ups resolve by it, and
    /// deleted rows drop their pivoted values by it).
    key_text: Vec<bool>,
    /// Bytes of the widest row encoded yet: a row's buffer starts that large, so a wide row
    /// is not grown (and copied) several times.
    row_bytes: std::cell::Cell<usize>,
    /// The source transaction being encoded: its id, commit time, and whether it is duplex's
    /// own write.
    txn: Arc<str>,
    commit_time_us: i64,
    own: bool,
    /// A source transaction has begun: the rows are changes. Without one they are a copy's,
    /// which Bitrix's rows define (no conflict checks: a copy writes them as they are).
    streaming: bool,
    /// MySQL's `newest` table and this pipeline: rows of it in duplex's own transactions are
    /// the reverse direction's relays.
    relays: Option<(crate::model::TableName, String)>,
}

impl PgEncoder {
    pub fn new(plan: Arc<Plan>, tz: chrono_tz::Tz) -> Self {
        let key_text = plan
            .tables
            .iter()
            .map(|t| {
                !t.lookups.is_empty()
                    || plan.tables.iter().any(|o| {
                        o.lookups.iter().any(|l| l.table == t.target)
                            // Rows it deletes take their pivoted values along.
                            || (o.is_pivot() && o.target == t.target)
                    })
            })
            .collect();
        PgEncoder {
            tz,
            bindings: Bindings::default(),
            key_text,
            row_bytes: std::cell::Cell::new(0),
            plan,
            txn: Arc::from(""),
            commit_time_us: 0,
            own: false,
            streaming: false,
            relays: None,
        }
    }

    /// Reads the reverse direction's relays from rows of MySQL's `newest` table `table`.
    pub fn with_relays(mut self, table: Option<crate::model::TableName>, pipeline: &str) -> Self {
        self.relays = table.map(|t| (t, pipeline.to_string()));
        self
    }

    /// A relay of the reverse direction, when `change` is one (see `state::newest`).
    fn relay(&self, change: &RowChange) -> Option<PgChange> {
        let (table, pipeline) = self.relays.as_ref().filter(|_| self.own)?;
        let relay = newest::crm_half_of(change, table, pipeline)?;
        let i = self
            .plan
            .tables
            .iter()
            .position(|t| t.target.to_string() == relay.tbl && !t.is_pivot())?;
        Some(PgChange {
            table: i,
            kind: Kind::Relay,
            row: EncodedRow::default(),
            key: Vec::new(),
            from_insert: false,
            key_text: None,
            pivot: None,
            guard: None,
            relay: Some(Box::new(relay)),
        })
    }

    /// Encodes the columns at `cols` (plan column numbers) of a source row whose slots sit at
    /// `idx`.
    fn encode(
        &self,
        table: &TablePlan,
        idx: &[usize],
        cols: impl Iterator<Item = usize>,
        values: &[Value],
    ) -> Result<EncodedRow> {
        let mut row = EncodedRow::with_bytes((table.columns.len() * 12).max(self.row_bytes.get()));
        for i in cols {
            let c = &table.columns[i];
            let context = || {
                format!(
                    "column {} → {}.{}",
                    c.source_name, table.target, c.target.name
                )
            };
            // A plain column is encoded where it lies; only computed values are built.
            let pushed = match (&c.from, c.transform.is_identity()) {
                (ColumnSource::Column(slot), true) => row.push(
                    values.get(idx[*slot]).unwrap_or(&Value::Null),
                    &c.target.kind,
                    self.tz,
                ),
                _ => {
                    let v = table
                        .value(i, values, idx)
                        .map_err(|e| Error::convert(e).context(context()))?;
                    row.push(&v, &c.target.kind, self.tz)
                }
            };
            pushed.map_err(|e| e.context(context()))?;
        }
        self.row_bytes.set(
            self.row_bytes
                .get()
                .max(row.byte_len() + row.byte_len() / 8),
        );
        Ok(row)
    }

    /// Source slot positions of table `t` for the table version a row was decoded with.
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

    /// The first key column's value as text, when look-ups need it.
    fn key_text(&self, t: usize, idx: &[usize], values: &[Value]) -> Option<String> {
        if !self.key_text[t] {
            return None;
        }
        let plan = &self.plan.tables[t];
        plan.value(plan.key[0], values, idx)
            .ok()
            .filter(|v| !v.is_null())
            .map(|v| v.to_string())
    }

    /// Changes for one non-pivot entry.
    fn prepare_rows(
        &self,
        i: usize,
        t: &TablePlan,
        idx: &[usize],
        im: &Images<'_>,
        out: &mut Vec<PgChange>,
    ) -> Result<()> {
        let Images {
            before,
            after,
            before_in,
            after_in,
            insert,
        } = *im;
        let removal = |old_key: EncodedRow, key_text: Option<String>| {
            let kind = match t.on_delete {
                OnDelete::Delete => Kind::Delete,
                OnDelete::Clear => Kind::Clear,
                OnDelete::Ignore => return None,
            };
            Some(PgChange {
                table: i,
                kind,
                key: old_key.identity(),
                row: old_key,
                from_insert: false,
                key_text,
                pivot: None,
                guard: None,
                relay: None,
            })
        };
        let old_key = if before_in {
            Some(self.encode(t, idx, t.key.iter().copied(), before)?)
        } else {
            None
        };
        // duplex's own insert read back never writes a `both` column (the CRM's row is the
        // newer); without a forward-only column there is nothing for it to do.
        if self.own && insert && t.mirrorless() {
            return Ok(());
        }
        if after_in {
            let row = self.encode(t, idx, 0..t.columns.len(), after)?;
            let guard = (self.streaming && !t.guarded().is_empty()).then(|| {
                let before = before_in.then_some(before);
                Box::new(self.guard(t, idx, before, after))
            });
            let new = PgChange {
                table: i,
                kind: Kind::Upsert,
                key: Self::upsert_key(t, &row),
                row,
                from_insert: insert,
                key_text: self.key_text(i, idx, after),
                pivot: None,
                guard,
                relay: None,
            };
            if let Some(old) = old_key {
                // duplex's own write removes nothing here: the removal came from PostgreSQL.
                if old.identity() != new.key && !self.own {
                    out.extend(removal(old, self.key_text(i, idx, before)));
                }
            }
            out.push(new);
        } else if let Some(old) = old_key {
            if !self.own {
                out.extend(removal(old, self.key_text(i, idx, before)));
            }
        }
        Ok(())
    }

    /// What the sink needs to check a change of a table with `both` columns for conflicts: the
    /// before image encoded like the row (`None` for an insert, or when it cannot be encoded,
    /// which makes every column count as changed), the guarded columns' values as text for the
    /// conflict log, the key as text, and the source transaction.
    fn guard(
        &self,
        t: &TablePlan,
        idx: &[usize],
        before: Option<&[Value]>,
        after: &[Value],
    ) -> Guard {
        let text = |row: &[Value], c: usize| {
            t.value(c, row, idx)
                .ok()
                .filter(|v| !v.is_null())
                .map(|v| v.to_string())
        };
        let key = t
            .key
            .iter()
            .map(|&k| text(after, k).unwrap_or_default())
            .collect::<Vec<_>>()
            .join(",");
        let source = |c: usize| {
            let newest = t.columns[c].conflict == Some(crate::mapping::spec::Conflict::Newest);
            newest
                .then(|| t.source_value(c, after, idx).and_then(newest::source_text))
                .flatten()
        };
        let my_key = t.has_newest().then(|| {
            t.source_value(t.key[0], after, idx)
                .and_then(newest::source_text)
        });
        let mut guard = Guard {
            own: self.own,
            before: before.and_then(|b| self.encode(t, idx, 0..t.columns.len(), b).ok()),
            texts: Vec::new(),
            key,
            sources: t.guarded().iter().map(|&c| source(c)).collect(),
            my_key: my_key.flatten(),
            txn: self.txn.clone(),
            commit_time_us: self.commit_time_us,
        };
        // A change written by CAS never needs them: two texts per column of every status
        // update read back cost more than its whole conditional UPDATE.
        if !guard.by_cas(t) {
            guard.texts = t
                .guarded()
                .iter()
                .map(|&c| (before.and_then(|b| text(b, c)), text(after, c)))
                .collect();
        }
        guard
    }

    /// Cells of one image of a pivot row: `set` with the value, or cleared.
    fn pivot_cells(
        &self,
        i: usize,
        t: &TablePlan,
        idx: &[usize],
        row: &[Value],
        set: bool,
        out: &mut Vec<PgChange>,
    ) -> Result<()> {
        let p = t.pivot.as_ref().expect("a pivot entry");
        let code = match row.get(idx[p.name_slot]) {
            Some(Value::Null) | None => return Ok(()),
            Some(v) => crate::mapping::transform::key_text(v),
        };
        let Some(targets) = p.codes.get(&code) else {
            return Ok(());
        };
        let key = t.value(t.key[0], row, idx).map_err(Error::convert)?;
        if key.is_null() {
            return Err(Error::convert(format!(
                "the {} of this {code} row is NULL, so it belongs to no {} row",
                t.columns[t.key[0]].source_name, t.target
            )));
        }
        let key = key.to_string();
        let raw = row.get(idx[p.value_slot]).unwrap_or(&Value::Null);
        for pt in targets {
            let col = &p.columns[pt.column];
            let value = if set {
                let v = pt.transform.forward(raw).map_err(|e| {
                    Error::convert(e)
                        .context(format!("property {code} → {}.{}", t.target, col.name))
                })?;
                pg_text(&v, &col.kind, self.tz).map_err(|e| {
                    e.context(format!("property {code} → {}.{}", t.target, col.name))
                })?
            } else {
                None
            };
            out.push(PgChange::pivot(
                i,
                key.clone(),
                pt.column,
                pt.priority,
                value,
            ));
        }
        Ok(())
    }

    fn prepare_pivot(
        &self,
        i: usize,
        t: &TablePlan,
        idx: &[usize],
        im: &Images<'_>,
        out: &mut Vec<PgChange>,
    ) -> Result<()> {
        let Images {
            before,
            after,
            before_in,
            after_in,
            ..
        } = *im;
        let mut set = Vec::new();
        if after_in {
            self.pivot_cells(i, t, idx, after, true, &mut set)?;
        }
        if before_in && t.on_delete != OnDelete::Ignore {
            let mut cleared = Vec::new();
            self.pivot_cells(i, t, idx, before, false, &mut cleared)?;
            // A cell the new image sets again needs no clearing first.
            out.extend(
                cleared
                    .into_iter()
                    .filter(|c| !set.iter().any(|s| s.key == c.key)),
            );
        }
        out.extend(set);
        Ok(())
    }
}

/// A row change's images, and whether each is in the entry (exists and passes its filter).
#[derive(Clone, Copy)]
struct Images<'a> {
    before: &'a [Value],
    after: &'a [Value],
    before_in: bool,
    after_in: bool,
    /// The change is a source INSERT.
    insert: bool,
}

impl<'a> Images<'a> {
    fn of(t: &TablePlan, idx: &[usize], change: &'a RowChange) -> Images<'a> {
        let before = change.before.as_deref().unwrap_or(&[]);
        let after = change.after.as_deref().unwrap_or(&[]);
        Images {
            before,
            after,
            before_in: change.op != Op::Insert && t.passes(before, idx),
            after_in: change.op != Op::Delete && t.passes(after, idx),
            insert: change.op == Op::Insert,
        }
    }
}

/// A value as PostgreSQL text input for a column of `kind` (pivot values are stored as text and
/// cast by the server). `None` for NULL.
pub fn pg_text(v: &Value, kind: &TargetKind, tz: chrono_tz::Tz) -> Result<Option<String>> {
    let text = match v {
        Value::Null => return Ok(None),
        Value::Date(d) if d.is_zero_or_partial() => return Ok(None),
        Value::DateTime(d) if d.date.is_zero_or_partial() => return Ok(None),
        Value::DateTime(d) if *kind == TargetKind::Timestamptz => {
            let Some(n) = d.to_chrono() else {
                return Ok(None);
            };
            match n.and_local_timezone(tz).earliest() {
                Some(t) => t.to_rfc3339(),
                None => return Err(Error::convert(format!("{d} does not exist in {tz}"))),
            }
        }
        Value::Timestamp(us) => match chrono::DateTime::from_timestamp_micros(*us) {
            Some(t) => t.to_rfc3339(),
            None => return Err(Error::convert(format!("timestamp {us} is out of range"))),
        },
        Value::Bytes(b) => match std::str::from_utf8(b) {
            Ok(s) => s.to_string(),
            Err(e) => {
                return Err(Error::convert(format!(
                    "text is not valid in its charset ({e})"
                )))
            }
        },
        Value::Uuid(_) | Value::Bits { .. } | Value::Unchanged | Value::Unreadable(_) => {
            return Err(Error::convert(format!(
                "a {} value cannot be a pivoted column's value",
                v.type_name()
            )))
        }
        other => other.to_string(),
    };
    if text.contains('\0') {
        return Err(Error::convert(
            "text contains a NUL byte, which PostgreSQL text cannot store",
        ));
    }
    Ok(Some(text))
}

impl Encoder for PgEncoder {
    type Change = PgChange;

    fn prepare(
        &mut self,
        change: &RowChange,
    ) -> std::result::Result<Vec<PgChange>, (String, Error)> {
        let mut out = Vec::new();
        if self.relays.is_some() && change.table.name.name == newest::TABLE {
            out.extend(self.relay(change));
        }
        let plan = self.plan.clone();
        for i in plan.forward_indices(&change.table.name) {
            // duplex's own write carries only the rows of tables going both ways.
            if self.own && (plan.tables[i].is_pivot() || plan.tables[i].guarded().is_empty()) {
                continue;
            }
            let t = plan.tables[i].clone();
            let fail = |e: Error| (t.target.to_string(), e);
            let idx = self.binding(i, &change.table).map_err(fail)?;
            let images = Images::of(&t, &idx, change);
            if t.is_pivot() {
                self.prepare_pivot(i, &t, &idx, &images, &mut out)
            } else {
                self.prepare_rows(i, &t, &idx, &images, &mut out)
            }
            .map_err(fail)?;
        }
        Ok(out)
    }

    fn target_of(&self, change: &PgChange) -> String {
        self.plan.tables[change.table].target.to_string()
    }

    fn begin(&mut self, txn: &crate::model::TxnBegin) {
        self.txn = Arc::from(txn.id.as_str());
        self.commit_time_us = txn.commit_time_us;
        self.own = txn.own;
        self.streaming = true;
    }
}

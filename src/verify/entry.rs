//! One mapping entry as verify sees it: what it reads on the target ([`Shape`]), which target
//! rows it is answerable for ([`Holds`]), what the mapping makes of source rows (the expected
//! target rows, encoded by the sink's own encoder), and the verdict on one key.

use std::collections::HashMap;
use std::sync::Arc;

use super::cells::{same, KeyMap};
use super::report::{EntryReport, Kind};
use super::target::{Held, Shape};
use crate::mapping::spec::OnDelete;
use crate::mapping::{ColumnSource, TablePlan};
use crate::model::{pg_ident, SourceType, TableSchema, TargetKind, Value};
use crate::sink::postgres::encode::EncodedRow;
use crate::sink::postgres::{Kind as ChangeKind, PgEncoder};
use crate::sink::Encoder;
use crate::snapshot::ReadRow;
use crate::state::progress::KeyValue;

/// Which target rows an entry answers for when the source has nothing for their key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holds {
    /// Whole rows (`on_delete = "delete"`): the row must not exist.
    Rows,
    /// Its columns (`on_delete = "clear"`, pivots): they must be NULL.
    Columns,
    /// Nothing (`on_delete = "ignore"`).
    Nothing,
}

/// What the mapping makes of the source rows of some keys.
#[derive(Default)]
pub struct Expected {
    /// Per target key: the candidate rows (more than one when several source rows map to one
    /// key; the target may hold any of them) and the key's values.
    pub rows: KeyMap<(Vec<EncodedRow>, Vec<KeyValue>)>,
    /// Per target key of a source row the mapping cannot write (it is a dead letter): the key
    /// and why, as the report lists it.
    pub dead: KeyMap<String>,
    /// Per target key, when asked for: each column's expected value as text (for a report).
    pub texts: KeyMap<Vec<Option<String>>>,
}

#[derive(Clone)]
pub struct Entry {
    /// Index into `Plan::tables`.
    pub index: usize,
    pub plan: Arc<TablePlan>,
    pub shape: Shape,
    pub holds: Holds,
    /// The source columns whose values are the target key, unchanged.
    pub key_sources: Vec<String>,
    /// The target key is the source's single integer primary key (plain entries) or the pivot's
    /// single integer key column: target rows are read by the range of keys read.
    pub ranged: bool,
    pub report: EntryReport,
}

impl Entry {
    /// The entry for plan table `index`, or why verify cannot compare it.
    pub fn of(index: usize, plan: &Arc<TablePlan>) -> std::result::Result<Entry, String> {
        let t = plan;
        let mut key_sources = Vec::new();
        for &k in &t.key {
            let c = &t.columns[k];
            match c.from {
                ColumnSource::Column(slot) if c.transform.is_identity() => {
                    key_sources.push(t.slots[slot].clone())
                }
                _ => {
                    return Err(format!(
                        "its key column {} is computed from the source ({}); verify compares entries whose key columns are copied unchanged",
                        c.target.name, c.source_name
                    ))
                }
            }
        }
        let key_sql: Vec<String> = t
            .key
            .iter()
            .map(|&k| format!("t.{} IS NOT NULL", pg_ident(&t.columns[k].target.name)))
            .collect();
        let lookups = t
            .lookups
            .iter()
            .map(|l| {
                (
                    l.column.name.clone(),
                    format!(
                        "(SELECT p.{} FROM {} p WHERE p.{} = t.{})",
                        pg_ident(&l.take),
                        l.table.pg_quoted(),
                        pg_ident(&l.match_),
                        pg_ident(&l.from)
                    ),
                )
            })
            .collect();
        let (cols, key): (Vec<_>, Vec<usize>) = match &t.pivot {
            Some(p) => {
                let mut cols = vec![t.columns[t.key[0]].target.clone()];
                cols.extend(p.columns.iter().cloned());
                (cols, vec![0])
            }
            None => (
                t.columns.iter().map(|c| c.target.clone()).collect(),
                t.key.clone(),
            ),
        };
        let holds = match (t.is_pivot(), t.on_delete) {
            (true, OnDelete::Ignore) | (false, OnDelete::Ignore) => Holds::Nothing,
            (true, _) | (false, OnDelete::Clear) => Holds::Columns,
            (false, OnDelete::Delete) => Holds::Rows,
        };
        let values: Vec<String> = (0..cols.len())
            .filter(|i| !key.contains(i))
            .map(|i| format!("t.{} IS NOT NULL", pg_ident(&cols[i].name)))
            .collect();
        let held = match holds {
            Holds::Columns if !values.is_empty() => {
                format!("{} AND ({})", key_sql.join(" AND "), values.join(" OR "))
            }
            _ => key_sql.join(" AND "),
        };
        let int_key = |name: &str, schema: &TableSchema| {
            schema
                .column_index(name)
                .map(|i| &schema.columns[i])
                .is_some_and(|c| matches!(c.ty, SourceType::Int { .. }))
        };
        let one_int_target = key.len() == 1
            && matches!(
                cols[key[0]].kind,
                TargetKind::Int2 | TargetKind::Int4 | TargetKind::Int8
            );
        let schema = &t.source_schema;
        let ranged = one_int_target
            && int_key(&key_sources[0], schema)
            && (t.is_pivot()
                || (schema.primary_key.len() == 1
                    && schema.columns[schema.primary_key[0]]
                        .name
                        .eq_ignore_ascii_case(&key_sources[0])));
        if t.is_pivot() && key_sources.len() != 1 {
            return Err("a pivot's key is a single column".into());
        }
        Ok(Entry {
            index,
            plan: plan.clone(),
            shape: Shape {
                table: t.target.clone(),
                cols,
                key,
                lookups,
                held,
            },
            holds,
            key_sources,
            ranged,
            report: EntryReport {
                direction: crate::model::FORWARD,
                source: t.source.to_string(),
                target: t.target.to_string(),
                entry: t.origin.clone(),
                ..Default::default()
            },
        })
    }

    /// The source key values (the target key's) of a source row.
    pub fn source_key(&self, row: &[Value], idx: &[usize]) -> Option<Vec<KeyValue>> {
        let t = &self.plan;
        if t.is_pivot() {
            let v = t.source_value(t.key[0], row, idx)?;
            return KeyValue::of(v).ok().map(|k| vec![k]);
        }
        t.key
            .iter()
            .map(|&k| KeyValue::of(t.source_value(k, row, idx)?).ok())
            .collect()
    }

    /// The verdict on one key: `None` when the target holds what the mapping makes of the
    /// source; else the kind and the differing columns (positions in the shape's columns,
    /// then look-ups after them).
    pub fn verdict(
        &self,
        expected: Option<&[EncodedRow]>,
        held: Option<&Held>,
    ) -> Option<(Kind, Vec<usize>)> {
        let cols = &self.shape.cols;
        let key = &self.shape.key;
        // Positions of the non-key cells that hold a value (cells are walked once, in order).
        let set = |row: &EncodedRow| -> Vec<usize> {
            row.cells()
                .enumerate()
                .filter(|(i, c)| c.is_some() && !key.contains(i))
                .map(|(i, _)| i)
                .collect()
        };
        match (expected, held) {
            (None, None) => None,
            (Some(x), None) => {
                let empty = x.iter().any(|r| set(r).is_empty());
                (self.holds == Holds::Rows || !empty).then(|| (Kind::Missing, Vec::new()))
            }
            (None, Some(h)) => match self.holds {
                Holds::Rows => Some((Kind::Extra, Vec::new())),
                Holds::Columns => {
                    let set = set(&h.row);
                    (!set.is_empty()).then_some((Kind::Extra, set))
                }
                Holds::Nothing => None,
            },
            (Some(x), Some(h)) => {
                // Equal bytes are equal rows: one comparison for the usual case.
                let lookups_ok = h.lookups_ok.iter().all(|ok| *ok);
                if lookups_ok && x.iter().any(|r| r.as_copy_bytes() == h.row.as_copy_bytes()) {
                    return None;
                }
                let mut best: Option<Vec<usize>> = None;
                for r in x {
                    let mut diff: Vec<usize> = r
                        .cells()
                        .zip(h.row.cells())
                        .zip(cols)
                        .enumerate()
                        .filter(|(_, ((e, a), c))| !same(c, *e, *a))
                        .map(|(i, _)| i)
                        .collect();
                    diff.extend(
                        h.lookups_ok
                            .iter()
                            .enumerate()
                            .filter(|(_, ok)| !**ok)
                            .map(|(j, _)| cols.len() + j),
                    );
                    if best.as_ref().is_none_or(|b| diff.len() < b.len()) {
                        best = Some(diff);
                    }
                }
                best.filter(|d| !d.is_empty()).map(|d| (Kind::Different, d))
            }
        }
    }

    /// A pivot's expected rows: per key, each column the value of the present code with the
    /// lowest priority (as the sink's recompute picks it), encoded for the column.
    pub fn expect_pivot(
        &self,
        idx: &[usize],
        rows: Vec<ReadRow>,
        (tz, texts): (chrono_tz::Tz, bool),
    ) -> Expected {
        let t = &self.plan;
        let p = t.pivot.as_ref().expect("a pivot entry");
        let mut out = Expected::default();
        // Per key: the key values, and per column the (priority, value) picked so far.
        type Picks = (Vec<KeyValue>, Vec<Option<(i32, Value)>>);
        let mut groups: HashMap<Vec<u8>, Picks> = HashMap::new();
        let mut order: Vec<Vec<u8>> = Vec::new();
        for r in rows {
            if !t.passes(&r.values, idx) {
                continue;
            }
            let Some(key) = self.source_key(&r.values, idx) else {
                continue;
            };
            let Ok(cells) = self.shape.encode_key(&key, tz) else {
                continue;
            };
            let id = cells.into_identity();
            if !groups.contains_key(&id) {
                order.push(id.clone());
            }
            let g = groups
                .entry(id.clone())
                .or_insert_with(|| (key.clone(), vec![None; p.columns.len()]));
            if let Some(why) = r.unreadable {
                out.dead.insert(id, dead(&key, &why));
                continue;
            }
            let code = match r.values.get(idx[p.name_slot]) {
                Some(Value::Null) | None => continue,
                Some(v) => crate::mapping::transform::key_text(v),
            };
            let Some(targets) = p.codes.get(&code) else {
                continue;
            };
            let raw = r.values.get(idx[p.value_slot]).unwrap_or(&Value::Null);
            for pt in targets {
                match pt.transform.forward(raw) {
                    Ok(v) if v.is_null() => {}
                    Ok(v) => {
                        let slot = &mut g.1[pt.column];
                        if slot.as_ref().is_none_or(|(prio, _)| pt.priority <= *prio) {
                            *slot = Some((pt.priority, v));
                        }
                    }
                    Err(e) => {
                        out.dead
                            .insert(id.clone(), dead(&key, &format!("property {code}: {e}")));
                    }
                }
            }
        }
        for id in order {
            let (key, picks) = groups.remove(&id).expect("a group per key");
            let mut row = EncodedRow::with_capacity(1 + picks.len());
            let Ok(k) = self.shape.encode_key(&key, tz) else {
                continue;
            };
            row.push_encoded(k.cell(0));
            let mut bad = None;
            for (i, pick) in picks.iter().enumerate() {
                let v = pick.as_ref().map_or(&Value::Null, |(_, v)| v);
                if let Err(e) = row.push(v, &self.shape.cols[1 + i].kind, tz) {
                    bad = Some(e.to_string());
                    row.push_encoded(None);
                }
            }
            if texts {
                let mut t = vec![Some(key_text(&key))];
                t.extend(picks.iter().map(|p| p.as_ref().map(|(_, v)| v.to_string())));
                out.texts.insert(id.clone(), t);
            }
            match bad {
                Some(why) => {
                    out.dead.insert(id, dead(&key, &why));
                }
                None => {
                    out.rows.insert(id, (vec![row], key));
                }
            }
        }
        out
    }

    /// The text of what the mapping makes of column `i` of a source row, for a report.
    pub fn expected_text(
        &self,
        i: usize,
        values: &[Value],
        idx: &[usize],
        tz: chrono_tz::Tz,
    ) -> Option<String> {
        let t = &self.plan;
        let v = t.value(i, values, idx).ok()?;
        let kind = &t.columns[i].target.kind;
        crate::sink::postgres::prepare::pg_text(&v, kind, tz)
            .ok()
            .flatten()
            .or_else(|| (!v.is_null()).then(|| v.to_string()))
    }
}

/// A dead letter as the report lists it: its key, and why.
fn dead(key: &[KeyValue], why: &str) -> String {
    format!("{}: {why}", key_text(key))
}

/// Key values as `a, b` text.
pub fn key_text(key: &[KeyValue]) -> String {
    key.iter()
        .map(|k| match k {
            KeyValue::I(i) => i.to_string(),
            KeyValue::U(u) => u.to_string(),
            KeyValue::S(s) => s.clone(),
            KeyValue::B(b) => String::from_utf8_lossy(b).into_owned(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the mapping makes of `rows` (rows of the entries' common source table, in source
/// order) for each of `entries` (plain entries, not pivots), through the sink's encoder: one
/// `prepare` per row, as the stream and the copy do. `idx`: each entry's binding.
pub fn expect_rows(
    entries: &[&Entry],
    encoder: &mut PgEncoder,
    schema: &Arc<TableSchema>,
    idx: &[Arc<Vec<usize>>],
    rows: Vec<ReadRow>,
    (tz, texts): (chrono_tz::Tz, bool),
) -> Vec<Expected> {
    let mut out: Vec<Expected> = entries.iter().map(|_| Expected::default()).collect();
    let mut keys: Vec<Option<Vec<KeyValue>>> = vec![None; entries.len()];
    // A key as the target's key cells (the identity rows are found by).
    let id_of = |e: &Entry, key: &[KeyValue]| match e.shape.encode_key(key, tz) {
        Ok(cells) => Ok(cells.into_identity()),
        Err(err) => Err((
            key_text(key).into_bytes(),
            format!("its key cannot be stored in the target: {err}"),
        )),
    };
    for r in rows {
        let mut any = false;
        for (n, e) in entries.iter().enumerate() {
            keys[n] = None;
            if !e.plan.passes(&r.values, &idx[n]) {
                continue;
            }
            let Some(key) = e.source_key(&r.values, &idx[n]) else {
                continue;
            };
            if r.unreadable.is_some() || texts {
                let id = match id_of(e, &key) {
                    Ok(id) => id,
                    Err((id, why)) => {
                        out[n].dead.insert(id, dead(&key, &why));
                        continue;
                    }
                };
                if let Some(why) = &r.unreadable {
                    out[n].dead.insert(id, dead(&key, why));
                    continue;
                }
                let t: Vec<Option<String>> = (0..e.plan.columns.len())
                    .map(|i| e.expected_text(i, &r.values, &idx[n], tz))
                    .collect();
                out[n].texts.insert(id, t);
            }
            keys[n] = Some(key);
            any = true;
        }
        if !any {
            continue;
        }
        let change = crate::snapshot::insert_of(schema, r.values);
        match encoder.prepare(&change) {
            Err((_, err)) => {
                for (n, k) in keys.iter_mut().enumerate() {
                    if let Some(key) = k.take() {
                        let id = id_of(entries[n], &key).unwrap_or_else(|(id, _)| id);
                        out[n].dead.insert(id, dead(&key, &err.to_string()));
                    }
                }
            }
            Ok(changes) => {
                for c in changes {
                    if c.kind != ChangeKind::Upsert {
                        continue;
                    }
                    let Some(n) = entries.iter().position(|e| e.index == c.table) else {
                        continue;
                    };
                    let Some(key) = &keys[n] else { continue };
                    let slot = out[n]
                        .rows
                        .entry(c.key)
                        .or_insert_with(|| (Vec::new(), key.clone()));
                    slot.0.push(c.row);
                }
            }
        }
    }
    out
}

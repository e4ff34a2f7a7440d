//! The SQL text of the row statements: column and key lists, the `ON CONFLICT` clause, and the
//! multi-row VALUES upsert, delete and clear (`on_delete = "clear"`) of a plan table.
//!
//! Owns the shape of those statements; pure functions of a [`TablePlan`]. Uses the mapping plan
//! and identifier quoting only.

use crate::mapping::{LookupPlan, TablePlan};
use crate::model::pg_ident;

/// The value of look-up `l` for a natural key given as the SQL expression `natural`: the taken
/// column of the row it names, or NULL.
pub(super) fn lookup_pick(l: &LookupPlan, natural: &str) -> String {
    format!(
        "(SELECT p.{} FROM {} p WHERE p.{} = {natural})",
        pg_ident(&l.take),
        l.table.pg_quoted(),
        pg_ident(&l.match_)
    )
}

/// The entry's columns and then the look-up columns its upserts fill (see
/// [`TablePlan::resolves`]).
fn written_list(t: &TablePlan) -> String {
    t.columns
        .iter()
        .map(|c| &c.target.name)
        .chain(t.resolves.iter().map(|l| &l.column.name))
        .map(|n| pg_ident(n))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn column_list(t: &TablePlan) -> String {
    t.columns
        .iter()
        .map(|c| pg_ident(&c.target.name))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn key_list(t: &TablePlan) -> String {
    t.key
        .iter()
        .map(|&k| pg_ident(&t.columns[k].target.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The conflict clause of an upsert: every written column but the key (look-up columns
/// included) takes the new value.
pub(super) fn on_conflict(t: &TablePlan) -> String {
    let updates: Vec<String> = t
        .columns
        .iter()
        .enumerate()
        .filter(|(i, _)| !t.key.contains(i))
        .map(|(_, c)| &c.target.name)
        .chain(t.resolves.iter().map(|l| &l.column.name))
        .map(|n| {
            let n = pg_ident(n);
            format!("{n} = EXCLUDED.{n}")
        })
        .collect();
    if updates.is_empty() {
        format!("ON CONFLICT ({}) DO NOTHING", key_list(t))
    } else {
        format!(
            "ON CONFLICT ({}) DO UPDATE SET {}",
            key_list(t),
            updates.join(", ")
        )
    }
}

/// The multi-row upsert of `rows` rows, `$n` per cell; look-up columns are filled from the
/// natural key's parameter (cast to its column's type, which fixes the parameter's type).
pub(super) fn upsert_values_sql(t: &TablePlan, rows: usize) -> String {
    let width = t.columns.len();
    let mut values = Vec::with_capacity(rows);
    for r in 0..rows {
        let mut ps: Vec<String> = (1..=width).map(|c| format!("${}", r * width + c)).collect();
        for l in &t.resolves {
            let (i, c) = t
                .columns
                .iter()
                .enumerate()
                .find(|(_, c)| c.target.name == l.from)
                .expect("a look-up's natural key is a column the entry writes");
            let natural = format!("${}::{}", r * width + i + 1, c.target.type_name);
            ps.push(lookup_pick(l, &natural));
        }
        values.push(format!("({})", ps.join(", ")));
    }
    format!(
        "INSERT INTO {} ({}) VALUES {} {}",
        t.target.pg_quoted(),
        written_list(t),
        values.join(", "),
        on_conflict(t)
    )
}

/// The statement applying the staged rows of entry `t` (`stage`, with the entry's columns).
pub(super) fn upsert_staged_sql(t: &TablePlan, stage: &str) -> String {
    let mut picks: Vec<String> = t
        .columns
        .iter()
        .map(|c| format!("s.{}", pg_ident(&c.target.name)))
        .collect();
    picks.extend(
        t.resolves
            .iter()
            .map(|l| lookup_pick(l, &format!("s.{}", pg_ident(&l.from)))),
    );
    format!(
        "INSERT INTO {} ({}) SELECT {} FROM {stage} s {}",
        t.target.pg_quoted(),
        written_list(t),
        picks.join(", "),
        on_conflict(t)
    )
}

/// The columns an entry writes besides its key (what `on_delete = "clear"` sets to NULL).
fn owned_columns(t: &TablePlan) -> Vec<String> {
    t.columns
        .iter()
        .enumerate()
        .filter(|(i, _)| !t.key.contains(i))
        .map(|(_, c)| c.target.name.clone())
        .chain(t.lookups.iter().map(|l| l.column.name.clone()))
        .collect()
}

pub(super) fn clear_values_sql(t: &TablePlan, rows: usize) -> String {
    let width = t.key.len();
    let mut tuples = Vec::with_capacity(rows);
    for r in 0..rows {
        let ps: Vec<String> = (1..=width).map(|c| format!("${}", r * width + c)).collect();
        tuples.push(format!("({})", ps.join(", ")));
    }
    let mut sets: Vec<String> = owned_columns(t)
        .iter()
        .map(|c| format!("{} = NULL", pg_ident(c)))
        .collect();
    if sets.is_empty() {
        let k = pg_ident(&t.columns[t.key[0]].target.name);
        sets.push(format!("{k} = {k}"));
    }
    format!(
        "UPDATE {} SET {} WHERE ({}) IN ({})",
        t.target.pg_quoted(),
        sets.join(", "),
        key_list(t),
        tuples.join(", ")
    )
}

pub(super) fn delete_values_sql(t: &TablePlan, rows: usize) -> String {
    let width = t.key.len();
    let mut tuples = Vec::with_capacity(rows);
    for r in 0..rows {
        let ps: Vec<String> = (1..=width).map(|c| format!("${}", r * width + c)).collect();
        tuples.push(format!("({})", ps.join(", ")));
    }
    format!(
        "DELETE FROM {} WHERE ({}) IN ({})",
        t.target.pg_quoted(),
        key_list(t),
        tuples.join(", ")
    )
}

/// The statements the forward direction runs for entry `t`, with `$n` where values go (what
/// `duplex plan` shows): per kind of write, a label and the SQL (one row's worth; the sink
/// sends runs of rows in one statement). Pivots write through duplex's pivot table instead.
pub fn shapes(t: &TablePlan) -> Vec<(&'static str, String)> {
    if t.pivot.is_some() {
        return Vec::new();
    }
    let mut out = vec![("upsert", upsert_values_sql(t, 1))];
    match t.on_delete {
        crate::mapping::OnDelete::Delete => out.push(("delete", delete_values_sql(t, 1))),
        crate::mapping::OnDelete::Clear => out.push(("clear", clear_values_sql(t, 1))),
        crate::mapping::OnDelete::Ignore => {}
    }
    out
}

//! Compiles a [`MappingSet`] against the live schemas into a typed [`Plan`].
//!
//! Every check a mapping can fail is made here, before anything is replicated: tables and columns
//! exist, each column's source type (after its transforms) converts to its target type, the key
//! is mapped and backed by a primary key or unique index on the target (upserts need one), value
//! maps can be read backwards where a column goes both ways, look-ups and pivots name real
//! columns. All errors are collected and reported together, each as
//! `file:line: key `path`: what is wrong`.
//!
//! This module owns the set-wide steps: [`compile`] compiles the value maps, then each table
//! entry (`table::compile_table`, with its steps in `columns`, `pivot` and `lookup`), then
//! checks across entries (one writer per target column, one deleting entry per target, one
//! reverse entry per PostgreSQL table); [`referenced_tables`] names the tables whose schemas the
//! caller reads first. The plan types are in `plan`, value maps and transforms in `maps`, type
//! conversion in `convert`. Uses the file format ([`super::spec`]), the transforms and
//! [`super::ReversePlan`]; everything public is re-exported here, so callers name
//! `mapping::compile::…` (or `mapping::…`) only.

mod columns;
mod convert;
mod lookup;
mod maps;
mod pivot;
mod plan;
mod table;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

pub use convert::convertible;
pub use plan::{
    ColumnPlan, ColumnSource, Filter, FilterTest, LookupPlan, PivotPlan, PivotTarget, Plan,
    ReverseSet, TablePlan, TargetTable,
};

use super::spec::{Direction, MappingSet, OnDelete};
use crate::error::{Error, Result};
use crate::model::{TableName, TableSchema};
use maps::compile_maps;
use table::{compile_table, Ctx};

/// Source and target table names a mapping set refers to, so the caller can read their schemas.
pub fn referenced_tables(
    set: &MappingSet,
    source_db: &str,
    target_schema: &str,
) -> (BTreeSet<TableName>, BTreeSet<TableName>) {
    let mut sources = BTreeSet::new();
    let mut targets = BTreeSet::new();
    for f in &set.files {
        for t in &f.spec.table {
            let t = t.get_ref();
            sources.insert(TableName::parse(t.source.get_ref(), source_db));
            targets.insert(TableName::parse(t.target.get_ref(), target_schema));
            for l in t.lookup.values() {
                targets.insert(TableName::parse(&l.get_ref().table, target_schema));
            }
        }
    }
    (sources, targets)
}

/// Compiles every table entry of `set`; returns all errors together.
pub fn compile(
    set: &MappingSet,
    source_db: &str,
    target_schema: &str,
    sources: &HashMap<TableName, Arc<TableSchema>>,
    targets: &HashMap<TableName, TargetTable>,
) -> Result<Plan> {
    let (maps, mut errors) = compile_maps(set);
    let mut tables: Vec<Arc<TablePlan>> = Vec::new();
    for file in &set.files {
        for (i, entry) in file.spec.table.iter().enumerate() {
            let spec = entry.get_ref();
            let source_name = TableName::parse(spec.source.get_ref(), source_db);
            let target_name = TableName::parse(spec.target.get_ref(), target_schema);
            let at = |span: std::ops::Range<usize>, key: &str| {
                format!("{}: key `table[{i}]{key}`", file.at(span.start))
            };
            let Some(source) = sources.get(&source_name) else {
                errors.push(format!(
                    "{}: source table {source_name} does not exist in MySQL",
                    at(spec.source.span(), ".source")
                ));
                continue;
            };
            let Some(target) = targets.get(&target_name) else {
                errors.push(format!(
                    "{}: target table {target_name} does not exist in PostgreSQL",
                    at(spec.target.span(), ".target")
                ));
                continue;
            };
            let ctx = Ctx {
                file,
                index: i,
                target_schema,
                maps: &maps,
                targets,
            };
            let origin = file.at(entry.span().start);
            match compile_table(&ctx, spec, origin, source.clone(), target) {
                Ok(t) => tables.push(Arc::new(t)),
                Err(mut e) => errors.append(&mut e),
            }
        }
    }
    errors.extend(check_shared_targets(&tables));
    resolve_in_writes(&mut tables);
    let mut reverse = Vec::new();
    for t in tables.iter().filter(|t| t.direction != Direction::Forward) {
        match super::ReversePlan::of(t) {
            Ok(r) => reverse.push(Arc::new(r)),
            Err(mut e) => errors.append(&mut e),
        }
    }
    let mut reverse_targets: HashMap<&TableName, &str> = HashMap::new();
    for r in &reverse {
        if let Some(prev) = reverse_targets.insert(&r.source, &r.origin) {
            errors.push(format!(
                "{}: key `direction`: PostgreSQL table {} is already replicated back by the entry at {prev}; only one entry per table may go reverse",
                r.origin, r.source
            ));
        }
    }
    if errors.is_empty() {
        let mut plan = Plan::new(tables);
        plan.reverse = reverse;
        Ok(plan)
    } else {
        Err(Error::mapping(errors.join("\n")))
    }
}

/// Rules for several entries feeding one target table: each column has one writer, and at most
/// one entry deletes rows.
/// Sets each entry's [`TablePlan::resolves`]: the look-ups of its target whose natural key it
/// writes (a look-up declared by one entry may read a column another entry of the target writes).
fn resolve_in_writes(tables: &mut [Arc<TablePlan>]) {
    let all: Vec<(TableName, LookupPlan)> = tables
        .iter()
        .flat_map(|t| t.lookups.iter().map(|l| (t.target.clone(), l.clone())))
        .collect();
    for t in tables.iter_mut() {
        let writes = |c: &str| {
            t.columns.iter().any(|p| p.target.name == c)
                || t.pivot
                    .as_ref()
                    .is_some_and(|p| p.columns.iter().any(|p| p.name == c))
        };
        let mut resolves: Vec<LookupPlan> = Vec::new();
        for (target, l) in &all {
            if *target == t.target
                && writes(&l.from)
                && !resolves.iter().any(|r| r.column.name == l.column.name)
            {
                resolves.push(l.clone());
            }
        }
        if !resolves.is_empty() {
            Arc::make_mut(t).resolves = resolves;
        }
    }
}

fn check_shared_targets(tables: &[Arc<TablePlan>]) -> Vec<String> {
    let mut errors = Vec::new();
    let mut by_target: HashMap<&TableName, Vec<&TablePlan>> = HashMap::new();
    for t in tables {
        by_target.entry(&t.target).or_default().push(t);
    }
    let mut groups: Vec<_> = by_target.into_iter().filter(|(_, v)| v.len() > 1).collect();
    groups.sort_by(|a, b| a.0.cmp(b.0));
    for (target, entries) in groups {
        let deleting: Vec<&str> = entries
            .iter()
            .filter(|t| t.on_delete == OnDelete::Delete)
            .map(|t| t.origin.as_str())
            .collect();
        if deleting.len() > 1 {
            errors.push(format!(
                "{}: key `on_delete`: target {target} is fed by {} entries that delete its rows on a source DELETE (also at {}): set on_delete = \"clear\" on the entries that only add columns",
                deleting[1],
                deleting.len(),
                deleting[0]
            ));
        }
        let mut writer: HashMap<&str, &str> = HashMap::new();
        for t in &entries {
            let keys: BTreeSet<usize> = t.key.iter().copied().collect();
            // (target column, what writes it: a source column, `set`, `pack`, pivot, lookup)
            let written = t
                .columns
                .iter()
                .enumerate()
                .filter(|(i, _)| !keys.contains(i))
                .map(|(_, c)| (c.target.name.as_str(), c.source_name.as_str()))
                .chain(
                    t.pivot
                        .iter()
                        .flat_map(|p| p.columns.iter().map(|c| (c.name.as_str(), "a pivot code"))),
                )
                .chain(
                    t.lookups
                        .iter()
                        .map(|l| (l.column.name.as_str(), "a lookup")),
                );
            for (col, by) in written {
                if let Some(prev) = writer.insert(col, &t.origin) {
                    errors.push(format!(
                        "{}: key `column`: target column {target}.{col} (from {by}) is also written by the entry at {prev}; give each column one writer",
                        t.origin
                    ));
                }
            }
        }
    }
    errors
}

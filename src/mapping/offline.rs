//! Compiling a mapping set without any server (`duplex check --offline`): the schemas are made
//! up from what the files themselves name, so that everything the files alone decide is
//! checked — map names and their backward reading, transforms and their options, look-ups,
//! pivots, keys, directions and conflict policies, several entries feeding one target — while
//! what only the live schemas can tell (that tables and columns exist, and their types) is
//! left to `duplex check`.
//!
//! Every column a file names exists, with the type that lets the declared steps take it: text,
//! a DATETIME where a `zone` step needs one; target columns are text (jsonb where packed). A
//! table's primary key is its `key`, else a column named `ID`, else its first column; look-up
//! tables are unique on their natural key.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::spec::{ColumnSpec, ColumnTable, ColumnsMode, MappingSet, PackSpec};
use super::Plan;
use crate::error::Result;
use crate::model::{
    ColumnSchema, SourceType, TableName, TableSchema, TargetColumn, TargetKind, TargetTable,
};

/// What the files name of one source table: columns (and whether they hold date-times: a zone
/// step reads them, or a change time is written to them), key.
#[derive(Default)]
struct Source {
    columns: BTreeMap<String, bool>,
    key: Option<Vec<String>>,
}

/// What the files name of one target table: columns (and whether packed), unique keys.
#[derive(Default)]
struct Target {
    columns: BTreeMap<String, bool>,
    unique: BTreeSet<Vec<String>>,
}

/// Compiles `set` against schemas made up from it (see the module's description).
pub fn compile_offline(set: &MappingSet, source_db: &str, target_schema: &str) -> Result<Plan> {
    let mut sources: BTreeMap<TableName, Source> = BTreeMap::new();
    let mut targets: BTreeMap<TableName, Target> = BTreeMap::new();
    for file in &set.files {
        for entry in &file.spec.table {
            let t = entry.get_ref();
            let src = sources
                .entry(TableName::parse(t.source.get_ref(), source_db))
                .or_default();
            let tgt_name = TableName::parse(t.target.get_ref(), target_schema);
            let mut renames: Vec<(String, String)> = Vec::new();
            let mut named = |src: &mut Source, col: &str, to: Option<String>, zone: bool| {
                let z = src.columns.entry(col.to_string()).or_insert(false);
                *z |= zone;
                if let Some(to) = to {
                    renames.push((col.to_string(), to));
                }
            };
            for (col, spec) in &t.column {
                for (to, zone) in targets_of(col.get_ref(), spec.get_ref()) {
                    named(src, col.get_ref(), to, zone);
                }
            }
            for col in t.filter.keys() {
                named(src, col.get_ref(), None, false);
            }
            if let Some(p) = &t.pivot {
                let p = p.get_ref();
                named(src, &p.name, None, false);
                named(src, &p.value, None, false);
            }
            // A change time is written into a DATETIME.
            for col in t.reverse_set.keys() {
                named(src, col.get_ref(), None, true);
            }
            for p in t.pack.values() {
                if let PackSpec::Columns(cols) = p.get_ref() {
                    for c in cols {
                        named(src, c, None, false);
                    }
                }
            }
            if let Some(k) = &t.key {
                src.key = Some(k.get_ref().clone());
                for c in k.get_ref() {
                    named(src, c, None, false);
                }
            }
            let tgt = targets.entry(tgt_name.clone()).or_default();
            for (_, to) in &renames {
                tgt.columns.entry(to.clone()).or_insert(false);
            }
            let all = t
                .columns
                .as_ref()
                .is_some_and(|c| *c.get_ref() == ColumnsMode::All);
            if all {
                // `columns = "all"`: every source column named also feeds its namesake.
                for c in src.columns.keys() {
                    tgt.columns.entry(c.clone()).or_insert(false);
                }
            }
            if let Some(p) = &t.pivot {
                for spec in p.get_ref().code.values() {
                    for (to, _) in targets_of("", spec.get_ref()) {
                        tgt.columns.extend(to.map(|t| (t, false)));
                    }
                }
            }
            for c in t.set.keys() {
                tgt.columns.entry(c.get_ref().clone()).or_insert(false);
            }
            for c in t.pack.keys() {
                tgt.columns.insert(c.get_ref().clone(), true);
            }
            for (c, l) in &t.lookup {
                tgt.columns.entry(c.get_ref().clone()).or_insert(false);
                tgt.columns.entry(l.get_ref().from.clone()).or_insert(false);
            }
            for l in t.lookup.values() {
                let l = l.get_ref();
                let other = targets
                    .entry(TableName::parse(&l.table, target_schema))
                    .or_default();
                other.columns.entry(l.match_.clone()).or_insert(false);
                other.columns.entry(l.take.clone()).or_insert(false);
                other.unique.insert(vec![l.match_.clone()]);
            }
            // The entry's key, as the target columns it feeds, is unique there.
            let src = &sources[&TableName::parse(t.source.get_ref(), source_db)];
            let key = primary_key(src);
            let target_key: Vec<String> = key
                .iter()
                .filter_map(|k| {
                    renames
                        .iter()
                        .find(|(c, _)| c.eq_ignore_ascii_case(k))
                        .map(|(_, to)| to.clone())
                        .or_else(|| all.then(|| k.clone()))
                })
                .collect();
            if !target_key.is_empty() {
                targets
                    .get_mut(&tgt_name)
                    .expect("made above")
                    .unique
                    .insert(target_key);
            }
        }
    }
    let sources: HashMap<TableName, Arc<TableSchema>> = sources
        .into_iter()
        .map(|(name, s)| {
            let key = primary_key(&s);
            let columns: Vec<ColumnSchema> = s
                .columns
                .iter()
                .map(|(c, zone)| ColumnSchema {
                    name: c.clone(),
                    ty: if *zone {
                        SourceType::DateTime
                    } else {
                        SourceType::Text {
                            charset: "utf8mb4".into(),
                        }
                    },
                    nullable: true,
                    column_type: if *zone { "datetime" } else { "text" }.into(),
                })
                .collect();
            let primary_key = key
                .iter()
                .filter_map(|k| columns.iter().position(|c| c.name.eq_ignore_ascii_case(k)))
                .collect();
            let schema = TableSchema {
                name: name.clone(),
                columns,
                primary_key,
            };
            (name, Arc::new(schema))
        })
        .collect();
    let targets: HashMap<TableName, TargetTable> = targets
        .into_iter()
        .map(|(name, t)| {
            let columns = t
                .columns
                .iter()
                .map(|(c, packed)| TargetColumn {
                    name: c.clone(),
                    type_name: if *packed { "jsonb" } else { "text" }.into(),
                    kind: if *packed {
                        TargetKind::Jsonb
                    } else {
                        TargetKind::Text
                    },
                    oid: 0,
                    nullable: true,
                })
                .collect();
            let table = TargetTable {
                name: name.clone(),
                columns,
                unique_keys: t.unique.into_iter().collect(),
            };
            (name, table)
        })
        .collect();
    super::compile(set, source_db, target_schema, &sources, &targets)
}

/// The target columns a column entry feeds, and whether a `zone` step reads the source column.
fn targets_of(col: &str, spec: &ColumnSpec) -> Vec<(Option<String>, bool)> {
    let one = |t: &ColumnTable| {
        let to = if t.skip {
            None
        } else {
            Some(t.to.clone().unwrap_or_else(|| col.to_string()))
        };
        (to, t.zone.is_some())
    };
    match spec {
        ColumnSpec::Rename(to) => vec![(Some(to.clone()), false)],
        ColumnSpec::Full(t) => vec![one(t)],
        ColumnSpec::Many(list) => list.iter().map(one).collect(),
    }
}

/// A made-up table's primary key: its `key`, else a column named ID, else its first column.
fn primary_key(s: &Source) -> Vec<String> {
    if let Some(k) = &s.key {
        return k.clone();
    }
    if let Some(id) = s.columns.keys().find(|c| c.eq_ignore_ascii_case("id")) {
        return vec![id.clone()];
    }
    s.columns.keys().next().cloned().into_iter().collect()
}

//! One table entry compiled into a [`TablePlan`]: [`compile_table`] reads as the list of what it
//! checks and builds, each step a method of [`Entry`], the entry being compiled.
//!
//! Owns the order of the steps (which is the order an entry's errors are reported in), the state
//! they share (source columns read, target columns fed so far, the errors), and the key, reverse
//! write and delete steps. The column steps are in `columns`, the pivot in `pivot`, the look-ups
//! in `lookup`. Uses the plan types, [`super::convert`], the file format and the transforms.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use toml::Spanned;

use super::{ColumnPlan, ReverseSet, TablePlan, TargetTable};
use crate::mapping::spec::{Direction, MappingFile, OnDelete, ReverseSetSpec, TableSpec};
use crate::mapping::transform::ValueMap;
use crate::model::{SourceType, TableName, TableSchema};

/// What compiling one entry needs to know about the rest of the set.
pub(super) struct Ctx<'a> {
    pub(super) file: &'a MappingFile,
    pub(super) index: usize,
    pub(super) target_schema: &'a str,
    pub(super) maps: &'a HashMap<String, Arc<ValueMap>>,
    pub(super) targets: &'a HashMap<TableName, TargetTable>,
}

impl Ctx<'_> {
    pub(super) fn at(&self, span: std::ops::Range<usize>, key: &str) -> String {
        format!(
            "{}: key `table[{}]{key}`",
            self.file.at(span.start),
            self.index
        )
    }
}

/// One table entry being compiled: what it is compiled against, and what the steps so far have
/// built and found wrong.
pub(super) struct Entry<'a> {
    pub(super) ctx: &'a Ctx<'a>,
    pub(super) spec: &'a TableSpec,
    pub(super) source: &'a TableSchema,
    pub(super) target: &'a TargetTable,
    pub(super) direction: Direction,
    /// Every error so far, in the order the checks run.
    pub(super) errors: Vec<String>,
    /// Source columns read, by name ([`TablePlan::slots`]).
    pub(super) slots: Vec<String>,
    /// Target columns fed by source columns, then constants, then packs.
    pub(super) columns: Vec<ColumnPlan>,
    /// Target column → what feeds it (a source column, `a constant`, `pack`).
    pub(super) target_seen: HashMap<String, String>,
    /// Source columns named by column entries (all of them with `columns = "all"`); `pack =
    /// "rest"` packs the others.
    pub(super) named: BTreeSet<String>,
}

/// Compiles one table entry: its column entries, constants, packs, row filter, key, pivot,
/// look-ups, reverse writes and delete rule, in that order (which is the order of its errors).
pub(super) fn compile_table(
    ctx: &Ctx<'_>,
    spec: &TableSpec,
    origin: String,
    source: Arc<TableSchema>,
    target: &TargetTable,
) -> std::result::Result<TablePlan, Vec<String>> {
    let mode = spec
        .columns
        .as_ref()
        .map(|m| *m.get_ref())
        .unwrap_or_default();
    let direction = spec
        .direction
        .as_ref()
        .map(|d| *d.get_ref())
        .unwrap_or_default();
    let mut entry = Entry::new(ctx, spec, &source, target, direction);
    let wanted = entry.wanted_columns(mode);
    entry.map_columns(wanted);
    entry.set_constants();
    entry.pack_columns();
    let filters = entry.filters();
    let key = entry.key();
    let pivot = entry.pivot(&key);
    let lookups = entry.lookups(pivot.as_ref());
    let reverse_write = spec
        .reverse_write
        .as_ref()
        .map(|w| *w.get_ref())
        .unwrap_or_default();
    let reverse_set = entry.reverse_set();
    let on_delete = entry.on_delete(pivot.is_some());
    if let (Some(c), false) = (&spec.conflict, direction == Direction::Both) {
        entry.errors.push(format!(
            "{}: conflict applies to tables mapped both ways; this one is {direction:?}",
            ctx.at(c.span(), ".conflict")
        ));
    }
    let newest = entry.columns.iter().enumerate().any(|(i, c)| {
        c.conflict == Some(crate::mapping::spec::Conflict::Newest) && !key.contains(&i)
    });
    if newest && key.len() != 1 && entry.errors.is_empty() {
        entry.errors.push(format!(
            "{}: conflict = \"newest\" needs a single-column key; this table's has {}",
            ctx.at(spec.source.span(), ".conflict"),
            key.len()
        ));
    }
    let Entry {
        errors,
        slots,
        columns,
        ..
    } = entry;
    let guarded = (0..columns.len())
        .filter(|i| columns[*i].conflict.is_some() && !key.contains(i))
        .collect();
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(TablePlan {
        origin,
        source: source.name.clone(),
        target: target.name.clone(),
        direction,
        slots,
        columns,
        key,
        filters,
        pivot,
        lookups,
        resolves: Vec::new(),
        on_delete,
        reverse_write,
        reverse_set,
        source_schema: source,
        guarded,
    })
}

impl<'a> Entry<'a> {
    fn new(
        ctx: &'a Ctx<'a>,
        spec: &'a TableSpec,
        source: &'a TableSchema,
        target: &'a TargetTable,
        direction: Direction,
    ) -> Self {
        Entry {
            ctx,
            spec,
            source,
            target,
            direction,
            errors: Vec::new(),
            slots: Vec::new(),
            columns: Vec::new(),
            target_seen: HashMap::new(),
            named: BTreeSet::new(),
        }
    }

    /// Compiles each entry of one section of the table (`[table.<section>]`) in key order with
    /// `one`: the compiled entries, and the error of each failing one in [`Entry::errors`].
    pub(super) fn each<V, T>(
        &mut self,
        section: &str,
        entries: &'a BTreeMap<Spanned<String>, Spanned<V>>,
        mut one: impl FnMut(&mut Self, &str, &'a V, &str) -> Result<T, String>,
    ) -> Vec<T> {
        let mut out = Vec::new();
        for (name, v) in entries {
            let at = self
                .ctx
                .at(name.span(), &format!(".{section}.{}", name.get_ref()));
            match one(self, name.get_ref(), v.get_ref(), &at) {
                Ok(t) => out.push(t),
                Err(e) => self.errors.push(e),
            }
        }
        out
    }

    /// The slot of a source column (by its name in the source table), added on first use.
    pub(super) fn slot(&mut self, name: &str) -> usize {
        match self.slots.iter().position(|s| s == name) {
            Some(i) => i,
            None => {
                self.slots.push(name.to_string());
                self.slots.len() - 1
            }
        }
    }

    /// Records that `by` feeds target column `tgt`, or the error (at `at`) that something
    /// already does.
    pub(super) fn claim(&mut self, tgt: &str, by: &str, at: &str) -> Result<(), String> {
        match self.target_seen.insert(tgt.to_string(), by.to_string()) {
            Some(prev) => Err(format!(
                "{at}: target column {tgt} is fed by both {prev} and {by}"
            )),
            None => Ok(()),
        }
    }

    /// The key: named source columns, or the source primary key. Each must be mapped, and (when
    /// nothing else is wrong so far) the target columns they feed must be the target's primary key
    /// or a unique index. Indexes into [`Entry::columns`].
    pub(super) fn key(&mut self) -> Vec<usize> {
        let (spec, source) = (self.spec, self.source);
        let (key_names, key_span): (Vec<String>, _) = match &spec.key {
            Some(k) => (k.get_ref().clone(), k.span()),
            None => (
                source
                    .primary_key
                    .iter()
                    .map(|&i| source.columns[i].name.clone())
                    .collect(),
                spec.source.span(),
            ),
        };
        let key_at = self.ctx.at(key_span, ".key");
        let mut key = Vec::new();
        if key_names.is_empty() {
            self.errors.push(format!(
                "{key_at}: source table {} has no primary key: name the key columns with key = [\"...\"]",
                source.name
            ));
        }
        for k in &key_names {
            match self
                .columns
                .iter()
                .position(|c| c.source_name.eq_ignore_ascii_case(k))
            {
                Some(p) => key.push(p),
                None => self.errors.push(format!(
                    "{key_at}: key column {k} of {} is not mapped to a target column",
                    source.name
                )),
            }
        }
        if self.errors.is_empty() {
            let target_key: Vec<String> = key
                .iter()
                .map(|&i| self.columns[i].target.name.clone())
                .collect();
            if !self.target.is_unique(&target_key) {
                self.errors.push(format!(
                    "{key_at}: target {} has no primary key or unique index on ({}): upserts by key need one",
                    self.target.name,
                    target_key.join(", ")
                ));
            }
        }
        key
    }

    /// MySQL columns set on reverse writes (`[table.reverse_set]`).
    pub(super) fn reverse_set(&mut self) -> Vec<ReverseSet> {
        self.each(
            "reverse_set",
            &self.spec.reverse_set,
            Self::reverse_set_column,
        )
    }

    /// One reverse-set column: only in an entry going back to MySQL, an existing date or time
    /// column, set to `commit_time`, when columns this entry writes back change, in a known zone.
    fn reverse_set_column(
        &mut self,
        name: &str,
        r: &ReverseSetSpec,
        at: &str,
    ) -> Result<ReverseSet, String> {
        let source = self.source;
        if self.direction == Direction::Forward {
            return Err(format!(
                "{at}: reverse_set needs direction = \"both\" or \"reverse\""
            ));
        }
        let Some(si) = source.column_index(name) else {
            return Err(format!(
                "{at}: column {name} does not exist in MySQL table {}",
                source.name
            ));
        };
        if r.value != "commit_time" {
            return Err(format!(
                "{at}: value {:?} is not known (supported: \"commit_time\")",
                r.value
            ));
        }
        if !matches!(
            source.columns[si].ty,
            SourceType::DateTime | SourceType::Timestamp | SourceType::Date
        ) {
            return Err(format!(
                "{at}: commit_time needs a DATETIME, TIMESTAMP or DATE column, {name} is {}",
                source.columns[si].column_type
            ));
        }
        let mut when = Vec::new();
        for w in &r.when_changed {
            match self.columns.iter().find(|c| c.reverse && c.source_name.eq_ignore_ascii_case(w)) {
                Some(c) => when.push(c.source_name.clone()),
                None => self.errors.push(format!("{at}: when_changed names {w}, which is not a column written back to MySQL by this entry")),
            }
        }
        let zone = match &r.zone {
            None => None,
            Some(z) => match z.parse::<chrono_tz::Tz>() {
                Ok(tz) => Some(tz),
                Err(_) => {
                    return Err(format!(
                        "{at}: zone {z:?} is not an IANA time zone name (like Asia/Almaty)"
                    ));
                }
            },
        };
        Ok(ReverseSet {
            column: source.columns[si].name.clone(),
            when_changed: when,
            zone,
        })
    }

    /// What a source DELETE does: as given, else `clear` for a pivot and `delete` otherwise; a
    /// pivot may not delete rows.
    pub(super) fn on_delete(&mut self, pivot: bool) -> OnDelete {
        let spec = self.spec;
        let on_delete = match (&spec.on_delete, pivot) {
            (Some(d), _) => *d.get_ref(),
            (None, true) => OnDelete::Clear,
            (None, false) => OnDelete::Delete,
        };
        if pivot && on_delete == OnDelete::Delete {
            self.errors.push(format!(
                "{}: a pivot clears the columns its codes feed on a source DELETE; on_delete may be \"clear\" or \"ignore\"",
                self.ctx.at(spec.on_delete.as_ref().map(|d| d.span()).unwrap_or(spec.source.span()), ".on_delete")
            ));
        }
        on_delete
    }
}

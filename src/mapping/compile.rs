//! Compiles a [`MappingSet`] against the live schemas into a typed [`Plan`].
//!
//! Every check a mapping can fail is made here, before anything is replicated: tables and columns
//! exist, each column's source type (after its transforms) converts to its target type, the key
//! is mapped and backed by a primary key or unique index on the target (upserts need one), value
//! maps can be read backwards where a column goes both ways, look-ups and pivots name real
//! columns. All errors are collected and reported together, each as
//! `file:line: key `path`: what is wrong`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::spec::{
    ColumnTable, ColumnsMode, Direction, FilterSpec, MappingFile, MappingSet, OnDelete, PackSpec,
    ReverseWrite, TableSpec,
};
use super::transform::{Step, Transform, ValueMap};
use crate::error::{Error, Result};
use crate::model::{SourceType, TableName, TableSchema, TargetColumn, TargetKind, Value};

pub use crate::model::TargetTable;

/// Where a target column's value comes from.
#[derive(Debug, Clone)]
pub enum ColumnSource {
    /// A source column: an index into [`TablePlan::slots`].
    Column(usize),
    /// A constant (`[table.set]`).
    Const(Value),
    /// A jsonb object of source columns (`[table.pack]`): (name, slot).
    Pack(Vec<(String, usize)>),
}

/// One mapped target column.
#[derive(Debug, Clone)]
pub struct ColumnPlan {
    /// The source column, or `set` / `pack`, for messages.
    pub source_name: String,
    pub from: ColumnSource,
    pub transform: Transform,
    pub target: TargetColumn,
    /// Whether the column also goes PostgreSQL → MySQL.
    pub reverse: bool,
}

/// One row-filter condition on a source column.
#[derive(Debug, Clone)]
pub struct Filter {
    pub slot: usize,
    pub column: String,
    pub test: FilterTest,
}

#[derive(Debug, Clone)]
pub enum FilterTest {
    /// The value (as text) is one of these.
    In(Vec<String>),
    NotIn(Vec<String>),
    /// `true`: must be NULL; `false`: must not be.
    Null(bool),
}

impl Filter {
    fn holds(&self, row: &[Value], idx: &[usize]) -> bool {
        let v = row.get(idx[self.slot]).unwrap_or(&Value::Null);
        let text = || super::transform::key_text(v);
        match &self.test {
            FilterTest::Null(want) => v.is_null() == *want,
            FilterTest::In(list) => !v.is_null() && list.contains(&text()),
            FilterTest::NotIn(list) => v.is_null() || !list.contains(&text()),
        }
    }
}

/// One property code's contribution to a pivoted column.
#[derive(Debug, Clone)]
pub struct PivotTarget {
    /// Index into [`PivotPlan::columns`].
    pub column: usize,
    pub priority: i32,
    pub transform: Transform,
}

/// An EAV source: rows (key, code, value) become columns of the target row with that key.
#[derive(Debug, Clone)]
pub struct PivotPlan {
    pub name_slot: usize,
    pub value_slot: usize,
    pub codes: HashMap<String, Vec<PivotTarget>>,
    pub columns: Vec<TargetColumn>,
}

/// A target column filled from another table, through a natural key.
#[derive(Debug, Clone)]
pub struct LookupPlan {
    /// The column written (e.g. `order_items.order_id`).
    pub column: TargetColumn,
    /// The column of this entry's target holding the natural key (`order_items.bitrix_order_id`).
    pub from: String,
    pub table: TableName,
    /// Its natural-key column (`orders.bitrix_order_id`) and the column taken (`orders.id`).
    pub match_: String,
    pub take: String,
}

/// A MySQL column written on reverse writes.
#[derive(Debug, Clone)]
pub struct ReverseSet {
    pub column: String,
    /// MySQL columns whose change triggers it (empty: always).
    pub when_changed: Vec<String>,
    /// The zone of the wall time written (default: `source_time_zone`).
    pub zone: Option<chrono_tz::Tz>,
}

/// One source table → one target table.
#[derive(Debug, Clone)]
pub struct TablePlan {
    /// Where it was declared (`file:line`), for messages.
    pub origin: String,
    pub source: TableName,
    pub target: TableName,
    pub direction: Direction,
    /// Source columns read, by name; rows are bound to them per table version.
    pub slots: Vec<String>,
    pub columns: Vec<ColumnPlan>,
    /// Indexes into `columns` forming the target's conflict key.
    pub key: Vec<usize>,
    pub filters: Vec<Filter>,
    pub pivot: Option<PivotPlan>,
    pub lookups: Vec<LookupPlan>,
    pub on_delete: OnDelete,
    pub reverse_write: ReverseWrite,
    pub reverse_set: Vec<ReverseSet>,
    /// The source table version this plan was compiled against.
    pub source_schema: Arc<TableSchema>,
}

impl TablePlan {
    /// Where each slot sits in rows of a version of the source table (after an ALTER TABLE the
    /// columns are found by name, with their types still convertible). Errors name the column.
    pub fn bind(&self, schema: &TableSchema) -> std::result::Result<Vec<usize>, String> {
        self.slots
            .iter()
            .map(|name| {
                let i = schema.column_index(name).ok_or_else(|| {
                    format!(
                        "column {name} (mapped at {}) no longer exists in source table {}; fix the mapping and reload",
                        self.origin, self.source
                    )
                })?;
                if *schema == *self.source_schema {
                    return Ok(i);
                }
                let ty = &schema.columns[i].ty;
                for c in &self.columns {
                    let ColumnSource::Column(slot) = c.from else { continue };
                    if self.slots[slot] != *name {
                        continue;
                    }
                    let fits = c
                        .transform
                        .output(ty)
                        .is_ok_and(|out| convertible(&out, &c.target.kind));
                    if !fits {
                        return Err(format!(
                            "column {}.{name} changed to {}, which cannot be stored in {} column {}.{}",
                            self.source, schema.columns[i].column_type, c.target.type_name, self.target, c.target.name
                        ));
                    }
                }
                Ok(i)
            })
            .collect()
    }

    /// Whether a source row image passes the row filter.
    pub fn passes(&self, row: &[Value], idx: &[usize]) -> bool {
        self.filters.iter().all(|f| f.holds(row, idx))
    }

    /// The value of column `i` for a source row whose slots sit at `idx`, transformed.
    pub fn value(
        &self,
        i: usize,
        row: &[Value],
        idx: &[usize],
    ) -> std::result::Result<Value, String> {
        let c = &self.columns[i];
        match &c.from {
            ColumnSource::Column(slot) => {
                let v = row.get(idx[*slot]).unwrap_or(&Value::Null);
                if c.transform.is_identity() {
                    Ok(v.clone())
                } else {
                    c.transform.forward(v)
                }
            }
            ColumnSource::Const(v) => Ok(v.clone()),
            ColumnSource::Pack(cols) => {
                let mut obj = serde_json::Map::new();
                for (name, slot) in cols {
                    let v = row.get(idx[*slot]).unwrap_or(&Value::Null);
                    obj.insert(name.clone(), json_of(v));
                }
                Ok(Value::Json(serde_json::Value::Object(obj).to_string()))
            }
        }
    }

    /// The target row (every column, in plan order) of a full source row image whose columns are
    /// in the compiled table's order.
    pub fn target_row(&self, source_row: &[Value]) -> std::result::Result<Vec<Value>, String> {
        let idx = self.bind(&self.source_schema)?;
        (0..self.columns.len())
            .map(|i| self.value(i, source_row, &idx))
            .collect()
    }

    /// Whether the entry writes whole rows (not only some columns of rows another entry owns).
    pub fn is_pivot(&self) -> bool {
        self.pivot.is_some()
    }
}

/// A source value inside a packed jsonb object: numbers stay numbers, zero dates become null.
fn json_of(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Null | Value::Unchanged => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::UInt(u) => J::from(*u),
        Value::Double(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::Float(f) => serde_json::Number::from_f64(*f as f64).map_or(J::Null, J::Number),
        Value::Date(d) if d.is_zero_or_partial() => J::Null,
        Value::DateTime(d) if d.date.is_zero_or_partial() => J::Null,
        Value::Json(j) => serde_json::from_str(j).unwrap_or_else(|_| J::String(j.clone())),
        Value::Bytes(b) => J::String(String::from_utf8_lossy(b).into_owned()),
        other => J::String(other.to_string()),
    }
}

/// The compiled mapping set.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub tables: Vec<Arc<TablePlan>>,
    /// The PostgreSQL → MySQL plans of tables mapped `reverse` or `both`.
    pub reverse: Vec<Arc<super::ReversePlan>>,
    by_source: HashMap<TableName, Vec<usize>>,
}

impl Plan {
    pub fn new(tables: Vec<Arc<TablePlan>>) -> Plan {
        let mut by_source: HashMap<TableName, Vec<usize>> = HashMap::new();
        for (i, t) in tables.iter().enumerate() {
            by_source.entry(t.source.clone()).or_default().push(i);
        }
        Plan {
            tables,
            reverse: Vec::new(),
            by_source,
        }
    }

    /// The forward plans fed by a source table.
    pub fn forward_for(&self, source: &TableName) -> impl Iterator<Item = &Arc<TablePlan>> {
        self.forward_indices(source).map(|i| &self.tables[i])
    }

    /// Indexes into `tables` of the forward plans fed by a source table.
    pub fn forward_indices(&self, source: &TableName) -> impl Iterator<Item = usize> + '_ {
        self.by_source
            .get(source)
            .into_iter()
            .flatten()
            .copied()
            .filter(|&i| self.tables[i].direction.forward())
    }

    /// Whether any table is also replicated from PostgreSQL, so writes there must be tagged.
    pub fn has_reverse(&self) -> bool {
        self.tables
            .iter()
            .any(|t| t.direction != Direction::Forward)
    }

    /// Source tables read by forward plans.
    pub fn forward_sources(&self) -> BTreeSet<TableName> {
        self.tables
            .iter()
            .filter(|t| t.direction.forward())
            .map(|t| t.source.clone())
            .collect()
    }
}

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

/// Converts a TOML scalar to a value (strings, integers, booleans, floats).
fn toml_value(v: &toml::Value) -> std::result::Result<Value, String> {
    Ok(match v {
        toml::Value::String(s) => Value::Text(s.clone()),
        toml::Value::Integer(i) => Value::Int(*i),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Float(f) => Value::Double(*f),
        other => {
            return Err(format!(
                "expected a string, integer, boolean or float, found {}",
                other.type_str()
            ))
        }
    })
}

/// The type a constant presents to the conversion check.
fn type_of(v: &Value) -> SourceType {
    match v {
        Value::Int(_) => SourceType::Int {
            bytes: 8,
            unsigned: false,
        },
        Value::Bool(_) => SourceType::Int {
            bytes: 1,
            unsigned: false,
        },
        Value::Double(_) => SourceType::Double,
        _ => SourceType::Text {
            charset: "utf8mb4".into(),
        },
    }
}

/// Named value maps of every file, or the errors (with file and line).
fn compile_maps(set: &MappingSet) -> (HashMap<String, Arc<ValueMap>>, Vec<String>) {
    let mut maps = HashMap::new();
    let mut errors = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for file in &set.files {
        for (name, spec) in &file.spec.map {
            let at = format!(
                "{}: key `map.{}`",
                file.at(name.span().start),
                name.get_ref()
            );
            if let Some(prev) = seen.insert(name.get_ref().clone(), at.clone()) {
                errors.push(format!(
                    "{at}: map {} is already defined at {prev}",
                    name.get_ref()
                ));
                continue;
            }
            let mut bad = Vec::new();
            let mut conv = |entries: &std::collections::BTreeMap<String, toml::Value>,
                            part: &str| {
                let mut out = HashMap::new();
                for (k, v) in entries {
                    match toml_value(v) {
                        Ok(v) => {
                            out.insert(k.clone(), v);
                        }
                        Err(e) => bad.push(format!("{at}.{part}.{k}: {e}")),
                    }
                }
                out
            };
            let forward = conv(&spec.values, "values");
            let reverse = conv(&spec.reverse, "reverse");
            let default = spec.default.as_ref().map(toml_value).transpose();
            let reverse_default = spec.reverse_default.as_ref().map(toml_value).transpose();
            let (default, reverse_default) = match (default, reverse_default) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(e), _) | (_, Err(e)) => {
                    bad.push(format!("{at}: default: {e}"));
                    (None, None)
                }
            };
            if !bad.is_empty() {
                errors.append(&mut bad);
                continue;
            }
            let m = ValueMap::new(
                name.get_ref().clone(),
                forward,
                reverse,
                default,
                reverse_default,
            );
            maps.insert(name.get_ref().clone(), Arc::new(m));
        }
    }
    (maps, errors)
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

/// What compiling one entry needs to know about the rest of the set.
struct Ctx<'a> {
    file: &'a MappingFile,
    index: usize,
    target_schema: &'a str,
    maps: &'a HashMap<String, Arc<ValueMap>>,
    targets: &'a HashMap<TableName, TargetTable>,
}

impl Ctx<'_> {
    fn at(&self, span: std::ops::Range<usize>, key: &str) -> String {
        format!(
            "{}: key `table[{}]{key}`",
            self.file.at(span.start),
            self.index
        )
    }

    /// The transform a column entry asks for, or the error.
    fn transform(&self, e: &ColumnTable, at: &str) -> std::result::Result<Transform, String> {
        let mut steps = Vec::new();
        for name in e.transform.iter().flat_map(|t| t.to_vec()) {
            match Step::named(&name) {
                Some(s) => steps.push(s),
                None => {
                    return Err(format!(
                        "{at}: unknown transform {name:?} (built-ins: {}; also null_if, parse_date, zone, map)",
                        Step::NAMES
                    ))
                }
            }
        }
        if let Some(list) = &e.null_if {
            steps.push(Step::NullIf(list.clone()));
        }
        if let Some(f) = &e.parse_date {
            let formats = f.to_vec();
            if formats.is_empty() {
                return Err(format!("{at}: parse_date needs at least one format"));
            }
            for f in &formats {
                if chrono::format::StrftimeItems::new(f)
                    .any(|i| matches!(i, chrono::format::Item::Error))
                {
                    return Err(format!(
                        "{at}: parse_date format {f:?} is not a valid chrono format"
                    ));
                }
            }
            steps.push(Step::ParseDate(formats));
        }
        if let Some(z) = &e.zone {
            match z.parse::<chrono_tz::Tz>() {
                Ok(tz) => steps.push(Step::Zone(tz)),
                Err(_) => {
                    return Err(format!(
                        "{at}: zone {z:?} is not an IANA time zone name (like Asia/Almaty)"
                    ))
                }
            }
        }
        if let Some(m) = &e.map {
            match self.maps.get(m) {
                Some(m) => steps.push(Step::Map(m.clone())),
                None => {
                    let mut known: Vec<&String> = self.maps.keys().collect();
                    known.sort();
                    let known: Vec<&str> = known.iter().map(|s| s.as_str()).collect();
                    return Err(format!(
                        "{at}: no map named {m:?} (defined: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ));
                }
            }
        }
        Ok(Transform {
            steps,
            on_error: e.on_error.unwrap_or_default(),
        })
    }
}

/// Whether a transform's result fits a target column; the error says why not.
fn check_fit(
    transform: &Transform,
    input: &SourceType,
    input_desc: &str,
    target: &TargetTable,
    tcol: &TargetColumn,
) -> std::result::Result<(), String> {
    let out = transform.output(input)?;
    if convertible(&out, &tcol.kind) {
        return Ok(());
    }
    let via = if transform.is_identity() {
        String::new()
    } else {
        format!(" (after its transforms: {})", out.describe())
    };
    Err(format!(
        "cannot convert {input_desc}{via} to {} column {}.{}",
        tcol.type_name, target.name, tcol.name
    ))
}

/// Compiles one table entry.
fn compile_table(
    ctx: &Ctx<'_>,
    spec: &TableSpec,
    origin: String,
    source: Arc<TableSchema>,
    target: &TargetTable,
) -> std::result::Result<TablePlan, Vec<String>> {
    let mut errors = Vec::new();
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
    let mut slots: Vec<String> = Vec::new();
    let mut slot_of = |name: &str| -> usize {
        match slots.iter().position(|s| s == name) {
            Some(i) => i,
            None => {
                slots.push(name.to_string());
                slots.len() - 1
            }
        }
    };

    // Which source columns go where: (source column, entry, key path, span).
    let mut wanted: Vec<(String, ColumnTable, String, std::ops::Range<usize>)> = Vec::new();
    let mut named: BTreeSet<String> = BTreeSet::new();
    for (name, col) in &spec.column {
        let key = format!(".column.{}", name.get_ref());
        let Some(si) = source.column_index(name.get_ref()) else {
            errors.push(format!(
                "{}: column {} does not exist in source table {}",
                ctx.at(name.span(), &key),
                name.get_ref(),
                source.name
            ));
            continue;
        };
        let real = source.columns[si].name.clone();
        named.insert(real.clone());
        for e in col.get_ref().entries() {
            if !e.skip {
                wanted.push((real.clone(), e, key.clone(), name.span()));
            }
        }
    }
    if mode == ColumnsMode::All {
        for c in &source.columns {
            if !named.contains(&c.name) {
                named.insert(c.name.clone());
                wanted.push((
                    c.name.clone(),
                    ColumnTable::default(),
                    ".columns".into(),
                    spec.columns
                        .as_ref()
                        .map(|s| s.span())
                        .unwrap_or(spec.source.span()),
                ));
            }
        }
    }

    let mut columns: Vec<ColumnPlan> = Vec::new();
    let mut target_seen: HashMap<String, String> = HashMap::new();
    let mut claim = |tgt: &str, by: &str, at: &str, errors: &mut Vec<String>| -> bool {
        if let Some(prev) = target_seen.insert(tgt.to_string(), by.to_string()) {
            errors.push(format!(
                "{at}: target column {tgt} is fed by both {prev} and {by}"
            ));
            false
        } else {
            true
        }
    };
    for (src, e, key, span) in wanted {
        let at = ctx.at(span, &key);
        let si = source.column_index(&src).expect("checked above");
        let scol = &source.columns[si];
        let tgt = e.target_name(&src).expect("skipped entries are left out");
        let Some(tcol) = target.column(&tgt) else {
            errors.push(format!(
                "{at}: target column {tgt} does not exist in {} (source column {})",
                target.name, scol.name
            ));
            continue;
        };
        if e.priority.is_some() {
            errors.push(format!(
                "{at}: priority belongs to pivot codes ([table.pivot.code])"
            ));
            continue;
        }
        let transform = match ctx.transform(&e, &at) {
            Ok(t) => t,
            Err(msg) => {
                errors.push(msg);
                continue;
            }
        };
        if let Err(msg) = check_fit(
            &transform,
            &scol.ty,
            &format!(
                "{} column {} ({})",
                scol.ty.describe(),
                scol.name,
                scol.column_type
            ),
            target,
            tcol,
        ) {
            errors.push(format!("{at}: {msg}"));
            continue;
        }
        let col_dir = e.direction.unwrap_or(direction);
        if e.direction.is_some() && direction != Direction::Both && col_dir != direction {
            errors.push(format!(
                "{at}: a column can go {col_dir:?} only in a table mapped both ways (this table is {direction:?})"
            ));
            continue;
        }
        if col_dir != Direction::Forward {
            if let Some(why) = transform.one_way() {
                errors.push(format!("{at}: this column goes back to MySQL, but {why}"));
                continue;
            }
        }
        if !claim(&tgt, &scol.name, &at, &mut errors) {
            continue;
        }
        columns.push(ColumnPlan {
            source_name: scol.name.clone(),
            from: ColumnSource::Column(slot_of(&scol.name)),
            transform,
            target: tcol.clone(),
            reverse: col_dir != Direction::Forward,
        });
    }

    // Constants.
    for (name, v) in &spec.set {
        let at = ctx.at(name.span(), &format!(".set.{}", name.get_ref()));
        let tcol = match target.named(name.get_ref(), &at) {
            Ok(c) => c,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let value = match toml_value(v.get_ref()) {
            Ok(v) => v,
            Err(e) => {
                errors.push(format!("{at}: {e}"));
                continue;
            }
        };
        let none = Transform::default();
        if let Err(msg) = check_fit(
            &none,
            &type_of(&value),
            &format!("the constant {value}"),
            target,
            tcol,
        ) {
            errors.push(format!("{at}: {msg}"));
            continue;
        }
        if claim(name.get_ref(), "a constant", &at, &mut errors) {
            columns.push(ColumnPlan {
                source_name: "set".into(),
                from: ColumnSource::Const(value),
                transform: none,
                target: tcol.clone(),
                reverse: false,
            });
        }
    }

    // Packed jsonb columns.
    for (name, p) in &spec.pack {
        let at = ctx.at(name.span(), &format!(".pack.{}", name.get_ref()));
        let tcol = match target.named(name.get_ref(), &at) {
            Ok(c) => c,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        if !matches!(tcol.kind, TargetKind::Json | TargetKind::Jsonb) {
            errors.push(format!(
                "{at}: pack writes a json object, but {}.{} is {}",
                target.name, tcol.name, tcol.type_name
            ));
            continue;
        }
        let names: Vec<String> = match p.get_ref() {
            PackSpec::Rest(r) if r == "rest" => source
                .columns
                .iter()
                .filter(|c| !named.contains(&c.name))
                .map(|c| c.name.clone())
                .collect(),
            PackSpec::Rest(other) => {
                errors.push(format!(
                    "{at}: expected a list of source columns or \"rest\", found {other:?}"
                ));
                continue;
            }
            PackSpec::Columns(list) => {
                let mut out = Vec::new();
                for c in list {
                    match source.column_index(c) {
                        Some(i) => out.push(source.columns[i].name.clone()),
                        None => errors.push(format!(
                            "{at}: column {c} does not exist in source table {}",
                            source.name
                        )),
                    }
                }
                out
            }
        };
        if claim(name.get_ref(), "pack", &at, &mut errors) {
            let cols = names.iter().map(|n| (n.clone(), slot_of(n))).collect();
            columns.push(ColumnPlan {
                source_name: "pack".into(),
                from: ColumnSource::Pack(cols),
                transform: Transform::default(),
                target: tcol.clone(),
                reverse: false,
            });
        }
    }

    // Row filter.
    let mut filters = Vec::new();
    for (name, f) in &spec.filter {
        let at = ctx.at(name.span(), &format!(".filter.{}", name.get_ref()));
        let Some(si) = source.column_index(name.get_ref()) else {
            errors.push(format!(
                "{at}: column {} does not exist in source table {}",
                name.get_ref(),
                source.name
            ));
            continue;
        };
        let texts = |list: &[toml::Value]| -> std::result::Result<Vec<String>, String> {
            list.iter()
                .map(|v| toml_value(v).map(|v| v.to_string()))
                .collect()
        };
        let test = match f.get_ref() {
            FilterSpec::Equals(v) => texts(std::slice::from_ref(v)).map(FilterTest::In),
            FilterSpec::Test(t) => match (&t.in_, &t.not_in, t.null) {
                (Some(l), None, None) => texts(l).map(FilterTest::In),
                (None, Some(l), None) => texts(l).map(FilterTest::NotIn),
                (None, None, Some(n)) => Ok(FilterTest::Null(n)),
                _ => Err("give exactly one of in, not_in, null".to_string()),
            },
        };
        match test {
            Ok(test) => {
                let column = source.columns[si].name.clone();
                filters.push(Filter {
                    slot: slot_of(&column),
                    column,
                    test,
                })
            }
            Err(e) => errors.push(format!("{at}: {e}")),
        }
    }

    // The key: named source columns, or the source primary key.
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
    let key_at = ctx.at(key_span, ".key");
    let mut key = Vec::new();
    if key_names.is_empty() {
        errors.push(format!(
            "{key_at}: source table {} has no primary key: name the key columns with key = [\"...\"]",
            source.name
        ));
    }
    for k in &key_names {
        match columns
            .iter()
            .position(|c| c.source_name.eq_ignore_ascii_case(k))
        {
            Some(p) => key.push(p),
            None => errors.push(format!(
                "{key_at}: key column {k} of {} is not mapped to a target column",
                source.name
            )),
        }
    }
    if errors.is_empty() {
        let target_key: Vec<String> = key
            .iter()
            .map(|&i| columns[i].target.name.clone())
            .collect();
        if !target.is_unique(&target_key) {
            errors.push(format!(
                "{key_at}: target {} has no primary key or unique index on ({}): upserts by key need one",
                target.name,
                target_key.join(", ")
            ));
        }
    }

    // Pivot.
    let mut pivot = None;
    if let Some(p) = &spec.pivot {
        let at = ctx.at(p.span(), ".pivot");
        let p = p.get_ref();
        let mut slot_for = |name: &str, errors: &mut Vec<String>| match source.column_index(name) {
            Some(i) => Some(slot_of(&source.columns[i].name)),
            None => {
                errors.push(format!(
                    "{at}: column {name} does not exist in source table {}",
                    source.name
                ));
                None
            }
        };
        let name_slot = slot_for(&p.name, &mut errors);
        let value_slot = slot_for(&p.value, &mut errors);
        if key.len() != 1 && spec.key.is_some() {
            errors.push(format!("{at}: a pivot needs a one-column key (the row it fills, like key = [\"ORDER_ID\"])"));
        }
        if spec.key.is_none() {
            errors.push(format!("{at}: a pivot needs key = [\"<column naming the target row>\"], like key = [\"ORDER_ID\"]"));
        }
        let value_ty = value_slot.map(|_| {
            let i = source.column_index(&p.value).expect("checked");
            source.columns[i].clone()
        });
        let mut pcols: Vec<TargetColumn> = Vec::new();
        let mut codes: HashMap<String, Vec<PivotTarget>> = HashMap::new();
        let mut priorities: HashMap<(usize, i32), String> = HashMap::new();
        for (code, c) in &p.code {
            let cat = ctx.at(code.span(), &format!(".pivot.code.{}", code.get_ref()));
            for e in c.get_ref().entries() {
                if e.skip {
                    continue;
                }
                let Some(tgt) = e.to.clone() else {
                    errors.push(format!("{cat}: name the target column with to = \"...\""));
                    continue;
                };
                let Some(tcol) = target.column(&tgt) else {
                    errors.push(format!(
                        "{cat}: target column {tgt} does not exist in {}",
                        target.name
                    ));
                    continue;
                };
                if e.direction.is_some_and(|d| d != Direction::Forward) {
                    errors.push(format!("{cat}: pivoted columns go forward only"));
                    continue;
                }
                let transform = match ctx.transform(&e, &cat) {
                    Ok(t) => t,
                    Err(msg) => {
                        errors.push(msg);
                        continue;
                    }
                };
                if let Some(v) = &value_ty {
                    if let Err(msg) = check_fit(
                        &transform,
                        &v.ty,
                        &format!("{} column {}", v.ty.describe(), v.name),
                        target,
                        tcol,
                    ) {
                        errors.push(format!("{cat}: {msg}"));
                        continue;
                    }
                }
                let column = match pcols.iter().position(|x| x.name == tgt) {
                    Some(i) => i,
                    None => {
                        if target_seen.contains_key(&tgt) {
                            errors.push(format!(
                                "{cat}: target column {tgt} is also fed by a column entry"
                            ));
                            continue;
                        }
                        pcols.push(tcol.clone());
                        pcols.len() - 1
                    }
                };
                let priority = e.priority.unwrap_or(0);
                if let Some(prev) = priorities.insert((column, priority), code.get_ref().clone()) {
                    errors.push(format!(
                        "{cat}: codes {prev} and {} both feed {tgt} with priority {priority}: give them different priorities (lower wins)",
                        code.get_ref()
                    ));
                    continue;
                }
                codes
                    .entry(code.get_ref().clone())
                    .or_default()
                    .push(PivotTarget {
                        column,
                        priority,
                        transform,
                    });
            }
        }
        if let (Some(name_slot), Some(value_slot)) = (name_slot, value_slot) {
            pivot = Some(PivotPlan {
                name_slot,
                value_slot,
                codes,
                columns: pcols,
            });
        }
    }

    // Look-ups.
    let mut lookups = Vec::new();
    for (name, l) in &spec.lookup {
        let at = ctx.at(name.span(), &format!(".lookup.{}", name.get_ref()));
        let l = l.get_ref();
        let tcol = match target.named(name.get_ref(), &at) {
            Ok(c) => c,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        if !tcol.nullable {
            errors.push(format!(
                "{at}: {}.{} is NOT NULL, but a row may arrive before the row it refers to and waits with NULL there: make the column nullable",
                target.name, tcol.name
            ));
        }
        let written = columns.iter().any(|c| c.target.name == l.from)
            || pivot
                .as_ref()
                .is_some_and(|p| p.columns.iter().any(|c| c.name == l.from));
        if !written {
            errors.push(format!(
                "{at}: from = {:?} must be a target column this entry writes (the natural key it holds)",
                l.from
            ));
        }
        if target_seen.contains_key(name.get_ref()) {
            errors.push(format!(
                "{at}: target column {} is also fed by a column entry",
                name.get_ref()
            ));
        }
        let table = TableName::parse(&l.table, ctx.target_schema);
        let Some(other) = ctx.targets.get(&table) else {
            errors.push(format!("{at}: table {table} does not exist in PostgreSQL"));
            continue;
        };
        match (other.column(&l.match_), other.column(&l.take)) {
            (None, _) => errors.push(format!(
                "{at}: column {} does not exist in {table}",
                l.match_
            )),
            (_, None) => errors.push(format!("{at}: column {} does not exist in {table}", l.take)),
            (Some(_), Some(take)) => {
                if !other.is_unique(std::slice::from_ref(&l.match_)) {
                    errors.push(format!(
                        "{at}: {table}.{} has no unique index, so a natural key could name several rows",
                        l.match_
                    ));
                } else if take.kind != tcol.kind {
                    errors.push(format!(
                        "{at}: {table}.{} is {}, but {}.{} is {}",
                        l.take, take.type_name, target.name, tcol.name, tcol.type_name
                    ));
                } else {
                    lookups.push(LookupPlan {
                        column: tcol.clone(),
                        from: l.from.clone(),
                        table,
                        match_: l.match_.clone(),
                        take: l.take.clone(),
                    });
                }
            }
        }
    }

    // Reverse writes.
    let reverse_write = spec
        .reverse_write
        .as_ref()
        .map(|w| *w.get_ref())
        .unwrap_or_default();
    let mut reverse_set = Vec::new();
    for (name, r) in &spec.reverse_set {
        let at = ctx.at(name.span(), &format!(".reverse_set.{}", name.get_ref()));
        let r = r.get_ref();
        if direction == Direction::Forward {
            errors.push(format!(
                "{at}: reverse_set needs direction = \"both\" or \"reverse\""
            ));
            continue;
        }
        let Some(si) = source.column_index(name.get_ref()) else {
            errors.push(format!(
                "{at}: column {} does not exist in MySQL table {}",
                name.get_ref(),
                source.name
            ));
            continue;
        };
        if r.value != "commit_time" {
            errors.push(format!(
                "{at}: value {:?} is not known (supported: \"commit_time\")",
                r.value
            ));
            continue;
        }
        if !matches!(
            source.columns[si].ty,
            SourceType::DateTime | SourceType::Timestamp | SourceType::Date
        ) {
            errors.push(format!(
                "{at}: commit_time needs a DATETIME, TIMESTAMP or DATE column, {} is {}",
                name.get_ref(),
                source.columns[si].column_type
            ));
            continue;
        }
        let mut when = Vec::new();
        for w in &r.when_changed {
            match columns.iter().find(|c| c.reverse && c.source_name.eq_ignore_ascii_case(w)) {
                Some(c) => when.push(c.source_name.clone()),
                None => errors.push(format!("{at}: when_changed names {w}, which is not a column written back to MySQL by this entry")),
            }
        }
        let zone = match &r.zone {
            None => None,
            Some(z) => match z.parse::<chrono_tz::Tz>() {
                Ok(tz) => Some(tz),
                Err(_) => {
                    errors.push(format!(
                        "{at}: zone {z:?} is not an IANA time zone name (like Asia/Almaty)"
                    ));
                    continue;
                }
            },
        };
        reverse_set.push(ReverseSet {
            column: source.columns[si].name.clone(),
            when_changed: when,
            zone,
        });
    }

    let on_delete = match (&spec.on_delete, pivot.is_some()) {
        (Some(d), _) => *d.get_ref(),
        (None, true) => OnDelete::Clear,
        (None, false) => OnDelete::Delete,
    };
    if pivot.is_some() && on_delete == OnDelete::Delete {
        errors.push(format!(
            "{}: a pivot clears the columns its codes feed on a source DELETE; on_delete may be \"clear\" or \"ignore\"",
            ctx.at(spec.on_delete.as_ref().map(|d| d.span()).unwrap_or(spec.source.span()), ".on_delete")
        ));
    }
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
        on_delete,
        reverse_write,
        reverse_set,
        source_schema: source,
    })
}

/// Whether values of a source column type can be written to a target column kind.
/// Must agree with what the sinks encode; a value that does not fit at run time (an integer out
/// of range, a string that is not a UUID) becomes a dead letter, not a compile error.
pub fn convertible(from: &SourceType, to: &TargetKind) -> bool {
    use SourceType as S;
    use TargetKind as T;
    if *to == T::Text {
        return !matches!(from, S::Binary | S::Dropped | S::Postgres(_));
    }
    match from {
        S::Int { bytes, .. } => {
            matches!(
                to,
                T::Int2 | T::Int4 | T::Int8 | T::Numeric | T::Float4 | T::Float8
            ) || (*bytes == 1 && *to == T::Bool)
        }
        S::Decimal { scale, .. } => {
            matches!(to, T::Numeric | T::Float4 | T::Float8)
                || (*scale == 0 && matches!(to, T::Int2 | T::Int4 | T::Int8))
        }
        S::Float | S::Double => matches!(to, T::Float4 | T::Float8 | T::Numeric),
        S::Text { .. } => matches!(to, T::Json | T::Jsonb | T::Uuid | T::Bytea),
        S::Binary => matches!(to, T::Bytea | T::Uuid),
        S::Date => matches!(to, T::Date | T::Timestamp | T::Timestamptz),
        S::DateTime | S::Timestamp => matches!(to, T::Timestamp | T::Timestamptz),
        S::Time => matches!(to, T::Time | T::Interval),
        S::Year => matches!(to, T::Int2 | T::Int4 | T::Int8 | T::Numeric),
        S::Enum(_) | S::Set(_) => false,
        S::Json => matches!(to, T::Json | T::Jsonb),
        S::Bit(n) => {
            matches!(to, T::Bit | T::Bytea)
                || (*n <= 63 && *to == T::Int8)
                || (*n == 1 && *to == T::Bool)
        }
        // PostgreSQL → PostgreSQL is not a direction duplex maps.
        S::Dropped | S::Postgres(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::spec::MappingFile;
    use crate::model::ColumnSchema;
    use std::path::{Path, PathBuf};

    fn source() -> Arc<TableSchema> {
        let col = |name: &str, ty: SourceType| ColumnSchema {
            name: name.into(),
            ty,
            nullable: true,
            column_type: "x".into(),
        };
        Arc::new(TableSchema {
            name: TableName::new("shop", "b_sale_order"),
            columns: vec![
                col(
                    "ID",
                    SourceType::Int {
                        bytes: 4,
                        unsigned: false,
                    },
                ),
                col(
                    "PRICE",
                    SourceType::Decimal {
                        precision: 18,
                        scale: 4,
                    },
                ),
                col(
                    "LID",
                    SourceType::Text {
                        charset: "utf8mb3".into(),
                    },
                ),
            ],
            primary_key: vec![0],
        })
    }

    fn target() -> TargetTable {
        let col = |name: &str, kind: TargetKind, ty: &str| TargetColumn {
            name: name.into(),
            type_name: ty.into(),
            kind,
            oid: 0,
            nullable: true,
        };
        TargetTable {
            name: TableName::new("public", "orders"),
            columns: vec![
                col("bitrix_order_id", TargetKind::Int4, "integer"),
                col("total", TargetKind::Numeric, "numeric(18,4)"),
                col("lid", TargetKind::Int4, "integer"),
            ],
            unique_keys: vec![vec!["bitrix_order_id".into()]],
        }
    }

    fn run(text: &str) -> Result<Plan> {
        let file = MappingFile::parse(Path::new("m/orders.toml"), text.into()).unwrap();
        let set = MappingSet {
            dir: PathBuf::from("m"),
            files: vec![file],
        };
        let mut s = HashMap::new();
        s.insert(TableName::new("shop", "b_sale_order"), source());
        let mut t = HashMap::new();
        t.insert(TableName::new("public", "orders"), target());
        compile(&set, "shop", "public", &s, &t)
    }

    #[test]
    fn good_mapping_compiles() {
        let plan = run("[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\n[table.column]\nID = \"bitrix_order_id\"\nPRICE = \"total\"\n").unwrap();
        let t = &plan.tables[0];
        assert_eq!(t.columns.len(), 2);
        assert_eq!(t.key, vec![0]);
        let row = vec![
            Value::Int(7),
            Value::Decimal("1.5".into()),
            Value::Text("s1".into()),
        ];
        assert_eq!(
            t.target_row(&row).unwrap(),
            vec![Value::Int(7), Value::Decimal("1.5".into())]
        );
        assert_eq!(
            plan.forward_for(&TableName::new("shop", "b_sale_order"))
                .count(),
            1
        );
    }

    #[test]
    fn errors_name_file_line_key() {
        let e = run("[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\n[table.column]\nID = \"bitrix_order_id\"\nPRCE = \"total\"\nLID = \"lid\"\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("m/orders.toml:6: key `table[0].column.PRCE`: column PRCE does not exist in source table shop.b_sale_order"), "{msg}");
        assert!(msg.contains("m/orders.toml:7: key `table[0].column.LID`: cannot convert text (utf8mb3) column LID"), "{msg}");

        let e = run("[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\n[table.column]\nPRICE = \"total\"\n").unwrap_err();
        assert!(e.to_string().contains("m/orders.toml:2: key `table[0].key`: key column ID of shop.b_sale_order is not mapped"), "{e}");

        let e = run("[[table]]\nsource = \"b_sale_ordr\"\ntarget = \"orders\"\n").unwrap_err();
        assert!(e.to_string().contains("m/orders.toml:2: key `table[0].source`: source table shop.b_sale_ordr does not exist"), "{e}");

        let e = run("[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\nkey = [\"PRICE\"]\n[table.column]\nID = \"bitrix_order_id\"\nPRICE = \"total\"\n").unwrap_err();
        assert!(e.to_string().contains("m/orders.toml:4: key `table[0].key`: target public.orders has no primary key or unique index on (total)"), "{e}");
    }

    #[test]
    fn conversions() {
        assert!(convertible(
            &SourceType::Int {
                bytes: 8,
                unsigned: true
            },
            &TargetKind::Numeric
        ));
        assert!(!convertible(
            &SourceType::Text {
                charset: "cp1251".into()
            },
            &TargetKind::Int4
        ));
        assert!(convertible(&SourceType::Enum(vec![]), &TargetKind::Text));
        assert!(!convertible(&SourceType::Binary, &TargetKind::Text));
        assert!(convertible(&SourceType::DateTime, &TargetKind::Timestamptz));
    }

    /// A small shop for the v2 constructs: orders, properties and basket rows.
    fn run_v2(files: &[(&str, &str)]) -> Result<Plan> {
        let int = || SourceType::Int {
            bytes: 4,
            unsigned: false,
        };
        let text = || SourceType::Text {
            charset: "utf8mb3".into(),
        };
        let table = |name: &str, cols: Vec<(&str, SourceType)>| {
            Arc::new(TableSchema {
                name: TableName::new("shop", name),
                columns: cols
                    .into_iter()
                    .map(|(n, ty)| ColumnSchema {
                        name: n.into(),
                        ty,
                        nullable: true,
                        column_type: "x".into(),
                    })
                    .collect(),
                primary_key: vec![0],
            })
        };
        let mut s = HashMap::new();
        for t in [
            table(
                "b_sale_order",
                vec![
                    ("ID", int()),
                    ("STATUS_ID", text()),
                    ("CANCELED", text()),
                    ("LID", text()),
                ],
            ),
            table(
                "props",
                vec![
                    ("ID", int()),
                    ("ORDER_ID", int()),
                    ("CODE", text()),
                    ("VALUE", text()),
                ],
            ),
            table("basket", vec![("ID", int()), ("ORDER_ID", int())]),
        ] {
            s.insert(t.name.clone(), t);
        }
        let col = |name: &str, kind: TargetKind, nullable: bool| TargetColumn {
            name: name.into(),
            type_name: format!("{kind:?}").to_lowercase(),
            kind,
            oid: 0,
            nullable,
        };
        let mut t = HashMap::new();
        t.insert(
            TableName::new("public", "orders"),
            TargetTable {
                name: TableName::new("public", "orders"),
                columns: vec![
                    col("id", TargetKind::Uuid, false),
                    col("bitrix_order_id", TargetKind::Int4, true),
                    col("status", TargetKind::Text, true),
                    col("canceled", TargetKind::Bool, true),
                    col("name", TargetKind::Text, true),
                    col("meta", TargetKind::Text, true),
                ],
                unique_keys: vec![vec!["id".into()], vec!["bitrix_order_id".into()]],
            },
        );
        t.insert(
            TableName::new("public", "items"),
            TargetTable {
                name: TableName::new("public", "items"),
                columns: vec![
                    col("bitrix_basket_id", TargetKind::Int4, false),
                    col("bitrix_order_id", TargetKind::Int4, true),
                    col("order_id", TargetKind::Uuid, false),
                ],
                unique_keys: vec![vec!["bitrix_basket_id".into()]],
            },
        );
        let set = MappingSet {
            dir: PathBuf::from("m"),
            files: files
                .iter()
                .map(|(n, text)| {
                    MappingFile::parse(Path::new(&format!("m/{n}")), text.to_string()).unwrap()
                })
                .collect(),
        };
        compile(&set, "shop", "public", &s, &t)
    }

    const MAPS: &str = "[map.st.values]\nN = \"new\"\nP = \"paid\"\nPD = \"paid\"\n";

    #[test]
    fn v2_constructs_compile() {
        let orders = "[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\ndirection = \"both\"\n\
            [table.filter]\nLID = { in = [\"s1\", \"s2\"] }\n\
            [table.column]\nID = \"bitrix_order_id\"\nSTATUS_ID = { to = \"status\", map = \"st\", direction = \"forward\" }\n\
            CANCELED = { to = \"canceled\", transform = \"yes_no\" }\n\
            [[table]]\nsource = \"props\"\ntarget = \"orders\"\nkey = [\"ORDER_ID\"]\n\
            [table.column]\nORDER_ID = \"bitrix_order_id\"\n\
            [table.pivot]\nname = \"CODE\"\nvalue = \"VALUE\"\n\
            [table.pivot.code]\nnameRecipient = { to = \"name\", priority = 1 }\nFIO = { to = \"name\", priority = 2, transform = \"trim\" }\n";
        let plan = run_v2(&[("maps.toml", MAPS), ("orders.toml", orders)]).unwrap();
        assert_eq!(plan.tables.len(), 2);
        assert_eq!(plan.tables[1].on_delete, OnDelete::Clear);
        let p = plan.tables[1].pivot.as_ref().unwrap();
        assert_eq!(p.codes["FIO"][0].priority, 2);
        // Back to MySQL: the key and CANCELED (yes_no backwards), not the forward-only status.
        let r = &plan.reverse[0];
        let names: Vec<&str> = r.columns.iter().map(|c| c.my.name.as_str()).collect();
        assert_eq!(names, vec!["CANCELED", "ID"]);
        let row = vec![
            Value::Int(1),
            Value::Text("PD".into()),
            Value::Text("Y".into()),
            Value::Text("s1".into()),
        ];
        assert_eq!(
            plan.tables[0].target_row(&row).unwrap(),
            vec![Value::Bool(true), Value::Int(1), Value::Text("paid".into())]
        );
        let idx = plan.tables[0].bind(&plan.tables[0].source_schema).unwrap();
        assert!(plan.tables[0].passes(&row, &idx));
        let mut other = row.clone();
        other[3] = Value::Text("s3".into());
        assert!(!plan.tables[0].passes(&other, &idx));
    }

    #[test]
    fn v2_errors_name_file_line_key() {
        let bad = "[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\ndirection = \"both\"\n\
            [table.filter]\nNOPE = 1\n\
            [table.column]\nID = \"bitrix_order_id\"\nSTATUS_ID = { to = \"status\", map = \"st\" }\n\
            CANCELED = { to = \"canceled\", transform = \"yes_or_no\" }\nLID = { to = \"name\", map = \"nope\" }\n\
            [[table]]\nsource = \"basket\"\ntarget = \"items\"\n\
            [table.column]\nID = \"bitrix_basket_id\"\nORDER_ID = \"bitrix_order_id\"\n\
            [table.lookup.order_id]\nfrom = \"bitrix_order_id\"\ntable = \"orders\"\nmatch = \"bitrix_order_id\"\ntake = \"id\"\n\
            [[table]]\nsource = \"props\"\ntarget = \"orders\"\nkey = [\"ORDER_ID\"]\non_delete = \"delete\"\n\
            [table.column]\nORDER_ID = \"bitrix_order_id\"\n\
            [table.pivot]\nname = \"CODE\"\nvalue = \"VALUE\"\n\
            [table.pivot.code]\na = { to = \"meta\" }\nb = { to = \"meta\" }\n";
        let e = run_v2(&[("maps.toml", MAPS), ("bad.toml", bad)])
            .unwrap_err()
            .to_string();
        for want in [
            "m/bad.toml:6: key `table[0].filter.NOPE`: column NOPE does not exist in source table shop.b_sale_order",
            "m/bad.toml:9: key `table[0].column.STATUS_ID`: this column goes back to MySQL, but map st cannot be read backwards: value \"paid\" is the image of 2 codes (P, PD)",
            "m/bad.toml:10: key `table[0].column.CANCELED`: unknown transform \"yes_or_no\"",
            "m/bad.toml:11: key `table[0].column.LID`: no map named \"nope\" (defined: st)",
            "m/bad.toml:18: key `table[1].lookup.order_id`: public.items.order_id is NOT NULL",
            "key `table[2].pivot.code.b`: codes a and b both feed meta with priority 0",
            "key `table[2].on_delete`: a pivot clears the columns its codes feed on a source DELETE",
        ] {
            assert!(e.contains(want), "missing {want:?} in:\n{e}");
        }
    }
}

//! The compiled plan: what a mapping set becomes once every check has passed, and the per-row
//! work it does at run time.
//!
//! Owns the plan types ([`Plan`], [`TablePlan`] and its parts: [`ColumnPlan`], [`Filter`],
//! [`PivotPlan`], [`LookupPlan`], [`ReverseSet`]; [`TargetTable`], the PostgreSQL table as the
//! compiler sees it, is the model's); binding rows of a source table version to a plan ([`TablePlan::bind`]),
//! the row filter and the transformed column values. Uses the model's values and schemas,
//! [`super::convertible`] and the transforms of [`crate::mapping::transform`]; it builds nothing
//! itself (the compiler's steps do).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::convertible;
use crate::mapping::spec::{Direction, OnDelete, ReverseWrite};
use crate::mapping::transform::Transform;
use crate::model::{TableName, TableSchema, TargetColumn, Value};

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
    /// For a column going both ways (key columns excepted): who wins a conflict on it.
    pub conflict: Option<crate::mapping::spec::Conflict>,
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
        let text = || crate::mapping::transform::key_text(v);
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
    /// The look-ups this entry's upserts fill in the same statement: every look-up of its
    /// target (declared by any entry) whose natural key is a column this entry writes.
    pub resolves: Vec<LookupPlan>,
    pub on_delete: OnDelete,
    pub reverse_write: ReverseWrite,
    pub reverse_set: Vec<ReverseSet>,
    /// The source table version this plan was compiled against.
    pub source_schema: Arc<TableSchema>,
    /// See [`TablePlan::guarded`].
    pub(crate) guarded: Vec<usize>,
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

    /// The target key column a resync prunes by (rows the source no longer has are deleted):
    /// only for an entry whose target rows all come from its source — mapped `forward`, or
    /// `both` with `reverse_write = "update"` (the CRM never creates shop rows) — that deletes on
    /// delete, has no pivot, and maps the source's single integer primary key unchanged to an
    /// integer target key. A `both` entry that upserts back may hold CRM rows on their way to
    /// MySQL: never pruned.
    pub fn prune_key(&self) -> Option<&str> {
        use crate::model::{SourceType, TargetKind};
        let one_source = match self.direction {
            Direction::Forward => true,
            Direction::Both => self.reverse_write == ReverseWrite::Update,
            Direction::Reverse => false,
        };
        if !one_source || self.on_delete != OnDelete::Delete || self.pivot.is_some() {
            return None;
        }
        let [k] = self.key.as_slice() else {
            return None;
        };
        let c = &self.columns[*k];
        let ColumnSource::Column(slot) = c.from else {
            return None;
        };
        let [pk] = self.source_schema.primary_key.as_slice() else {
            return None;
        };
        let source = &self.source_schema.columns[*pk];
        let fits = c.transform.is_identity()
            && source.name.eq_ignore_ascii_case(&self.slots[slot])
            && matches!(source.ty, SourceType::Int { .. })
            && matches!(
                c.target.kind,
                TargetKind::Int2 | TargetKind::Int4 | TargetKind::Int8
            );
        fits.then_some(c.target.name.as_str())
    }

    /// Whether a source row image passes the row filter.
    pub fn passes(&self, row: &[Value], idx: &[usize]) -> bool {
        self.filters.iter().all(|f| f.holds(row, idx))
    }

    /// The columns whose changes are checked for conflicts: those going both ways, the key's
    /// excepted (plan column numbers).
    pub fn guarded(&self) -> &[usize] {
        &self.guarded
    }

    /// Every non-key column goes both ways: the table has no forward-only (mirror) column.
    pub fn mirrorless(&self) -> bool {
        self.guarded.len() + self.key.len() == self.columns.len()
    }

    /// A guarded column's conflicts go to the newer change (`conflict = "newest"`).
    pub fn has_newest(&self) -> bool {
        self.guarded
            .iter()
            .any(|&c| self.columns[c].conflict == Some(crate::mapping::spec::Conflict::Newest))
    }

    /// The source value column `i` is taken from, untransformed (`None` for a constant or a
    /// packed column).
    pub fn source_value<'r>(&self, i: usize, row: &'r [Value], idx: &[usize]) -> Option<&'r Value> {
        match &self.columns[i].from {
            ColumnSource::Column(slot) => row.get(idx[*slot]),
            _ => None,
        }
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
    pub reverse: Vec<Arc<crate::mapping::ReversePlan>>,
    by_source: HashMap<TableName, Vec<usize>>,
    /// The mapping files this plan was compiled from, as they were read: a retry checks them
    /// against the live schemas again, never the files on disk (only SIGHUP adopts those).
    pub files: Option<Arc<crate::mapping::MappingSet>>,
}

impl Plan {
    /// The MySQL key column a resync of reverse entry `r` prunes by: as
    /// [`TablePlan::prune_key`], for an entry mapped `reverse` that upserts, keyed by the
    /// PostgreSQL table's single integer primary key unchanged.
    pub fn reverse_prune_key<'p>(
        &self,
        r: &'p crate::mapping::ReversePlan,
        pg_primary_key: &[String],
    ) -> Option<&'p str> {
        use crate::model::{SourceType, TargetKind};
        let reverse_only = self.tables.iter().any(|t| {
            t.source == r.target && t.target == r.source && t.direction == Direction::Reverse
        });
        let [k] = r.key.as_slice() else {
            return None;
        };
        let c = &r.columns[*k];
        let fits = reverse_only
            && r.write == ReverseWrite::Upsert
            && c.transform.is_identity()
            && pg_primary_key.len() == 1
            && pg_primary_key[0] == c.pg_name
            && matches!(
                c.pg_kind,
                TargetKind::Int2 | TargetKind::Int4 | TargetKind::Int8
            )
            && matches!(c.my.ty, SourceType::Int { .. });
        fits.then_some(c.my.name.as_str())
    }

    pub fn new(tables: Vec<Arc<TablePlan>>) -> Plan {
        let mut by_source: HashMap<TableName, Vec<usize>> = HashMap::new();
        for (i, t) in tables.iter().enumerate() {
            by_source.entry(t.source.clone()).or_default().push(i);
        }
        Plan {
            tables,
            reverse: Vec::new(),
            by_source,
            files: None,
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

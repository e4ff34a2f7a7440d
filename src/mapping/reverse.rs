//! The reverse direction of a mapping (PostgreSQL → MySQL) for tables mapped `reverse` or
//! `both`: the same column pairs read the other way, checked for convertibility that way.
//!
//! Rows from PostgreSQL are bound to the plan by column name at run time (pgoutput describes
//! each table's columns in its Relation message), so only names and types matter here.

use crate::model::{ColumnSchema, SourceType, TableName, TableSchema, TargetKind};

use super::compile::{ColumnSource, TablePlan};
use super::spec::ReverseWrite;
use super::transform::Transform;

/// One mapped column, PostgreSQL → MySQL.
#[derive(Debug, Clone)]
pub struct ReverseColumn {
    /// The PostgreSQL column it is read from.
    pub pg_name: String,
    pub pg_kind: TargetKind,
    /// The MySQL column it is written to.
    pub my: ColumnSchema,
    /// The forward transform, applied backwards.
    pub transform: Transform,
    /// A column going both ways (not a key column): who wins a conflict on it.
    pub conflict: Option<crate::mapping::spec::Conflict>,
}

/// One PostgreSQL table → one MySQL table.
#[derive(Debug, Clone)]
pub struct ReversePlan {
    pub origin: String,
    pub source: TableName,
    pub target: TableName,
    pub columns: Vec<ReverseColumn>,
    /// Indexes into `columns` forming the MySQL key (its primary key or a unique key).
    pub key: Vec<usize>,
    pub write: ReverseWrite,
    /// MySQL columns set to the change time.
    pub set: Vec<SetColumn>,
    /// See [`ReversePlan::guarded`].
    guarded: Vec<usize>,
}

/// A MySQL column set to the change time on reverse writes.
#[derive(Debug, Clone)]
pub struct SetColumn {
    pub column: ColumnSchema,
    /// Indexes into `columns` whose change triggers it (empty: every write).
    pub when: Vec<usize>,
    /// The zone of the wall time written (default: `source_time_zone`).
    pub zone: Option<chrono_tz::Tz>,
}

impl ReversePlan {
    /// Derives the reverse plan of a forward plan: its key and the columns that go both ways;
    /// errors name the column.
    pub fn of(forward: &TablePlan) -> Result<ReversePlan, Vec<String>> {
        let mut errors = Vec::new();
        let mut columns: Vec<ReverseColumn> = Vec::new();
        let mut key = Vec::new();
        for (i, c) in forward.columns.iter().enumerate() {
            let is_key = forward.key.contains(&i);
            if !(c.reverse || is_key) {
                continue;
            }
            let ColumnSource::Column(slot) = c.from else {
                continue;
            };
            let name = &forward.slots[slot];
            let my = forward
                .source_schema
                .columns
                .iter()
                .find(|m| m.name == *name)
                .expect("slots name source columns")
                .clone();
            if is_key {
                key.push(columns.len());
            }
            // A transform's backward result is the source column's own kind of value.
            if c.transform.is_identity() && !convertible_reverse(&c.target.kind, &my.ty) {
                errors.push(format!(
                    "{}: key `column.{}`: direction reverse: cannot convert PostgreSQL {:?} column {}.{} to {} column {}.{}",
                    forward.origin, my.name, c.target.kind, forward.target, c.target.name, my.column_type, forward.source, my.name
                ));
            }
            columns.push(ReverseColumn {
                pg_name: c.target.name.clone(),
                pg_kind: c.target.kind.clone(),
                my,
                transform: c.transform.clone(),
                conflict: c.conflict.filter(|_| !is_key),
            });
        }
        for k in &forward.key {
            if !matches!(forward.columns[*k].from, ColumnSource::Column(_)) {
                errors.push(format!(
                    "{}: key `key`: direction reverse: key column {} must come from a source column",
                    forward.origin, forward.columns[*k].target.name
                ));
            }
        }
        let set = forward
            .reverse_set
            .iter()
            .map(|r| {
                let my = forward
                    .source_schema
                    .columns
                    .iter()
                    .find(|m| m.name == r.column)
                    .expect("checked at compile")
                    .clone();
                let when = r
                    .when_changed
                    .iter()
                    .filter_map(|w| columns.iter().position(|c| c.my.name == *w))
                    .collect();
                SetColumn {
                    column: my,
                    when,
                    zone: r.zone,
                }
            })
            .collect();
        if !errors.is_empty() {
            return Err(errors);
        }
        let guarded = (0..columns.len())
            .filter(|i| columns[*i].conflict.is_some())
            .collect();
        Ok(ReversePlan {
            guarded,
            origin: forward.origin.clone(),
            source: forward.target.clone(),
            target: forward.source.clone(),
            columns,
            key,
            write: forward.reverse_write,
            set,
        })
    }

    /// The columns checked for conflicts (indexes into `columns`).
    pub fn guarded(&self) -> &[usize] {
        &self.guarded
    }

    /// Where each mapped column sits in rows of a PostgreSQL table version (by name).
    pub fn bind(&self, schema: &TableSchema) -> Result<Vec<usize>, String> {
        self.columns
            .iter()
            .map(|c| {
                schema.column_index(&c.pg_name).ok_or_else(|| {
                    format!(
                        "column {} (mapped at {}) is not in the PostgreSQL table {} as replicated",
                        c.pg_name, self.origin, self.source
                    )
                })
            })
            .collect()
    }
}

/// Whether values of a PostgreSQL column kind can be written to a MySQL column type.
pub fn convertible_reverse(from: &TargetKind, to: &SourceType) -> bool {
    use SourceType as S;
    use TargetKind as K;
    match to {
        S::Text { .. } | S::Enum(_) | S::Set(_) => !matches!(from, K::Bytea | K::Unsupported),
        S::Int { .. } => matches!(
            from,
            K::Bool | K::Int2 | K::Int4 | K::Int8 | K::Numeric | K::Bit
        ),
        S::Decimal { .. } => matches!(
            from,
            K::Int2 | K::Int4 | K::Int8 | K::Numeric | K::Float4 | K::Float8
        ),
        S::Float | S::Double => matches!(
            from,
            K::Int2 | K::Int4 | K::Int8 | K::Numeric | K::Float4 | K::Float8
        ),
        S::Binary => matches!(from, K::Bytea | K::Uuid | K::Text),
        S::Date => matches!(from, K::Date),
        S::DateTime | S::Timestamp => matches!(from, K::Date | K::Timestamp | K::Timestamptz),
        S::Time => matches!(from, K::Time | K::Interval),
        S::Year => matches!(from, K::Int2 | K::Int4 | K::Int8),
        S::Json => matches!(from, K::Json | K::Jsonb | K::Text),
        S::Bit(_) => matches!(from, K::Bit | K::Bool | K::Int2 | K::Int4 | K::Int8),
        S::Postgres(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_conversions() {
        assert!(convertible_reverse(
            &TargetKind::Text,
            &SourceType::Text {
                charset: "cp1251".into()
            }
        ));
        assert!(convertible_reverse(
            &TargetKind::Timestamptz,
            &SourceType::DateTime
        ));
        assert!(convertible_reverse(
            &TargetKind::Numeric,
            &SourceType::Decimal {
                precision: 18,
                scale: 4
            }
        ));
        assert!(!convertible_reverse(
            &TargetKind::Text,
            &SourceType::Int {
                bytes: 4,
                unsigned: false
            }
        ));
        assert!(!convertible_reverse(
            &TargetKind::Bytea,
            &SourceType::Text {
                charset: "utf8mb4".into()
            }
        ));
    }
}

//! The reverse direction of a mapping (PostgreSQL → MySQL) for tables mapped `reverse` or
//! `both`: the same column pairs read the other way, checked for convertibility that way.
//!
//! Rows from PostgreSQL are bound to the plan by column name at run time (pgoutput describes
//! each table's columns in its Relation message), so only names and types matter here.

use crate::model::{ColumnSchema, SourceType, TableName, TableSchema, TargetKind};

use super::compile::TablePlan;

/// One mapped column, PostgreSQL → MySQL.
#[derive(Debug, Clone)]
pub struct ReverseColumn {
    /// The PostgreSQL column it is read from.
    pub pg_name: String,
    pub pg_kind: TargetKind,
    /// The MySQL column it is written to.
    pub my: ColumnSchema,
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
}

impl ReversePlan {
    /// Derives the reverse plan of a forward plan; errors name the column.
    pub fn of(forward: &TablePlan) -> Result<ReversePlan, Vec<String>> {
        let mut errors = Vec::new();
        let columns: Vec<ReverseColumn> = forward
            .columns
            .iter()
            .map(|c| ReverseColumn {
                pg_name: c.target.name.clone(),
                pg_kind: c.target.kind.clone(),
                my: forward.source_schema.columns[c.source_index].clone(),
            })
            .collect();
        for c in &columns {
            if !convertible_reverse(&c.pg_kind, &c.my.ty) {
                errors.push(format!(
                    "{}: direction reverse: cannot convert PostgreSQL {:?} column {}.{} to {} column {}.{}",
                    forward.origin, c.pg_kind, forward.target, c.pg_name, c.my.column_type, forward.source, c.my.name
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(ReversePlan {
            origin: forward.origin.clone(),
            source: forward.target.clone(),
            target: forward.source.clone(),
            columns,
            key: forward.key.clone(),
        })
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
        S::Dropped | S::Postgres(_) => false,
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

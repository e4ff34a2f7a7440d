//! Which values fit where: TOML scalars read as values (constants, filter values, map entries),
//! the type a constant presents, and whether a source type (after a column's transforms) can be
//! written to a target column kind.
//!
//! Owns [`convertible`], the one rule the compiler, [`super::TablePlan::bind`] and the sinks must
//! agree on. Uses only the model's types and the transforms' output types.

use crate::mapping::transform::Transform;
use crate::model::{SourceType, TargetColumn, TargetKind, Value};

use super::TargetTable;

/// Converts a TOML scalar to a value (strings, integers, booleans, floats).
pub(super) fn toml_value(v: &toml::Value) -> std::result::Result<Value, String> {
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
pub(super) fn type_of(v: &Value) -> SourceType {
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

/// Whether a transform's result fits a target column; the error says why not.
pub(super) fn check_fit(
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

/// Whether values of a source column type can be written to a target column kind.
/// Must agree with what the sinks encode; a value that does not fit at run time (an integer out
/// of range, a string that is not a UUID) becomes a dead letter, not a compile error.
pub fn convertible(from: &SourceType, to: &TargetKind) -> bool {
    use SourceType as S;
    use TargetKind as T;
    if *to == T::Text {
        return !matches!(from, S::Binary | S::Postgres(_));
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
        S::Postgres(_) => false,
    }
}

//! Table schemas as the pipeline needs them: source columns with the facts decoding depends on
//! (signedness, charset, ENUM/SET labels) and target columns with the type a sink encodes to.
//!
//! Schemas are read from the live servers (`information_schema`, `pg_catalog`) and cached per
//! table version; nothing here talks to a server.

use std::fmt;

/// `schema.table` (MySQL database or PostgreSQL schema).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

impl TableName {
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        TableName {
            schema: schema.into(),
            name: name.into(),
        }
    }

    /// Parses `table` or `schema.table`, filling the schema from `default_schema`.
    pub fn parse(s: &str, default_schema: &str) -> Self {
        match s.split_once('.') {
            Some((schema, name)) => TableName::new(schema, name),
            None => TableName::new(default_schema, s),
        }
    }

    /// Double-quoted for PostgreSQL.
    pub fn pg_quoted(&self) -> String {
        format!("{}.{}", pg_ident(&self.schema), pg_ident(&self.name))
    }

    /// Back-quoted for MySQL.
    pub fn my_quoted(&self) -> String {
        format!("{}.{}", my_ident(&self.schema), my_ident(&self.name))
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// Quotes a PostgreSQL identifier.
pub fn pg_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A PostgreSQL string literal (standard-conforming strings).
pub fn pg_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Quotes a MySQL identifier.
pub fn my_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// A MySQL/MariaDB column type, as far as decoding and conversion care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceType {
    /// TINYINT (1 byte) .. BIGINT (8 bytes); MEDIUMINT is 3.
    Int {
        bytes: u8,
        unsigned: bool,
    },
    Decimal {
        precision: u32,
        scale: u32,
    },
    Float,
    Double,
    /// CHAR, VARCHAR, TINYTEXT..LONGTEXT with their character set.
    Text {
        charset: String,
    },
    /// BINARY, VARBINARY, TINYBLOB..LONGBLOB, GEOMETRY.
    Binary,
    Date,
    DateTime,
    Timestamp,
    Time,
    Year,
    Enum(Vec<String>),
    Set(Vec<String>),
    Json,
    Bit(u16),
    /// A PostgreSQL column (a PostgreSQL source table), by type family.
    Postgres(TargetKind),
}

impl SourceType {
    /// Derives the type from `information_schema.COLUMNS`.
    pub fn from_information_schema(
        data_type: &str,
        column_type: &str,
        charset: Option<&str>,
        precision: Option<u64>,
        scale: Option<u64>,
    ) -> Option<SourceType> {
        let dt = data_type.to_ascii_lowercase();
        let unsigned = column_type.to_ascii_lowercase().contains("unsigned");
        let int = |bytes| SourceType::Int { bytes, unsigned };
        Some(match dt.as_str() {
            "tinyint" => int(1),
            "smallint" => int(2),
            "mediumint" => int(3),
            "int" | "integer" => int(4),
            "bigint" => int(8),
            "decimal" | "numeric" => SourceType::Decimal {
                precision: precision.unwrap_or(10) as u32,
                scale: scale.unwrap_or(0) as u32,
            },
            "float" => SourceType::Float,
            "double" | "real" => SourceType::Double,
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => {
                SourceType::Text {
                    charset: charset.unwrap_or("utf8mb4").to_ascii_lowercase(),
                }
            }
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob"
            | "geometry" | "point" | "linestring" | "polygon" | "multipoint"
            | "multilinestring" | "multipolygon" | "geometrycollection" => SourceType::Binary,
            "date" => SourceType::Date,
            "datetime" => SourceType::DateTime,
            "timestamp" => SourceType::Timestamp,
            "time" => SourceType::Time,
            "year" => SourceType::Year,
            "enum" => SourceType::Enum(parse_labels(column_type)),
            "set" => SourceType::Set(parse_labels(column_type)),
            "json" => SourceType::Json,
            "bit" => SourceType::Bit(precision.unwrap_or(1) as u16),
            _ => return None,
        })
    }

    pub fn describe(&self) -> String {
        match self {
            SourceType::Int { bytes, unsigned } => format!(
                "{}{}",
                match bytes {
                    1 => "tinyint",
                    2 => "smallint",
                    3 => "mediumint",
                    4 => "int",
                    _ => "bigint",
                },
                if *unsigned { " unsigned" } else { "" }
            ),
            SourceType::Decimal { precision, scale } => format!("decimal({precision},{scale})"),
            SourceType::Float => "float".into(),
            SourceType::Double => "double".into(),
            SourceType::Text { charset } => format!("text ({charset})"),
            SourceType::Binary => "binary".into(),
            SourceType::Date => "date".into(),
            SourceType::DateTime => "datetime".into(),
            SourceType::Timestamp => "timestamp".into(),
            SourceType::Time => "time".into(),
            SourceType::Year => "year".into(),
            SourceType::Enum(_) => "enum".into(),
            SourceType::Set(_) => "set".into(),
            SourceType::Json => "json".into(),
            SourceType::Bit(n) => format!("bit({n})"),
            SourceType::Postgres(k) => format!("PostgreSQL {k:?}"),
        }
    }
}

/// Parses the labels of `enum('a','b''c')` / `set(...)`.
pub fn parse_labels(column_type: &str) -> Vec<String> {
    let inner = match (column_type.find('('), column_type.rfind(')')) {
        (Some(a), Some(b)) if b > a => &column_type[a + 1..b],
        _ => return Vec::new(),
    };
    let mut labels = Vec::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut label = String::new();
        loop {
            match chars.next() {
                Some('\'') if chars.peek() == Some(&'\'') => {
                    chars.next();
                    label.push('\'');
                }
                Some('\'') | None => break,
                Some('\\') => {
                    if let Some(n) = chars.next() {
                        label.push(n);
                    }
                }
                Some(ch) => label.push(ch),
            }
        }
        labels.push(label);
    }
    labels
}

/// One source column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSchema {
    pub name: String,
    pub ty: SourceType,
    pub nullable: bool,
    /// The full `COLUMN_TYPE` text, for messages.
    pub column_type: String,
}

/// One source table at one version of its definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSchema {
    pub name: TableName,
    pub columns: Vec<ColumnSchema>,
    /// Indexes into `columns` of the primary key (or first unique key without NULLs).
    pub primary_key: Vec<usize>,
}

impl TableSchema {
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
    }
}

/// What a sink must encode a value as: the PostgreSQL type family of a target column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetKind {
    Bool,
    Int2,
    Int4,
    Int8,
    Numeric,
    Float4,
    Float8,
    /// text, varchar, char, name, citext, and enum labels (same wire format).
    Text,
    Bytea,
    Date,
    Time,
    Timestamp,
    Timestamptz,
    Interval,
    Json,
    Jsonb,
    Uuid,
    /// bit and varbit.
    Bit,
    /// A type we do not know how to encode.
    Unsupported,
}

impl TargetKind {
    /// Maps a base type name (`pg_type.typname`) to a kind.
    pub fn from_pg_typname(typname: &str, typtype: char) -> TargetKind {
        if typtype == 'e' {
            return TargetKind::Text;
        }
        match typname {
            "bool" => TargetKind::Bool,
            "int2" => TargetKind::Int2,
            "int4" => TargetKind::Int4,
            "int8" => TargetKind::Int8,
            "numeric" => TargetKind::Numeric,
            "float4" => TargetKind::Float4,
            "float8" => TargetKind::Float8,
            "text" | "varchar" | "bpchar" | "name" | "citext" => TargetKind::Text,
            "bytea" => TargetKind::Bytea,
            "date" => TargetKind::Date,
            "time" => TargetKind::Time,
            "timestamp" => TargetKind::Timestamp,
            "timestamptz" => TargetKind::Timestamptz,
            "interval" => TargetKind::Interval,
            "json" => TargetKind::Json,
            "jsonb" => TargetKind::Jsonb,
            "uuid" => TargetKind::Uuid,
            "bit" | "varbit" => TargetKind::Bit,
            _ => TargetKind::Unsupported,
        }
    }
}

/// One PostgreSQL target column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetColumn {
    pub name: String,
    /// `format_type()` text, for messages (`numeric(18,4)`, `timestamp with time zone`).
    pub type_name: String,
    pub kind: TargetKind,
    /// The column's type oid (a domain's or enum's own oid).
    pub oid: u32,
    pub nullable: bool,
}

/// A PostgreSQL table as the mapping compiler needs it (read by `catalog::postgres`).
#[derive(Debug, Clone)]
pub struct TargetTable {
    pub name: TableName,
    pub columns: Vec<TargetColumn>,
    /// Column names of the primary key and of each unique index (no partial/expression ones).
    pub unique_keys: Vec<Vec<String>>,
}

impl TargetTable {
    pub fn column(&self, name: &str) -> Option<&TargetColumn> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The column named by a mapping key (a target column name), or the error at `at`.
    pub fn named(&self, name: &str, at: &str) -> std::result::Result<&TargetColumn, String> {
        self.column(name)
            .ok_or_else(|| format!("{at}: target column {name} does not exist in {}", self.name))
    }

    pub fn is_unique(&self, cols: &[String]) -> bool {
        let mut want = cols.to_vec();
        want.sort();
        self.unique_keys.iter().any(|u| {
            let mut u = u.clone();
            u.sort();
            u == want
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(parse_labels("enum('a','b''c','')"), vec!["a", "b'c", ""]);
        assert_eq!(parse_labels("set('x,y')"), vec!["x,y"]);
        let t = SourceType::from_information_schema("int", "int(10) unsigned", None, None, None);
        assert_eq!(
            t,
            Some(SourceType::Int {
                bytes: 4,
                unsigned: true
            })
        );
        assert_eq!(TableName::parse("a.b", "x").to_string(), "a.b");
        assert_eq!(TableName::parse("b", "x").pg_quoted(), "\"x\".\"b\"");
    }
}

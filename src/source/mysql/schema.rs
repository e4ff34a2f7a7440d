//! The table definition each row event was written with.
//!
//! With `binlog_row_metadata = FULL` every table map event carries its table's definition as it
//! was when the event was written: column names, binlog types with their metadata (lengths,
//! DECIMAL precision and scale, BIT width), nullability, signedness, character sets, ENUM and SET
//! labels and the primary key. [`version_of`] builds the [`TableSchema`] of that version from the
//! event alone, so rows written before an `ALTER TABLE` and read after it are decoded with the
//! columns they were written with: reordered and renamed columns by their names, a cp1251 column
//! converted to utf8mb4 with cp1251, a column whose signedness changed with the old signedness.
//! Nothing is read from `information_schema` per event: [`SchemaCache`] keeps each version by the
//! table map's bytes, so a backlog of a hundred thousand transactions written before an ALTER
//! shares one version.
//!
//! The live definition (`information_schema`, read once per table and again after DDL) adds only
//! what the binlog does not carry: that a MariaDB LONGTEXT is JSON (a `json_valid` check) and the
//! exact `COLUMN_TYPE` text for messages. A table map without column names is refused by the
//! caller: duplex does not guess which definition such rows were written with.
//!
//! May use the query connection it is given, the catalog reader, the row layout ([`super::rows`]),
//! the model and errors.

use std::collections::HashMap;
use std::sync::Arc;

use mysql_async::binlog::events::{OptionalMetaExtractor, OptionalMetadataField, TableMapEvent};
use mysql_async::prelude::*;
use mysql_common::constants::ColumnType;

use super::rows::RowLayout;
use crate::error::{Error, ErrorKind, Result};
use crate::model::{ColumnSchema, SourceType, TableName, TableSchema};

/// A watched table's version and row layout, as one table map describes them.
pub type Version = (Arc<TableSchema>, Arc<RowLayout>);

/// At most this many table versions are kept; more (a table altered very often) starts over.
const MAX_VERSIONS: usize = 1024;

/// Collation id → character set name, as the server knows them.
#[derive(Default)]
pub struct Collations(HashMap<u16, String>);

impl Collations {
    pub async fn read(conn: &mut mysql_async::Conn) -> Result<Collations> {
        // MariaDB lists collations without an id too (NULL): they cannot be in a binlog.
        let rows: Vec<(Option<u64>, Option<String>)> = conn
            .query("SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATIONS")
            .await
            .map_err(|e| Error::from_mysql(e, false, "reading the server's collations"))?;
        Ok(Collations(
            rows.into_iter()
                .filter_map(|(id, cs)| Some((u16::try_from(id?).ok()?, cs?.to_ascii_lowercase())))
                .collect(),
        ))
    }

    fn charset(&self, id: u16) -> Option<&str> {
        self.0.get(&id).map(String::as_str)
    }
}

/// What the optional metadata of one table map says, per column.
struct Facts {
    names: Vec<String>,
    /// Per numeric column (binlog order), whether it is unsigned.
    unsigned: Vec<bool>,
    /// Per character column, its collation.
    charsets: Vec<u16>,
    /// Per ENUM column, its labels; per SET column, its labels.
    enums: Vec<Vec<String>>,
    sets: Vec<Vec<String>>,
    primary_key: Vec<usize>,
}

fn facts(tme: &TableMapEvent<'_>) -> std::io::Result<Facts> {
    let n = tme.columns_count() as usize;
    let meta = OptionalMetaExtractor::new(tme.iter_optional_meta())?;
    let names = meta
        .iter_column_name()
        .map(|c| c.map(|c| c.name().into_owned()))
        .collect::<std::io::Result<Vec<_>>>()?;
    let text_columns = (0..n)
        .filter(|&i| {
            tme.get_column_type(i)
                .ok()
                .flatten()
                .is_some_and(|t| t.is_character_type())
        })
        .count();
    let charsets = meta
        .iter_charset()
        .take(text_columns)
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut enums = Vec::new();
    let mut sets = Vec::new();
    for field in tme.iter_optional_meta() {
        match field? {
            OptionalMetadataField::EnumStrValue(v) => {
                for labels in v.iter_values() {
                    let labels = labels?;
                    enums.push(labels.values().iter().map(|l| l.value().into()).collect());
                }
            }
            OptionalMetadataField::SetStrValue(v) => {
                for labels in v.iter_values() {
                    let labels = labels?;
                    sets.push(labels.values().iter().map(|l| l.value().into()).collect());
                }
            }
            _ => {}
        }
    }
    let primary_key = meta
        .iter_primary_key()
        .map(|i| i.map(|i| i as usize))
        .collect::<std::io::Result<Vec<_>>>()?;
    Ok(Facts {
        names,
        unsigned: meta.iter_signedness().collect(),
        charsets,
        enums,
        sets,
        primary_key,
    })
}

/// The definition of the table version a table map event describes; `Ok(None)` when the event
/// carries no column names (`binlog_row_metadata` is not FULL). `live` (the table as it is now,
/// when it still exists) lends a column its JSON-ness and `COLUMN_TYPE` text where the column of
/// that name has the same type.
pub fn version_of(
    tme: &TableMapEvent<'_>,
    collations: &Collations,
    live: Option<&TableSchema>,
) -> std::result::Result<Option<TableSchema>, String> {
    let n = tme.columns_count() as usize;
    let f = facts(tme).map_err(|e| format!("unreadable optional metadata: {e}"))?;
    if f.names.is_empty() {
        return Ok(None);
    }
    if f.names.len() != n {
        return Err(format!("{} column names for {n} columns", f.names.len()));
    }
    let mut per_type = PerType {
        unsigned: f.unsigned.iter().copied(),
        charsets: f.charsets.iter().copied(),
        enums: f.enums.iter(),
        sets: f.sets.iter(),
    };
    let columns = f
        .names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let col = column(tme, i, name, &mut per_type, collations)?;
            Ok(lend(col, live))
        })
        .collect::<std::result::Result<Vec<_>, String>>()?;
    let primary_key = if f.primary_key.is_empty() {
        live.map(|l| {
            l.primary_key
                .iter()
                .filter_map(|&k| {
                    let key = &l.columns[k].name;
                    f.names.iter().position(|c| c.eq_ignore_ascii_case(key))
                })
                .collect()
        })
        .unwrap_or_default()
    } else {
        f.primary_key
    };
    Ok(Some(TableSchema {
        name: TableName::new(tme.database_name(), tme.table_name()),
        columns,
        primary_key,
    }))
}

/// The optional metadata that comes one entry per column of a kind, in column order.
struct PerType<'f> {
    unsigned: std::iter::Copied<std::slice::Iter<'f, bool>>,
    charsets: std::iter::Copied<std::slice::Iter<'f, u16>>,
    enums: std::slice::Iter<'f, Vec<String>>,
    sets: std::slice::Iter<'f, Vec<String>>,
}

/// Column `i` (`name`) as the table map describes it, taking its entries of `per_type`.
fn column(
    tme: &TableMapEvent<'_>,
    i: usize,
    name: &str,
    per_type: &mut PerType<'_>,
    collations: &Collations,
) -> std::result::Result<ColumnSchema, String> {
    let unknown = || format!("column {name} has an unknown binlog type");
    let raw = tme
        .get_raw_column_type(i)
        .ok()
        .flatten()
        .ok_or_else(unknown)?;
    let real = tme.get_column_type(i).ok().flatten().ok_or_else(unknown)?;
    let meta = tme.get_column_metadata(i).unwrap_or(&[]);
    // Signedness comes for every numeric binlog type (YEAR too), charsets for every character
    // type (not ENUM/SET, whose labels come apart).
    let unsigned = raw.is_numeric_type() && per_type.unsigned.next().unwrap_or(false);
    let charset = match real
        .is_character_type()
        .then(|| per_type.charsets.next())
        .flatten()
    {
        Some(id) => Some(
            collations
                .charset(id)
                .ok_or_else(|| {
                    format!("column {name} has collation {id}, which the server does not list")
                })?
                .to_string(),
        ),
        None => None,
    };
    let labels = match real {
        ColumnType::MYSQL_TYPE_ENUM => per_type.enums.next().cloned(),
        ColumnType::MYSQL_TYPE_SET => per_type.sets.next().cloned(),
        _ => None,
    };
    let ty = source_type(real, meta, unsigned, charset, labels)
        .ok_or_else(|| format!("column {name}: binlog type {real:?} is not supported"))?;
    Ok(ColumnSchema {
        name: name.to_string(),
        column_type: ty.describe(),
        ty,
        nullable: tme.null_bitmask().get(i).map(|b| *b).unwrap_or(true),
    })
}

/// The live column of the same name where it has the same type (its JSON-ness and `COLUMN_TYPE`
/// text are the binlog's own then), else the column as the binlog describes it.
fn lend(col: ColumnSchema, live: Option<&TableSchema>) -> ColumnSchema {
    let Some(same) = live
        .and_then(|l| l.column_index(&col.name).map(|i| &l.columns[i]))
        .filter(|l| l.nullable == col.nullable)
    else {
        return col;
    };
    let fits = same.ty == col.ty
        || (same.ty == SourceType::Json && matches!(col.ty, SourceType::Text { .. }));
    if fits {
        same.clone()
    } else {
        col
    }
}

/// The source type of a binlog column type with its metadata and optional metadata facts.
fn source_type(
    real: ColumnType,
    meta: &[u8],
    unsigned: bool,
    charset: Option<String>,
    labels: Option<Vec<String>>,
) -> Option<SourceType> {
    use ColumnType::*;
    let int = |bytes| SourceType::Int { bytes, unsigned };
    Some(match real {
        MYSQL_TYPE_TINY => int(1),
        MYSQL_TYPE_SHORT => int(2),
        MYSQL_TYPE_INT24 => int(3),
        MYSQL_TYPE_LONG => int(4),
        MYSQL_TYPE_LONGLONG => int(8),
        MYSQL_TYPE_NEWDECIMAL => SourceType::Decimal {
            precision: *meta.first()? as u32,
            scale: *meta.get(1)? as u32,
        },
        MYSQL_TYPE_FLOAT => SourceType::Float,
        MYSQL_TYPE_DOUBLE => SourceType::Double,
        MYSQL_TYPE_STRING | MYSQL_TYPE_VAR_STRING | MYSQL_TYPE_VARCHAR | MYSQL_TYPE_BLOB => {
            match charset.as_deref() {
                Some("binary") => SourceType::Binary,
                Some(cs) => SourceType::Text {
                    charset: cs.to_string(),
                },
                // Without charset facts a BLOB cannot be told from a TEXT.
                None => return None,
            }
        }
        MYSQL_TYPE_GEOMETRY => SourceType::Binary,
        MYSQL_TYPE_JSON => SourceType::Json,
        MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => SourceType::Date,
        MYSQL_TYPE_DATETIME | MYSQL_TYPE_DATETIME2 => SourceType::DateTime,
        MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2 => SourceType::Timestamp,
        MYSQL_TYPE_TIME | MYSQL_TYPE_TIME2 => SourceType::Time,
        MYSQL_TYPE_YEAR => SourceType::Year,
        MYSQL_TYPE_ENUM => SourceType::Enum(labels?),
        MYSQL_TYPE_SET => SourceType::Set(labels?),
        // Bits in the last byte, then whole bytes.
        MYSQL_TYPE_BIT => SourceType::Bit(*meta.get(1)? as u16 * 8 + *meta.first()? as u16),
        _ => return None,
    })
}

/// Table versions by the bytes of the table map that described them, and the live definitions
/// that lend them what the binlog lacks.
#[derive(Default)]
pub struct SchemaCache {
    collations: Collations,
    versions: HashMap<Vec<u8>, Version>,
    live: HashMap<TableName, Option<Arc<TableSchema>>>,
}

/// The part of a table map event that describes the table (its body after the table id and
/// flags): the same bytes mean the same version.
fn fingerprint(data: &[u8]) -> &[u8] {
    data.get(8..).unwrap_or(data)
}

impl SchemaCache {
    pub fn new(collations: Collations) -> SchemaCache {
        SchemaCache {
            collations,
            ..SchemaCache::default()
        }
    }

    /// The version a table map event (its `data` and parsed form) describes; `Ok(None)` when it
    /// carries no column names.
    pub async fn version(
        &mut self,
        conn: &mut mysql_async::Conn,
        data: &[u8],
        tme: &TableMapEvent<'_>,
    ) -> Result<Option<Version>> {
        if let Some(v) = self.versions.get(fingerprint(data)) {
            return Ok(Some(v.clone()));
        }
        let name = TableName::new(tme.database_name(), tme.table_name());
        if !self.live.contains_key(&name) {
            let live = crate::catalog::mysql::read_table(conn, &name).await?;
            self.live.insert(name.clone(), live.map(Arc::new));
        }
        let live = self.live.get(&name).cloned().flatten();
        let version = version_of(tme, &self.collations, live.as_deref()).map_err(|e| {
            Error::new(
                ErrorKind::SourceDefinite,
                format!("table map of {name}: {e}"),
            )
        })?;
        let Some(schema) = version else {
            return Ok(None);
        };
        // One Arc per version that equals the live definition: the mappings were compiled
        // against it and bind it at no cost.
        let schema = match live {
            Some(l) if *l == schema => l,
            _ => {
                let columns: Vec<String> = schema
                    .columns
                    .iter()
                    .map(|c| format!("{} {}", c.name, c.column_type))
                    .collect();
                tracing::info!(table = %name, columns = %columns.join(", "), "reading rows written with another definition of the table than the live one (the binlog's own)");
                Arc::new(schema)
            }
        };
        let v = (schema, Arc::new(RowLayout::new(tme)?));
        if self.versions.len() >= MAX_VERSIONS {
            self.versions.clear();
        }
        self.versions.insert(fingerprint(data).to_vec(), v.clone());
        Ok(Some(v))
    }

    /// After DDL: versions and live definitions are worked out again when next met (the
    /// binlog's own facts do not change, but what the live table lends them may have).
    pub fn clear(&mut self) {
        self.versions.clear();
        self.live.clear();
    }
}

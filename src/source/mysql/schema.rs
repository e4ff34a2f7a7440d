//! Reads MySQL/MariaDB table definitions from `information_schema` and caches them per table.
//!
//! The binlog's table map names a table and its column types but not (without full row metadata)
//! the names, signedness, charsets or ENUM labels; those come from here. The cache is checked
//! against every table map event: when the column count or types disagree, the table is re-read,
//! and if they still disagree the stream stops for that table with a message (the binlog was
//! written under another table definition than the live one).
//!
//! May use the query connection it is given, the model and errors.

use std::collections::HashMap;
use std::sync::Arc;

use mysql_async::prelude::*;

use crate::error::{Error, ErrorKind, Result};
use crate::model::{ColumnSchema, SourceType, TableName, TableSchema};

/// Reads one table's definition; `Ok(None)` when the table does not exist.
pub async fn read_table(
    conn: &mut mysql_async::Conn,
    name: &TableName,
) -> Result<Option<TableSchema>> {
    type Row = (
        String,
        String,
        String,
        String,
        Option<String>,
        Option<u64>,
        Option<u64>,
    );
    let rows: Vec<Row> = conn
        .exec(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, CHARACTER_SET_NAME, \
             NUMERIC_PRECISION, NUMERIC_SCALE \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
             ORDER BY ORDINAL_POSITION",
            (&name.schema, &name.name),
        )
        .await
        .map_err(|e| Error::from_mysql(e, false, &format!("reading the columns of {name}")))?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut columns = Vec::with_capacity(rows.len());
    for (col, data_type, column_type, nullable, charset, precision, scale) in rows {
        // BIT's width is in NUMERIC_PRECISION.
        let ty = SourceType::from_information_schema(
            &data_type,
            &column_type,
            charset.as_deref(),
            precision,
            scale,
        )
        .ok_or_else(|| {
            Error::new(
                ErrorKind::SourceDefinite,
                format!("{name}.{col}: column type {column_type} is not supported"),
            )
        })?;
        columns.push(ColumnSchema {
            name: col,
            ty,
            nullable: nullable == "YES",
            column_type,
        });
    }
    // MariaDB's JSON is LONGTEXT with a json_valid() check; treat it as JSON.
    let checks: Vec<String> = conn
        .exec(
            "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
             WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?",
            (&name.schema, &name.name),
        )
        .await
        .unwrap_or_default();
    for clause in checks {
        let lower = clause.to_ascii_lowercase();
        for c in columns.iter_mut() {
            if matches!(c.ty, SourceType::Text { .. })
                && lower.contains(&format!("json_valid(`{}`)", c.name.to_ascii_lowercase()))
            {
                c.ty = SourceType::Json;
            }
        }
    }
    // Primary key, else the first unique key whose columns are all NOT NULL.
    let keys: Vec<(String, String, String)> = conn
        .exec(
            "SELECT INDEX_NAME, COLUMN_NAME, NULLABLE FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND NON_UNIQUE = 0 \
             ORDER BY INDEX_NAME = 'PRIMARY' DESC, INDEX_NAME, SEQ_IN_INDEX",
            (&name.schema, &name.name),
        )
        .await
        .map_err(|e| Error::from_mysql(e, false, &format!("reading the keys of {name}")))?;
    let mut by_index: Vec<(String, Vec<String>, bool)> = Vec::new();
    for (index, col, nullable) in keys {
        match by_index.last_mut() {
            Some((i, cols, has_null)) if *i == index => {
                cols.push(col);
                *has_null |= nullable == "YES";
            }
            _ => by_index.push((index, vec![col], nullable == "YES")),
        }
    }
    let primary_key = by_index
        .iter()
        .find(|(_, _, has_null)| !has_null)
        .map(|(_, cols, _)| {
            cols.iter()
                .filter_map(|c| columns.iter().position(|x| &x.name == c))
                .collect()
        })
        .unwrap_or_default();
    Ok(Some(TableSchema {
        name: name.clone(),
        columns,
        primary_key,
    }))
}

/// The table version a table map event describes, when the server writes column names into the
/// binlog (`binlog_row_metadata = FULL`): columns that still exist take their live definition,
/// columns dropped since are kept as placeholders so the row images line up. This is what lets
/// events written before an `ALTER TABLE` be read after it.
pub fn from_table_map(
    tme: &mysql_async::binlog::events::TableMapEvent<'_>,
    live: &TableSchema,
) -> Option<TableSchema> {
    let meta =
        mysql_async::binlog::events::OptionalMetaExtractor::new(tme.iter_optional_meta()).ok()?;
    let names: Vec<String> = meta
        .iter_column_name()
        .map(|n| n.map(|n| n.name().into_owned()))
        .collect::<std::io::Result<_>>()
        .ok()?;
    if names.len() != tme.columns_count() as usize || names.is_empty() {
        return None;
    }
    let columns: Vec<ColumnSchema> = names
        .iter()
        .map(|n| match live.column_index(n) {
            Some(i) => live.columns[i].clone(),
            None => ColumnSchema {
                name: n.clone(),
                ty: SourceType::Dropped,
                nullable: true,
                column_type: "(dropped since)".into(),
            },
        })
        .collect();
    let primary_key: Option<Vec<usize>> = live
        .primary_key
        .iter()
        .map(|&i| {
            names
                .iter()
                .position(|n| n.eq_ignore_ascii_case(&live.columns[i].name))
        })
        .collect();
    Some(TableSchema {
        name: live.name.clone(),
        columns,
        primary_key: primary_key.unwrap_or_default(),
    })
}

/// Table definitions by name, shared with the pipeline as `Arc`s so a row change can point at the
/// exact version it was decoded with.
#[derive(Default)]
pub struct SchemaCache {
    tables: HashMap<TableName, Arc<TableSchema>>,
}

impl SchemaCache {
    pub fn get(&self, name: &TableName) -> Option<&Arc<TableSchema>> {
        self.tables.get(name)
    }

    /// Re-reads a table and replaces the cached version.
    pub async fn refresh(
        &mut self,
        conn: &mut mysql_async::Conn,
        name: &TableName,
    ) -> Result<Option<Arc<TableSchema>>> {
        match read_table(conn, name).await? {
            Some(t) => {
                let t = Arc::new(t);
                self.tables.insert(name.clone(), t.clone());
                Ok(Some(t))
            }
            None => {
                self.tables.remove(name);
                Ok(None)
            }
        }
    }

    /// Forgets every table (after DDL); they are re-read at their next table map event.
    pub fn clear(&mut self) {
        self.tables.clear();
    }
}

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

use crate::error::Result;
use crate::model::{ColumnSchema, SourceType, TableName, TableSchema};

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
        match crate::catalog::mysql::read_table(conn, name).await? {
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

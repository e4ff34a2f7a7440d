//! The heartbeat table: one row per pipeline on each source (`heartbeat` in duplex's database on
//! MySQL, for the forward direction; in duplex's schema on PostgreSQL, published with the
//! replicated tables, for the reverse one), holding the time it was last written. The writer is the
//! top-level `heartbeat` module, a layer above; the pipeline recognises the rows with [`stamp`].

use crate::config::Config;
use crate::model::{my_ident, pg_ident, RowChange, TableName, Value, Way};

/// The heartbeat table's name on both sides.
pub const TABLE: &str = "heartbeat";

pub fn mysql_ddl(database: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {}.heartbeat (
             pipeline   varchar(64) NOT NULL PRIMARY KEY,
             written_us bigint NOT NULL
         ) ENGINE=InnoDB",
        my_ident(database)
    )
}

pub fn pg_ddl(schema: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {}.heartbeat (
             pipeline   text PRIMARY KEY,
             written_us bigint NOT NULL
         )",
        pg_ident(schema)
    )
}

/// The heartbeat table a direction's source carries.
pub fn source_table(way: Way, cfg: &Config) -> TableName {
    match way {
        Way::Forward => TableName::new(cfg.mysql.duplex_database.clone(), TABLE),
        Way::Reverse => TableName::new(cfg.postgres.duplex_schema.clone(), TABLE),
    }
}

/// The stamp of a heartbeat row change of `pipeline`, or None for any other row.
pub fn stamp(change: &RowChange, table: &TableName, pipeline: &str) -> Option<Option<i64>> {
    if &change.table.name != table {
        return None;
    }
    let Some(values) = change.after.as_ref() else {
        return Some(None);
    };
    let mut ours = false;
    let mut stamp = None;
    for (c, v) in change.table.columns.iter().zip(values) {
        match (c.name.as_str(), v) {
            ("pipeline", Value::Text(p)) => ours = p == pipeline,
            ("written_us", Value::Int(n)) => stamp = Some(*n),
            ("written_us", Value::UInt(n)) => stamp = Some(*n as i64),
            _ => {}
        }
    }
    Some(stamp.filter(|_| ours))
}

/// The statement that writes a pipeline's heartbeat on MySQL; parameters: pipeline, stamp.
pub fn mysql_write_sql(database: &str) -> String {
    format!(
        "INSERT INTO {}.heartbeat (pipeline, written_us) VALUES (?, ?) \
         ON DUPLICATE KEY UPDATE written_us = VALUES(written_us)",
        my_ident(database)
    )
}

/// The statement that writes a pipeline's heartbeat on PostgreSQL; parameters: pipeline, stamp.
pub fn pg_write_sql(schema: &str) -> String {
    format!(
        "INSERT INTO {}.heartbeat AS h (pipeline, written_us) VALUES ($1, $2) \
         ON CONFLICT (pipeline) DO UPDATE SET written_us = EXCLUDED.written_us",
        pg_ident(schema)
    )
}

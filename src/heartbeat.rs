//! The heartbeat: every second duplex writes one row per pipeline into a table of its own on
//! each source (`duplex.heartbeat` on MySQL for the forward direction, `<duplex_schema>.heartbeat`
//! on PostgreSQL, published with the replicated tables, for the reverse one), stamped with the
//! time of writing. The row travels like any change; the pipeline recognises it, writes nothing
//! for it, and when its target transaction commits tells [`crate::telemetry::live`] the stamp —
//! which makes the lag exact even while the shop is idle.
//!
//! The writer uses its own plain session (no echo marker, no origin), so its rows are never
//! mistaken for duplex's own writes.

use std::time::Duration;

use tokio::sync::watch;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::{my_ident, pg_ident, RowChange, TableName, Value};
use crate::pipeline::Way;
use crate::telemetry::{live, live::now_us};

/// The heartbeat table's name on both sides.
pub const TABLE: &str = "heartbeat";
const EVERY: Duration = Duration::from_secs(1);
/// A write that takes longer is abandoned (its attempt still counts) and the session renewed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Writes the heartbeat of `way` into its source every second until `stop`.
pub fn spawn(way: Way, cfg: &Config, mut stop: watch::Receiver<bool>) {
    let cfg = cfg.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut writer = Writer::None;
        let mut warned = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            let stamp = now_us();
            live().heartbeat_attempt(way, stamp);
            match tokio::time::timeout(WRITE_TIMEOUT, writer.write(way, &cfg, stamp)).await {
                Ok(Ok(())) => warned = false,
                Ok(Err(e)) => {
                    writer = Writer::None;
                    if !warned {
                        warned = true;
                        tracing::warn!(direction = way.as_str(), error = %e, "cannot write the heartbeat; the lag grows until it can");
                    }
                }
                Err(_) => writer = Writer::None,
            }
        }
    });
}

enum Writer {
    None,
    Mysql(mysql_async::Conn),
    Postgres(tokio_postgres::Client),
}

impl Writer {
    async fn write(&mut self, way: Way, cfg: &Config, stamp: i64) -> Result<()> {
        use mysql_async::prelude::Queryable;
        if matches!(self, Writer::None) {
            *self = match way {
                Way::Forward => {
                    let mut conn = crate::source::mysql::connect(&cfg.mysql, None, false).await?;
                    conn.query_drop(mysql_ddl(&cfg.mysql.duplex_database))
                        .await
                        .map_err(|e| Error::from_mysql(e, false, "creating the heartbeat table"))?;
                    Writer::Mysql(conn)
                }
                Way::Reverse => {
                    let client = crate::sink::postgres::connect(
                        &cfg.postgres,
                        &format!("duplex {} heartbeat", cfg.pipeline),
                    )
                    .await?;
                    Writer::Postgres(client)
                }
            };
        }
        match self {
            Writer::Mysql(conn) => conn
                .exec_drop(
                    format!(
                        "INSERT INTO {}.heartbeat (pipeline, written_us) VALUES (?, ?) \
                         ON DUPLICATE KEY UPDATE written_us = VALUES(written_us)",
                        my_ident(&cfg.mysql.duplex_database)
                    ),
                    (&cfg.pipeline, stamp),
                )
                .await
                .map_err(|e| Error::from_mysql(e, false, "writing the heartbeat")),
            Writer::Postgres(client) => client
                .execute(
                    &format!(
                        "INSERT INTO {}.heartbeat AS h (pipeline, written_us) VALUES ($1, $2) \
                         ON CONFLICT (pipeline) DO UPDATE SET written_us = EXCLUDED.written_us",
                        pg_ident(&cfg.postgres.duplex_schema)
                    ),
                    &[&cfg.pipeline, &stamp],
                )
                .await
                .map(|_| ())
                .map_err(|e| Error::from_pg(e, false, "writing the heartbeat")),
            Writer::None => Ok(()),
        }
    }
}

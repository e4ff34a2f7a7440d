//! The heartbeat writer: every second duplex writes one row per pipeline into a table of its own on
//! each source (`duplex.heartbeat` on MySQL for the forward direction, `<duplex_schema>.heartbeat`
//! on PostgreSQL, published with the replicated tables, for the reverse one), stamped with the
//! time of writing. The row travels like any change; the pipeline recognises it, writes nothing
//! for it, and when its target transaction commits tells [`crate::telemetry::live`] the stamp —
//! which makes the lag exact even while the shop is idle.
//!
//! The table and the recognition of its rows are in [`crate::state::heartbeat`]. The writer uses
//! its own plain session (no echo marker, no origin), so its rows are never
//! mistaken for duplex's own writes.
//!
//! May use: `state::heartbeat`, `connect`, `telemetry::live`, the model and the configuration;
//! `commands::run` starts it.

use std::time::Duration;

use tokio::sync::watch;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::Way;
use crate::state::heartbeat;
use crate::telemetry::{live, live::now_us};

const EVERY: Duration = Duration::from_secs(1);
/// A write that takes longer is abandoned (its attempt still counts) and the session renewed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

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
                    let mut conn = crate::connect::mysql(&cfg.mysql, None, false).await?;
                    conn.query_drop(heartbeat::mysql_ddl(&cfg.mysql.duplex_database))
                        .await
                        .map_err(|e| Error::from_mysql(e, false, "creating the heartbeat table"))?;
                    Writer::Mysql(conn)
                }
                Way::Reverse => {
                    let client = crate::connect::postgres(
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
                    heartbeat::mysql_write_sql(&cfg.mysql.duplex_database),
                    (&cfg.pipeline, stamp),
                )
                .await
                .map_err(|e| Error::from_mysql(e, false, "writing the heartbeat")),
            Writer::Postgres(client) => client
                .execute(
                    &heartbeat::pg_write_sql(&cfg.postgres.duplex_schema),
                    &[&cfg.pipeline, &stamp],
                )
                .await
                .map(|_| ())
                .map_err(|e| Error::from_pg(e, false, "writing the heartbeat")),
            Writer::None => Ok(()),
        }
    }
}

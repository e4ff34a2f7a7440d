//! What the databases say about a pipeline, independent of any running process: checkpoints,
//! dead letters, the replication slot's retained WAL, how far the checkpoint is behind the
//! server's newest binlog and how close binlog expiry is to it, and the snapshot's progress.
//! Read every few seconds by `duplex run` for the gauges, and once by `duplex status`.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use serde::Serialize;
use tokio::sync::watch;

use crate::config::Config;
use crate::model::{my_ident, pg_ident, BinlogFile, Position};
use crate::model::{FORWARD, REVERSE};

/// One direction as its target database records it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DirRecord {
    pub direction: &'static str,
    /// The checkpoint: the source position after the last applied transaction.
    pub position: Option<String>,
    /// When that checkpoint was written (microseconds since the epoch).
    pub position_at_us: Option<i64>,
    pub dead_letters_unresolved: Option<i64>,
    pub dead_letters_total: Option<i64>,
    /// Conflicts this direction resolved on `both` columns: all, and in the last hour.
    pub conflicts_total: Option<i64>,
    pub conflicts_last_hour: Option<i64>,
    /// Tables whose initial copy has not finished: `table (rows copied)`.
    pub snapshot_pending: Vec<String>,
}

/// The whole record of a pipeline.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Record {
    pub forward: DirRecord,
    pub reverse: Option<DirRecord>,
    pub slot: Option<String>,
    pub slot_active: Option<bool>,
    pub slot_retained_wal_bytes: Option<i64>,
    pub binlog_newest: Option<String>,
    pub binlog_files_behind: Option<i64>,
    /// The server's binlog expiry in seconds (0: never).
    pub binlog_expiry_seconds: Option<i64>,
    pub binlog_expiry_remaining_seconds: Option<f64>,
    /// The last finished verify run.
    pub verify_last: Option<crate::state::verify::Run>,
    /// What could not be read, and why.
    pub unreadable: Vec<String>,
}

/// The sessions the record is read with, kept between readings so that `duplex run` does not
/// open two connections (two TLS handshakes) every few seconds; one that failed is dropped and
/// opened again next time.
#[derive(Default)]
pub struct Sessions {
    pg: Option<tokio_postgres::Client>,
    my: Option<mysql_async::Conn>,
}

impl Sessions {
    pub async fn close(self) {
        if let Some(my) = self.my {
            let _ = my.disconnect().await;
        }
    }
}

/// Reads the record once; what cannot be read is listed in `unreadable`, not an error.
pub async fn record(cfg: &Config, reverse: bool) -> Record {
    let mut sessions = Sessions::default();
    let r = record_with(cfg, reverse, &mut sessions).await;
    sessions.close().await;
    r
}

/// Reads the record with (and into) `sessions`.
pub async fn record_with(cfg: &Config, reverse: bool, sessions: &mut Sessions) -> Record {
    let mut r = Record {
        forward: DirRecord {
            direction: FORWARD,
            ..Default::default()
        },
        reverse: reverse.then(|| DirRecord {
            direction: REVERSE,
            ..Default::default()
        }),
        ..Default::default()
    };
    record_postgres(cfg, reverse, sessions, &mut r).await;
    record_mysql(cfg, reverse, sessions, &mut r).await;
    r
}

/// The PostgreSQL side of [`record_with`]: the forward direction's record, and the slot when
/// `reverse`. The session is kept only if every query answered.
async fn record_postgres(cfg: &Config, reverse: bool, sessions: &mut Sessions, r: &mut Record) {
    let schema = pg_ident(&cfg.postgres.duplex_schema);
    let pg = match sessions.pg.take().filter(|c| !c.is_closed()) {
        Some(c) => Ok(c),
        None => {
            crate::connect::postgres(&cfg.postgres, &format!("duplex {} status", cfg.pipeline))
                .await
        }
    };
    match pg {
        Ok(pg) => {
            let q = async {
                read_pg_forward(&pg, cfg, &schema, r).await?;
                if reverse {
                    read_pg_slot(&pg, cfg, r).await?;
                }
                Ok::<_, tokio_postgres::Error>(())
            };
            match q.await {
                Ok(()) => {
                    // Before the first `duplex setup` of this version the table is missing.
                    r.verify_last =
                        crate::state::verify::last(&pg, &cfg.postgres.duplex_schema, &cfg.pipeline)
                            .await
                            .ok()
                            .flatten();
                    sessions.pg = Some(pg)
                }
                Err(e) => r.unreadable.push(format!("PostgreSQL: {e}")),
            }
        }
        Err(e) => r.unreadable.push(format!("PostgreSQL: {e}")),
    }
}

/// The forward direction as PostgreSQL records it: checkpoint, dead letters, snapshot progress.
async fn read_pg_forward(
    pg: &tokio_postgres::Client,
    cfg: &Config,
    schema: &str,
    r: &mut Record,
) -> Result<(), tokio_postgres::Error> {
    let ck = pg
        .query_opt(
            &format!("SELECT position, (extract(epoch FROM updated_at) * 1e6)::int8 FROM {schema}.checkpoint WHERE pipeline = $1 AND direction = $2"),
            &[&cfg.pipeline, &FORWARD],
        )
        .await?;
    if let Some(row) = ck {
        r.forward.position = Some(row.get(0));
        r.forward.position_at_us = Some(row.get(1));
    }
    let dl = pg
        .query_one(
            &format!("SELECT count(*) FILTER (WHERE NOT resolved), count(*) FROM {schema}.dead_letter WHERE pipeline = $1 AND direction = $2"),
            &[&cfg.pipeline, &FORWARD],
        )
        .await?;
    r.forward.dead_letters_unresolved = Some(dl.get(0));
    r.forward.dead_letters_total = Some(dl.get(1));
    // The conflict log (absent before `duplex setup` ran with this version).
    if let Ok(c) = pg
        .query_one(
            &crate::state::conflict::pg_count_sql(&cfg.postgres.duplex_schema),
            &[&cfg.pipeline],
        )
        .await
    {
        r.forward.conflicts_total = Some(c.get(0));
        r.forward.conflicts_last_hour = Some(c.get(1));
    }
    let snap = pg
        .query(
            &format!("SELECT source_table, rows_copied FROM {schema}.snapshot WHERE pipeline = $1 AND direction = $2 AND state <> 'done' ORDER BY 1"),
            &[&cfg.pipeline, &FORWARD],
        )
        .await?;
    r.forward.snapshot_pending = snap
        .iter()
        .map(|row| {
            format!(
                "{} ({} rows copied)",
                row.get::<_, String>(0),
                row.get::<_, i64>(1)
            )
        })
        .collect();
    Ok(())
}

/// The reverse direction's replication slot: whether it is in use, and the WAL it retains.
async fn read_pg_slot(
    pg: &tokio_postgres::Client,
    cfg: &Config,
    r: &mut Record,
) -> Result<(), tokio_postgres::Error> {
    let slot = crate::model::slot_name(&cfg.pipeline);
    let s = pg
        .query_opt(
            "SELECT active, (pg_current_wal_lsn() - restart_lsn)::int8 FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    if let Some(row) = s {
        r.slot_active = Some(row.get(0));
        r.slot_retained_wal_bytes = row.get(1);
    }
    r.slot = Some(slot);
    Ok(())
}

/// The MySQL side of [`record_with`]: the binlogs and their expiry, the reverse direction's
/// record when `reverse`, and how far the forward checkpoint is behind. The session is kept
/// only if every query answered.
async fn record_mysql(cfg: &Config, reverse: bool, sessions: &mut Sessions, r: &mut Record) {
    let db = my_ident(&cfg.mysql.duplex_database);
    let my = match sessions.my.take() {
        Some(c) => Ok(c),
        None => crate::connect::mysql(&cfg.mysql, None, false).await,
    };
    match my {
        Ok(mut my) => {
            let q = async {
                let names = read_my_binlogs(&mut my, r).await?;
                if reverse {
                    read_my_reverse(&mut my, cfg, &db, r).await?;
                }
                Ok::<_, mysql_async::Error>(names)
            };
            let answer = q.await;
            if answer.is_ok() {
                sessions.my = Some(my);
            } else {
                let _ = my.disconnect().await;
            }
            match answer {
                Ok(names) => binlog_behind(&names, r),
                Err(e) => r.unreadable.push(format!("MySQL: {e}")),
            }
        }
        Err(e) => r.unreadable.push(format!("MySQL: {e}")),
    }
}

/// The server's binary logs (their names are returned) and its binlog expiry.
async fn read_my_binlogs(
    my: &mut mysql_async::Conn,
    r: &mut Record,
) -> Result<Vec<String>, mysql_async::Error> {
    let logs: Vec<mysql_async::Row> = my.query("SHOW BINARY LOGS").await?;
    let names: Vec<String> = logs.iter().filter_map(|row| row.get(0)).collect();
    r.binlog_newest = names
        .iter()
        .max_by_key(|n| BinlogFile((*n).clone()).sequence())
        .cloned();
    // MariaDB before 10.6 has only the days.
    let expiry: Option<(Option<u64>, Option<f64>)> = match my
        .query_first("SELECT @@binlog_expire_logs_seconds, @@expire_logs_days")
        .await
    {
        Ok(row) => row,
        Err(_) => my.query_first("SELECT NULL, @@expire_logs_days").await?,
    };
    let expiry_s = match expiry {
        Some((Some(s), _)) if s > 0 => s as i64,
        Some((_, Some(d))) => (d * 86_400.0) as i64,
        _ => 0,
    };
    r.binlog_expiry_seconds = Some(expiry_s);
    Ok(names)
}

/// The reverse direction as MySQL records it: checkpoint, dead letters, snapshot progress (set
/// only once all three are read).
async fn read_my_reverse(
    my: &mut mysql_async::Conn,
    cfg: &Config,
    db: &str,
    r: &mut Record,
) -> Result<(), mysql_async::Error> {
    let rows: Vec<(String, i64)> = my
        .exec(
            format!("SELECT position, CAST(UNIX_TIMESTAMP(updated_at) * 1000000 AS SIGNED) FROM {db}.checkpoint WHERE pipeline = ? AND direction = ?"),
            (&cfg.pipeline, REVERSE),
        )
        .await?;
    let dl: Option<(i64, i64)> = my
        .exec_first(
            format!("SELECT CAST(COALESCE(SUM(NOT resolved), 0) AS SIGNED), COUNT(*) FROM {db}.dead_letter WHERE pipeline = ? AND direction = ?"),
            (&cfg.pipeline, REVERSE),
        )
        .await?;
    let conflicts: Option<(i64, i64)> = my
        .exec_first(
            crate::state::conflict::my_count_sql(&cfg.mysql.duplex_database),
            (&cfg.pipeline,),
        )
        .await
        .ok()
        .flatten();
    let snap: Vec<(String, i64)> = my
        .exec(
            format!("SELECT source_table, rows_copied FROM {db}.snapshot WHERE pipeline = ? AND direction = ? AND state <> 'done' ORDER BY 1"),
            (&cfg.pipeline, REVERSE),
        )
        .await?;
    if let Some(d) = r.reverse.as_mut() {
        if let Some((p, at)) = rows.into_iter().next() {
            d.position = Some(p);
            d.position_at_us = Some(at);
        }
        if let Some((u, t)) = dl {
            d.dead_letters_unresolved = Some(u);
            d.dead_letters_total = Some(t);
        }
        if let Some((t, h)) = conflicts {
            d.conflicts_total = Some(t);
            d.conflicts_last_hour = Some(h);
        }
        d.snapshot_pending = snap
            .into_iter()
            .map(|(t, n)| format!("{t} ({n} rows copied)"))
            .collect();
    }
    Ok(())
}

/// How many binlog files the forward checkpoint is behind the newest of `names`, and how long
/// until its file may expire.
fn binlog_behind(names: &[String], r: &mut Record) {
    if let Some(Ok(Position::Mysql(p))) = r.forward.position.as_ref().map(|p| p.parse::<Position>())
    {
        let at = p.file.sequence();
        let behind = names
            .iter()
            .filter(|n| BinlogFile((*n).clone()).sequence() > at)
            .count() as i64;
        r.binlog_files_behind = Some(behind);
        if let Some(expiry) = r.binlog_expiry_seconds.filter(|s| *s > 0) {
            // The checkpoint's file stops ageing-free once the server moved to
            // a newer one; it was last written no earlier than the checkpoint
            // (an estimate on the early side, so alerts come early, not late).
            let age = if behind == 0 {
                0.0
            } else {
                let at_us = r.forward.position_at_us.unwrap_or(0);
                (crate::telemetry::live::now_us() - at_us).max(0) as f64 / 1e6
            };
            r.binlog_expiry_remaining_seconds = Some(expiry as f64 - age);
        }
    }
}

/// How often `duplex run` reads the record for its gauges.
const EVERY: Duration = Duration::from_secs(5);

/// Keeps the gauges that come from the databases current while `duplex run` lives.
pub fn spawn(cfg: &Config, reverse: bool, mut stop: watch::Receiver<bool>) {
    let cfg = cfg.clone();
    tokio::spawn(async move {
        let mut sessions = Sessions::default();
        loop {
            let r = record_with(&cfg, reverse, &mut sessions).await;
            publish(&r);
            for why in &r.unreadable {
                tracing::debug!(%why, "monitor: cannot read");
            }
            tokio::select! {
                _ = tokio::time::sleep(EVERY) => {}
                _ = stop.changed() => {
                    sessions.close().await;
                    return;
                }
            }
        }
    });
}

fn publish(r: &Record) {
    use super::*;
    for d in std::iter::once(&r.forward).chain(r.reverse.as_ref()) {
        if let Some(n) = d.dead_letters_unresolved {
            metrics::gauge!(DEAD_LETTERS_UNRESOLVED, "direction" => d.direction).set(n as f64);
        }
    }
    if let (Some(slot), Some(bytes)) = (&r.slot, r.slot_retained_wal_bytes) {
        metrics::gauge!(SLOT_RETAINED_WAL_BYTES, "slot" => slot.clone()).set(bytes as f64);
    }
    if let Some(n) = r.binlog_files_behind {
        metrics::gauge!(BINLOG_FILES_BEHIND).set(n as f64);
    }
    if let Some(s) = r.binlog_expiry_remaining_seconds {
        metrics::gauge!(BINLOG_EXPIRY_REMAINING_SECONDS).set(s);
    }
}

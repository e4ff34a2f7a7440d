//! `duplex status`: what both databases record for the pipeline (checkpoints, dead letters,
//! unfinished copies, slot, binlog) and what its running process, asked at the metrics
//! listener, says it is doing.

use std::process::ExitCode;

use super::table;
use crate::config::Config;
use crate::error::Result;
use crate::mapping;

/// Runs `duplex status` (a table, or JSON); success only when a process answers and is ready.
pub async fn main(cfg: &Config, json: bool) -> ExitCode {
    match status(cfg).await {
        Ok(report) => {
            let text = if json {
                serde_json::to_string_pretty(&report).unwrap_or_default() + "\n"
            } else {
                render_status(&report)
            };
            super::print(&text);
            // Exit 0 only when a process answers and is ready.
            if report.process.as_ref().is_some_and(|p| p.ready) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => super::failed(&e),
    }
}

/// `duplex status`: what the databases record for the pipeline, and what its running process
/// (asked at the metrics listener) says it is doing.
#[derive(Debug, serde::Serialize)]
pub struct StatusReport {
    pub pipeline: String,
    /// The running process's own account, when one answers.
    pub process: Option<crate::telemetry::live::Status>,
    /// Why no process answered.
    pub process_unreachable: Option<String>,
    pub record: crate::telemetry::observe::Record,
}

pub async fn status(cfg: &Config) -> Result<StatusReport> {
    let reverse = mapping::load_dir(&cfg.mappings)?.has_reverse();
    let asked = crate::telemetry::http::get(
        cfg.metrics_listen,
        "/status",
        std::time::Duration::from_secs(3),
    );
    let (asked, record) = tokio::join!(asked, crate::telemetry::observe::record(cfg, reverse));
    let (process, process_unreachable) = match asked {
        Ok((200, body)) => match serde_json::from_str(&body) {
            Ok(s) => (Some(s), None),
            Err(e) => (
                None,
                Some(format!(
                    "{} answered, but not with duplex's status: {e}",
                    cfg.metrics_listen
                )),
            ),
        },
        Ok((code, _)) => (
            None,
            Some(format!(
                "{} answered HTTP {code} to /status: not a duplex of this version",
                cfg.metrics_listen
            )),
        ),
        Err(e) => (None, Some(e.to_string())),
    };
    Ok(StatusReport {
        pipeline: cfg.pipeline.clone(),
        process,
        process_unreachable,
        record,
    })
}

fn time_of(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| us.to_string())
}

fn seconds(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 120.0 {
        format!("{s:.1} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

/// `duplex status` as a table.
pub fn render_status(r: &StatusReport) -> String {
    let mut out = format!("pipeline {}\n", r.pipeline);
    match (&r.process, &r.process_unreachable) {
        (Some(p), _) => {
            out.push_str(&format!(
                "process  pid {} running since {}: {}\n",
                p.pid,
                time_of(p.started_us),
                if p.ready {
                    "ready".to_string()
                } else {
                    format!("NOT READY ({})", p.not_ready.join("; "))
                }
            ));
        }
        (None, why) => out.push_str(&format!(
            "process  none answers: {} — state stopped\n",
            why.as_deref().unwrap_or("?")
        )),
    }
    out.push('\n');
    let mut rows = vec![vec![
        "direction".to_string(),
        "state".into(),
        "lag".into(),
        "position (checkpoint)".into(),
        "dead letters".into(),
        "conflicts".into(),
    ]];
    let dirs = std::iter::once(&r.record.forward).chain(r.record.reverse.as_ref());
    for d in dirs {
        let live = r
            .process
            .as_ref()
            .and_then(|p| p.directions.iter().find(|x| x.direction == d.direction));
        let state = match live {
            Some(l) if l.state == crate::telemetry::State::Retrying => format!(
                "retrying (attempt {}{})",
                l.retry_attempt,
                l.retry_at_us
                    .map(|at| format!(
                        ", next in {}",
                        seconds(((at - crate::telemetry::live::now_us()).max(0)) as f64 / 1e6)
                    ))
                    .unwrap_or_default()
            ),
            Some(l) => l.state.as_str().to_string(),
            None => "stopped".into(),
        };
        let lag = live
            .and_then(|l| l.lag_seconds)
            .map(seconds)
            .unwrap_or_else(|| "-".into());
        let position = live
            .and_then(|l| l.position.clone())
            .or_else(|| d.position.clone())
            .unwrap_or_else(|| "(none yet)".into());
        let letters = match (d.dead_letters_unresolved, d.dead_letters_total) {
            (Some(u), Some(t)) => format!("{u} unresolved of {t}"),
            _ => "?".into(),
        };
        let conflicts = match (d.conflicts_total, d.conflicts_last_hour) {
            (Some(t), Some(h)) => format!("{t} ({h} in the last hour)"),
            _ => "?".into(),
        };
        rows.push(vec![
            d.direction.to_string(),
            state,
            lag,
            position,
            letters,
            conflicts,
        ]);
    }
    out.push_str(&table(&rows));
    if let Some(p) = &r.process {
        for d in &p.directions {
            if let Some(e) = &d.last_error {
                out.push_str(&format!(
                    "last error {} at {} [{}]: {}\n",
                    d.direction,
                    time_of(e.at_us),
                    e.kind,
                    e.message
                ));
            }
        }
    }
    for d in std::iter::once(&r.record.forward).chain(r.record.reverse.as_ref()) {
        if !d.snapshot_pending.is_empty() {
            out.push_str(&format!(
                "snapshot {} pending: {}\n",
                d.direction,
                d.snapshot_pending.join(", ")
            ));
        }
    }
    let rec = &r.record;
    if let Some(newest) = &rec.binlog_newest {
        let mut line = format!("binlog   server's newest {newest}");
        if let Some(n) = rec.binlog_files_behind {
            line.push_str(&format!(", checkpoint {n} file(s) behind"));
        }
        match (
            rec.binlog_expiry_seconds,
            rec.binlog_expiry_remaining_seconds,
        ) {
            (Some(0), _) => line.push_str("; binlog expiry off"),
            (_, Some(left)) => line.push_str(&format!(
                "; expiry purges the checkpoint's file in about {}",
                seconds(left.max(0.0))
            )),
            _ => {}
        }
        out.push_str(&line);
        out.push('\n');
    }
    if let Some(slot) = &rec.slot {
        out.push_str(&match (rec.slot_active, rec.slot_retained_wal_bytes) {
            (Some(active), Some(bytes)) => format!(
                "slot     {slot}: {}, retains {:.1} MB of WAL\n",
                if active { "active" } else { "inactive" },
                bytes as f64 / 1e6
            ),
            _ => format!("slot     {slot}: missing (run `duplex setup`)\n"),
        });
    }
    match &rec.verify_last {
        Some(v) => out.push_str(&format!(
            "verify   last run {} ({}): {} keys, {}\n",
            v.finished_at,
            if v.online { "online" } else { "offline" },
            v.rows_checked,
            if v.mismatches == 0 && v.unsettled == 0 {
                "both sides agree".to_string()
            } else {
                format!(
                    "{} differences, {} unsettled (`duplex verify` lists them)",
                    v.mismatches, v.unsettled
                )
            }
        )),
        None => out.push_str("verify   never run (`duplex verify`, or `[verify] interval`)\n"),
    }
    for why in &rec.unreadable {
        out.push_str(&format!("cannot read {why}\n"));
    }
    out
}

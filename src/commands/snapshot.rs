//! `duplex snapshot`: copies the tables that need it (never copied, an interrupted copy, or the
//! one named with `--table`), then exits. Takes the pipeline's lock, so it never runs beside
//! `duplex run`.

use std::process::ExitCode;
use std::sync::Arc;

use tokio::sync::watch;

use super::lock::{pipeline_lock, LOCK_WAIT};
use super::signals::stop_on_signal;
use crate::config::Config;
use crate::error::Result;
use crate::mapping::load_plan;

/// Runs `duplex snapshot` and prints a line per table; success when every copy finished.
pub async fn main(cfg: &Config, table: Option<String>) -> ExitCode {
    let request = crate::snapshot::Request { table };
    match snapshot(cfg, &request).await {
        Ok(reports) => {
            if reports.is_empty() {
                println!("nothing to copy: every mapped table has been copied (use --table to copy one again)");
            }
            for r in &reports {
                println!("{r}");
            }
            if reports.iter().all(|r| r.finished) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => super::failed(&e),
    }
}

/// `duplex snapshot`: copies the tables that need it (or the one named), then exits.
pub async fn snapshot(
    cfg: &Config,
    request: &crate::snapshot::Request,
) -> Result<Vec<crate::snapshot::Report>> {
    let plan = Arc::new(load_plan(cfg).await?);
    let (stop_tx, stop_rx) = watch::channel(false);
    stop_on_signal(
        Arc::new(stop_tx),
        false,
        "stopping after the chunk in flight",
    );
    let _lock = pipeline_lock(cfg, Some(LOCK_WAIT), stop_rx.clone()).await?;
    let mut reports = Vec::new();
    for way in [crate::model::Way::Forward, crate::model::Way::Reverse] {
        reports
            .extend(crate::snapshot::run(way, cfg, plan.clone(), request, stop_rx.clone()).await?);
        if *stop_rx.borrow() {
            break;
        }
    }
    Ok(reports)
}

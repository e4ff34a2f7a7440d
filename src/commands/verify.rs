//! `duplex verify` and `duplex repair`: compare both sides through the mapping and print the
//! report (or JSON); repair sends the differing rows again, then verifies those tables again.
//! Online when a `duplex run` holds the pipeline (differences are re-checked after its stream
//! passed them); offline otherwise, holding the pipeline's lock meanwhile so no run starts.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::signals::stop_on_signal;
use crate::config::Config;
use crate::error::Result;
use crate::mapping::{load_plan, Plan};
use crate::verify::{Options, Report};

/// What `duplex verify` and `duplex repair` are asked.
#[derive(Debug, Clone, Default)]
pub struct Args {
    pub tables: Vec<String>,
    pub json: bool,
    pub max_rows_per_second: Option<u64>,
    /// Differences listed per entry.
    pub show: usize,
    pub settle_timeout_s: u64,
    /// repair: only these keys (`a, b` for a composite key).
    pub keys: Vec<String>,
    pub dry_run: bool,
}

impl Args {
    fn options(&self, online: bool) -> Options {
        Options {
            tables: self.tables.clone(),
            max_rows_per_second: self.max_rows_per_second,
            online,
            settle_timeout: Duration::from_secs(self.settle_timeout_s.max(1)),
            show: self.show,
            progress: !self.json,
        }
    }
}

/// Exit status of a verify: 0 equal, 1 differences, 2 an error.
fn exit_of(report: &Report) -> ExitCode {
    if report.all_equal() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn show(report: &Report, json: bool) {
    if json {
        super::print(&(serde_json::to_string_pretty(report).unwrap_or_default() + "\n"));
    } else {
        super::print(&report.render());
    }
}

/// `duplex verify`.
pub async fn main(cfg: &Config, args: Args) -> ExitCode {
    match verify(cfg, &args).await {
        Ok(report) => {
            show(&report, args.json);
            exit_of(&report)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// The sessions a verify command holds: the pipeline's lock when no run holds it.
struct Session {
    plan: Arc<Plan>,
    online: bool,
    stop: watch::Receiver<bool>,
    _lock: tokio_postgres::Client,
}

async fn session(cfg: &Config) -> Result<Session> {
    let plan = Arc::new(load_plan(cfg).await?);
    let (stop_tx, stop) = watch::channel(false);
    stop_on_signal(Arc::new(stop_tx), false, "stopping verify");
    let (free, lock) = super::lock::try_lock(cfg, None).await?;
    Ok(Session {
        plan,
        online: !free,
        stop,
        _lock: lock,
    })
}

/// Runs a verify and records it.
pub async fn verify(cfg: &Config, args: &Args) -> Result<Report> {
    let s = session(cfg).await?;
    run_and_record(cfg, s.plan.clone(), &args.options(s.online), s.stop.clone()).await
}

/// One verify run, recorded in duplex's `verify_run` table.
pub async fn run_and_record(
    cfg: &Config,
    plan: Arc<Plan>,
    opts: &Options,
    stop: watch::Receiver<bool>,
) -> Result<Report> {
    let report = crate::verify::verify(cfg, plan, opts, stop).await?;
    let client = crate::connect::postgres(&cfg.postgres, "duplex verify").await?;
    let json = serde_json::to_value(&report).unwrap_or_default();
    crate::state::verify::store(
        &client,
        &cfg.postgres.duplex_schema,
        &cfg.pipeline,
        &report.started_at,
        report.online,
        (
            report.rows_checked() as i64,
            report.mismatches() as i64,
            report.unsettled() as i64,
        ),
        &json,
    )
    .await?;
    Ok(report)
}

/// `duplex repair`: verify, repair what differs, verify those tables again.
pub async fn repair_main(cfg: &Config, args: Args) -> ExitCode {
    match repair(cfg, &args).await {
        Ok((found, actions, after)) => {
            if args.json {
                let out = serde_json::json!({ "found": found, "actions": actions, "after": after });
                super::print(&(serde_json::to_string_pretty(&out).unwrap_or_default() + "\n"));
            } else {
                let mut rows = vec![vec![
                    "target".to_string(),
                    "key".into(),
                    "action".into(),
                    "detail".into(),
                ]];
                for a in &actions {
                    rows.push(vec![
                        a.target.clone(),
                        a.key.clone(),
                        a.action.to_string(),
                        a.detail.clone(),
                    ]);
                }
                if actions.is_empty() {
                    super::print("nothing to repair: both sides agree\n");
                } else {
                    super::print(&super::table(&rows));
                }
                if let Some(after) = &after {
                    super::print(&after.render());
                }
            }
            match &after {
                Some(r) => exit_of(r),
                None if args.dry_run => exit_of(&found),
                None => ExitCode::SUCCESS,
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

type Repaired = (Report, Vec<crate::verify::repair::Action>, Option<Report>);

async fn repair(cfg: &Config, args: &Args) -> Result<Repaired> {
    let s = session(cfg).await?;
    let mut opts = args.options(s.online);
    // Every difference is needed, not only those a report lists.
    opts.show = usize::MAX;
    let found = run_and_record(cfg, s.plan.clone(), &opts, s.stop.clone()).await?;
    if found.all_equal() && args.keys.is_empty() {
        return Ok((found, Vec::new(), None));
    }
    let mut streams = crate::verify::settle::Streams::open(
        cfg,
        s.online,
        s.plan.has_reverse(),
        opts.settle_timeout,
    )
    .await?;
    let actions = crate::verify::repair::repair(
        cfg,
        s.plan.clone(),
        &found,
        &args.keys,
        args.dry_run,
        &mut streams,
    )
    .await;
    streams.close().await;
    let actions = actions?;
    if args.dry_run || actions.is_empty() {
        return Ok((found, actions, None));
    }
    // Verify again what was repaired.
    let mut again = args.options(s.online);
    again.tables = actions.iter().map(|a| a.target.clone()).collect();
    again.tables.sort();
    again.tables.dedup();
    let after = run_and_record(cfg, s.plan.clone(), &again, s.stop.clone()).await?;
    Ok((found, actions, Some(after)))
}

/// `[verify] interval`: a verify inside `duplex run` every interval (the first one an interval
/// after the start), online, with the running plan; its result goes to the metrics, the log
/// and `verify_run`.
pub fn schedule(
    cfg: &Config,
    plans: Arc<arc_swap::ArcSwap<Plan>>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(every) = cfg.verify.interval else {
        return;
    };
    let cfg = cfg.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            let opts = Options {
                max_rows_per_second: cfg.verify.max_rows_per_second,
                online: true,
                progress: false,
                ..Options::default()
            };
            match run_and_record(&cfg, plans.load_full(), &opts, stop.clone()).await {
                Ok(r) if r.all_equal() => {
                    tracing::info!(keys = r.rows_checked(), seconds = r.seconds, "scheduled verify: both sides agree")
                }
                Ok(r) => tracing::warn!(
                    keys = r.rows_checked(),
                    differences = r.mismatches(),
                    unsettled = r.unsettled(),
                    "scheduled verify: the sides differ; `duplex verify` lists the differences, `duplex repair` sends them again\n{}",
                    r.render()
                ),
                Err(_) if *stop.borrow() => return,
                Err(e) => tracing::warn!(error = %e, "scheduled verify failed; the next one runs in an interval"),
            }
        }
    });
}

//! `duplex run`: replicates until SIGTERM / SIGINT, both directions at once when tables are
//! mapped from PostgreSQL; reloads the mappings on SIGHUP. One process per pipeline (a
//! PostgreSQL advisory lock; a second one waits as a standby).

use std::process::ExitCode;
use std::sync::Arc;

use tokio::sync::watch;

use super::lock::pipeline_lock;
use super::signals::stop_on_signal;
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::mapping::{load_plan, Plan};
use crate::model::Way;
use crate::pipeline::{run as run_way, Backoff};

/// Runs `duplex run`; a failure is logged and printed.
pub async fn main(cfg: &Config) -> ExitCode {
    match run(cfg).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "duplex stopped");
            super::failed(&e)
        }
    }
}

/// `duplex run`: replicates until SIGTERM / SIGINT.
pub async fn run(cfg: &Config) -> Result<()> {
    // First of all, so that a SIGTERM during start-up is a clean stop, not the default death.
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    stop_on_signal(
        stop_tx.clone(),
        true,
        "shutting down: finishing the transaction in flight",
    );
    crate::telemetry::install(cfg.metrics_listen, cfg.ready_max_lag).await?;
    crate::telemetry::live().set_pipeline(&cfg.pipeline);
    if let Some(n) = crate::telemetry::notify::Notifier::from_env() {
        tokio::spawn(crate::telemetry::notify::run(
            n,
            cfg.ready_max_lag,
            stop_rx.clone(),
        ));
    }
    if !refuse_unsafe_source(cfg, &mut stop_rx).await? {
        return Ok(());
    }
    let mut backoff = Backoff::default();
    let plan = loop {
        if *stop_rx.borrow() {
            return Ok(());
        }
        match load_plan(cfg).await {
            Ok(p) => break Arc::new(p),
            Err(e) if e.is_transient() => {
                let d = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "cannot read the schemas yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = stop_rx.changed() => {}
                }
            }
            Err(e) => return Err(e),
        }
    };
    tracing::info!(
        pipeline = %cfg.pipeline,
        tables = plan.tables.len(),
        metrics = %cfg.metrics_listen,
        "mappings compiled"
    );
    let lock = match pipeline_lock(cfg, None, stop_rx.clone()).await {
        Ok(l) => l,
        Err(_) if *stop_rx.borrow() => return Ok(()),
        Err(e) => return Err(e),
    };
    let kept = super::lock::keep(cfg, lock, stop_tx.clone());
    let result = run_pipelines(cfg, plan, stop_tx.clone(), stop_rx).await;
    let _ = stop_tx.send(true);
    match kept.await {
        // The lock went to another process: that is why the pipelines stopped.
        Ok(Some(lost)) => Err(lost),
        _ => result,
    }
}

/// The pipelines of `run`, with the lock held: heartbeats, telemetry, reloads, the copies of
/// new tables, then both directions at once.
async fn run_pipelines(
    cfg: &Config,
    plan: Arc<Plan>,
    stop_tx: Arc<watch::Sender<bool>>,
    stop_rx: watch::Receiver<bool>,
) -> Result<()> {
    let live = crate::telemetry::live();
    live.activate(Way::Forward);
    crate::heartbeat::spawn(Way::Forward, cfg, stop_rx.clone());
    if plan.has_reverse() {
        live.activate(Way::Reverse);
        crate::heartbeat::spawn(Way::Reverse, cfg, stop_rx.clone());
    }
    crate::telemetry::observe::spawn(cfg, plan.has_reverse(), stop_rx.clone());
    let plans = Arc::new(arc_swap::ArcSwap::new(plan.clone()));
    let reload_rx = reload_on_sighup(cfg, plans.clone());
    if cfg.snapshot_on_start() {
        for way in [Way::Forward, Way::Reverse] {
            if !crate::pipeline::copy_new_tables(way, cfg, plan.clone(), stop_rx.clone()).await? {
                return Ok(());
            }
        }
    }
    super::verify::schedule(cfg, plans.clone(), stop_rx.clone());
    if plan.reverse.is_empty() {
        return run_way(Way::Forward, cfg, plans, stop_rx, reload_rx).await;
    }
    // Both directions at once; a definite failure of one stops the other.
    let forward = run_way(
        Way::Forward,
        cfg,
        plans.clone(),
        stop_rx.clone(),
        reload_rx.clone(),
    );
    let reverse = run_way(Way::Reverse, cfg, plans, stop_rx, reload_rx);
    tokio::pin!(forward, reverse);
    tokio::select! {
        r = &mut forward => {
            if r.is_err() {
                let _ = stop_tx.send(true);
            }
            let other = reverse.await;
            r.and(other)
        }
        r = &mut reverse => {
            if r.is_err() {
                let _ = stop_tx.send(true);
            }
            let other = forward.await;
            r.and(other)
        }
    }
}

/// Stops before replicating from a server whose settings would lose or corrupt changes.
/// `Ok(false)`: a stop signal came while MySQL was still unreachable.
async fn refuse_unsafe_source(cfg: &Config, stop: &mut watch::Receiver<bool>) -> Result<bool> {
    let mut backoff = Backoff::default();
    let mut conn = loop {
        if *stop.borrow() {
            return Ok(false);
        }
        let attempt = tokio::select! {
            c = crate::connect::mysql(&cfg.mysql, None, false) => c,
            _ = stop.changed() => return Ok(false),
        };
        match attempt {
            Ok(c) => break c,
            Err(e) if e.is_transient() => {
                let d = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "MySQL not reachable yet");
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = stop.changed() => return Ok(false),
                }
            }
            Err(e) => return Err(e),
        }
    };
    let findings = crate::source::mysql::check_server(&mut conn).await?;
    let _ = conn.disconnect().await;
    let bad: Vec<String> = findings
        .iter()
        .filter(|f| !f.ok)
        .map(|f| format!("{} — fix: {}", f.what, f.fix))
        .collect();
    if bad.is_empty() {
        Ok(true)
    } else {
        Err(Error::new(
            ErrorKind::ServerSetting,
            format!(
                "refusing to replicate from this MySQL server:\n  {}",
                bad.join("\n  ")
            ),
        ))
    }
}

/// SIGHUP re-reads and re-checks the mapping set: a valid one replaces the running plan (each
/// direction switches after its transaction in flight; the returned counter announces it), an
/// invalid one is refused with its errors and the running plan stays.
fn reload_on_sighup(cfg: &Config, plans: Arc<arc_swap::ArcSwap<Plan>>) -> watch::Receiver<u64> {
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, rx) = watch::channel(0u64);
    let cfg = cfg.clone();
    let hup = signal(SignalKind::hangup());
    tokio::spawn(async move {
        let Ok(mut hup) = hup else { return };
        let mut reloads = 0;
        while hup.recv().await.is_some() {
            tracing::info!(mappings = %cfg.mappings.display(), "SIGHUP: reloading the mappings");
            match load_plan(&cfg).await {
                Ok(plan) if plan.has_reverse() && !plans.load().has_reverse() => {
                    tracing::error!(
                        "mapping reload refused, the running mappings stay: the new set replicates tables from PostgreSQL, which this process was started without (no reverse direction runs): stop duplex, run `duplex setup` (it creates the slot and the publication), and start it again"
                    );
                }
                Ok(plan) => {
                    let tables = plan.tables.len();
                    plans.store(Arc::new(plan));
                    reloads += 1;
                    let _ = tx.send(reloads);
                    tracing::info!(tables, "mappings reloaded; each direction switches after its transaction in flight");
                }
                Err(e) => {
                    tracing::error!("mapping reload refused, the running mappings stay:\n{e}");
                }
            }
        }
    });
    rx
}

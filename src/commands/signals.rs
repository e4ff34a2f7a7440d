//! Signal handling shared by the commands that run until stopped: SIGTERM and Ctrl-C stop,
//! SIGHUP is caught (`run` reloads the mappings on it, other commands ignore it).

use std::sync::Arc;

use tokio::sync::watch;

/// Sends `true` on `stop` at SIGTERM or Ctrl-C, logging `what`. The handlers are installed
/// before this returns, so from then on these signals never end the process by their default
/// action. SIGHUP (which would) is caught too: `run` reloads the mappings on it
/// (`hup_reloads`), other commands ignore it.
pub(super) fn stop_on_signal(
    stop: Arc<watch::Sender<bool>>,
    hup_reloads: bool,
    what: &'static str,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let hup = signal(SignalKind::hangup()).ok();
    let int = tokio::signal::ctrl_c();
    tokio::spawn(async move {
        if let Ok(term) = term {
            wait_for_signal(term, hup, int, hup_reloads).await;
            tracing::info!("{what}");
            let _ = stop.send(true);
        }
    });
}

async fn wait_for_signal(
    mut term: tokio::signal::unix::Signal,
    mut hup: Option<tokio::signal::unix::Signal>,
    int: impl std::future::Future<Output = std::io::Result<()>>,
    hup_reloads: bool,
) {
    tokio::pin!(int);
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = &mut int => return,
            Some(_) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                if !hup_reloads {
                    tracing::warn!("SIGHUP ignored: only `duplex run` reloads mappings");
                }
            }
        }
    }
}

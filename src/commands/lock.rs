//! One process per pipeline: a PostgreSQL session-level advisory lock, held for the life of the
//! connection it was taken on. `run` waits for it (a second instance is a standby); `snapshot`
//! gives up after [`LOCK_WAIT`].

use tokio::sync::watch;

use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::Backoff;

/// How long `duplex snapshot` waits for a running pipeline's lock before giving up.
pub(super) const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// One process per pipeline: a PostgreSQL session lock held for the life of the returned
/// connection. `run` waits for it (a second instance is a standby); `snapshot` gives up after
/// `wait`.
pub(super) async fn pipeline_lock(
    cfg: &Config,
    wait: Option<std::time::Duration>,
    mut stop: watch::Receiver<bool>,
) -> Result<tokio_postgres::Client> {
    let started = std::time::Instant::now();
    let mut said = false;
    let mut backoff = Backoff::default();
    // One session, kept while waiting; a new one only after an error.
    let mut session: Option<tokio_postgres::Client> = None;
    loop {
        let attempt = try_lock(cfg, session.take()).await;
        let delay = match attempt {
            Ok((true, client)) => return Ok(client),
            Ok((false, client)) => {
                session = Some(client);
                if wait.is_some_and(|w| started.elapsed() >= w) {
                    return Err(Error::new(
                        ErrorKind::Config,
                        format!(
                            "pipeline {} is in use by another duplex process (`duplex run` or `duplex snapshot`); stop it first",
                            cfg.pipeline
                        ),
                    ));
                }
                if !said {
                    said = true;
                    tracing::warn!(pipeline = %cfg.pipeline, "another duplex process holds this pipeline; waiting for it to stop");
                }
                std::time::Duration::from_millis(500)
            }
            Err(e) if e.is_transient() => {
                let d = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "PostgreSQL not reachable yet");
                d
            }
            Err(e) => return Err(e),
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return Err(Error::new(ErrorKind::Config, "stopped while waiting for the pipeline lock")),
        }
    }
}

/// Keeps the pipeline lock for the life of `run`: the lock lives on one PostgreSQL session, and
/// a PostgreSQL restart (or a dead connection) ends that session and frees the lock, which a
/// standby then takes while this process runs on. So the session is checked every few seconds;
/// once it is gone the lock is taken again on a new session, and if another process holds it
/// by then, this one stops (the task returns the error `run` ends with). Ends when `stop` is
/// set.
pub(super) fn keep(
    cfg: &Config,
    client: tokio_postgres::Client,
    stop: std::sync::Arc<watch::Sender<bool>>,
) -> tokio::task::JoinHandle<Option<Error>> {
    let cfg = cfg.clone();
    let mut stopped = stop.subscribe();
    tokio::spawn(async move {
        let limit = std::time::Duration::from_secs(cfg.postgres.read_timeout_s);
        let every = (limit / 3).max(std::time::Duration::from_secs(1));
        let mut client = client;
        let mut pid = backend_pid(&client).await;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stopped.changed() => return None,
            }
            let alive = tokio::time::timeout(limit, client.simple_query("SELECT 1")).await;
            if matches!(alive, Ok(Ok(_))) {
                continue;
            }
            tracing::warn!(pipeline = %cfg.pipeline, "the pipeline lock's PostgreSQL session is gone; taking the lock again");
            match retake(&cfg, &mut stopped, pid).await {
                Ok(Some(c)) => {
                    tracing::info!(pipeline = %cfg.pipeline, "pipeline lock taken again");
                    pid = backend_pid(&c).await;
                    client = c;
                }
                Ok(None) => return None,
                Err(e) => {
                    tracing::error!(error = %e, "stopping");
                    let _ = stop.send(true);
                    return Some(e);
                }
            }
        }
    })
}

/// Takes the lock again on a new session after its old one ended, retrying while PostgreSQL
/// is unreachable. `Ok(None)`: stopped meanwhile; an error: another process holds it now.
async fn retake(
    cfg: &Config,
    stopped: &mut watch::Receiver<bool>,
    old_pid: Option<i32>,
) -> Result<Option<tokio_postgres::Client>> {
    let mut backoff = Backoff::default();
    // The old session may still hold the lock on the server (a connection that died without
    // a reset lingers there): ended once, then the lock is free for this process.
    let mut ended_old = false;
    loop {
        let attempt = try_lock(cfg, None).await;
        let delay = match attempt {
            Ok((true, client)) => return Ok(Some(client)),
            Ok((false, client)) if !ended_old && old_pid.is_some() => {
                ended_old = true;
                let ended = client
                    .query_opt(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = $1",
                        &[&old_pid],
                    )
                    .await;
                if matches!(ended, Ok(Some(_))) {
                    tracing::warn!(pid = old_pid, "the lock's old session still held it on the server: ended it");
                }
                std::time::Duration::from_millis(200)
            }
            Ok((false, _)) => {
                return Err(Error::new(
                    ErrorKind::Invariant,
                    format!(
                        "the pipeline lock of {} was lost (its PostgreSQL session ended: a restart or a dead connection) and another duplex process holds it now: this one stops, so that only one runs the pipeline",
                        cfg.pipeline
                    ),
                ))
            }
            Err(e) if e.is_transient() => backoff.next_delay(),
            Err(e) => return Err(e),
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped.changed() => return Ok(None),
        }
    }
}

/// The server process of a session (to end it if it outlives its connection).
async fn backend_pid(client: &tokio_postgres::Client) -> Option<i32> {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .ok()
        .map(|r| r.get(0))
}

/// One try for the lock, on `session` or a new one: whether it was taken, and the session.
pub(super) async fn try_lock(
    cfg: &Config,
    session: Option<tokio_postgres::Client>,
) -> Result<(bool, tokio_postgres::Client)> {
    let client = match session {
        Some(c) => c,
        None => {
            crate::connect::postgres(&cfg.postgres, &format!("duplex {} lock", cfg.pipeline))
                .await?
        }
    };
    let row = client
        .query_one(
            "SELECT pg_try_advisory_lock(hashtextextended('duplex pipeline ' || $1, 0))",
            &[&cfg.pipeline],
        )
        .await
        .map_err(|e| Error::from_pg(e, true, "taking the pipeline lock"))?;
    Ok((row.get::<_, bool>(0), client))
}

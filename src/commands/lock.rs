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
        let attempt = async {
            let client = match session.take() {
                Some(c) => c,
                None => {
                    crate::connect::postgres(
                        &cfg.postgres,
                        &format!("duplex {} lock", cfg.pipeline),
                    )
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
            Ok::<_, Error>((row.get::<_, bool>(0), client))
        }
        .await;
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

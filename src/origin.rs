//! Echo suppression: how duplex marks the transactions it writes so its readers drop them.
//!
//! - PostgreSQL: every writer connection of a pipeline binds its own replication origin,
//!   `duplex_<pipeline>_<n>`; pgoutput then sends an Origin message in those transactions and
//!   the PostgreSQL source drops transactions whose origin starts with `duplex_<pipeline>_`.
//!   `duplex setup` creates the origins (superuser, or EXECUTE on the `pg_replication_origin_*`
//!   functions).
//!   Fallback, chosen automatically when this role may not execute those functions (managed
//!   PostgreSQL): the marker rule as on MySQL — duplex's checkpoint table is in the publication,
//!   every transaction duplex writes touches its checkpoint row first, and the reader drops
//!   transactions whose first change is its own pipeline's row of that table (another
//!   pipeline's writes are changes like any other).
//! - MySQL/MariaDB: every applied transaction writes the pipeline's checkpoint row first; the
//!   binlog source drops transactions whose first row event writes its own pipeline's row of
//!   that table. No privilege beyond writing duplex's own table is needed.
//!
//! May use: the model (origin names) and the error type; the PostgreSQL sink and the commands use
//! it.

use tokio_postgres::Client;

use crate::error::{Error, ErrorKind, Result};

pub use crate::model::{origin_name, own_prefix};

/// How duplex's writes to PostgreSQL are told apart from the CRM's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Echo {
    /// Replication origins (needs the `pg_replication_origin_*` functions).
    Origin,
    /// duplex's checkpoint row written first in every transaction.
    Marker,
}

/// Which mechanism this role can use.
pub async fn echo_mode(client: &Client) -> Result<Echo> {
    let row = client
        .query_one(
            "SELECT has_function_privilege('pg_replication_origin_session_setup(text)', 'EXECUTE')              AND has_function_privilege('pg_replication_origin_create(text)', 'EXECUTE')",
            &[],
        )
        .await
        .map_err(|e| Error::from_pg(e, true, "checking the replication origin privileges"))?;
    Ok(if row.get::<_, bool>(0) {
        Echo::Origin
    } else {
        Echo::Marker
    })
}

/// Creates the origin if it does not exist (`duplex setup`).
pub async fn create(client: &Client, name: &str) -> Result<()> {
    client
        .execute(
            "SELECT pg_replication_origin_create($1) WHERE NOT EXISTS \
             (SELECT 1 FROM pg_replication_origin WHERE roname = $1)",
            &[&name],
        )
        .await
        .map(|_| ())
        .map_err(|e| {
            Error::from_pg(e, true, &format!("creating replication origin {name}")).context(
                "echo suppression needs the replication origin functions: run setup as a superuser, \
                 or GRANT EXECUTE ON FUNCTION pg_replication_origin_create(text), \
                 pg_replication_origin_session_setup(text) TO <duplex role>",
            )
        })
}

/// Binds this session's writes to the origin. The origin is active in one session at a time:
/// a writer of the same origin that just closed (the copy's, before the stream's) holds it until
/// its backend exits, and right after a crash the old session may still hold it. Binding is
/// tried a few times over about a second, ending a stale holder of this pipeline; if the origin
/// is still held, the error is transient and the caller retries.
pub async fn bind_session(client: &Client, name: &str) -> Result<()> {
    const TRIES: u32 = 4;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let e = match client
            .execute("SELECT pg_replication_origin_session_setup($1)", &[&name])
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let text = e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_default();
        if text.contains("is already active") {
            end_stale_holder(client, name, &text).await;
            if attempt < TRIES {
                tokio::time::sleep(std::time::Duration::from_millis(100 * u64::from(attempt)))
                    .await;
                continue;
            }
            return Err(Error::new(
                ErrorKind::SinkTransient,
                format!("replication origin {name}: {text}"),
            ));
        } else if text.contains("does not exist") {
            return Err(Error::new(
                ErrorKind::Config,
                format!("replication origin {name} does not exist: run `duplex setup`"),
            ));
        }
        return Err(Error::from_pg(
            e,
            true,
            &format!("binding replication origin {name}"),
        ));
    }
}

/// Releases the session's origin (a writer closing in order), so that the next writer of the
/// same origin binds it at once.
pub async fn release_session(client: &Client) {
    if let Err(e) = client
        .batch_execute("SELECT pg_replication_origin_session_reset()")
        .await
    {
        tracing::debug!(error = %e, "could not release the replication origin");
    }
}

/// The origin is held by another session (`… is already active for PID n`): with the pipeline
/// lock held by this process, a session of the same application name (`duplex <pipeline>`) is
/// one of this pipeline's writers that went silent (a dead connection the server has not
/// noticed) or a crashed process's, and it is ended so that the retry can bind the origin.
async fn end_stale_holder(client: &Client, name: &str, text: &str) {
    let Some(pid) = text
        .rsplit("PID ")
        .next()
        .and_then(|p| p.trim().parse::<i32>().ok())
    else {
        return;
    };
    let ended = client
        .query_opt(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE pid = $1 AND application_name = current_setting('application_name')",
            &[&pid],
        )
        .await;
    match ended {
        Ok(Some(_)) => {
            tracing::warn!(
                origin = name,
                pid,
                "the origin was held by a session of this pipeline that went silent: ended it"
            )
        }
        Ok(None) => {}
        Err(e) => {
            tracing::debug!(origin = name, pid, error = %e, "could not end the origin's holder")
        }
    }
}

/// Drops the origin (`duplex teardown`).
pub async fn drop(client: &Client, name: &str) -> Result<()> {
    client
        .execute(
            "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname = $1",
            &[&name],
        )
        .await
        .map(|_| ())
        .map_err(|e| Error::from_pg(e, true, &format!("dropping replication origin {name}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert_eq!(super::origin_name("shop", 1), "duplex_shop_1");
        assert!(super::origin_name("shop", 1).starts_with(&super::own_prefix("shop")));
        assert!(!super::origin_name("shop2", 1).starts_with(&super::own_prefix("shop")));
    }
}

//! `duplex teardown`: drops what `setup` made on PostgreSQL that costs the server resources
//! while unused — the replication slot, the publication, the origin.

use std::process::ExitCode;

use crate::config::Config;
use crate::error::{Error, Result};

/// Runs `duplex teardown` and prints what it dropped.
pub async fn main(cfg: &Config, yes: bool) -> ExitCode {
    let asked = super::confirm(
        &format!(
            "teardown drops pipeline {}'s replication slot: what the CRM changes from now on is not replicated, and starting again needs `duplex setup` and a full copy of the tables replicated from PostgreSQL",
            cfg.pipeline
        ),
        yes,
    );
    if let Err(e) = asked {
        return super::failed(&e);
    }
    match teardown(cfg).await {
        Ok(done) => {
            for line in done {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => super::failed(&e),
    }
}

/// `duplex teardown`: drops the replication slot (so PostgreSQL stops keeping WAL for it), the
/// publication and the replication origin. duplex's tables and checkpoints stay.
pub async fn teardown(cfg: &Config) -> Result<Vec<String>> {
    let name = crate::model::slot_name(&cfg.pipeline);
    let client = crate::connect::postgres(&cfg.postgres, "duplex teardown").await?;
    let mut done = Vec::new();
    let mut backoff = crate::pipeline::Backoff::default();
    for attempt in 0.. {
        let slot = client
            .query_opt(
                "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                &[&name],
            )
            .await
            .map_err(|e| Error::from_pg(e, true, "looking up the replication slot"))?;
        match slot {
            None => break,
            Some(_) => {
                let mut conn = crate::source::postgres::stream::ReplicationConn::connect(
                    &cfg.postgres,
                    "duplex teardown",
                )
                .await?;
                match conn.drop_slot(&name).await {
                    Ok(()) => {
                        done.push(format!("dropped replication slot {name}"));
                        break;
                    }
                    // Still held by a reader that is shutting down.
                    Err(e) if e.is_transient() && attempt < 20 => {
                        tokio::time::sleep(backoff.next_delay()).await
                    }
                    Err(e) => return Err(e.context("stop `duplex run` before teardown")),
                }
            }
        }
    }
    let dropped = client
        .query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&name])
        .await
        .map_err(|e| Error::from_pg(e, true, "looking up the publication"))?
        .is_some();
    if dropped {
        client
            .batch_execute(&format!(
                "DROP PUBLICATION {}",
                crate::model::pg_ident(&name)
            ))
            .await
            .map_err(|e| Error::from_pg(e, true, "dropping the publication"))?;
        done.push(format!("dropped publication {name}"));
    }
    if crate::origin::echo_mode(&client).await? == crate::origin::Echo::Origin {
        for writer in [crate::model::STREAM_WRITER, crate::model::DLQ_WRITER] {
            let origin = crate::origin::origin_name(&cfg.pipeline, writer);
            crate::origin::drop(&client, &origin).await?;
            done.push(format!(
                "dropped replication origin {origin} (if it existed)"
            ));
        }
    } else {
        done.push("no replication origin to drop (this role uses the marker rule)".to_string());
    }
    Ok(done)
}

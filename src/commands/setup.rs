//! `duplex setup`: creates duplex's own tables on both sides ([`crate::state`]), records the
//! starting position, and for tables replicated from PostgreSQL the publication, the replication
//! slot and the origin.

use std::process::ExitCode;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::mapping::{load_plan, Plan};
use crate::model::Position;
use crate::source::mysql as my;
use crate::state::{checkpoint, progress};

/// Runs `duplex setup` and prints where the pipeline starts.
pub async fn main(cfg: &Config, start_over: bool) -> ExitCode {
    let done = async {
        if !start_over {
            return setup(cfg).await;
        }
        // Not while a `duplex run` of the pipeline holds it.
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        let _lock = super::lock::pipeline_lock(cfg, Some(super::lock::LOCK_WAIT), stopped).await?;
        start_the_pipeline_over(cfg).await?;
        setup(cfg).await
    };
    match done.await {
        Ok(pos) => {
            println!(
                "duplex tables ready in schema {}; pipeline {} starts at {}",
                cfg.postgres.duplex_schema,
                cfg.pipeline,
                pos.map(|p| p.to_string())
                    .unwrap_or_else(|| "the current binlog end".into())
            );
            ExitCode::SUCCESS
        }
        Err(e) => super::failed(&e),
    }
}

/// `duplex setup`: checks first — the mapping set against both schemas, and every privilege
/// setup and run will use — and creates nothing when something is missing; then creates duplex's
/// tables on both sides, for tables replicated from PostgreSQL the origins, the publication and
/// (last) the slot, and records the current binlog end as the starting checkpoint when there is
/// none yet. A slot it created is dropped again when a later step fails, so a failed setup
/// leaves no slot for PostgreSQL to keep WAL for.
pub async fn setup(cfg: &Config) -> Result<Option<Position>> {
    let plan = load_plan(cfg).await?;
    refuse_missing_privileges(cfg, &plan).await?;
    let client = crate::connect::postgres(&cfg.postgres, "duplex setup").await?;
    crate::state::setup_postgres(&client, &cfg.postgres.duplex_schema).await?;
    let mut my_conn = crate::connect::mysql(&cfg.mysql, None, true).await?;
    crate::state::setup_mysql(&mut my_conn, &cfg.mysql.duplex_database).await?;
    if plan.has_reverse() {
        let mode = crate::origin::echo_mode(&client).await?;
        if mode == crate::origin::Echo::Origin {
            for writer in [crate::model::STREAM_WRITER, crate::model::DLQ_WRITER] {
                crate::origin::create(&client, &crate::origin::origin_name(&cfg.pipeline, writer))
                    .await?;
            }
        }
        if setup_publication_and_slot(cfg, &client, &plan, mode).await? {
            if let Err(e) = forget_the_way_back(cfg, &mut my_conn).await {
                drop_new_slot(cfg, &client).await;
                return Err(e);
            }
        }
    }
    let _ = my_conn.disconnect().await;
    let existing = checkpoint::load(
        &client,
        &cfg.postgres.duplex_schema,
        &cfg.pipeline,
        crate::model::FORWARD,
    )
    .await?;
    if existing.is_some() {
        return Ok(existing);
    }
    let position = match &cfg.mysql.start_position {
        Some(p) => Position::Mysql(p.parse()?),
        None => {
            let mut conn = crate::connect::mysql(&cfg.mysql, None, false).await?;
            Position::Mysql(my::current_position(&mut conn).await?)
        }
    };
    let stmt = client
        .prepare(&checkpoint::store_sql(&cfg.postgres.duplex_schema))
        .await
        .map_err(|e| Error::from_pg(e, true, "preparing the checkpoint statement"))?;
    checkpoint::store(
        &client,
        &stmt,
        &cfg.pipeline,
        crate::model::FORWARD,
        &position,
    )
    .await?;
    Ok(Some(position))
}

/// Refuses to set anything up while a privilege setup or run will use is missing: the error
/// lists each with the statement that grants it.
async fn refuse_missing_privileges(cfg: &Config, plan: &Plan) -> Result<()> {
    let lines = super::check::check_privileges(cfg, plan).await;
    let gaps: Vec<String> = lines
        .iter()
        .filter(|l| !l.ok)
        .map(|l| format!("  {}\n    fix: {}", l.what, l.fix))
        .collect();
    if gaps.is_empty() {
        return Ok(());
    }
    Err(Error::new(
        crate::error::ErrorKind::Config,
        format!(
            "nothing was set up: {} privilege(s) missing\n{}",
            gaps.len(),
            gaps.join("\n")
        ),
    ))
}

/// Drops the slot a failed setup created (best effort: it is logged when it cannot).
async fn drop_new_slot(cfg: &Config, client: &tokio_postgres::Client) {
    let name = crate::model::slot_name(&cfg.pipeline);
    if let Err(e) = client
        .execute("SELECT pg_drop_replication_slot($1)", &[&name])
        .await
    {
        tracing::warn!(slot = %name, error = %e, "a failed setup could not drop the slot it created: drop it with `duplex teardown`");
    }
}

/// `duplex setup --start-over`: drops the slot, the publication and the origins (setup makes
/// them anew, and a new slot forgets the way back's checkpoint and copies, see
/// [`forget_the_way_back`]), forgets the forward checkpoint (setup records the binlog's current
/// end) and turns the forward copies into pending resyncs.
async fn start_the_pipeline_over(cfg: &Config) -> Result<()> {
    for line in super::teardown::teardown(cfg).await? {
        println!("{line}");
    }
    let client = crate::connect::postgres(&cfg.postgres, "duplex setup").await?;
    crate::state::setup_postgres(&client, &cfg.postgres.duplex_schema).await?;
    let s = crate::model::pg_ident(&cfg.postgres.duplex_schema);
    let what = "forgetting the forward direction's positions";
    for sql in [
        checkpoint::forget_sql(&format!("{s}.{}", checkpoint::TABLE), true),
        progress::resync_pending_sql(&format!("{s}.snapshot"), true),
    ] {
        client
            .execute(&sql, &[&cfg.pipeline, &crate::model::FORWARD])
            .await
            .map_err(|e| Error::from_pg(e, true, what))?;
    }
    println!(
        "pipeline {} starts over: its checkpoints are forgotten and every table it copied is resynced at the next start",
        cfg.pipeline
    );
    Ok(())
}

/// A new slot starts the way back over: the checkpoint and the copies of an earlier slot name
/// positions of its history (after `teardown`, or of a PostgreSQL since restored from a
/// backup), which would skip changes of the new one. The checkpoint is forgotten, so the stream
/// starts at the slot, and each earlier copy becomes a pending resync: the next start copies
/// the table again and removes the rows the CRM no longer has.
async fn forget_the_way_back(cfg: &Config, conn: &mut mysql_async::Conn) -> Result<()> {
    use mysql_async::prelude::Queryable;
    let db = crate::model::my_ident(&cfg.mysql.duplex_database);
    let what = "forgetting the way back's earlier positions";
    let mut forgot = 0;
    for sql in [
        checkpoint::forget_sql(&format!("{db}.{}", checkpoint::TABLE), false),
        progress::resync_pending_sql(&format!("{db}.snapshot"), false),
    ] {
        conn.exec_drop(sql, (&cfg.pipeline, crate::model::REVERSE))
            .await
            .map_err(|e| Error::from_mysql(e, true, what))?;
        forgot += conn.affected_rows();
    }
    if forgot > 0 {
        tracing::info!(pipeline = %cfg.pipeline, "a new replication slot: the way back starts from it; its earlier checkpoint is forgotten and the tables replicated from PostgreSQL are resynced at the next start");
    }
    Ok(())
}

/// Creates (or updates) the publication of the tables replicated from PostgreSQL, and the
/// slot; `true` when the slot is new.
async fn setup_publication_and_slot(
    cfg: &Config,
    client: &tokio_postgres::Client,
    plan: &Plan,
    mode: crate::origin::Echo,
) -> Result<bool> {
    let name = crate::model::slot_name(&cfg.pipeline);
    let marker = mode == crate::origin::Echo::Marker;
    crate::source::postgres::publication::set(cfg, client, plan, marker).await?;
    let slot_exists = client
        .query_opt(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
            &[&name],
        )
        .await
        .map_err(|e| Error::from_pg(e, true, "looking up the replication slot"))?
        .is_some();
    if !slot_exists {
        let mut conn = crate::source::postgres::stream::ReplicationConn::connect(
            &cfg.postgres,
            "duplex setup",
        )
        .await?;
        let at = conn.create_slot(&name).await?;
        tracing::info!(slot = %name, at = %at, "replication slot created");
    }
    Ok(!slot_exists)
}

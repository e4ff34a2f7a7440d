//! What `duplex verify` and `duplex repair` leave in duplex's PostgreSQL schema: one
//! `verify_run` row per finished run (its counts and report; `duplex status` shows the last),
//! and one `repair_log` row per repaired key, written in the repair's own transaction.

use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::model::pg_ident;

pub fn pg_ddl(schema: &str) -> String {
    let s = pg_ident(schema);
    format!(
        "CREATE TABLE IF NOT EXISTS {s}.verify_run (
             id            bigserial PRIMARY KEY,
             pipeline      text NOT NULL,
             started_at    timestamptz NOT NULL,
             finished_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
             online        boolean NOT NULL,
             rows_checked  bigint NOT NULL,
             mismatches    bigint NOT NULL,
             unsettled     bigint NOT NULL,
             report        jsonb NOT NULL
         );
         CREATE INDEX IF NOT EXISTS verify_run_pipeline ON {s}.verify_run (pipeline, id);
         CREATE TABLE IF NOT EXISTS {s}.repair_log (
             id            bigserial PRIMARY KEY,
             pipeline      text NOT NULL,
             at            timestamptz NOT NULL DEFAULT clock_timestamp(),
             target_table  text NOT NULL,
             key           text NOT NULL,
             action        text NOT NULL,
             detail        text NOT NULL,
             position      text NOT NULL
         )"
    )
}

/// A finished run as `verify_run` keeps it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Run {
    pub finished_at: String,
    pub online: bool,
    pub rows_checked: i64,
    pub mismatches: i64,
    pub unsettled: i64,
}

/// Records a finished run.
#[allow(clippy::too_many_arguments)]
pub async fn store(
    client: &Client,
    schema: &str,
    pipeline: &str,
    started_at: &str,
    online: bool,
    counts: (i64, i64, i64),
    report: &serde_json::Value,
) -> Result<()> {
    let sql = format!(
        "INSERT INTO {}.verify_run (pipeline, started_at, online, rows_checked, mismatches, unsettled, report) \
         VALUES ($1, $2::text::timestamptz, $3, $4, $5, $6, $7::text::jsonb)",
        pg_ident(schema)
    );
    client
        .execute(
            &sql,
            &[
                &pipeline,
                &started_at,
                &online,
                &counts.0,
                &counts.1,
                &counts.2,
                &report.to_string(),
            ],
        )
        .await
        .map_err(|e| {
            Error::from_pg(
                e,
                true,
                "recording the verify run (run `duplex setup` to create verify_run)",
            )
        })?;
    Ok(())
}

/// The last finished run of a pipeline, if any (and if the table exists).
pub async fn last(client: &Client, schema: &str, pipeline: &str) -> Result<Option<Run>> {
    let sql = format!(
        "SELECT to_char(finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS \"UTC\"'), online, rows_checked, mismatches, unsettled \
         FROM {}.verify_run WHERE pipeline = $1 ORDER BY id DESC LIMIT 1",
        pg_ident(schema)
    );
    let row = client
        .query_opt(&sql, &[&pipeline])
        .await
        .map_err(|e| Error::from_pg(e, true, "reading the last verify run"))?;
    Ok(row.map(|r| Run {
        finished_at: r.get(0),
        online: r.get(1),
        rows_checked: r.get(2),
        mismatches: r.get(3),
        unsettled: r.get(4),
    }))
}

//! The publication a pipeline's slot reads: the tables replicated from PostgreSQL (with
//! `REPLICA IDENTITY FULL` where columns go both ways), the reverse heartbeat, and under the
//! marker rule duplex's checkpoint table. `duplex setup` sets it exactly; the reverse direction
//! extends it at its start with the tables of the mapping set it runs with, so a reload that maps
//! a new table streams that table's changes from then on, read with the new set (the set is in
//! place before the table enters the publication, so none of its changes meets the old one).
//!
//! Owns that table list and its SQL. Uses the mapping plan's reverse tables, the configuration
//! and the checkpoint and heartbeat table names.

use tokio_postgres::Client;

use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::mapping::Plan;
use crate::model::{pg_ident, slot_name, TableName, Way};

/// The tables the publication must hold for `plan`.
pub fn tables(cfg: &Config, plan: &Plan, marker: bool) -> Vec<TableName> {
    let mut tables: Vec<TableName> = plan.reverse.iter().map(|r| r.source.clone()).collect();
    // The reverse direction's heartbeat travels through the slot like any change.
    tables.push(crate::state::heartbeat::source_table(Way::Reverse, cfg));
    // The marker rule needs the checkpoint table's changes in the stream.
    if marker {
        tables.push(TableName::new(
            cfg.postgres.duplex_schema.clone(),
            crate::state::checkpoint::TABLE,
        ));
    }
    tables
}

/// Whether `table`'s replica identity carries the columns `needed` in every UPDATE's and
/// DELETE's old row: FULL, or a primary key / identity index holding them all.
pub async fn identity_covers(
    client: &Client,
    table: &TableName,
    needed: &[String],
) -> Result<bool> {
    let row = client
        .query_opt(
            "SELECT c.relreplident::text,
                    ARRAY(SELECT a.attname::text FROM pg_index i
                          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                          WHERE i.indrelid = c.oid
                            AND ((c.relreplident = 'd' AND i.indisprimary)
                              OR (c.relreplident = 'i' AND i.indisreplident)))
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2",
            &[&table.schema, &table.name],
        )
        .await
        .map_err(|e| Error::from_pg(e, true, &format!("reading the replica identity of {table}")))?;
    let Some(row) = row else {
        return Ok(false);
    };
    let (kind, cols): (String, Vec<String>) = (row.get(0), row.get(1));
    Ok(kind == "f" || needed.iter().all(|n| cols.contains(n)))
}

/// Sets `REPLICA IDENTITY FULL`, among `only` (all when `None`), on the tables replicated from
/// PostgreSQL whose old rows would lack what duplex needs: every column where columns go both
/// ways (a change carries only the columns it changed, which takes the whole old row), the
/// mapping key elsewhere (deletes and key changes are found by it).
async fn full_identity(client: &Client, plan: &Plan, only: Option<&[TableName]>) -> Result<()> {
    for r in plan
        .reverse
        .iter()
        .filter(|r| only.is_none_or(|o| o.contains(&r.source)))
    {
        let key: Vec<String> = r
            .key
            .iter()
            .map(|&k| r.columns[k].pg_name.clone())
            .collect();
        let needs_full =
            !r.guarded().is_empty() || !identity_covers(client, &r.source, &key).await?;
        if !needs_full {
            continue;
        }
        let sql = format!("ALTER TABLE {} REPLICA IDENTITY FULL", r.source.pg_quoted());
        client.batch_execute(&sql).await.map_err(|e| {
            Error::from_pg(
                e,
                true,
                &format!(
                    "setting REPLICA IDENTITY FULL on {} (duplex needs its old rows to hold the mapping key, or every column where columns go both ways)",
                    r.source
                ),
            )
        })?;
    }
    Ok(())
}

/// Creates the publication, or sets it to exactly the tables of `plan` (`duplex setup`).
pub async fn set(cfg: &Config, client: &Client, plan: &Plan, marker: bool) -> Result<()> {
    let name = slot_name(&cfg.pipeline);
    let list: Vec<String> = tables(cfg, plan, marker)
        .iter()
        .map(TableName::pg_quoted)
        .collect();
    full_identity(client, plan, None).await?;
    let exists = client
        .query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&name])
        .await
        .map_err(|e| Error::from_pg(e, true, "looking up the publication"))?
        .is_some();
    let verb = if exists { "ALTER" } else { "CREATE" };
    let how = if exists { "SET" } else { "FOR" };
    let sql = format!(
        "{verb} PUBLICATION {} {how} TABLE {}",
        pg_ident(&name),
        list.join(", ")
    );
    client
        .batch_execute(&sql)
        .await
        .map_err(|e| Error::from_pg(e, true, &format!("creating publication {name}")))
}

/// Adds to the publication the tables of `plan` it lacks (after giving those with `both`
/// columns `REPLICA IDENTITY FULL`); returns them.
pub async fn extend(cfg: &Config, client: &Client, plan: &Plan) -> Result<Vec<TableName>> {
    let name = slot_name(&cfg.pipeline);
    let rows = client
        .query(
            "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = $1",
            &[&name],
        )
        .await
        .map_err(|e| Error::from_pg(e, true, "reading the publication's tables"))?;
    let published: Vec<TableName> = rows
        .iter()
        .map(|r| TableName::new(r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect();
    let missing: Vec<TableName> = tables(cfg, plan, false)
        .into_iter()
        .filter(|t| !published.contains(t))
        .collect();
    if missing.is_empty() {
        return Ok(missing);
    }
    if published.is_empty() {
        return Err(Error::new(
            ErrorKind::ServerSetting,
            format!("publication {name} is missing or empty: run `duplex setup`"),
        ));
    }
    full_identity(client, plan, Some(&missing)).await?;
    let list: Vec<String> = missing.iter().map(TableName::pg_quoted).collect();
    let sql = format!(
        "ALTER PUBLICATION {} ADD TABLE {}",
        pg_ident(&name),
        list.join(", ")
    );
    client.batch_execute(&sql).await.map_err(|e| {
        Error::from_pg(
            e,
            true,
            &format!("adding {} to publication {name} (the mappings now replicate them from PostgreSQL; this needs an account owning them, or run `duplex setup`)", list.join(", ")),
        )
    })?;
    Ok(missing)
}

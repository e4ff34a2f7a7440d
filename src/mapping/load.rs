//! Plan loading: the mapping files of `[duplex] mappings` → the compiled plan, checked against
//! the live schemas of both databases. `duplex check`, `run`, a SIGHUP reload and `dlq retry`
//! all load their plan here, so they run exactly the same validation.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::Config;
use crate::error::Result;

use super::compile::referenced_tables;
use super::Plan;

/// Loads the mapping set and compiles it against the live schemas of both databases.
pub async fn load_plan(cfg: &Config) -> Result<Plan> {
    compile_live(cfg, Arc::new(super::load_dir(&cfg.mappings)?)).await
}

/// The running plan's own mapping files compiled again against the live schemas (after a
/// transient error a schema may have changed under the plan). The files on disk are not read:
/// a file half-edited there, or a set never reloaded, is not adopted behind the operator's back.
pub async fn recheck_plan(cfg: &Config, running: &Plan) -> Result<Plan> {
    match &running.files {
        Some(set) => compile_live(cfg, set.clone()).await,
        None => load_plan(cfg).await,
    }
}

async fn compile_live(cfg: &Config, set: Arc<super::MappingSet>) -> Result<Plan> {
    let (sources, targets) = referenced_tables(&set, &cfg.mysql.database, &cfg.postgres.schema);
    let mut conn = crate::connect::mysql(&cfg.mysql, None, false).await?;
    let mut source_schemas = HashMap::new();
    for name in sources {
        if let Some(t) = crate::catalog::mysql::read_table(&mut conn, &name).await? {
            source_schemas.insert(name, Arc::new(t));
        }
    }
    let _ = conn.disconnect().await;
    let client = crate::connect::postgres(&cfg.postgres, "duplex check").await?;
    let mut target_tables = HashMap::new();
    for name in targets {
        if let Some(t) = crate::catalog::postgres::read_table(&client, &name).await? {
            target_tables.insert(name, t);
        }
    }
    let mut plan = super::compile(
        &set,
        &cfg.mysql.database,
        &cfg.postgres.schema,
        &source_schemas,
        &target_tables,
    )?;
    plan.files = Some(set);
    Ok(plan)
}

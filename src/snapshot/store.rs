//! Where a direction keeps its snapshot progress: the target database, through the sink's own
//! connection, so a chunk's rows and the progress row that counts them commit together. The
//! progress rows themselves (their encoding, DDL, reads and writes) are
//! [`crate::state::progress`].

use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::{pg_ident, Position, FORWARD, REVERSE};
use crate::sink::mysql::MySqlSink;
use crate::sink::postgres::PgSink;
use crate::state::progress::{my_ddl, my_load, my_store, pg_ddl, pg_load, pg_store, Progress};
use crate::state::{checkpoint, dead_letter};

/// Where a direction keeps its snapshot progress: the target database, through the sink's own
/// connection (chunks store their progress there too, see `Sink::commit_progress`).
pub trait ProgressStore {
    /// Creates the progress table when a pipeline set up before snapshots existed lacks it.
    fn ensure_progress_table(
        &mut self,
        cfg: &Config,
    ) -> impl std::future::Future<Output = Result<()>> + Send;

    /// The direction's progress rows.
    fn load_progress(
        &mut self,
        cfg: &Config,
    ) -> impl std::future::Future<Output = Result<Vec<Progress>>> + Send;

    /// Stores the progress rows copies start with, before any chunk; on PostgreSQL, in one
    /// transaction with the stream checkpoint `at` when the pipeline has none yet (the reverse
    /// stream starts where its slot is, so MySQL stores only the rows).
    fn start_copies(
        &mut self,
        cfg: &Config,
        starts: &[&Progress],
        at: &Position,
    ) -> impl std::future::Future<Output = Result<()>> + Send;
}

impl ProgressStore for PgSink {
    async fn ensure_progress_table(&mut self, cfg: &Config) -> Result<()> {
        let table = format!("{}.snapshot", pg_ident(&cfg.postgres.duplex_schema));
        let exists = self
            .client()
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
            .await
            .map_err(|e| Error::from_pg(e, true, "looking up duplex's snapshot table"))?
            .get::<_, bool>(0);
        if exists {
            return Ok(());
        }
        self.client()
            .batch_execute(&pg_ddl(&cfg.postgres.duplex_schema))
            .await
            .map_err(|e| {
                Error::from_pg(
                    e,
                    true,
                    "creating duplex's snapshot table (run `duplex setup`)",
                )
            })
    }

    async fn load_progress(&mut self, cfg: &Config) -> Result<Vec<Progress>> {
        pg_load(
            self.client(),
            &cfg.postgres.duplex_schema,
            &cfg.pipeline,
            FORWARD,
        )
        .await
    }

    async fn start_copies(
        &mut self,
        cfg: &Config,
        starts: &[&Progress],
        at: &Position,
    ) -> Result<()> {
        let client = self.client();
        let schema = &cfg.postgres.duplex_schema;
        let store = async {
            client
                .batch_execute("BEGIN")
                .await
                .map_err(|e| Error::from_pg(e, true, "starting a transaction"))?;
            for p in starts {
                pg_store(client, schema, &cfg.pipeline, FORWARD, p).await?;
                if p.is_fresh() {
                    dead_letter::pg_supersede(client, schema, &cfg.pipeline, &p.table).await?;
                }
            }
            if checkpoint::load(client, schema, &cfg.pipeline, FORWARD)
                .await?
                .is_none()
            {
                let stmt = client
                    .prepare(&checkpoint::store_sql(schema))
                    .await
                    .map_err(|e| Error::from_pg(e, true, "preparing the checkpoint statement"))?;
                checkpoint::store(client, &stmt, &cfg.pipeline, FORWARD, at).await?;
            }
            client
                .batch_execute("COMMIT")
                .await
                .map_err(|e| Error::from_pg(e, true, "committing snapshot progress"))
        }
        .await;
        if store.is_err() {
            let _ = client.batch_execute("ROLLBACK").await;
        }
        store
    }
}

impl ProgressStore for MySqlSink {
    async fn ensure_progress_table(&mut self, cfg: &Config) -> Result<()> {
        use mysql_async::prelude::Queryable;
        let db = &cfg.mysql.duplex_database;
        let exists: Option<u8> = self
            .conn()
            .exec_first(
                "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'snapshot'",
                (db,),
            )
            .await
            .map_err(|e| Error::from_mysql(e, true, "looking up duplex's snapshot table"))?;
        if exists.is_some() {
            return Ok(());
        }
        self.conn().query_drop(my_ddl(db)).await.map_err(|e| {
            Error::from_mysql(
                e,
                true,
                "creating duplex's snapshot table (run `duplex setup`)",
            )
        })
    }

    async fn load_progress(&mut self, cfg: &Config) -> Result<Vec<Progress>> {
        my_load(
            self.conn(),
            &cfg.mysql.duplex_database,
            &cfg.pipeline,
            REVERSE,
        )
        .await
    }

    async fn start_copies(
        &mut self,
        cfg: &Config,
        starts: &[&Progress],
        _at: &Position,
    ) -> Result<()> {
        for p in starts {
            my_store(
                self.conn(),
                &cfg.mysql.duplex_database,
                &cfg.pipeline,
                REVERSE,
                p,
            )
            .await?;
            if p.is_fresh() {
                dead_letter::my_supersede(
                    self.conn(),
                    &cfg.mysql.duplex_database,
                    &cfg.pipeline,
                    &p.table,
                )
                .await?;
            }
        }
        Ok(())
    }
}

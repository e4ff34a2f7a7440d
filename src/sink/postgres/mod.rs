//! The PostgreSQL sink: applies mapped changes with batched upserts and deletes by key, inside one
//! transaction per batch of source transactions, together with the checkpoint.
//!
//! Buffered changes form *runs*: consecutive changes of one table and one kind (upsert or
//! delete). Within a run, later changes of a key replace earlier ones (the target transaction
//! commits only the final state anyway), and runs are written in order, so cross-table order
//! (parents before children) is kept. Small runs go out as prepared multi-row statements; large
//! ones through binary COPY into a session-local staging table and one `INSERT … SELECT … ON
//! CONFLICT` / `DELETE … USING`.
//!
//! This module owns the public change types, the connection, [`PgSink`] (its state, set up by
//! [`PgSink::connect`]) and the wiring: the [`Sink`] implementation and the commit sequence. The
//! parts, each a set of `PgSink` methods, are:
//! - `run`: the run buffer (by-key replacement, flush; which path a run takes);
//! - `values` and `sql`: runs written as prepared multi-row statements, and their SQL text;
//! - `copy`: large runs through binary COPY, directly or via the staging tables;
//! - `pivot`: pivot entries' values stored and their rows recomputed;
//! - `lookup`: the keys touched in the transaction and the look-ups resolved from them;
//! - `careful`: one row under a savepoint, and the dead letters written at commit;
//! - `merge`: which change may join an earlier run of its table, ahead of the runs between;
//! - `queue`: statements sent back to back, one round trip per batch of them.
//!
//! The parts may use each other's `pub(super)` methods and the sink's fields; nothing outside
//! this module sees them.

pub mod encode;
pub mod prepare;

mod careful;
mod copy;
mod guard;
mod lookup;
mod merge;
mod newest;
mod pivot;
mod queue;
mod run;
pub mod sql;
mod values;

use std::collections::HashMap;
use std::sync::Arc;

use tokio_postgres::types::Type;
use tokio_postgres::{Client, Statement};

use self::encode::EncodedRow;
use self::run::Run;
use super::{DeadLetter, Mark, Sink};
use crate::config::PostgresConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::mapping::Plan;
use crate::model::{pg_ident, Position};
use crate::state::checkpoint;

pub use self::guard::Guard;
pub use self::prepare::PgEncoder;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Upsert,
    Delete,
    /// The entry's columns of the row with this key set to NULL (`on_delete = "clear"`).
    Clear,
    /// One property of a pivot entry set or cleared.
    Pivot,
    /// The reverse direction's last change of a `newest` column, read back from MySQL.
    Relay,
}

/// One property value of a pivot entry for one target row and column.
#[derive(Debug, Clone)]
pub struct PivotCell {
    /// The target row's key, as text.
    pub key: String,
    /// Index into the plan's `PivotPlan::columns`.
    pub column: usize,
    pub priority: i32,
    /// PostgreSQL text input of the value; `None` removes this code's value.
    pub value: Option<String>,
}

/// A mapped, encoded change for one target table.
#[derive(Debug, Clone)]
pub struct PgChange {
    /// Index into `Plan::tables`.
    pub table: usize,
    pub kind: Kind,
    /// Upsert: every mapped column in plan order. Delete: the key columns in key order.
    pub row: EncodedRow,
    /// The key's bytes, to find later changes of the same row.
    pub key: Vec<u8>,
    /// The change is a source INSERT.
    pub from_insert: bool,
    /// The first key column's value as text, for resolving look-ups after the write.
    pub key_text: Option<String>,
    pub pivot: Option<Box<PivotCell>>,
    /// A change of a table with `both` columns: checked for conflicts before it is written.
    pub guard: Option<Box<Guard>>,
    /// [`Kind::Relay`]: what the reverse direction tells.
    pub relay: Option<Box<crate::state::newest::Relay>>,
}

impl PgChange {
    /// One property value of pivot entry `table` for the row with key `key` (text), or its
    /// removal (`value` None); changes of the same key, column and priority replace each other.
    pub fn pivot(
        table: usize,
        key: String,
        column: usize,
        priority: i32,
        value: Option<String>,
    ) -> PgChange {
        let mut dedup = key.clone().into_bytes();
        dedup.push(0);
        dedup.extend_from_slice(&(column as u32).to_be_bytes());
        dedup.extend_from_slice(&priority.to_be_bytes());
        PgChange {
            table,
            kind: Kind::Pivot,
            row: EncodedRow::default(),
            key: dedup,
            from_insert: false,
            key_text: Some(key.clone()),
            pivot: Some(Box::new(PivotCell {
                key,
                column,
                priority,
                value,
            })),
            guard: None,
            relay: None,
        }
    }
}

pub struct PgSink {
    client: Client,
    plan: Arc<Plan>,
    pipeline: String,
    tz: chrono_tz::Tz,
    duplex_schema: String,
    checkpoint_stmt: Statement,
    dead_letter_stmt: Statement,
    stmts: HashMap<(usize, Kind, usize), Statement>,
    runs: Vec<Run>,
    buffered: usize,
    letters: Vec<DeadLetter>,
    in_txn: bool,
    /// The statement that touches the checkpoint row first in every transaction, when echo
    /// suppression uses the marker rule.
    marker: Option<Statement>,
    /// This session holds the pipeline's replication origin (released by [`PgSink::release`]).
    origin_bound: bool,
    /// Keys (as text) written in the open transaction, per plan table, of tables other entries
    /// look up: their waiting children are filled in before the commit.
    touched: HashMap<usize, Vec<String>>,
    /// Keys (as text) of rows cleared in the open transaction, per plan table: their look-up
    /// columns are filled again before the commit.
    refill: HashMap<usize, Vec<String>>,
    /// Keys (as text) of rows deleted in the open transaction, per plan table: their values in
    /// `duplex.pivot` go with them.
    deleted: HashMap<usize, Vec<String>>,
    /// How many keys `touched`, `refill` and `deleted` hold (see [`lookup`]'s bound).
    noted: usize,
    /// Per plan table: what its touched keys are needed for; other tables' keys are not kept.
    key_uses: Vec<lookup::KeyUse>,
    /// Which change may join an earlier run (see [`merge`]).
    moves: merge::Moves,
    /// Per pivot entry, its prepared statements (see [`PgSink::pivot_statements`]).
    pivot_stmts: HashMap<usize, Arc<[Statement; 2]>>,
    /// Guarded changes held back in the runs (`guard`), since the runs were last written.
    holding: usize,
    /// Per plan table, the statement reading a row for the conflict check.
    guard_stmts: HashMap<usize, Statement>,
    /// Per plan table, the conditional UPDATE of duplex's own changes read back.
    own_cas_stmts: HashMap<usize, Statement>,
    /// Conflicts found in the open transaction, logged with its commit.
    conflicts: Vec<crate::state::conflict::Conflict>,
    /// Inserts a conflict (prepared when a table has `both` columns).
    conflict_stmt: Option<Statement>,
    /// MySQL's `newest` table, whose rows (read back from duplex's own transactions) carry the
    /// reverse direction's half of `newest` columns; `None` when no column is `newest`.
    relays: Option<crate::model::TableName>,
    /// This direction's halves of `newest` columns decided in the open transaction, to write.
    notes: Vec<newest::Note>,
    /// Per plan table and column, the `newest` statements.
    newest_stmts: HashMap<(usize, usize), Arc<newest::Statements>>,
}

impl PgSink {
    /// Reads the reverse direction's `newest` halves from rows of `table` (MySQL's `newest`
    /// table) in duplex's own transactions read back.
    pub fn read_relays(&mut self, table: crate::model::TableName) {
        self.relays = Some(table);
    }

    /// Closes the writer in order: its replication origin is free for the next writer at once
    /// (the stream's, right after the copy), not once this backend has exited.
    pub async fn release(self) {
        if self.origin_bound {
            crate::origin::release_session(&self.client).await;
        }
    }

    pub async fn connect(
        cfg: &PostgresConfig,
        plan: Arc<Plan>,
        pipeline: &str,
        tz: chrono_tz::Tz,
    ) -> Result<PgSink> {
        Self::connect_writer(cfg, plan, pipeline, tz, crate::model::STREAM_WRITER).await
    }

    /// [`PgSink::connect`] as writer `writer` of the pipeline (its own replication origin).
    pub async fn connect_writer(
        cfg: &PostgresConfig,
        plan: Arc<Plan>,
        pipeline: &str,
        tz: chrono_tz::Tz,
        writer: u32,
    ) -> Result<PgSink> {
        let client = crate::connect::postgres(cfg, &format!("duplex {pipeline}")).await?;
        // A writer that died without a reset leaves its transaction open on the server, with
        // its row locks, until this ends it (duplex never idles in a transaction that long:
        // a silent source fails the batch within the read timeout).
        // Every statement of the writer finds rows by key, so a generic plan serves every
        // execution; a custom plan would be planned again at each one (for the pivot's
        // recomputation that planning cost more than running it).
        client
            .batch_execute(&format!(
                "SET idle_in_transaction_session_timeout = '{}s'; SET plan_cache_mode = force_generic_plan",
                4 * cfg.read_timeout_s
            ))
            .await
            .map_err(|e| Error::from_pg(e, true, "preparing the writer session"))?;
        let marker = tag_writes(&client, cfg, &plan, pipeline, writer).await?;
        let origin_bound = marker.is_none() && plan.has_reverse();
        let key_uses = lookup::key_uses(&plan);
        let moves = merge::Moves::read(&client, &plan).await?;
        let Statements {
            checkpoint_stmt,
            dead_letter_stmt,
            conflict_stmt,
        } = Statements::prepare(&client, cfg, &plan).await?;
        if plan.tables.iter().any(|t| t.is_pivot()) {
            let sql = format!(
                "SELECT 1 FROM {}.pivot LIMIT 0",
                pg_ident(&cfg.duplex_schema)
            );
            client.batch_execute(&sql).await.map_err(|e| {
                Error::from_pg(
                    e,
                    true,
                    "reading duplex's pivot table, which the mapping's pivot entries need (run `duplex setup`)",
                )
            })?;
        }
        if plan.tables.iter().any(|t| t.has_newest()) {
            let sql = format!(
                "SELECT 1 FROM {}.{} LIMIT 0",
                pg_ident(&cfg.duplex_schema),
                crate::state::newest::TABLE
            );
            client.batch_execute(&sql).await.map_err(|e| {
                Error::from_pg(
                    e,
                    true,
                    "reading duplex's newest table, which `conflict = \"newest\"` needs (run `duplex setup`)",
                )
            })?;
        }
        // Session-local staging tables for large runs, created outside any transaction.
        let ddl = copy::staging_ddl(&plan);
        if !ddl.is_empty() {
            client
                .batch_execute(&ddl)
                .await
                .map_err(|e| Error::from_pg(e, true, "creating staging tables"))?;
        }
        Ok(PgSink {
            client,
            plan,
            pipeline: pipeline.to_string(),
            tz,
            duplex_schema: cfg.duplex_schema.clone(),
            checkpoint_stmt,
            dead_letter_stmt,
            stmts: HashMap::new(),
            runs: Vec::new(),
            buffered: 0,
            letters: Vec::new(),
            in_txn: false,
            origin_bound,
            marker,
            touched: HashMap::new(),
            refill: HashMap::new(),
            deleted: HashMap::new(),
            noted: 0,
            key_uses,
            moves,
            pivot_stmts: HashMap::new(),
            holding: 0,
            guard_stmts: HashMap::new(),
            own_cas_stmts: HashMap::new(),
            conflicts: Vec::new(),
            conflict_stmt,
            relays: None,
            notes: Vec::new(),
            newest_stmts: HashMap::new(),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Logs the conflicts found in the open transaction; returns them, to be counted once the
    /// transaction commits.
    async fn write_conflicts(
        &mut self,
        mark: &Mark<'_>,
    ) -> Result<Vec<crate::state::conflict::Conflict>> {
        let conflicts = std::mem::take(&mut self.conflicts);
        let (Some(stmt), false) = (&self.conflict_stmt, conflicts.is_empty()) else {
            return Ok(conflicts);
        };
        let position = mark.position_text();
        for c in &conflicts {
            self.client
                .execute(
                    stmt,
                    &[
                        &self.pipeline,
                        &crate::model::FORWARD,
                        &c.target_table,
                        &c.key,
                        &c.column,
                        &c.before,
                        &c.incoming,
                        &c.current,
                        &c.policy,
                        &c.winner,
                        &c.txn_id,
                        &position,
                        &c.commit_time_us,
                        &c.other_commit_us,
                    ],
                )
                .await
                .map_err(|e| Error::from_pg(e, true, "writing the conflict log"))?;
        }
        Ok(conflicts)
    }
}

impl Sink for PgSink {
    type Encoder = PgEncoder;

    fn encoder(&self) -> PgEncoder {
        PgEncoder::new(self.plan.clone(), self.tz).with_relays(self.relays.clone(), &self.pipeline)
    }

    fn write_unit(&self) -> usize {
        run::FLUSH_ROWS
    }

    async fn checkpoint(&mut self) -> Result<Option<Position>> {
        checkpoint::load(
            &self.client,
            &self.duplex_schema,
            &self.pipeline,
            crate::model::FORWARD,
        )
        .await
    }

    async fn begin(&mut self) -> Result<()> {
        if !self.in_txn {
            self.client
                .batch_execute("BEGIN")
                .await
                .map_err(|e| Error::from_pg(e, true, "starting a transaction"))?;
            if let Some(m) = &self.marker {
                self.client
                    .execute(m, &[&self.pipeline, &crate::model::FORWARD])
                    .await
                    .map_err(|e| Error::from_pg(e, true, "marking the transaction"))?;
            }
            self.in_txn = true;
        }
        Ok(())
    }

    async fn push(&mut self, change: PgChange) -> Result<()> {
        if change.guard.is_some() {
            return self.push_guarded(change).await;
        }
        if change.kind == Kind::Relay {
            self.write_runs().await?;
            return self.apply_relay(change).await;
        }
        self.buffer(change).await
    }

    async fn push_careful(&mut self, change: PgChange) -> Result<()> {
        self.write_under_savepoint(change).await
    }

    fn dead_letter(&mut self, letter: DeadLetter) {
        self.letters.push(letter);
    }

    async fn prune(
        &mut self,
        source: &crate::model::TableSchema,
        after: Option<i64>,
        upto: Option<i64>,
        keep: &[i64],
    ) -> Result<u64> {
        let plan = self.plan.clone();
        let mut removed = 0;
        for t in plan.forward_for(&source.name) {
            let Some(key) = t.prune_key() else { continue };
            self.begin().await?;
            let k = crate::model::pg_ident(key);
            // `{k}::int8` in the key list test: an int4 key against the int8 array takes the
            // cross-type operator, which PostgreSQL tests element by element (50 ms per
            // 5,000-row chunk); int8 against int8 is hashed (0.7 ms). The range tests stay on
            // the bare column, so the index serves them.
            let sql = format!(
                "DELETE FROM {} WHERE ($1::int8 IS NULL OR {k} > $1) AND ($2::int8 IS NULL OR {k} <= $2) AND NOT ({k}::int8 = ANY($3::int8[]))",
                t.target.pg_quoted()
            );
            let keep: Vec<i64> = keep.to_vec();
            let err = |e| {
                Error::from_pg(
                    e,
                    true,
                    &format!("removing rows of {} the source no longer has", t.target),
                )
            };
            // Planned for its bounds (a range scan of the key's index): the session's generic
            // plans (see `connect_writer`) would scan the whole table for every chunk.
            self.client
                .batch_execute("SET LOCAL plan_cache_mode = force_custom_plan")
                .await
                .map_err(err)?;
            removed += self
                .client
                .execute(&sql, &[&after, &upto, &keep])
                .await
                .map_err(err)?;
            self.client
                .batch_execute("SET LOCAL plan_cache_mode = force_generic_plan")
                .await
                .map_err(err)?;
        }
        Ok(removed)
    }

    async fn finish(&mut self, mark: Mark<'_>) -> Result<()> {
        self.begin().await?;
        self.flush().await?;
        self.resolve_lookups().await?;
        self.forget_deleted().await?;
        self.noted = 0;
        self.write_letters(&mark).await?;
        let conflicts = self.write_conflicts(&mark).await?;
        match mark {
            Mark::Checkpoint(position) => {
                checkpoint::store(
                    &self.client,
                    &self.checkpoint_stmt,
                    &self.pipeline,
                    crate::model::FORWARD,
                    position,
                )
                .await?
            }
            Mark::Progress(p) => {
                crate::state::progress::pg_store(
                    &self.client,
                    &self.duplex_schema,
                    &self.pipeline,
                    crate::model::FORWARD,
                    p,
                )
                .await?
            }
            Mark::Nothing => {}
        }
        self.client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| Error::from_pg(e, true, "committing"))?;
        self.in_txn = false;
        super::count_conflicts(crate::model::FORWARD, conflicts);
        Ok(())
    }

    async fn rollback(&mut self) {
        self.runs.clear();
        self.holding = 0;
        self.notes.clear();
        self.conflicts.clear();
        self.touched.clear();
        self.refill.clear();
        self.deleted.clear();
        self.noted = 0;
        self.buffered = 0;
        self.letters.clear();
        if self.in_txn {
            let _ = self.client.batch_execute("ROLLBACK").await;
            self.in_txn = false;
        }
    }
}

/// Tags the session's writes when tables are also replicated from PostgreSQL, so that reader
/// drops them: a replication origin, or else the marker statement each transaction runs first
/// (returned).
async fn tag_writes(
    client: &Client,
    cfg: &PostgresConfig,
    plan: &Plan,
    pipeline: &str,
    writer: u32,
) -> Result<Option<Statement>> {
    if !plan.has_reverse() {
        return Ok(None);
    }
    match crate::origin::echo_mode(client).await? {
        crate::origin::Echo::Origin => {
            let name = crate::origin::origin_name(pipeline, writer);
            if writer != crate::model::STREAM_WRITER {
                // Installations set up before this writer existed: made on first use.
                crate::origin::create(client, &name).await?;
            }
            crate::origin::bind_session(client, &name).await?;
            Ok(None)
        }
        crate::origin::Echo::Marker => {
            refuse_an_echo(client, cfg, pipeline).await?;
            let sql = checkpoint::marker_sql(&cfg.duplex_schema);
            let stmt = client
                .prepare(&sql)
                .await
                .map_err(|e| Error::from_pg(e, true, "preparing the echo marker"))?;
            Ok(Some(stmt))
        }
    }
}

/// Refuses to write when the marker would not reach the pipeline's reader: `duplex setup` chose
/// replication origins (the publication lacks the checkpoint table) and this account may not
/// use them, so the writes would come back to MySQL as changes. (The other way round, marker
/// at setup and origins now, the origins are missing and binding one fails naming `duplex
/// setup`.)
async fn refuse_an_echo(client: &Client, cfg: &PostgresConfig, pipeline: &str) -> Result<()> {
    let publication = crate::model::slot_name(pipeline);
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE schemaname = $2 AND tablename = $3), count(*) \
             FROM pg_publication_tables WHERE pubname = $1",
            &[&publication, &cfg.duplex_schema, &checkpoint::TABLE],
        )
        .await
        .map_err(|e| Error::from_pg(e, true, "reading the publication's tables"))?;
    let (marked, all): (i64, i64) = (row.get(0), row.get(1));
    if marked > 0 || all == 0 {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::ServerSetting,
        format!(
            "duplex's writes to PostgreSQL would come back to MySQL as changes: `duplex setup` ran with \
             the replication origin functions (echo suppression by origin), but account {user} may not \
             execute them, so its writes are marked by the checkpoint row, which publication \
             {publication} does not carry. Fix: GRANT EXECUTE ON FUNCTION \
             pg_replication_origin_session_setup(text), pg_replication_origin_create(text) TO {user}; \
             or run `duplex setup` again as this account (it switches the pipeline to the marker rule)",
            user = cfg.user
        ),
    ))
}

/// The statements writing duplex's own rows, prepared once per session.
struct Statements {
    checkpoint_stmt: Statement,
    dead_letter_stmt: Statement,
    /// Only when a table has `both` columns.
    conflict_stmt: Option<Statement>,
}

impl Statements {
    async fn prepare(client: &Client, cfg: &PostgresConfig, plan: &Plan) -> Result<Statements> {
        let checkpoint_stmt = client
            .prepare(&checkpoint::store_sql(&cfg.duplex_schema))
            .await
            .map_err(|e| {
                Error::from_pg(
                    e,
                    true,
                    "preparing the checkpoint statement (did `duplex setup` run?)",
                )
            })?;
        let mut types = vec![Type::TEXT; 9];
        types[7] = Type::JSONB;
        let dead_letter_stmt = client
            .prepare_typed(
                &crate::state::dead_letter::pg_insert_sql(&cfg.duplex_schema),
                &types,
            )
            .await
            .map_err(|e| Error::from_pg(e, true, "preparing the dead-letter statement"))?;
        let conflict_stmt = if plan.tables.iter().any(|t| !t.guarded().is_empty()) {
            let mut types = vec![Type::TEXT; 12];
            types.push(Type::INT8);
            let sql = crate::state::conflict::pg_insert_sql(&cfg.duplex_schema);
            Some(client.prepare_typed(&sql, &types).await.map_err(|e| {
                Error::from_pg(
                    e,
                    true,
                    "preparing the conflict log statement (run `duplex setup` to create duplex's conflict table)",
                )
            })?)
        } else {
            None
        };
        Ok(Statements {
            checkpoint_stmt,
            dead_letter_stmt,
            conflict_stmt,
        })
    }
}

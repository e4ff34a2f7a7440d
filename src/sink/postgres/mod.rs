//! The PostgreSQL sink: applies mapped changes with batched upserts and deletes by key, inside one
//! transaction per batch of source transactions, together with the checkpoint.
//!
//! Buffered changes form *runs*: consecutive changes of one table and one kind (upsert or
//! delete). Within a run, later changes of a key replace earlier ones (the target transaction
//! commits only the final state anyway), and runs are written in order, so cross-table order
//! (parents before children) is kept. Small runs go out as prepared multi-row statements; large
//! ones through binary COPY into a session-local staging table and one `INSERT … SELECT … ON
//! CONFLICT` / `DELETE … USING`.

pub mod encode;
pub mod prepare;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use futures_util::SinkExt;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Statement};

use self::encode::{Cell, EncodedRow};
use super::{DeadLetter, Mark, Sink};
use crate::config::PostgresConfig;
use crate::error::{Error, Result};
use crate::mapping::{Plan, TablePlan};
use crate::model::{pg_ident, Position};
use crate::state::checkpoint;
use crate::state::progress::Progress;

pub use self::prepare::PgEncoder;

/// Runs at least this long are written through COPY.
const COPY_MIN_ROWS: usize = 500;
/// Buffered rows beyond this are written out (inside the open transaction) to bound memory.
const FLUSH_ROWS: usize = 10_000;
/// PostgreSQL's limit on bind parameters per statement.
const MAX_PARAMS: usize = 65_535;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Upsert,
    Delete,
    /// The entry's columns of the row with this key set to NULL (`on_delete = "clear"`).
    Clear,
    /// One property of a pivot entry set or cleared.
    Pivot,
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
}

struct Run {
    table: usize,
    kind: Kind,
    /// Every change came from a source INSERT (a candidate for direct COPY).
    inserts_only: bool,
    rows: Vec<EncodedRow>,
    /// Pivot runs: the cells (rows stay empty).
    cells: Vec<PivotCell>,
    by_key: HashMap<Vec<u8>, usize>,
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
    /// Keys (as text) written in the open transaction, per target table and key column, for
    /// resolving look-ups before the commit.
    touched: HashMap<usize, Vec<String>>,
    /// Keys (as text) of rows deleted in the open transaction, per plan table: their values in
    /// `duplex.pivot` go with them.
    deleted: HashMap<usize, Vec<String>>,
    /// Per pivot entry, its prepared statements (see [`PgSink::pivot_statements`]).
    pivot_stmts: HashMap<usize, Arc<[Statement; 2]>>,
}

impl PgSink {
    pub async fn connect(
        cfg: &PostgresConfig,
        plan: Arc<Plan>,
        pipeline: &str,
        tz: chrono_tz::Tz,
    ) -> Result<PgSink> {
        let client = crate::connect::postgres(cfg, &format!("duplex {pipeline}")).await?;
        // Tables also replicated from PostgreSQL: tag our writes so that reader drops them.
        let mut marker = None;
        if plan.has_reverse() {
            match crate::origin::echo_mode(&client).await? {
                crate::origin::Echo::Origin => {
                    crate::origin::bind_session(&client, &crate::origin::origin_name(pipeline, 1))
                        .await?
                }
                crate::origin::Echo::Marker => {
                    let sql = checkpoint::marker_sql(&cfg.duplex_schema);
                    let stmt = client
                        .prepare(&sql)
                        .await
                        .map_err(|e| Error::from_pg(e, true, "preparing the echo marker"))?;
                    marker = Some(stmt);
                }
            }
        }
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
        let dead_letter_stmt = client
            .prepare_typed(
                &crate::state::dead_letter::pg_insert_sql(&cfg.duplex_schema),
                &[
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::JSONB,
                    Type::TEXT,
                ],
            )
            .await
            .map_err(|e| Error::from_pg(e, true, "preparing the dead-letter statement"))?;
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
        // Session-local staging tables for large runs, created outside any transaction.
        let mut ddl = String::new();
        for (i, t) in plan.tables.iter().enumerate() {
            let cols = column_list(t);
            let keys = key_list(t);
            ddl.push_str(&format!(
                "CREATE TEMP TABLE IF NOT EXISTS duplex_stage_{i} AS SELECT {cols} FROM {} WITH NO DATA;\n\
                 CREATE TEMP TABLE IF NOT EXISTS duplex_stagek_{i} AS SELECT {keys} FROM {} WITH NO DATA;\n",
                t.target.pg_quoted(),
                t.target.pg_quoted()
            ));
        }
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
            marker,
            touched: HashMap::new(),
            deleted: HashMap::new(),
            pivot_stmts: HashMap::new(),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn statement(&mut self, table: usize, kind: Kind, rows: usize) -> Result<Statement> {
        if let Some(s) = self.stmts.get(&(table, kind, rows)) {
            return Ok(s.clone());
        }
        let t = &self.plan.tables[table];
        let sql = match kind {
            Kind::Upsert => upsert_values_sql(t, rows),
            Kind::Delete => delete_values_sql(t, rows),
            Kind::Clear => clear_values_sql(t, rows),
            Kind::Pivot => unreachable!("pivot cells are written by write_pivot"),
        };
        let stmt = self.client.prepare(&sql).await.map_err(|e| {
            Error::from_pg(e, true, &format!("preparing a statement for {}", t.target))
        })?;
        self.stmts.insert((table, kind, rows), stmt.clone());
        Ok(stmt)
    }

    async fn write_values(&mut self, table: usize, kind: Kind, rows: &[EncodedRow]) -> Result<()> {
        let stmts = self.values_statements(table, kind, rows).await?;
        let mut pending = Vec::new();
        self.send_values(table, &stmts, rows, &mut pending);
        sent(pending).await
    }

    /// The statements writing `rows` of a run as multi-row VALUES, with the rows each takes.
    async fn values_statements(
        &mut self,
        table: usize,
        kind: Kind,
        rows: &[EncodedRow],
    ) -> Result<Vec<(Statement, usize)>> {
        let width = rows.first().map_or(1, |r| r.len().max(1));
        let max_rows = (MAX_PARAMS / width).clamp(1, 256);
        let mut out = Vec::new();
        let mut i = 0;
        while i < rows.len() {
            let left = rows.len() - i;
            let n = if left >= max_rows {
                max_rows
            } else if left > 64 {
                64
            } else {
                left
            };
            out.push((self.statement(table, kind, n).await?, n));
            i += n;
        }
        Ok(out)
    }

    /// Queues the VALUES statements of a run (see [`sent`]).
    fn send_values<'a>(
        &'a self,
        table: usize,
        stmts: &'a [(Statement, usize)],
        rows: &'a [EncodedRow],
        pending: &mut Vec<Pending<'a>>,
    ) {
        let mut i = 0;
        for (stmt, n) in stmts {
            let chunk = &rows[i..i + n];
            i += n;
            let what = format!("writing {} rows to {}", n, self.plan.tables[table].target);
            let client = &self.client;
            pending.push(Box::pin(async move {
                let params: Vec<Cell<'_>> =
                    chunk.iter().flat_map(|r| r.cells().map(Cell)).collect();
                client
                    .execute_raw(stmt, params.iter())
                    .await
                    .map(|_| ())
                    .map_err(|e| Error::from_pg(e, true, &what))
            }));
        }
    }

    /// Sends `rows` with binary COPY into `into` (a table name, already quoted).
    async fn copy_rows(
        &self,
        into: &str,
        cols: &str,
        rows: &[EncodedRow],
        what: &str,
    ) -> Result<()> {
        let err = |e| Error::from_pg(e, true, &format!("copying {} rows into {what}", rows.len()));
        let sink = self
            .client
            .copy_in(&format!("COPY {into} ({cols}) FROM STDIN (FORMAT binary)"))
            .await
            .map_err(err)?;
        futures_util::pin_mut!(sink);
        let mut buf = BytesMut::with_capacity(1 << 20);
        buf.put_slice(b"PGCOPY\n\xff\r\n\0");
        buf.put_i32(0);
        buf.put_i32(0);
        for r in rows {
            buf.put_i16(r.len() as i16);
            buf.put_slice(r.as_copy_bytes());
            if buf.len() >= 1 << 20 {
                sink.send(buf.split().freeze()).await.map_err(err)?;
            }
        }
        buf.put_i16(-1);
        sink.send(buf.split().freeze()).await.map_err(err)?;
        sink.as_mut().finish().await.map_err(err)?;
        Ok(())
    }

    /// Rows that were all inserted at the source are usually new on the target too: COPY them
    /// straight in, under a savepoint. Returns false (and leaves nothing behind) when that is
    /// refused — a row already exists after a restart, say — and the upsert path must be used.
    async fn try_copy_direct(&mut self, table: usize, rows: &[EncodedRow]) -> Result<bool> {
        let t = self.plan.tables[table].clone();
        let sp = |e| Error::from_pg(e, true, "setting a savepoint");
        self.client
            .batch_execute("SAVEPOINT duplex_copy")
            .await
            .map_err(sp)?;
        match self
            .copy_rows(
                &t.target.pg_quoted(),
                &column_list(&t),
                rows,
                &t.target.to_string(),
            )
            .await
        {
            Ok(()) => {
                self.client
                    .batch_execute("RELEASE SAVEPOINT duplex_copy")
                    .await
                    .map_err(sp)?;
                Ok(true)
            }
            Err(e) if !e.is_transient() => {
                tracing::debug!(table = %t.target, error = %e, "direct COPY refused; upserting");
                self.client
                    .batch_execute(
                        "ROLLBACK TO SAVEPOINT duplex_copy; RELEASE SAVEPOINT duplex_copy",
                    )
                    .await
                    .map_err(sp)?;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Upserts or deletes (the only kinds `flush` copies) through a staging table.
    async fn write_copy(&mut self, table: usize, kind: Kind, rows: &[EncodedRow]) -> Result<()> {
        let t = self.plan.tables[table].clone();
        let upsert = match kind {
            Kind::Upsert => true,
            Kind::Delete => false,
            Kind::Clear | Kind::Pivot => {
                unreachable!("cleared and pivoted rows go out as statements")
            }
        };
        let (stage, cols) = if upsert {
            (format!("duplex_stage_{table}"), column_list(&t))
        } else {
            (format!("duplex_stagek_{table}"), key_list(&t))
        };
        self.copy_rows(&stage, &cols, rows, &t.target.to_string())
            .await?;
        let apply = if upsert {
            format!(
                "INSERT INTO {} ({cols}) SELECT {cols} FROM {stage} {}; TRUNCATE {stage}",
                t.target.pg_quoted(),
                on_conflict(&t)
            )
        } else {
            let cond: Vec<String> = t
                .key
                .iter()
                .map(|&k| {
                    let c = pg_ident(&t.columns[k].target.name);
                    format!("t.{c} = s.{c}")
                })
                .collect();
            format!(
                "DELETE FROM {} t USING {stage} s WHERE {}; TRUNCATE {stage}",
                t.target.pg_quoted(),
                cond.join(" AND ")
            )
        };
        self.client.batch_execute(&apply).await.map_err(|e| {
            Error::from_pg(
                e,
                true,
                &format!("applying {} staged rows to {}", rows.len(), t.target),
            )
        })
    }

    /// Writes every buffered run, in order, inside the open transaction.
    async fn flush(&mut self) -> Result<()> {
        let runs = std::mem::take(&mut self.runs);
        self.buffered = 0;
        let copied = |r: &Run| {
            r.rows.len() >= COPY_MIN_ROWS && matches!(r.kind, Kind::Upsert | Kind::Delete)
        };
        let mut at = 0;
        while at < runs.len() {
            // Runs written by statements, up to the next COPY: prepared first, then sent back
            // to back in their order (one round trip for the lot, not one per statement).
            let end = runs[at..]
                .iter()
                .position(copied)
                .map_or(runs.len(), |p| at + p);
            let segment = &runs[at..end];
            let mut values = Vec::with_capacity(segment.len());
            let mut pivots = Vec::with_capacity(segment.len());
            for run in segment {
                if run.kind == Kind::Pivot {
                    values.push(Vec::new());
                    let stmts = self.pivot_statements(run.table).await?;
                    pivots.push(Some((stmts, self.pivot_args(run.table, &run.cells))));
                } else {
                    values.push(
                        self.values_statements(run.table, run.kind, &run.rows)
                            .await?,
                    );
                    pivots.push(None);
                }
            }
            let mut pending = Vec::new();
            for ((run, stmts), pivot) in segment.iter().zip(&values).zip(&pivots) {
                match pivot {
                    Some((st, args)) => self.send_pivot(st, args, &mut pending),
                    None => self.send_values(run.table, stmts, &run.rows, &mut pending),
                }
            }
            sent(pending).await?;
            for run in segment {
                self.count(run);
            }
            if end < runs.len() {
                let run = &runs[end];
                let direct = run.kind == Kind::Upsert
                    && run.inserts_only
                    && self.try_copy_direct(run.table, &run.rows).await?;
                if !direct {
                    self.write_copy(run.table, run.kind, &run.rows).await?;
                }
                self.count(run);
            }
            at = end + 1;
        }
        Ok(())
    }

    fn count(&self, run: &Run) {
        let t = &self.plan.tables[run.table];
        metrics::counter!(
            crate::telemetry::ROWS_APPLIED,
            "direction" => crate::model::FORWARD,
            "table" => t.target.to_string(),
            "op" => match run.kind { Kind::Upsert => "upsert", Kind::Delete => "delete", Kind::Clear => "clear", Kind::Pivot => "pivot" }
        )
        .increment(run.rows.len().max(run.cells.len()) as u64);
    }
}

/// A statement sent and not yet answered.
type Pending<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>>;

/// Sends queued statements back to back and waits for every answer. A statement's messages go
/// out on its future's first poll (tokio-postgres writes them before it first waits), so each
/// future is polled once, in queue order, before any answer is awaited: the server runs them in
/// that order. Every answer is awaited; the first failure in queue order is the error (the ones
/// after it only fail because the transaction is aborted).
async fn sent(mut pending: Vec<Pending<'_>>) -> Result<()> {
    let mut results: Vec<Option<Result<()>>> = {
        let waker = futures_util::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        pending
            .iter_mut()
            .map(|f| match f.as_mut().poll(&mut cx) {
                std::task::Poll::Ready(r) => Some(r),
                std::task::Poll::Pending => None,
            })
            .collect()
    };
    for (f, r) in pending.into_iter().zip(results.iter_mut()) {
        if r.is_none() {
            *r = Some(f.await);
        }
    }
    results.into_iter().flatten().collect()
}

/// The parameters of a pivot run's statements.
#[derive(Default)]
struct PivotArgs {
    pipeline: String,
    target: String,
    /// Per cell: the row's key, the column, the code's priority, its value (NULL: removed).
    cell_keys: Vec<String>,
    cell_cols: Vec<String>,
    cell_prios: Vec<i32>,
    cell_vals: Vec<Option<String>>,
    /// The rows to recompute, each once.
    keys: Vec<String>,
}

fn column_list(t: &TablePlan) -> String {
    t.columns
        .iter()
        .map(|c| pg_ident(&c.target.name))
        .collect::<Vec<_>>()
        .join(", ")
}

fn key_list(t: &TablePlan) -> String {
    t.key
        .iter()
        .map(|&k| pg_ident(&t.columns[k].target.name))
        .collect::<Vec<_>>()
        .join(", ")
}

fn on_conflict(t: &TablePlan) -> String {
    let updates: Vec<String> = t
        .columns
        .iter()
        .enumerate()
        .filter(|(i, _)| !t.key.contains(i))
        .map(|(_, c)| {
            let n = pg_ident(&c.target.name);
            format!("{n} = EXCLUDED.{n}")
        })
        .collect();
    if updates.is_empty() {
        format!("ON CONFLICT ({}) DO NOTHING", key_list(t))
    } else {
        format!(
            "ON CONFLICT ({}) DO UPDATE SET {}",
            key_list(t),
            updates.join(", ")
        )
    }
}

fn upsert_values_sql(t: &TablePlan, rows: usize) -> String {
    let width = t.columns.len();
    let mut values = Vec::with_capacity(rows);
    for r in 0..rows {
        let ps: Vec<String> = (1..=width).map(|c| format!("${}", r * width + c)).collect();
        values.push(format!("({})", ps.join(", ")));
    }
    format!(
        "INSERT INTO {} ({}) VALUES {} {}",
        t.target.pg_quoted(),
        column_list(t),
        values.join(", "),
        on_conflict(t)
    )
}

/// A string literal for SQL text.
fn pg_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The statement that recomputes every column of pivot entry `t` for the keys in `$3` from
/// `duplex.pivot` (each column: the value of the lowest priority present) in one pass: rows
/// with a value are upserted (unchanged ones left alone), rows left without any are cleared,
/// never created. `$1` pipeline, `$2` target table name.
fn pivot_sql(t: &TablePlan, duplex_schema: &str) -> String {
    let p = t.pivot.as_ref().expect("a pivot entry");
    let key_col = &t.columns[t.key[0]].target;
    let k = pg_ident(&key_col.name);
    let kt = &key_col.type_name;
    let tt = t.target.pg_quoted();
    let s = pg_ident(duplex_schema);
    let picks: Vec<String> = p
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "(array_agg(d.value ORDER BY d.priority) FILTER (WHERE d.col = {} AND d.value IS NOT NULL))[1] AS c{i}",
                pg_literal(&c.name)
            )
        })
        .collect();
    let outs: Vec<String> = (0..p.columns.len()).map(|i| format!("x.c{i}")).collect();
    let names: Vec<String> = p.columns.iter().map(|c| pg_ident(&c.name)).collect();
    let casts: Vec<String> = p
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("v.c{i}::{}", c.type_name))
        .collect();
    let all_null: Vec<String> = (0..p.columns.len())
        .map(|i| format!("v.c{i} IS NULL"))
        .collect();
    let set_null: Vec<String> = names.iter().map(|n| format!("{n} = NULL")).collect();
    let any_set: Vec<String> = names.iter().map(|n| format!("t.{n} IS NOT NULL")).collect();
    let updates: Vec<String> = names
        .iter()
        .map(|n| format!("{n} = EXCLUDED.{n}"))
        .collect();
    let old: Vec<String> = names.iter().map(|n| format!("{tt}.{n}")).collect();
    let new: Vec<String> = names.iter().map(|n| format!("EXCLUDED.{n}")).collect();
    // Shaped so that the plan does not depend on statistics: a copy fills these tables from
    // empty, and a join planned on an empty table's estimate would scan them whole per chunk.
    // LATERAL reads duplex.pivot per key through its primary key; `= ANY(ARRAY(…))` reaches
    // the target rows through its unique key.
    format!(
        "WITH v AS (SELECT u.k, {outs} FROM (SELECT DISTINCT k FROM unnest($3::text[]) AS y(k)) u \
           CROSS JOIN LATERAL (SELECT {picks} FROM {s}.pivot d WHERE d.pipeline = $1 AND d.target = $2 AND d.key = u.k) x), \
         cleared AS (UPDATE {tt} t SET {set_null} WHERE t.{k} = ANY(ARRAY(SELECT v.k::{kt} FROM v WHERE {all_null})) AND ({any_set})) \
         INSERT INTO {tt} ({k}, {names}) SELECT v.k::{kt}, {casts} FROM v WHERE NOT ({all_null}) \
         ON CONFLICT ({k}) DO UPDATE SET {updates} WHERE ({old}) IS DISTINCT FROM ({new})",
        picks = picks.join(", "),
        outs = outs.join(", "),
        set_null = set_null.join(", "),
        all_null = all_null.join(" AND "),
        any_set = any_set.join(" OR "),
        names = names.join(", "),
        casts = casts.join(", "),
        updates = updates.join(", "),
        old = old.join(", "),
        new = new.join(", "),
    )
}

/// The columns an entry writes besides its key (what `on_delete = "clear"` sets to NULL).
fn owned_columns(t: &TablePlan) -> Vec<String> {
    t.columns
        .iter()
        .enumerate()
        .filter(|(i, _)| !t.key.contains(i))
        .map(|(_, c)| c.target.name.clone())
        .chain(t.lookups.iter().map(|l| l.column.name.clone()))
        .collect()
}

fn clear_values_sql(t: &TablePlan, rows: usize) -> String {
    let width = t.key.len();
    let mut tuples = Vec::with_capacity(rows);
    for r in 0..rows {
        let ps: Vec<String> = (1..=width).map(|c| format!("${}", r * width + c)).collect();
        tuples.push(format!("({})", ps.join(", ")));
    }
    let mut sets: Vec<String> = owned_columns(t)
        .iter()
        .map(|c| format!("{} = NULL", pg_ident(c)))
        .collect();
    if sets.is_empty() {
        let k = pg_ident(&t.columns[t.key[0]].target.name);
        sets.push(format!("{k} = {k}"));
    }
    format!(
        "UPDATE {} SET {} WHERE ({}) IN ({})",
        t.target.pg_quoted(),
        sets.join(", "),
        key_list(t),
        tuples.join(", ")
    )
}

fn delete_values_sql(t: &TablePlan, rows: usize) -> String {
    let width = t.key.len();
    let mut tuples = Vec::with_capacity(rows);
    for r in 0..rows {
        let ps: Vec<String> = (1..=width).map(|c| format!("${}", r * width + c)).collect();
        tuples.push(format!("({})", ps.join(", ")));
    }
    format!(
        "DELETE FROM {} WHERE ({}) IN ({})",
        t.target.pg_quoted(),
        key_list(t),
        tuples.join(", ")
    )
}

impl Sink for PgSink {
    type Encoder = PgEncoder;

    fn encoder(&self) -> PgEncoder {
        PgEncoder::new(self.plan.clone(), self.tz)
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
        self.note_key(&change);
        let key = change.key;
        let same = self
            .runs
            .last()
            .is_some_and(|r| r.table == change.table && r.kind == change.kind);
        if !same {
            self.runs.push(Run {
                table: change.table,
                kind: change.kind,
                inserts_only: true,
                rows: Vec::new(),
                cells: Vec::new(),
                by_key: HashMap::new(),
            });
        }
        let run = self.runs.last_mut().expect("a run exists");
        run.inserts_only &= change.from_insert;
        match (change.pivot, run.by_key.get(&key)) {
            (Some(cell), Some(&at)) => run.cells[at] = *cell,
            (Some(cell), None) => {
                run.by_key.insert(key, run.cells.len());
                run.cells.push(*cell);
                self.buffered += 1;
            }
            (None, Some(&at)) => run.rows[at] = change.row,
            (None, None) => {
                run.by_key.insert(key, run.rows.len());
                run.rows.push(change.row);
                self.buffered += 1;
            }
        }
        if self.buffered >= FLUSH_ROWS {
            self.flush().await?;
        }
        Ok(())
    }

    async fn push_careful(&mut self, change: PgChange) -> Result<()> {
        self.flush().await?;
        self.client
            .batch_execute("SAVEPOINT duplex_row")
            .await
            .map_err(|e| Error::from_pg(e, true, "setting a savepoint"))?;
        let table = change.table;
        let kind = change.kind;
        self.note_key(&change);
        let written = match change.pivot {
            Some(cell) => self.write_pivot(table, std::slice::from_ref(&*cell)).await,
            None => {
                self.write_values(table, kind, std::slice::from_ref(&change.row))
                    .await
            }
        };
        match written {
            Ok(()) => self
                .client
                .batch_execute("RELEASE SAVEPOINT duplex_row")
                .await
                .map_err(|e| Error::from_pg(e, true, "releasing a savepoint")),
            Err(e) if !e.is_transient() => {
                self.client
                    .batch_execute("ROLLBACK TO SAVEPOINT duplex_row")
                    .await
                    .map_err(|e| Error::from_pg(e, true, "rolling back to a savepoint"))?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    fn dead_letter(&mut self, letter: DeadLetter) {
        self.letters.push(letter);
    }

    async fn commit(&mut self, position: &Position) -> Result<()> {
        self.finish(Mark::Checkpoint(position)).await
    }

    async fn commit_progress(&mut self, progress: &Progress) -> Result<()> {
        self.finish(Mark::Progress(progress)).await
    }

    async fn commit_unmarked(&mut self) -> Result<()> {
        self.finish(Mark::Nothing).await
    }

    async fn rollback(&mut self) {
        self.runs.clear();
        self.touched.clear();
        self.deleted.clear();
        self.buffered = 0;
        self.letters.clear();
        if self.in_txn {
            let _ = self.client.batch_execute("ROLLBACK").await;
            self.in_txn = false;
        }
    }
}

impl PgSink {
    /// Remembers the key of a change written in the open transaction, for the look-ups and the
    /// pivoted values resolved before the commit.
    fn note_key(&mut self, change: &PgChange) {
        if let Some(k) = &change.key_text {
            if change.kind == Kind::Delete {
                self.deleted
                    .entry(change.table)
                    .or_default()
                    .push(k.clone());
            }
            self.touched
                .entry(change.table)
                .or_default()
                .push(k.clone());
        }
    }

    /// Writes the cells of pivot entry `table` (see [`PgSink::send_pivot`]).
    async fn write_pivot(&mut self, table: usize, cells: &[PivotCell]) -> Result<()> {
        let stmts = self.pivot_statements(table).await?;
        let args = self.pivot_args(table, cells);
        let mut pending = Vec::new();
        self.send_pivot(&stmts, &args, &mut pending);
        sent(pending).await
    }

    /// The two statements of pivot entry `table` (store the codes' values, recompute the rows),
    /// prepared once: their shape keeps generic plans on the keys (see `pivot_sql`).
    async fn pivot_statements(&mut self, table: usize) -> Result<Arc<[Statement; 2]>> {
        if let Some(st) = self.pivot_stmts.get(&table) {
            return Ok(st.clone());
        }
        let t = self.plan.tables[table].clone();
        let s = pg_ident(&self.duplex_schema);
        let err = |e| {
            Error::from_pg(
                e,
                true,
                &format!("preparing the pivot statements of {}", t.target),
            )
        };
        let set = self
            .client
            .prepare(&format!(
                "INSERT INTO {s}.pivot (pipeline, target, key, col, priority, value) \
                 SELECT $1, $2, u.k, u.c, u.p, u.v FROM unnest($3::text[], $4::text[], $5::int4[], $6::text[]) AS u(k, c, p, v) \
                 ON CONFLICT (pipeline, target, key, col, priority) DO UPDATE SET value = EXCLUDED.value"
            ))
            .await
            .map_err(err)?;
        let recompute = self
            .client
            .prepare(&pivot_sql(&t, &self.duplex_schema))
            .await
            .map_err(err)?;
        let st = Arc::new([set, recompute]);
        self.pivot_stmts.insert(table, st.clone());
        Ok(st)
    }

    /// The parameters of a pivot run's statements.
    fn pivot_args(&self, table: usize, cells: &[PivotCell]) -> PivotArgs {
        let t = &self.plan.tables[table];
        let p = t.pivot.as_ref().expect("a pivot entry");
        let mut a = PivotArgs {
            pipeline: self.pipeline.clone(),
            target: t.target.to_string(),
            ..Default::default()
        };
        for c in cells {
            a.cell_keys.push(c.key.clone());
            a.cell_cols.push(p.columns[c.column].name.clone());
            a.cell_prios.push(c.priority);
            a.cell_vals.push(c.value.clone());
            a.keys.push(c.key.clone());
        }
        a.keys.sort_unstable();
        a.keys.dedup();
        a
    }

    /// Queues a pivot run's statements (see [`sent`]): each code's value into duplex's `pivot`
    /// table (an upsert by its primary key; a removed value is stored as NULL, so no statement
    /// has to find rows by scanning), then the entry's columns of every touched row recomputed from it
    /// (each: the value of the present code with the lowest priority, NULL when none is left; a
    /// row that does not exist yet is created with its key and those columns; clearing never
    /// creates one).
    fn send_pivot<'a>(
        &'a self,
        stmts: &'a [Statement; 2],
        a: &'a PivotArgs,
        pending: &mut Vec<Pending<'a>>,
    ) {
        let client = &self.client;
        let err =
            move |e| Error::from_pg(e, true, &format!("writing pivoted values to {}", a.target));
        pending.push(Box::pin(async move {
            client
                .execute(
                    &stmts[0],
                    &[
                        &a.pipeline,
                        &a.target,
                        &a.cell_keys,
                        &a.cell_cols,
                        &a.cell_prios,
                        &a.cell_vals,
                    ],
                )
                .await
                .map(|_| ())
                .map_err(err)
        }));
        pending.push(Box::pin(async move {
            client
                .execute(&stmts[1], &[&a.pipeline, &a.target, &a.keys])
                .await
                .map(|_| ())
                .map_err(err)
        }));
    }

    /// Drops the pivoted values of target rows deleted in this transaction, so that they do not
    /// come back if a row with that key is written again.
    async fn forget_deleted(&mut self) -> Result<()> {
        if self.deleted.is_empty() {
            return Ok(());
        }
        let deleted = std::mem::take(&mut self.deleted);
        let s = pg_ident(&self.duplex_schema);
        for (t, mut keys) in deleted {
            keys.sort_unstable();
            keys.dedup();
            let target = &self.plan.tables[t].target;
            if !self
                .plan
                .tables
                .iter()
                .any(|p| p.is_pivot() && p.target == *target)
            {
                continue;
            }
            self.client
                .execute(
                    &format!("DELETE FROM {s}.pivot WHERE pipeline = $1 AND target = $2 AND key = ANY($3)"),
                    &[&self.pipeline, &target.to_string(), &keys],
                )
                .await
                .map_err(|e| Error::from_pg(e, true, "dropping the pivoted values of deleted rows"))?;
        }
        Ok(())
    }

    /// Fills look-up columns for the rows written in this transaction: a child's column from its
    /// natural key, and children that were waiting for a parent written now.
    async fn resolve_lookups(&mut self) -> Result<()> {
        if self.touched.is_empty() {
            return Ok(());
        }
        let touched = std::mem::take(&mut self.touched);
        // Keys per target table and key column.
        let mut by_table: HashMap<(String, String, String), Vec<String>> = HashMap::new();
        for (t, keys) in touched {
            let plan = &self.plan.tables[t];
            let kc = &plan.columns[plan.key[0]].target;
            by_table
                .entry((
                    plan.target.pg_quoted(),
                    kc.name.clone(),
                    kc.type_name.clone(),
                ))
                .or_default()
                .extend(keys);
        }
        let mut statements: Vec<(String, Vec<String>)> = Vec::new();
        for ((table, key, key_type), mut keys) in by_table {
            keys.sort_unstable();
            keys.dedup();
            let k = pg_ident(&key);
            let mut seen = std::collections::HashSet::new();
            // The child rows written now: every look-up column of the table in one UPDATE.
            let mut sets = Vec::new();
            let mut differs = Vec::new();
            for plan in self.plan.tables.iter() {
                for l in &plan.lookups {
                    let child = plan.target.pg_quoted();
                    let fk = pg_ident(&l.column.name);
                    let from = pg_ident(&l.from);
                    let parent = l.table.pg_quoted();
                    let (m, take) = (pg_ident(&l.match_), pg_ident(&l.take));
                    if child == table && seen.insert(("child", child.clone(), fk.clone())) {
                        let pick =
                            format!("(SELECT p.{take} FROM {parent} p WHERE p.{m} = c.{from})");
                        sets.push(format!("{fk} = {pick}"));
                        differs.push(format!("c.{fk} IS DISTINCT FROM {pick}"));
                    }
                    // Children waiting for the parent rows written now.
                    if parent == table && seen.insert(("parent", child.clone(), fk.clone())) {
                        statements.push((
                            format!(
                                "UPDATE {child} c SET {fk} = {pick} WHERE c.{from} = ANY(ARRAY(SELECT p.{m} FROM {parent} p WHERE p.{k} = ANY($1::text[]::{key_type}[]))) AND c.{fk} IS DISTINCT FROM {pick}",
                                pick = format_args!("(SELECT p.{take} FROM {parent} p WHERE p.{m} = c.{from})")
                            ),
                            keys.clone(),
                        ));
                    }
                }
            }
            if !sets.is_empty() {
                statements.push((
                    format!(
                        "UPDATE {table} c SET {} WHERE c.{k} = ANY($1::text[]::{key_type}[]) AND ({})",
                        sets.join(", "),
                        differs.join(" OR ")
                    ),
                    keys.clone(),
                ));
            }
        }
        for (sql, keys) in statements {
            self.client
                .execute(&sql, &[&keys])
                .await
                .map_err(|e| Error::from_pg(e, true, "resolving look-ups"))?;
        }
        Ok(())
    }

    /// Writes what is buffered, the dead letters and `mark`, and commits.
    async fn finish(&mut self, mark: Mark<'_>) -> Result<()> {
        self.begin().await?;
        self.flush().await?;
        self.resolve_lookups().await?;
        self.forget_deleted().await?;
        let position_text = mark.position_text();
        for l in std::mem::take(&mut self.letters) {
            self.client
                .execute(
                    &self.dead_letter_stmt,
                    &[
                        &self.pipeline,
                        &crate::model::FORWARD,
                        &l.source_table,
                        &l.target_table,
                        &l.op,
                        &position_text,
                        &l.txn_id,
                        &l.row,
                        &l.reason,
                    ],
                )
                .await
                .map_err(|e| Error::from_pg(e, true, "writing a dead letter"))?;
            metrics::counter!(crate::telemetry::DEAD_LETTERS, "direction" => crate::model::FORWARD, "table" => l.target_table.clone())
                .increment(1);
        }
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
        Ok(())
    }
}

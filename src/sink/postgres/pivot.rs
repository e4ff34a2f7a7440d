//! Pivot writes: each property code's value stored in duplex's `pivot` table, then the entry's
//! columns of the touched target rows recomputed from it; and, at commit, the stored values of
//! rows deleted in the transaction dropped.
//!
//! Owns the pivot statements ([`PgSink`]'s `pivot_stmts`) and their SQL. Uses `queue` to send
//! them, and the keys `lookup` noted as deleted.

use std::sync::Arc;

use tokio_postgres::Statement;

use super::queue::{sent, Pending};
use super::sql::lookup_pick;
use super::{PgSink, PivotCell};
use crate::error::{Error, Result};
use crate::mapping::TablePlan;
use crate::model::pg_ident;

/// The parameters of a pivot run's statements.
#[derive(Default)]
pub(super) struct PivotArgs {
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

impl PgSink {
    /// Writes the cells of pivot entry `table` (see [`PgSink::send_pivot`]).
    pub(super) async fn write_pivot(&mut self, table: usize, cells: &[PivotCell]) -> Result<()> {
        let stmts = self.pivot_statements(table).await?;
        let args = self.pivot_args(table, cells);
        let mut pending = Vec::new();
        self.send_pivot(&stmts, &args, &mut pending);
        sent(pending).await
    }

    /// The two statements of pivot entry `table` (store the codes' values, recompute the rows),
    /// prepared once: their shape keeps generic plans on the keys (see `pivot_sql`).
    pub(super) async fn pivot_statements(&mut self, table: usize) -> Result<Arc<[Statement; 2]>> {
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
    pub(super) fn pivot_args(&self, table: usize, cells: &[PivotCell]) -> PivotArgs {
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
    pub(super) fn send_pivot<'a>(
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
    pub(super) async fn forget_deleted(&mut self) -> Result<()> {
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
    let all_null: Vec<String> = (0..p.columns.len())
        .map(|i| format!("v.c{i} IS NULL"))
        .collect();
    // The pivoted columns, then the look-up columns whose natural key is one of them (or the
    // row's key), each with its new value from `v`.
    let mut names: Vec<String> = p.columns.iter().map(|c| pg_ident(&c.name)).collect();
    let mut casts: Vec<String> = p
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("v.c{i}::{}", c.type_name))
        .collect();
    // A cleared row keeps its key, so only look-ups read through a pivoted column are cleared.
    let mut cleared = names.clone();
    for l in &t.resolves {
        let natural = match p.columns.iter().position(|c| c.name == l.from) {
            Some(i) => {
                cleared.push(pg_ident(&l.column.name));
                casts[i].clone()
            }
            None => format!("v.k::{kt}"),
        };
        names.push(pg_ident(&l.column.name));
        casts.push(lookup_pick(l, &natural));
    }
    let set_null: Vec<String> = cleared.iter().map(|n| format!("{n} = NULL")).collect();
    let any_set: Vec<String> = cleared
        .iter()
        .map(|n| format!("t.{n} IS NOT NULL"))
        .collect();
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

//! Touched keys and look-up resolution: the keys written (and deleted) in the open transaction
//! are noted as changes arrive, and before the commit the look-up columns of those rows, and of
//! children waiting for parents written now, are filled in.
//!
//! Owns [`PgSink`]'s `touched` and `deleted` key lists (`pivot` drains `deleted`). Uses the
//! mapping plan's look-ups and identifier quoting.

use std::collections::HashMap;

use super::{Kind, PgChange, PgSink};
use crate::error::{Error, Result};
use crate::mapping::Plan;
use crate::model::pg_ident;

/// Keys noted at most before the look-ups and pivoted values are resolved within the open
/// transaction (a source transaction of millions of rows keeps one target transaction open).
pub(super) const KEYS_AT_ONCE: usize = 50_000;

/// Per plan table: whether the keys it writes matter (a look-up reads from its target, or its
/// target's rows have look-up columns) and whether the keys it deletes do (a pivot entry
/// writes its target).
pub(super) fn key_uses(plan: &Plan) -> Vec<(bool, bool)> {
    plan.tables
        .iter()
        .map(|t| {
            let looked_up = plan
                .tables
                .iter()
                .any(|o| o.lookups.iter().any(|l| l.table == t.target));
            let has_lookups = plan
                .tables
                .iter()
                .any(|o| o.target == t.target && !o.lookups.is_empty());
            let pivoted = plan
                .tables
                .iter()
                .any(|o| o.is_pivot() && o.target == t.target);
            (looked_up || has_lookups, pivoted)
        })
        .collect()
}

impl PgSink {
    /// Remembers the key of a change written in the open transaction, for the look-ups and the
    /// pivoted values resolved before the commit (only where they need it).
    pub(super) fn note_key(&mut self, change: &PgChange) {
        let Some(k) = &change.key_text else { return };
        let (written, deleted) = self
            .key_uses
            .get(change.table)
            .copied()
            .unwrap_or((true, true));
        if deleted && change.kind == Kind::Delete {
            self.deleted
                .entry(change.table)
                .or_default()
                .push(k.clone());
            self.noted += 1;
        }
        if written {
            self.touched
                .entry(change.table)
                .or_default()
                .push(k.clone());
            self.noted += 1;
        }
    }

    /// Past [`KEYS_AT_ONCE`] noted keys, with every buffered row written: resolves the look-ups
    /// and drops the pivoted values of deleted rows now, inside the open transaction, so that
    /// the key lists stay bounded.
    pub(super) async fn resolve_if_many(&mut self) -> Result<()> {
        if self.noted < KEYS_AT_ONCE || !self.runs.is_empty() {
            return Ok(());
        }
        self.resolve_lookups().await?;
        self.forget_deleted().await?;
        self.noted = 0;
        Ok(())
    }

    /// Fills look-up columns for the rows written in this transaction: a child's column from its
    /// natural key, and children that were waiting for a parent written now.
    pub(super) async fn resolve_lookups(&mut self) -> Result<()> {
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
}

//! Touched keys and look-up resolution: the keys written (cleared, deleted) in the open
//! transaction are noted as changes arrive, and before the commit the look-up columns of
//! children waiting for parents written now, and of cleared rows, are filled in. (An upsert
//! fills its own row's look-up columns in its statement: see `sql`.)
//!
//! Owns [`PgSink`]'s `touched`, `refill` and `deleted` key lists (`pivot` drains `deleted`).
//! Uses the mapping plan's look-ups, `sql`'s look-up expression and identifier quoting.

use std::collections::{HashMap, HashSet};

use super::sql::lookup_pick;
use super::{Kind, PgChange, PgSink};
use crate::error::{Error, Result};
use crate::mapping::{OnDelete, Plan};
use crate::model::pg_ident;

/// Keys noted at most before the look-ups and pivoted values are resolved within the open
/// transaction (a source transaction of millions of rows keeps one target transaction open).
pub(super) const KEYS_AT_ONCE: usize = 50_000;

/// What the keys a plan table's changes touch are needed for.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct KeyUse {
    /// Its target is another entry's look-up table: children waiting for the rows written are
    /// filled in.
    parent: bool,
    /// Its cleared rows (`on_delete = "clear"`) have their look-up columns filled again (an
    /// upsert fills them in its own statement, see [`crate::mapping::TablePlan::resolves`]).
    refill: bool,
    /// A pivot entry writes its target: the pivoted values of deleted rows are dropped.
    deleted: bool,
}

/// Per plan table, what its touched keys are needed for.
pub(super) fn key_uses(plan: &Plan) -> Vec<KeyUse> {
    plan.tables
        .iter()
        .map(|t| KeyUse {
            parent: plan
                .tables
                .iter()
                .any(|o| o.lookups.iter().any(|l| l.table == t.target)),
            refill: t.on_delete == OnDelete::Clear
                && plan
                    .tables
                    .iter()
                    .any(|o| o.target == t.target && !o.lookups.is_empty()),
            deleted: plan
                .tables
                .iter()
                .any(|o| o.is_pivot() && o.target == t.target),
        })
        .collect()
}

impl PgSink {
    /// Remembers the key of a change written in the open transaction, for the look-ups and the
    /// pivoted values resolved before the commit (only where they need it).
    pub(super) fn note_key(&mut self, change: &PgChange) {
        let Some(k) = &change.key_text else { return };
        let uses = self.key_uses.get(change.table).copied().unwrap_or(KeyUse {
            parent: true,
            refill: true,
            deleted: true,
        });
        let mut note = |to: &mut HashMap<usize, Vec<String>>| {
            to.entry(change.table).or_default().push(k.clone());
            self.noted += 1;
        };
        if uses.deleted && change.kind == Kind::Delete {
            note(&mut self.deleted);
        }
        if uses.parent {
            note(&mut self.touched);
        }
        if uses.refill && change.kind == Kind::Clear {
            note(&mut self.refill);
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

    /// Fills look-up columns before the commit: of children waiting for a parent written in
    /// this transaction, and of rows cleared in it (written rows had theirs filled as written).
    pub(super) async fn resolve_lookups(&mut self) -> Result<()> {
        if self.touched.is_empty() && self.refill.is_empty() {
            return Ok(());
        }
        let mut statements: Vec<(String, Vec<String>)> = Vec::new();
        for (parents, touched) in [
            (true, std::mem::take(&mut self.touched)),
            (false, std::mem::take(&mut self.refill)),
        ] {
            for ((table, key, key_type), keys) in self.by_target(touched) {
                if parents {
                    statements.extend(self.waiting_children(&table, &key, &key_type, &keys));
                } else if let Some(sql) = self.refill_sql(&table, &key, &key_type) {
                    statements.push((sql, keys));
                }
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

    /// Keys per target table, key column and its type, each once.
    fn by_target(
        &self,
        touched: HashMap<usize, Vec<String>>,
    ) -> HashMap<(String, String, String), Vec<String>> {
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
        for keys in by_table.values_mut() {
            keys.sort_unstable();
            keys.dedup();
        }
        by_table
    }

    /// Per look-up reading `table`: the UPDATE filling the children that name the rows with
    /// these keys, with the keys.
    fn waiting_children(
        &self,
        table: &str,
        key: &str,
        key_type: &str,
        keys: &[String],
    ) -> Vec<(String, Vec<String>)> {
        let k = pg_ident(key);
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for plan in self.plan.tables.iter() {
            for l in &plan.lookups {
                let child = plan.target.pg_quoted();
                let fk = pg_ident(&l.column.name);
                let parent = l.table.pg_quoted();
                if parent != table || !seen.insert((child.clone(), fk.clone())) {
                    continue;
                }
                let from = pg_ident(&l.from);
                let m = pg_ident(&l.match_);
                let pick = lookup_pick(l, &format!("c.{from}"));
                out.push((
                    format!(
                        "UPDATE {child} c SET {fk} = {pick} WHERE c.{from} = ANY(ARRAY(SELECT p.{m} FROM {parent} p WHERE p.{k} = ANY($1::text[]::{key_type}[]))) AND c.{fk} IS DISTINCT FROM {pick}"
                    ),
                    keys.to_vec(),
                ));
            }
        }
        out
    }

    /// The UPDATE filling every look-up column of `table`'s rows with the keys `$1`.
    fn refill_sql(&self, table: &str, key: &str, key_type: &str) -> Option<String> {
        let k = pg_ident(key);
        let mut seen = HashSet::new();
        let (mut sets, mut differs) = (Vec::new(), Vec::new());
        for plan in self.plan.tables.iter() {
            for l in &plan.lookups {
                let fk = pg_ident(&l.column.name);
                if plan.target.pg_quoted() != table || !seen.insert(fk.clone()) {
                    continue;
                }
                let pick = lookup_pick(l, &format!("c.{}", pg_ident(&l.from)));
                sets.push(format!("{fk} = {pick}"));
                differs.push(format!("c.{fk} IS DISTINCT FROM {pick}"));
            }
        }
        (!sets.is_empty()).then(|| {
            format!(
                "UPDATE {table} c SET {} WHERE c.{k} = ANY($1::text[]::{key_type}[]) AND ({})",
                sets.join(", "),
                differs.join(" OR ")
            )
        })
    }
}

//! Which buffered change may join an earlier run of its table and kind, moving ahead of the runs
//! in between: a stream of small source transactions (an order, its basket rows, its
//! properties, each their own transaction) then goes out as one statement per table and kind
//! instead of several per transaction.
//!
//! A change moves ahead of a run only where the final rows cannot differ: both are upserts
//! (or pivot cells) and either write different columns of one target (different entries), or
//! write different targets where no foreign key of the change's target reaches the run's
//! target except through a look-up column (which is NULL until its parent is there, and is
//! filled in when the parent comes, before the commit). A child never moves ahead of its
//! parent's upserts (its look-up would miss the parent and be filled again later); deletes,
//! cleared rows and held guarded changes are never passed.
//!
//! Owns the per-table-pair rule ([`Moves`]) and the foreign keys it is built from. Uses the
//! mapping plan.

use tokio_postgres::Client;

use super::Kind;
use crate::error::{Error, Result};
use crate::mapping::Plan;
use crate::model::TableName;

/// Whether a change of plan table `c` may move ahead of a run of plan table `s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Move {
    Never,
    Always,
    /// Only ahead of pivot cells (a child ahead of its parent's pivoted columns).
    PastPivots,
}

/// The rule for every pair of plan tables.
#[derive(Debug, Default)]
pub(super) struct Moves {
    n: usize,
    moves: Vec<Move>,
}

/// A foreign key among the target tables: the referencing table, the referenced one and the
/// referencing columns.
type ForeignKey = (TableName, TableName, Vec<String>);

impl Moves {
    /// The rule for `plan`, given the foreign keys of its target tables.
    fn new(plan: &Plan, fks: &[ForeignKey]) -> Moves {
        let n = plan.tables.len();
        let mut moves = Vec::with_capacity(n * n);
        for c in &plan.tables {
            for s in &plan.tables {
                let m = if c.target == s.target {
                    Move::Always
                } else {
                    let through_lookups = fks
                        .iter()
                        .filter(|(child, parent, _)| *child == c.target && *parent == s.target)
                        .all(|(_, _, cols)| {
                            cols.iter()
                                .all(|col| c.resolves.iter().any(|l| l.column.name == *col))
                        });
                    let child = c.resolves.iter().any(|l| l.table == s.target);
                    match (through_lookups, child) {
                        (false, _) => Move::Never,
                        (true, true) => Move::PastPivots,
                        (true, false) => Move::Always,
                    }
                };
                moves.push(m);
            }
        }
        Moves { n, moves }
    }

    /// Reads the foreign keys among `plan`'s target tables and builds the rule.
    pub(super) async fn read(client: &Client, plan: &Plan) -> Result<Moves> {
        let rows = client
            .query(
                "SELECT cn.nspname::text, cc.relname::text, pn.nspname::text, pc.relname::text, \
                        ARRAY(SELECT a.attname::text FROM pg_attribute a \
                              WHERE a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey)) \
                 FROM pg_constraint c \
                 JOIN pg_class cc ON cc.oid = c.conrelid JOIN pg_namespace cn ON cn.oid = cc.relnamespace \
                 JOIN pg_class pc ON pc.oid = c.confrelid JOIN pg_namespace pn ON pn.oid = pc.relnamespace \
                 WHERE c.contype = 'f'",
                &[],
            )
            .await
            .map_err(|e| Error::from_pg(e, true, "reading the target tables' foreign keys"))?;
        let name = |schema: String, name: String| TableName { schema, name };
        let fks: Vec<ForeignKey> = rows
            .into_iter()
            .map(|r| (name(r.get(0), r.get(1)), name(r.get(2), r.get(3)), r.get(4)))
            .filter(|(child, parent, _)| {
                plan.tables.iter().any(|t| t.target == *child)
                    && plan.tables.iter().any(|t| t.target == *parent)
            })
            .collect();
        Ok(Moves::new(plan, &fks))
    }

    /// Whether a change of plan table `c` and kind `kind` may move ahead of a run of plan table
    /// `s` and kind `s_kind` (not holding guarded changes).
    pub(super) fn may_pass(&self, c: usize, kind: Kind, s: usize, s_kind: Kind) -> bool {
        let writes = |k: Kind| matches!(k, Kind::Upsert | Kind::Pivot);
        if !writes(kind) || !writes(s_kind) || c == s || self.n == 0 {
            return false;
        }
        match self.moves[c * self.n + s] {
            Move::Never => false,
            Move::Always => true,
            Move::PastPivots => s_kind == Kind::Pivot,
        }
    }
}

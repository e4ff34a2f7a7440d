//! The run buffer: consecutive changes of one table and one kind form a run, in which a later
//! change of a key replaces the earlier one; runs are written in order when the buffer is
//! flushed (past a size bound, before a careful write, at commit).
//!
//! Guarded changes wait in runs of their own, in their place, until they are checked (see
//! `guard`).
//!
//! Owns [`Run`] and the choice of path per run: VALUES statements (`values`, `pivot`) sent back
//! to back (`queue`) up to the next large run, which goes through COPY (`copy`). Counts applied
//! rows.

use std::collections::{HashMap, HashSet};

use super::encode::EncodedRow;
use super::guard::Answer;
use super::queue::{sent, sent_then};
use super::{Kind, PgChange, PgSink, PivotCell};
use crate::error::Result;

/// Runs at least this long are written through COPY.
const COPY_MIN_ROWS: usize = 500;
/// Buffered rows beyond this are written out (inside the open transaction) to bound memory.
/// The pipeline keeps more than this encoded ahead (see `Sink::write_unit`); a snapshot chunk
/// (5,000 rows by default) is one write.
pub(super) const FLUSH_ROWS: usize = 5_000;
/// Runs looked back over for one a change may join.
const MERGE_LOOKBACK: usize = 16;

/// Consecutive buffered changes of one table and one kind.
pub(super) struct Run {
    table: usize,
    kind: Kind,
    /// Every change came from a source INSERT (a candidate for direct COPY).
    inserts_only: bool,
    rows: Vec<EncodedRow>,
    /// Pivot runs: the cells (rows stay empty).
    cells: Vec<PivotCell>,
    /// Pivot runs: the row keys (as text) of the cells, for [`Run::may_touch`].
    cell_rows: HashSet<String>,
    by_key: HashMap<Vec<u8>, usize>,
    /// Guarded changes held back in their place (rows and cells stay empty): checked and
    /// turned into upserts at the next settle, or (`cas`) written by their conditional UPDATE
    /// where they stand (see `guard`).
    pub(super) held: Vec<PgChange>,
    pub(super) cas: bool,
}

/// What a run holds per key: a row, or a pivot run's cell.
enum Item {
    Row(EncodedRow),
    Cell(PivotCell),
}

impl Run {
    fn new(table: usize, kind: Kind) -> Run {
        Run {
            table,
            kind,
            inserts_only: true,
            rows: Vec::new(),
            cells: Vec::new(),
            cell_rows: HashSet::new(),
            by_key: HashMap::new(),
            held: Vec::new(),
            cas: false,
        }
    }

    /// A run holding guarded `change` back.
    pub(super) fn held(change: PgChange, cas: bool) -> Run {
        let mut run = Run::new(change.table, Kind::Upsert);
        run.held.push(change);
        run.cas = cas;
        run
    }

    /// Puts a row (or pivot cell) with key `key` in the run: in place of the one with that key,
    /// or at the end. True when it is a new key.
    fn put(&mut self, key: Vec<u8>, item: Item) -> bool {
        if let Item::Cell(cell) = &item {
            if !self.cell_rows.contains(&cell.key) {
                self.cell_rows.insert(cell.key.clone());
            }
        }
        let at = self.by_key.get(&key).copied();
        match (item, at) {
            (Item::Row(row), Some(i)) => self.rows[i] = row,
            (Item::Cell(cell), Some(i)) => self.cells[i] = cell,
            (Item::Row(row), None) => {
                self.by_key.insert(key, self.rows.len());
                self.rows.push(row);
            }
            (Item::Cell(cell), None) => {
                self.by_key.insert(key, self.cells.len());
                self.cells.push(cell);
            }
        }
        at.is_none()
    }

    /// Rows or cells buffered (held changes are counted apart).
    pub(super) fn len(&self) -> usize {
        self.rows.len() + self.cells.len()
    }

    /// Whether this run may write the row of plan table `table`'s target with key `key`
    /// (`key_text`: the key as text): a run of another entry of that target counts unless it
    /// holds pivot cells of other keys only.
    pub(super) fn may_touch(
        &self,
        plan: &crate::mapping::Plan,
        table: usize,
        key: &[u8],
        key_text: Option<&str>,
    ) -> bool {
        if plan.tables[table].target != plan.tables[self.table].target {
            return false;
        }
        if !self.held.is_empty() {
            return self.held.iter().any(|h| h.table != table || h.key == key);
        }
        if self.table == table {
            return self.by_key.contains_key(key);
        }
        match (self.kind, key_text) {
            (Kind::Pivot, Some(k)) => self.cell_rows.contains(k),
            _ => true,
        }
    }
}

impl PgSink {
    /// Buffers a change in the last run, or a new one when its table or kind differs; a later
    /// change of a key already in the run replaces the earlier one. Past [`FLUSH_ROWS`] buffered
    /// rows, the runs are written out (inside the open transaction).
    pub(super) async fn buffer(&mut self, change: PgChange) -> Result<()> {
        self.append(change);
        if self.buffered >= FLUSH_ROWS {
            self.write_runs().await?;
            self.resolve_if_many().await?;
        }
        Ok(())
    }

    /// [`PgSink::buffer`] without writing anything.
    pub(super) fn append(&mut self, change: PgChange) {
        self.note_key(&change);
        let key = change.key;
        let at = match self.joins(change.table, change.kind) {
            Some(at) => at,
            None => {
                self.runs.push(Run::new(change.table, change.kind));
                self.runs.len() - 1
            }
        };
        let run = &mut self.runs[at];
        run.inserts_only &= change.from_insert;
        let item = match change.pivot {
            Some(cell) => Item::Cell(*cell),
            None => Item::Row(change.row),
        };
        if run.put(key, item) {
            self.buffered += 1;
        }
    }

    /// The run a change of `table` and `kind` joins: the last run, when it is of that table and
    /// kind, or an earlier one the change may move ahead to (see `merge`), looking back over a
    /// few runs.
    fn joins(&self, table: usize, kind: Kind) -> Option<usize> {
        for (at, r) in self.runs.iter().enumerate().rev().take(MERGE_LOOKBACK) {
            if !r.held.is_empty() {
                return None;
            }
            if r.table == table && r.kind == kind {
                return Some(at);
            }
            if !self.moves.may_pass(table, kind, r.table, r.kind) {
                return None;
            }
        }
        None
    }

    /// Puts a run back at the end of the buffer, or into an earlier run it may join (its rows
    /// replacing the ones with the same key there).
    pub(super) fn push_run(&mut self, run: Run) {
        let at = if run.held.is_empty() {
            self.joins(run.table, run.kind)
        } else {
            None
        };
        let Some(at) = at else {
            self.buffered += run.len();
            self.holding += run.held.len();
            self.runs.push(run);
            return;
        };
        let into = &mut self.runs[at];
        into.inserts_only &= run.inserts_only;
        // The moved run's keys in the order of its rows (or cells).
        let mut keys: Vec<(Vec<u8>, usize)> = run.by_key.into_iter().collect();
        keys.sort_unstable_by_key(|(_, i)| *i);
        let items: Vec<Item> = if into.kind == Kind::Pivot {
            run.cells.into_iter().map(Item::Cell).collect()
        } else {
            run.rows.into_iter().map(Item::Row).collect()
        };
        for ((key, _), item) in keys.into_iter().zip(items) {
            if into.put(key, item) {
                self.buffered += 1;
            }
        }
    }

    /// Writes everything buffered, in order, inside the open transaction: the held-back
    /// guarded changes decided first.
    pub(super) async fn flush(&mut self) -> Result<()> {
        self.write_runs().await
    }

    /// Writes every buffered run, in order, inside the open transaction (the held-back guarded
    /// changes decided first).
    pub(super) async fn write_runs(&mut self) -> Result<()> {
        self.settle_guarded().await?;
        self.write_settled(&[]).await.map(|_| ())
    }

    /// Writes every buffered run (none holds a change to check: see
    /// [`PgSink::settle_guarded`]; duplex's own conditional updates are written where they
    /// stand), with the conflict checks of `guarded` (their statements prepared) sent right
    /// behind the last writes, in their round trip; returns the checks' answers.
    pub(super) async fn write_settled(&mut self, guarded: &[PgChange]) -> Result<Vec<Answer>> {
        if self.runs.iter().any(|r| !r.held.is_empty() && !r.cas) {
            return Err(crate::error::Error::new(
                crate::error::ErrorKind::Invariant,
                "writing runs that hold guarded changes not yet checked",
            ));
        }
        let mut answers = None;
        let mut runs = std::mem::take(&mut self.runs);
        self.buffered = 0;
        self.holding = 0;
        let copied = |r: &Run| {
            r.cas || r.rows.len() >= COPY_MIN_ROWS && matches!(r.kind, Kind::Upsert | Kind::Delete)
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
            if end == runs.len() && !guarded.is_empty() {
                answers = Some(sent_then(pending, self.checks(guarded)).await?);
            } else {
                sent(pending).await?;
            }
            for run in segment {
                self.count(run);
            }
            if end < runs.len() && runs[end].cas {
                let held = std::mem::take(&mut runs[end].held);
                self.write_own_cas(held).await?;
            } else if end < runs.len() {
                let run = &runs[end];
                // Look-up columns are filled by the staged INSERT … SELECT, not by COPY.
                let direct = run.kind == Kind::Upsert
                    && run.inserts_only
                    && self.plan.tables[run.table].resolves.is_empty()
                    && self.try_copy_direct(run.table, &run.rows).await?;
                if !direct {
                    self.write_copy(run.table, run.kind, &run.rows).await?;
                }
                self.count(run);
            }
            at = end + 1;
        }
        match answers {
            Some(a) => Ok(a),
            None => sent_then(Vec::new(), self.checks(guarded)).await,
        }
    }

    fn count(&self, run: &Run) {
        let t = &self.plan.tables[run.table];
        metrics::counter!(
            crate::telemetry::ROWS_APPLIED,
            "direction" => crate::model::FORWARD,
            "table" => t.target.to_string(),
            "op" => match run.kind { Kind::Upsert => "upsert", Kind::Delete => "delete", Kind::Clear => "clear", Kind::Pivot => "pivot", Kind::Relay => "relay" }
        )
        .increment(run.rows.len().max(run.cells.len()) as u64);
    }
}

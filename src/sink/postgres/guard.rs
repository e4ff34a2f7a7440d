//! Conflict checks for tables mapped `both`: a change of such a table carries only the `both`
//! columns whose value changed in the source change, and only where PostgreSQL still holds the
//! change's before value; where it holds something else the CRM changed the column within the
//! lag, and the column's policy decides (`bitrix`: MySQL's new value is written; `crm`: the
//! CRM's value stays). Each such conflict is logged. duplex's own writes read back from MySQL
//! (the reverse direction's) refresh the forward-only columns; a `both` column takes their
//! value where it still holds the before value, or, where Bitrix wins, wherever it does not
//! hold it already.
//!
//! Why Bitrix's side takes duplex's own values even over a CRM change made since: MySQL may
//! refuse that change (it met this very value there: a conflict Bitrix wins), and then nothing
//! else brings MySQL's value back here. Taking every MySQL change of the column in binlog
//! order, the CRM ends with MySQL's last value, and a CRM change made after that finds it as its
//! before value on both sides and goes through. A CRM change MySQL does take comes back right
//! behind. (Where the CRM wins, MySQL takes every CRM change, so the CRM's newer value always
//! comes back.) `tests/conflicts.rs` has the sequence that drifted apart for good before.
//!
//! How: each guarded change is held back in its place among the buffered runs (so the writes
//! after it, a basket row reading its order, still come after it) until the commit, a size
//! bound, or a change whose check must see a write not yet made (one that may touch the same
//! row: then everything buffered is written first). Then the runs buffered before the first
//! held change are written and, right behind them in the same round trip, each held change's
//! row is read with `SELECT … FOR UPDATE` asking the server whether each `both` column is still
//! the before value or already the new one; each change becomes a plain upsert whose `both`
//! columns hold the decided values, in its place. The row lock keeps the CRM from changing
//! them between the check and the write. So a stream of Bitrix transactions costs one round
//! trip per batch, not one per transaction.
//!
//! Owns [`Guard`] and that decision. Uses the plan, the conflict log type and the sink's
//! connection and run buffer.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_postgres::types::{FromSql, Type};

use super::encode::{Cell, EncodedRow};
use super::queue::{sent_then, Asked};
use super::run::Run;
use super::{newest, PgChange, PgSink};
use crate::error::{Error, Result};
use crate::mapping::spec::Conflict as Policy;
use crate::mapping::TablePlan;
use crate::model::pg_ident;
use crate::state::conflict::Conflict;

/// What checking one change of a table with `both` columns takes (see the module docs).
#[derive(Debug, Clone)]
pub struct Guard {
    /// duplex's own write, read back from MySQL.
    pub own: bool,
    /// The before image, encoded like the row; `None` for an insert (whose before values are
    /// taken as NULL).
    pub before: Option<EncodedRow>,
    /// Per guarded column (in [`crate::mapping::TablePlan::guarded`] order): its before and new
    /// value as text, for the conflict log; empty for a change written by CAS
    /// ([`Guard::by_cas`]).
    pub texts: Vec<(Option<String>, Option<String>)>,
    /// The row's key as text.
    pub key: String,
    /// Per guarded column: under `newest`, its new value in Bitrix's own terms (for the other
    /// direction); `None` otherwise.
    pub sources: Vec<Option<String>>,
    /// The row's Bitrix key as text, when a column is `newest`.
    pub my_key: Option<String>,
    pub txn: Arc<str>,
    pub commit_time_us: i64,
}

impl Guard {
    /// Whether the change is duplex's own update of a table without mirrors, which its
    /// conditional UPDATE writes (see [`PgSink::own_cas`]): it is never decided and logs no
    /// conflict, so it carries no texts.
    pub fn by_cas(&self, t: &TablePlan) -> bool {
        self.own && self.before.is_some() && t.mirrorless()
    }
}

/// A value as the server sent it (binary), whatever its type: written back unchanged.
struct Raw(Option<Vec<u8>>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(
        _ty: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(Some(raw.to_vec())))
    }

    fn from_sql_null(
        _ty: &Type,
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(None))
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }
}

/// A `both` column's value on PostgreSQL as this transaction will leave it.
#[derive(Clone)]
pub(super) struct Held {
    cell: Option<Vec<u8>>,
    text: Option<String>,
    /// Read from the server (not yet set by this transaction): the server's answers about it
    /// apply.
    read: bool,
}

/// One row being checked: its `both` columns as this transaction leaves them.
struct RowState {
    cols: Vec<Held>,
}

/// One change's answer from the server: per guarded column, whether the row holds the before
/// value and whether it holds the new one, and the value itself. `None`: no such row.
pub(super) type Answer = Option<Vec<(bool, bool, Held)>>;

impl PgSink {
    /// Prepares (once per table, kept in `guard_stmts`) the `SELECT` of a table's guarded
    /// columns for one key, locking the row: per column, whether it is the before value
    /// (`$k+2j+1`), whether it is the new one (`$k+2j+2`), its text and its value.
    async fn prepare_guard(&mut self, table: usize) -> Result<()> {
        if self.guard_stmts.contains_key(&table) {
            return Ok(());
        }
        let t = &self.plan.tables[table];
        let nk = t.key.len();
        let mut cols = Vec::new();
        for (j, &c) in t.guarded().iter().enumerate() {
            let n = pg_ident(&t.columns[c].target.name);
            let (b, a) = (nk + 2 * j + 1, nk + 2 * j + 2);
            cols.push(format!(
                "{n} IS NOT DISTINCT FROM ${b}, {n} IS NOT DISTINCT FROM ${a}, {n}::text, {n}"
            ));
        }
        let cond = key_condition(t);
        let sql = format!(
            "SELECT {} FROM {} WHERE {} FOR UPDATE",
            cols.join(", "),
            t.target.pg_quoted(),
            cond
        );
        let stmt = self.client.prepare(&sql).await.map_err(|e| {
            Error::from_pg(
                e,
                false,
                &format!("preparing the conflict check of {}", t.target),
            )
        })?;
        self.guard_stmts.insert(table, stmt);
        Ok(())
    }

    /// Holds a guarded change back in its place among the buffered runs, until the next settle
    /// (the commit, a size bound, a write that must see it). A change whose row an unwritten
    /// run may touch is held only after everything buffered is written, so that its check
    /// sees that write.
    pub(super) async fn push_guarded(&mut self, change: PgChange) -> Result<()> {
        let key_text = change.guard.as_ref().map(|g| g.key.clone());
        let touched = self
            .runs
            .iter()
            .any(|r| r.may_touch(&self.plan, change.table, &change.key, key_text.as_deref()));
        if touched {
            self.write_runs().await?;
        }
        let cas = self.own_cas(&change);
        match self.runs.last_mut() {
            Some(r) if !r.held.is_empty() && r.cas == cas => r.held.push(change),
            _ => self.runs.push(Run::held(change, cas)),
        }
        self.holding += 1;
        if self.holding >= GUARDED_BATCH {
            self.write_runs().await?;
        }
        Ok(())
    }

    /// Decides the held-back guarded changes and puts them, as plain upserts, in their places
    /// among the buffered runs (duplex's own conditional updates stay as they are). One round
    /// trip: the runs buffered before the first of them are written and every check is sent
    /// right behind; the runs between them touch none of their rows (see
    /// [`PgSink::push_guarded`]), so each check sees every earlier write to its row.
    pub(super) async fn settle_guarded(&mut self) -> Result<()> {
        let Some(first) = self.runs.iter().position(|r| !r.held.is_empty() && !r.cas) else {
            return self.write_notes().await;
        };
        let later = self.runs.split_off(first);
        let mut checks = Vec::new();
        // Per later run: it stays as it is, or the number of its changes checked.
        let mut slots: Vec<std::result::Result<Run, usize>> = Vec::with_capacity(later.len());
        for mut r in later {
            if r.held.is_empty() || r.cas {
                slots.push(Ok(r));
            } else {
                slots.push(Err(r.held.len()));
                checks.append(&mut r.held);
            }
        }
        for c in &checks {
            self.prepare_guard(c.table).await?;
        }
        let answers = self.write_settled(&checks).await?;
        let (decided, conflicts) = self.decide_answered(checks, answers);
        self.conflicts.extend(conflicts);
        let mut decided = decided.into_iter();
        for slot in slots {
            match slot {
                Ok(run) => self.push_run(run),
                Err(n) => {
                    for row in decided.by_ref().take(n).flatten() {
                        self.append(row);
                    }
                }
            }
        }
        if !self.notes.is_empty() {
            // `newest` columns are decided on the rows as written.
            self.write_settled(&[]).await?;
        }
        self.write_notes().await
    }

    /// Whether a guarded change is duplex's own update of a table whose every non-key column
    /// goes both ways: all it can do is put a `both` column where PostgreSQL still holds its
    /// before value (where Bitrix wins: where it does not hold the new one), which one
    /// conditional UPDATE does without reading the row first.
    pub(super) fn own_cas(&self, c: &PgChange) -> bool {
        let t = &self.plan.tables[c.table];
        c.guard.as_ref().is_some_and(|g| g.by_cas(t))
    }

    /// Writes duplex's own updates of tables without mirrors (see [`PgSink::own_cas`]), back
    /// to back: per column, the new value where the row still holds the before value (where
    /// Bitrix wins: where it does not hold the new value); a row where no column takes it is
    /// not touched.
    pub(super) async fn write_own_cas(&mut self, changes: Vec<PgChange>) -> Result<()> {
        for c in &changes {
            self.prepare_own_cas(c.table).await?;
        }
        let (client, stmts) = (&self.client, &self.own_cas_stmts);
        let plan = self.plan.clone();
        let (yes, no) = ([1u8], [0u8]);
        let queries = changes.iter().map(|c| {
            let t = &plan.tables[c.table];
            let row = c.row.cell_list();
            let before = c.guard.as_ref().and_then(|g| g.before.as_ref());
            let before = before.map(EncodedRow::cell_list);
            let mut params: Vec<Cell<'_>> = t.key.iter().map(|&k| Cell(row[k])).collect();
            for &col in t.guarded() {
                let b = before.as_ref().and_then(|b| b[col]);
                let a = row[col];
                params.push(Cell(Some(if b != a { &yes[..] } else { &no[..] })));
                params.push(Cell(b));
                params.push(Cell(a));
            }
            let stmt = &stmts[&c.table];
            async move {
                let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    params.iter().map(|p| p as _).collect();
                client.execute(stmt, &refs).await
            }
        });
        for r in futures_util::future::join_all(queries).await {
            r.map_err(|e| Error::from_pg(e, true, "writing duplex's own changes read back"))?;
        }
        Ok(())
    }

    /// Prepares (once per table, kept in `own_cas_stmts`) the `UPDATE` of a table's `both`
    /// columns for one key: column j set to `$k+3j+3` where `$k+3j+1` (carried) and it holds
    /// `$k+3j+2` (where Bitrix wins: and it does not hold `$k+3j+3`); only rows where one is set.
    async fn prepare_own_cas(&mut self, table: usize) -> Result<()> {
        if self.own_cas_stmts.contains_key(&table) {
            return Ok(());
        }
        let t = &self.plan.tables[table];
        let nk = t.key.len();
        let (mut sets, mut any) = (Vec::new(), Vec::new());
        for (j, &c) in t.guarded().iter().enumerate() {
            let n = pg_ident(&t.columns[c].target.name);
            let (carried, b, a) = (nk + 3 * j + 1, nk + 3 * j + 2, nk + 3 * j + 3);
            // Where Bitrix wins, the row follows MySQL (see `decide_column`): it takes the new
            // value unless it holds it (the before value is named too, only for its type).
            let holds = if t.columns[c].conflict == Some(Policy::Bitrix) {
                format!(
                    "(${carried}::boolean AND ({n} IS DISTINCT FROM ${a} OR {n} IS NOT DISTINCT FROM ${b}))"
                )
            } else {
                format!("(${carried}::boolean AND {n} IS NOT DISTINCT FROM ${b})")
            };
            sets.push(format!("{n} = CASE WHEN {holds} THEN ${a} ELSE {n} END"));
            any.push(holds);
        }
        let cond = key_condition(t);
        let sql = format!(
            "UPDATE {} SET {} WHERE {} AND ({})",
            t.target.pg_quoted(),
            sets.join(", "),
            cond,
            any.join(" OR ")
        );
        let stmt = self.client.prepare(&sql).await.map_err(|e| {
            Error::from_pg(
                e,
                false,
                &format!("preparing the own-write check of {}", t.target),
            )
        })?;
        self.own_cas_stmts.insert(table, stmt);
        Ok(())
    }

    /// One guarded change alone (careful mode): decided, then written under the caller's
    /// savepoint; its conflicts count only when the write succeeds.
    pub(super) async fn decide_one(
        &mut self,
        change: PgChange,
    ) -> Result<(Option<PgChange>, Vec<Conflict>)> {
        self.write_runs().await?;
        let (mut rows, conflicts) = self.decide(vec![change]).await?;
        Ok((rows.pop(), conflicts))
    }

    /// Reads the rows of `changes` (locking them) and decides each change's `both` columns;
    /// returns the rows to write (plain upserts, in order) and the conflicts found.
    async fn decide(&mut self, changes: Vec<PgChange>) -> Result<(Vec<PgChange>, Vec<Conflict>)> {
        for c in &changes {
            self.prepare_guard(c.table).await?;
        }
        let answers = self.ask(&changes).await?;
        let (rows, conflicts) = self.decide_answered(changes, answers);
        Ok((rows.into_iter().flatten().collect(), conflicts))
    }

    /// Decides `changes` on the server's answers to their checks (in order): per change, the
    /// upsert to write (`None`: nothing).
    fn decide_answered(
        &mut self,
        changes: Vec<PgChange>,
        answers: Vec<Answer>,
    ) -> (Vec<Option<PgChange>>, Vec<Conflict>) {
        let mut states: HashMap<(usize, Vec<u8>), RowState> = HashMap::new();
        let mut rows = Vec::with_capacity(changes.len());
        let mut conflicts = Vec::new();
        let mut notes = Vec::new();
        for (change, answer) in changes.into_iter().zip(answers) {
            let decided =
                self.decide_change(change, answer, &mut states, &mut conflicts, &mut notes);
            rows.push(decided);
        }
        self.notes.extend(notes);
        (rows, conflicts)
    }

    /// Sends every change's check back to back and collects the answers in order.
    async fn ask(&self, changes: &[PgChange]) -> Result<Vec<Answer>> {
        sent_then(Vec::new(), self.checks(changes)).await
    }

    /// The checks of `changes` (one locking read each), to send back to back.
    pub(super) fn checks<'a>(&'a self, changes: &'a [PgChange]) -> Vec<Asked<'a, Answer>> {
        let (client, stmts) = (&self.client, &self.guard_stmts);
        changes
            .iter()
            .map(|c| {
                let t = &self.plan.tables[c.table];
                let guard = c.guard.as_ref().expect("a guarded change");
                let row = c.row.cell_list();
                let before = guard.before.as_ref().map(EncodedRow::cell_list);
                let mut params: Vec<Cell<'_>> = t.key.iter().map(|&k| Cell(row[k])).collect();
                for &col in t.guarded() {
                    params.push(Cell(before.as_ref().and_then(|b| b[col])));
                    params.push(Cell(row[col]));
                }
                let stmt = &stmts[&c.table];
                let check: Asked<'a, Answer> = Box::pin(async move {
                    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                        params.iter().map(|p| p as _).collect();
                    let row = client.query_opt(stmt, &refs).await.map_err(|e| {
                        Error::from_pg(
                            e,
                            true,
                            &format!("checking a row of {} for conflicts", t.target),
                        )
                    })?;
                    Ok(row.map(|row| {
                        (0..t.guarded().len())
                            .map(|j| {
                                let Raw(cell) = row.get(4 * j + 3);
                                let held = Held {
                                    cell,
                                    text: row.get(4 * j + 2),
                                    read: true,
                                };
                                (row.get(4 * j), row.get(4 * j + 1), held)
                            })
                            .collect()
                    }))
                });
                check
            })
            .collect()
    }

    /// Decides one change against the row as the server answered and as this transaction has
    /// left it so far; `None`: nothing to write (duplex's own write of a row that is gone, or
    /// that changes nothing).
    fn decide_change(
        &self,
        mut change: PgChange,
        answer: Answer,
        states: &mut HashMap<(usize, Vec<u8>), RowState>,
        conflicts: &mut Vec<Conflict>,
        notes: &mut Vec<newest::Note>,
    ) -> Option<PgChange> {
        let t = self.plan.tables[change.table].clone();
        let guarded = t.guarded();
        let guard = change.guard.take().expect("a guarded change");
        let id = (change.table, change.key.clone());
        let row = change.row.cell_list();
        let before = guard.before.as_ref().map(EncodedRow::cell_list);
        if !states.contains_key(&id) {
            match &answer {
                Some(cols) => {
                    let cols = cols.iter().map(|(_, _, h)| h.clone()).collect();
                    states.insert(id.clone(), RowState { cols });
                }
                // No such row: duplex's own write creates none (the CRM removed it); another
                // change inserts it as it is.
                None if guard.own => return None,
                None => {
                    states.insert(id, inserted(guarded, &guard, &row));
                    for (j, &c) in guarded.iter().enumerate() {
                        if t.columns[c].conflict == Some(Policy::Newest) && !guard.own {
                            let note =
                                newest::Note::of(change.table, c, j, &guard, &change.row, true);
                            notes.push(note);
                        }
                    }
                    return Some(change);
                }
            }
        }
        let state = states.get_mut(&id).expect("inserted above");
        let mut writes = false;
        for (j, &c) in guarded.iter().enumerate() {
            let asked = answer.as_ref().map(|a| (a[j].0, a[j].1));
            let cells = (before.as_ref().map(|b| b[c]), row[c]);
            let decided = decide_column(&t, c, j, &guard, cells, &state.cols[j], asked);
            let Some(take) = decided else {
                continue; // not changed by this source change: not carried
            };
            if let Some(plain) = take.settle {
                notes.push(newest::Note::of(
                    change.table,
                    c,
                    j,
                    &guard,
                    &change.row,
                    plain,
                ));
            }
            if let Some(lost) = take.conflict {
                conflicts.push(lost);
            }
            if take.write {
                writes = true;
                state.cols[j] = Held {
                    cell: row[c].map(<[u8]>::to_vec),
                    text: guard.texts[j].1.clone(),
                    read: false,
                };
            }
        }
        if guard.own && !writes && !mirrors_changed(&t, guarded, before.as_deref(), &row) {
            return None;
        }
        change.row = with_decided(&change.row, guarded, state);
        change.from_insert = false;
        Some(change)
    }
}

/// `key1 = $1 AND key2 = $2 …` of a plan table's key.
fn key_condition(t: &TablePlan) -> String {
    let cond: Vec<String> = t
        .key
        .iter()
        .enumerate()
        .map(|(p, &k)| format!("{} = ${}", pg_ident(&t.columns[k].target.name), p + 1))
        .collect();
    cond.join(" AND ")
}

/// What one carried `both` column of a change does.
struct Take {
    /// The change's new value is written.
    write: bool,
    /// It met a value the CRM changed meanwhile (logged).
    conflict: Option<Conflict>,
    /// A `newest` column: decided once the change's half is stored; whether the row held the
    /// change's before value (or one this transaction wrote).
    settle: Option<bool>,
}

/// Decides column `c` (the `j`-th guarded one) of a change against `held`, what the row holds
/// (`asked`: the server's answers while `held` is still as read); `cells` are the column's
/// before cell (`None` without a before image) and new cell. `None`: the change did not change
/// this column.
fn decide_column(
    t: &TablePlan,
    c: usize,
    j: usize,
    guard: &Guard,
    cells: (Option<Option<&[u8]>>, Option<&[u8]>),
    held: &Held,
    asked: Option<(bool, bool)>,
) -> Option<Take> {
    let (before, after) = cells;
    if before == Some(after) {
        return None;
    }
    // An insert's before value is NULL: a row another entry made (a pivot's) has NULL there,
    // unless the CRM set it.
    let before = before.flatten();
    let (is_before, is_after) = match (asked, held.read) {
        (Some(a), true) => a,
        _ => (
            before == held.cell.as_deref(),
            held.cell.as_deref() == after,
        ),
    };
    let policy = t.columns[c].conflict.unwrap_or_default();
    if policy == Policy::Newest {
        // Written (or not) once the change's half is stored: see `newest::settle`. duplex's own
        // writes read back never take it.
        return Some(Take {
            write: false,
            conflict: None,
            settle: (!guard.own).then_some(is_before || !held.read),
        });
    }
    // duplex's own insert read back: the row came from the CRM, which may have changed the
    // column since (its change is on its way); an update read back finds its before value only
    // where PostgreSQL has not moved on from it (or moved back to it: then the CRM's later
    // change follows right behind and restores it).
    let is_before = is_before && !(guard.own && guard.before.is_none());
    let write = |write| {
        Some(Take {
            write,
            conflict: None,
            settle: None,
        })
    };
    if is_after {
        return write(false);
    }
    if is_before {
        return write(true);
    }
    let wins = policy == Policy::Bitrix;
    if guard.own {
        // The CRM changed it again since: its newer value is on its way to MySQL. Where the CRM
        // wins it is taken there. Where Bitrix wins it may meet this very value there and
        // lose, and nothing else would bring the value back here: the row follows MySQL, and
        // the CRM's change, if MySQL takes it, comes back right behind (see the module docs).
        return write(wins);
    }
    Some(Take {
        write: wins,
        settle: None,
        conflict: Some(Conflict {
            target_table: t.target.to_string(),
            key: guard.key.clone(),
            column: t.columns[c].target.name.clone(),
            before: guard.texts[j].0.clone(),
            incoming: guard.texts[j].1.clone(),
            current: held.text.clone(),
            policy: policy.as_str(),
            winner: if wins { "bitrix" } else { "crm" },
            txn_id: guard.txn.to_string(),
            commit_time_us: guard.commit_time_us,
            other_commit_us: 0,
        }),
    })
}

/// A row a change inserts: its `both` columns are the change's.
fn inserted(guarded: &[usize], guard: &Guard, row: &[Option<&[u8]>]) -> RowState {
    let cols = guarded
        .iter()
        .zip(&guard.texts)
        .map(|(&c, (_, after))| Held {
            cell: row[c].map(<[u8]>::to_vec),
            text: after.clone(),
            read: false,
        })
        .collect();
    RowState { cols }
}

/// Whether duplex's own write read back changed a forward-only column (a mirror): only then is
/// it worth writing when it takes no `both` column. `before` and `row` are the images' cells.
fn mirrors_changed(
    t: &TablePlan,
    guarded: &[usize],
    before: Option<&[Option<&[u8]>]>,
    row: &[Option<&[u8]>],
) -> bool {
    let mut mirrors = (0..t.columns.len()).filter(|i| !guarded.contains(i) && !t.key.contains(i));
    match before {
        None => mirrors.next().is_some(),
        Some(b) => mirrors.any(|i| b[i] != row[i]),
    }
}

/// `row` with its `both` columns as decided.
fn with_decided(row: &EncodedRow, guarded: &[usize], state: &RowState) -> EncodedRow {
    let mut out = EncodedRow::with_bytes(row.byte_len() + 16);
    for (i, cell) in row.cells().enumerate() {
        match guarded.iter().position(|&g| g == i) {
            Some(j) => out.push_encoded(state.cols[j].cell.as_deref()),
            None => out.push_encoded(cell),
        }
    }
    out
}

/// Guarded changes held back at most: past this many they are decided and buffered.
const GUARDED_BATCH: usize = 500;

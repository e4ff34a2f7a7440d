//! Conflict checks for tables mapped `both`, the way back: a CRM change carries only the `both`
//! columns whose value changed (the before image comes with `REPLICA IDENTITY FULL`), and only
//! where Bitrix still holds the before value — read through the mapping, so a code the value
//! map reads as the same CRM value counts as the same. Where Bitrix holds something else it
//! changed the column within the lag, and the column's policy decides (`crm`: the CRM's value is
//! written; `bitrix`: Bitrix's stays). Each such conflict is logged.
//!
//! How: a run of guarded changes is checked with one `SELECT … FOR UPDATE` per change, sent as
//! one multi-statement query (one round trip), asking the server whether each `both` column is
//! still the before value or already the new one; each change then writes only the columns it
//! takes. The row lock keeps Bitrix from changing them between the check and the write.
//!
//! Owns [`MyGuard`], its making in the encoder, and the decision. Uses the reverse plan, the
//! conflict log type and the sink's connection.

use std::collections::HashMap;

use mysql_async::prelude::Queryable;
use mysql_async::Value as My;

use super::{my_err, newest as notes, MyChange, MyEncoder, MyKind, MySqlSink};
use crate::error::Result;
use crate::mapping::spec::Conflict as Policy;
use crate::mapping::ReversePlan;
use crate::model::{my_ident, Image, Op, RowChange, Value};
use crate::state::conflict::Conflict;
use crate::state::newest;

/// What checking one change of a table with `both` columns takes.
#[derive(Debug, Clone)]
pub struct MyGuard {
    /// Per guarded column ([`ReversePlan::guarded`] order): the before value as MySQL holds
    /// it, and the MySQL values a map reads as it (several codes for one CRM value); `None`
    /// without a full before image (then any current value other than the new one is a
    /// conflict), and for a column the change does not carry (nothing asks about it).
    pub(super) before: Vec<Option<(My, Option<Vec<My>>)>>,
    pub(super) txn: String,
    pub(super) commit_time_us: i64,
    /// The change is an insert (its before values are NULL).
    insert: bool,
    /// The row's CRM key as text (`newest` columns' state is kept under it).
    pub(super) pk: String,
    /// Per guarded column: under `newest`, its new value in the CRM's own terms (for the other
    /// direction); `None` otherwise.
    pub(super) sources: Vec<Option<String>>,
    /// The row's Bitrix key as text.
    pub(super) my_key: Option<String>,
}

impl MyEncoder {
    /// The guard of a change of a table with `both` columns, and the change's values trimmed to
    /// the `both` columns it changed. `None` for other tables.
    pub(super) fn guard<'a>(
        &self,
        t: &ReversePlan,
        idx: &[usize],
        change: &'a RowChange,
        values: &mut [Option<My>],
    ) -> Option<Box<MyGuard>> {
        let guarded = t.guarded();
        if guarded.is_empty() {
            return None;
        }
        let after: &[Value] = change.after.as_deref().unwrap_or(&[]);
        let before = (change.op == Op::Update && change.image == Image::Full)
            .then_some(change.before.as_ref())
            .flatten();
        const NULL: &Value = &Value::Null;
        let at = |row: &'a [Value], c: usize| row.get(idx[c]).unwrap_or(NULL);
        let mut g = MyGuard {
            before: Vec::with_capacity(guarded.len()),
            txn: self.txn.clone(),
            commit_time_us: self.commit_time_us.unwrap_or(0),
            insert: change.op == Op::Insert,
            pk: t
                .key
                .iter()
                .map(|&k| newest::source_text(at(after, k)).unwrap_or_default())
                .collect::<Vec<_>>()
                .join(","),
            sources: Vec::with_capacity(guarded.len()),
            my_key: t
                .key
                .first()
                .and_then(|&k| values[k].as_ref())
                .and_then(text_of),
        };
        for &c in guarded {
            let a = at(after, c);
            let is_newest = t.columns[c].conflict == Some(Policy::Newest);
            g.sources
                .push(is_newest.then(|| newest::source_text(a)).flatten());
            let b = before.map(|b| at(b, c));
            if b == Some(a) {
                // Not changed by this change: not carried, so its before value is never asked
                // about (a status update carries 1 of 75 columns).
                values[c] = None;
                g.before.push(None);
                continue;
            }
            // An insert's before value is NULL.
            let lit = if g.insert {
                Some((My::NULL, None))
            } else {
                b.and_then(|b| {
                    let one = self.convert(t, idx, std::iter::once(c), before?).ok()?;
                    Some((one.into_iter().next()??, self.preimages(&t.columns[c], b)))
                })
            };
            g.before.push(lit);
        }
        Some(Box::new(g))
    }
}

/// A `both` column's value on MySQL as this transaction leaves it.
#[derive(Clone)]
struct Held {
    value: My,
    /// Read from the server (not yet set by this transaction): the server's answers apply.
    read: bool,
}

/// The server's answers about one column: whether the row holds the before value, whether it
/// holds the new one, and the value.
type Asked = (bool, bool, My);

/// The server's answer for one change.
enum Answer {
    /// No such row.
    NoRow,
    /// Per guarded column the change carries: see [`Asked`].
    Row(Vec<Option<Asked>>),
    /// Not asked: the change carries no guarded column.
    Unchecked,
}

impl MySqlSink {
    /// `SELECT … FOR UPDATE` of a change's row: per guarded column it carries (`carried`,
    /// positions in [`ReversePlan::guarded`]), whether it holds the before value, whether it
    /// holds the new one, and the value.
    fn check_sql(&self, t: &ReversePlan, c: &MyChange, carried: &[usize]) -> String {
        let g = c.guard.as_ref().expect("a guarded change");
        let lit = |v: &My| self.literal(v);
        let holds = |n: &str, v: &My, codes: Option<&Vec<My>>| match codes {
            Some(codes) if !codes.is_empty() => {
                let list: Vec<String> = codes.iter().map(lit).collect();
                format!("COALESCE({n} IN ({}), 0)", list.join(", "))
            }
            _ => format!("{n} <=> {}", lit(v)),
        };
        let mut cols = Vec::new();
        for &j in carried {
            let col = t.guarded()[j];
            let n = my_ident(&t.columns[col].my.name);
            let before = match &g.before[j] {
                Some((v, codes)) => holds(&n, v, codes.as_ref()),
                None => "0".into(),
            };
            let new = c.values[col].as_ref().expect("a carried column");
            let after = holds(&n, new, c.same.get(col).and_then(Option::as_ref));
            cols.push(format!("{before}, {after}, {n}"));
        }
        format!(
            "SELECT {} FROM {} WHERE {} FOR UPDATE",
            cols.join(", "),
            t.target.my_quoted(),
            self.key_condition(t, c)
        )
    }

    /// Writes a run of guarded changes: checked ([`MySqlSink::decide`]), then written. A run
    /// of inserts of one table is first tried as one load ([`super::load`]): if every row
    /// went in, none of them existed, which is all the check would have found (an insert of
    /// an absent row meets no conflict), and the load holds their locks. Otherwise the load
    /// is rolled back and the run checked and written as usual.
    pub(super) async fn write_guarded(&mut self, changes: Vec<MyChange>) -> Result<()> {
        let Some(changes) = self.load_inserts(changes).await? else {
            return Ok(());
        };
        let decided = self.decide(changes).await?;
        self.write_plain(decided).await
    }

    /// [`MySqlSink::write_guarded`]'s load; the changes back when they were not loaded.
    async fn load_inserts(&mut self, changes: Vec<MyChange>) -> Result<Option<Vec<MyChange>>> {
        let Some(first) = changes.first() else {
            return Ok(None);
        };
        let t = self.plan.reverse[first.table].clone();
        let sent: Vec<bool> = first.values.iter().map(Option::is_some).collect();
        // `newest` columns keep a note per insert (see `decide_change`): those go the usual way.
        let newest = t.columns.iter().any(|c| c.conflict == Some(Policy::Newest));
        let inserts = changes.iter().all(|c| {
            c.table == first.table
                && c.kind == MyKind::Upsert
                && c.guard.as_ref().is_some_and(|g| g.insert)
                && c.at.len() == first.at.len()
                && c.values
                    .iter()
                    .map(Option::is_some)
                    .eq(sent.iter().copied())
        });
        if newest
            || !inserts
            || changes.len() > super::load::MAX_ROWS
            || !self.loader.wants(first.table, &t, &sent, changes.len())
        {
            return Ok(Some(changes));
        }
        let table = first.table;
        let rows = changes.len();
        let changes = std::sync::Arc::new(changes);
        let run = super::load::Run {
            changes: changes.clone(),
            rows: 0..rows,
        };
        let loaded = self
            .loader
            .load(&mut self.conn, table, &t, run, &sent)
            .await
            .map_err(|e| my_err(e, &format!("loading {rows} rows into {}", t.target)))?;
        match loaded {
            super::load::Loaded::All => {
                super::count_rows(&t, "upsert", rows);
                super::free_later(changes);
                Ok(None)
            }
            // The load's row stream may still hold its share of the run.
            super::load::Loaded::No => Ok(Some(
                std::sync::Arc::try_unwrap(changes).unwrap_or_else(|shared| (*shared).clone()),
            )),
        }
    }

    /// Checks a run of guarded changes against their rows (locking them) and returns the
    /// changes to write, each with only the `both` columns it takes; conflicts are noted for
    /// the commit.
    pub(super) async fn decide(&mut self, changes: Vec<MyChange>) -> Result<Vec<MyChange>> {
        // Per change, the guarded columns it carries (positions in `guarded`).
        let carried: Vec<Vec<usize>> = changes
            .iter()
            .map(|c| {
                let t = &self.plan.reverse[c.table];
                (0..t.guarded().len())
                    .filter(|&j| c.values[t.guarded()[j]].is_some())
                    .collect()
            })
            .collect();
        let mut answers: Vec<Option<Answer>> = carried
            .iter()
            .map(|cols| cols.is_empty().then_some(Answer::Unchecked))
            .collect();
        // Inserts of rows that do not exist need no check: one query finds which do.
        let absent = self.absent_inserts(&changes, &answers).await?;
        for i in absent {
            answers[i] = Some(Answer::NoRow);
        }
        let asked: Vec<usize> = (0..changes.len())
            .filter(|i| answers[*i].is_none())
            .collect();
        if !asked.is_empty() {
            let sql: Vec<String> = asked
                .iter()
                .map(|&i| {
                    let t = &self.plan.reverse[changes[i].table];
                    self.check_sql(t, &changes[i], &carried[i])
                })
                .collect();
            let what = "checking rows for conflicts";
            let mut result = self
                .conn
                .query_iter(sql.join(";\n"))
                .await
                .map_err(|e| my_err(e, what))?;
            for &i in &asked {
                let rows: Vec<mysql_async::Row> =
                    result.collect().await.map_err(|e| my_err(e, what))?;
                let width = self.plan.reverse[changes[i].table].guarded().len();
                let cols = &carried[i];
                answers[i] = Some(match rows.into_iter().next() {
                    None => Answer::NoRow,
                    Some(mut r) => {
                        let mut per = vec![None; width];
                        for (k, &j) in cols.iter().enumerate() {
                            let flag = |r: &mut mysql_async::Row, i: usize| {
                                r.take::<Option<i64>, _>(i).flatten().unwrap_or(0) != 0
                            };
                            let b = flag(&mut r, 3 * k);
                            let a = flag(&mut r, 3 * k + 1);
                            let v = r.take::<My, _>(3 * k + 2).unwrap_or(My::NULL);
                            per[j] = Some((b, a, v));
                        }
                        Answer::Row(per)
                    }
                });
            }
            // The rest of the multi-statement result, if any.
            while !result.is_empty() {
                let _: Vec<mysql_async::Row> =
                    result.collect().await.map_err(|e| my_err(e, what))?;
            }
        }
        let mut states: HashMap<(usize, String), Vec<Held>> = HashMap::new();
        let mut out = Vec::with_capacity(changes.len());
        for (change, answer) in changes.into_iter().zip(answers) {
            let answer = answer.expect("every change answered");
            if let Some(c) = self.decide_change(change, answer, &mut states) {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// The inserts among `changes` (not yet answered) whose row does not exist, found with one
    /// `SELECT key … FOR UPDATE` per table; only tables whose key columns are integers or text
    /// (compared as text) are asked, the others get the full check.
    async fn absent_inserts(
        &mut self,
        changes: &[MyChange],
        answers: &[Option<Answer>],
    ) -> Result<Vec<usize>> {
        let mut by_table: HashMap<usize, Vec<usize>> = HashMap::new();
        for (i, c) in changes.iter().enumerate() {
            let insert = c.guard.as_ref().is_some_and(|g| g.insert);
            if insert && answers[i].is_none() && key_text(&self.plan.reverse[c.table], c).is_some()
            {
                by_table.entry(c.table).or_default().push(i);
            }
        }
        let mut absent = Vec::new();
        for (table, idx) in by_table {
            let t = self.plan.reverse[table].clone();
            let names: Vec<String> = t
                .key
                .iter()
                .map(|&k| my_ident(&t.columns[k].my.name))
                .collect();
            let tuples: Vec<String> = idx
                .iter()
                .map(|&i| {
                    self.literal_tuple(t.key.iter().filter_map(|&k| changes[i].values[k].as_ref()))
                })
                .collect();
            let sql = format!(
                "SELECT CONCAT_WS(CHAR(31), {}) FROM {} WHERE ({}) IN ({}) FOR UPDATE",
                names.join(", "),
                t.target.my_quoted(),
                names.join(", "),
                tuples.join(", ")
            );
            let present: std::collections::HashSet<String> = self
                .conn
                .query::<String, _>(sql)
                .await
                .map_err(|e| my_err(e, "finding the rows inserts would meet"))?
                .into_iter()
                .collect();
            absent.extend(
                idx.into_iter()
                    .filter(|&i| key_text(&t, &changes[i]).is_some_and(|k| !present.contains(&k))),
            );
        }
        Ok(absent)
    }

    /// Decides one change; `None`: nothing to write.
    fn decide_change(
        &mut self,
        mut change: MyChange,
        answer: Answer,
        states: &mut HashMap<(usize, String), Vec<Held>>,
    ) -> Option<MyChange> {
        let t = self.plan.reverse[change.table].clone();
        let guarded = t.guarded();
        let g = change.guard.take().expect("a guarded change");
        let writes_any = |c: &MyChange| {
            let writes = (0..t.columns.len()).any(|i| !t.key.contains(&i) && c.values[i].is_some());
            writes || c.kind != MyKind::Update
        };
        let rows = match answer {
            Answer::Unchecked => return writes_any(&change).then_some(change),
            Answer::Row(rows) => Some(rows),
            Answer::NoRow => None,
        };
        let id = (
            change.table,
            self.literal_tuple(t.key.iter().filter_map(|&k| change.values[k].as_ref())),
        );
        if !states.contains_key(&id) {
            match &rows {
                Some(cols) => {
                    let held = cols
                        .iter()
                        .map(|a| Held {
                            value: a.as_ref().map_or(My::NULL, |(_, _, v)| v.clone()),
                            read: true,
                        })
                        .collect();
                    states.insert(id.clone(), held);
                }
                // No such row: an UPDATE would change nothing; an upsert inserts it as it is.
                None if change.kind == MyKind::Update => return None,
                None => {
                    let held = guarded
                        .iter()
                        .map(|&c| Held {
                            value: change.values[c].clone().unwrap_or(My::NULL),
                            read: false,
                        })
                        .collect();
                    states.insert(id, held);
                    for (j, &c) in guarded.iter().enumerate() {
                        let is_newest = t.columns[c].conflict == Some(Policy::Newest);
                        if let (true, Some(new)) = (is_newest, &change.values[c]) {
                            self.notes
                                .push(notes::Note::of(&change, c, j, &g, new, true));
                        }
                    }
                    return Some(change);
                }
            }
        }
        let held = states.get_mut(&id).expect("inserted above");
        for (j, &c) in guarded.iter().enumerate() {
            let Some(new) = change.values[c].clone() else {
                continue; // not carried
            };
            let asked = match (&rows, held[j].read) {
                (Some(a), true) => a[j].clone(),
                _ => None,
            };
            if t.columns[c].conflict == Some(Policy::Newest) {
                // Decided once the change's half is stored (`notes::settle`).
                let plain = asked.as_ref().is_none_or(|(b, a, _)| *b || *a);
                self.notes
                    .push(notes::Note::of(&change, c, j, &g, &new, plain));
                change.values[c] = None;
                continue;
            }
            let (take, conflict) = decide_column(&t, c, j, &g, &change, &held[j], asked);
            self.conflicts.extend(conflict);
            if take {
                held[j] = Held {
                    value: new,
                    read: false,
                };
            } else {
                change.values[c] = None;
            }
        }
        writes_any(&change).then_some(change)
    }
}

/// Decides carried column `c` (the `j`-th guarded one) of `change` (its new value in MySQL terms)
/// against what the row holds (`asked`: the server's answers while `held` is still as read):
/// whether the new value is written, and the conflict, if it met one.
fn decide_column(
    t: &ReversePlan,
    c: usize,
    j: usize,
    g: &MyGuard,
    change: &MyChange,
    held: &Held,
    asked: Option<Asked>,
) -> (bool, Option<Conflict>) {
    let new = change.values[c].as_ref().expect("a carried column");
    let (is_before, is_after) = match &asked {
        Some((b, a, _)) => (*b, *a),
        None => (
            g.before[j].as_ref().is_some_and(|(b, _)| *b == held.value),
            held.value == *new,
        ),
    };
    if is_after {
        return (false, None);
    }
    if is_before {
        return (true, None);
    }
    let policy = t.columns[c].conflict.unwrap_or_default();
    let wins = policy != Policy::Bitrix;
    let conflict = Conflict {
        target_table: t.target.to_string(),
        key: t
            .key
            .iter()
            .map(|&k| {
                change.values[k]
                    .as_ref()
                    .and_then(text_of)
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join(","),
        column: t.columns[c].my.name.clone(),
        before: g.before[j].as_ref().and_then(|(b, _)| text_of(b)),
        incoming: text_of(new),
        current: text_of(asked.as_ref().map_or(&held.value, |(_, _, v)| v)),
        policy: policy.as_str(),
        winner: if wins { "crm" } else { "bitrix" },
        txn_id: g.txn.clone(),
        commit_time_us: g.commit_time_us,
        other_commit_us: 0,
    };
    (wins, Some(conflict))
}

/// A change's key as MySQL prints it (values joined by U+001F), when every key value is an
/// integer or text.
fn key_text(t: &ReversePlan, c: &MyChange) -> Option<String> {
    let parts: Option<Vec<String>> = t
        .key
        .iter()
        .map(|&k| match c.values[k].as_ref()? {
            My::Int(i) => Some(i.to_string()),
            My::UInt(u) => Some(u.to_string()),
            My::Bytes(b) => String::from_utf8(b.clone()).ok(),
            _ => None,
        })
        .collect();
    parts.map(|p| p.join("\u{1f}"))
}

/// A MySQL value as text for the conflict log.
pub(super) fn text_of(v: &My) -> Option<String> {
    match v {
        My::NULL => None,
        My::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        My::Int(i) => Some(i.to_string()),
        My::UInt(u) => Some(u.to_string()),
        My::Float(f) => Some(f.to_string()),
        My::Double(f) => Some(f.to_string()),
        other => Some(other.as_sql(false).trim_matches('\'').to_string()),
    }
}

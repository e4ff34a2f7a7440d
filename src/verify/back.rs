//! Entries mapped `reverse` only (PostgreSQL → MySQL), compared the other way round: the
//! PostgreSQL table is the source, read in primary-key chunks from one read view
//! ([`PgSnapshot::open_light`]); each row goes through the MySQL sink's own encoder
//! ([`MyEncoder`]: transforms backwards, value maps, charset checks), and the MySQL rows of the
//! chunk are read and compared as the MySQL column types store values ([`mytarget`]).
//!
//! The re-check is the forward one with the roles swapped: the source rows are read again at
//! PostgreSQL position P, verify waits until PostgreSQL → MySQL has passed P, then reads MySQL;
//! a key differs once two rounds in a row saw the same on both sides. (Nothing flows MySQL →
//! PostgreSQL for these tables, so the forward stream is not waited for.)
//!
//! Entries mapped `both` are compared forward only: their columns go both ways, and the
//! forward comparison covers them (a value map that reads two Bitrix codes as one CRM value
//! has no single way back to compare with).
//!
//! [`mytarget`]: super::mytarget

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::entry::{key_text, Holds};
use super::mytarget::{accepted, key_id, key_of, normal, MyRow, MyTarget};
use super::report::{ColumnDiff, Difference, EntryReport, Kind};
use super::{Ctx, CHUNK, MAX_SUSPECTS, ROUNDS};
use crate::error::{Error, Result};
use crate::mapping::{Plan, ReversePlan, ReverseWrite};
use crate::model::{Position, TableSchema};
use crate::sink::mysql::{MyEncoder, MyKind};
use crate::sink::Encoder;
use crate::snapshot::postgres::PgSnapshot;
use crate::snapshot::ReadRow;
use crate::state::progress::KeyValue;

/// A reverse-only entry as verify sees it.
#[derive(Clone)]
pub struct Back {
    /// Index into `Plan::reverse`.
    pub index: usize,
    pub plan: Arc<ReversePlan>,
    /// `Rows` when it upserts and deletes; `Nothing` when it only updates rows the shop made
    /// (a row on one side only is then no difference).
    pub holds: Holds,
    pub report: EntryReport,
}

/// What the mapping makes of one source row: per MySQL column the normal texts it may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub cells: Vec<Vec<Option<String>>>,
    pub key: Vec<String>,
}

/// What the mapping makes of some source rows, by key id.
#[derive(Default)]
pub struct Wanted {
    pub rows: HashMap<String, Want>,
    /// Rows the mapping cannot write: key id → `key: why`.
    pub dead: HashMap<String, String>,
}

impl Back {
    /// The entry for plan table `table` (mapped `reverse`), or why verify cannot compare it.
    pub fn of(plan: &Plan, table: usize) -> std::result::Result<Back, String> {
        let t = &plan.tables[table];
        let index = plan
            .reverse
            .iter()
            .position(|r| r.origin == t.origin && r.source == t.target && r.target == t.source)
            .ok_or_else(|| "it has no reverse plan".to_string())?;
        let r = plan.reverse[index].clone();
        if let Some(&k) = r
            .key
            .iter()
            .find(|&&k| !r.columns[k].transform.is_identity())
        {
            return Err(format!(
                "its key column {} is computed ({} → {}); verify compares entries whose key columns are copied unchanged",
                r.columns[k].my.name, r.columns[k].pg_name, r.columns[k].my.name
            ));
        }
        Ok(Back {
            index,
            holds: if r.write == ReverseWrite::Update {
                Holds::Nothing
            } else {
                Holds::Rows
            },
            report: EntryReport {
                direction: crate::model::REVERSE,
                source: r.source.to_string(),
                target: r.target.to_string(),
                entry: r.origin.clone(),
                ..Default::default()
            },
            plan: r,
        })
    }

    /// The positions in the PostgreSQL table's columns of the key columns.
    pub(super) fn source_key(&self, schema: &TableSchema) -> Result<Vec<usize>> {
        self.plan
            .key
            .iter()
            .map(|&k| {
                schema
                    .column_index(&self.plan.columns[k].pg_name)
                    .ok_or_else(|| {
                        Error::mapping(format!("{}: key column missing", self.plan.origin))
                    })
            })
            .collect()
    }

    /// Whether MySQL rows are read by the range of keys read: the PostgreSQL primary key is the
    /// mapping key, one integer column on both sides.
    fn ranged(&self, schema: &TableSchema) -> bool {
        use crate::model::{SourceType, TargetKind};
        let [k] = self.plan.key.as_slice() else {
            return false;
        };
        let c = &self.plan.columns[*k];
        schema.primary_key.len() == 1
            && schema.columns[schema.primary_key[0]].name == c.pg_name
            && matches!(
                c.pg_kind,
                TargetKind::Int2 | TargetKind::Int4 | TargetKind::Int8
            )
            && matches!(c.my.ty, SourceType::Int { .. })
    }

    /// What the mapping makes of source rows, through the sink's encoder.
    pub fn expect(
        &self,
        enc: &mut MyEncoder,
        schema: &Arc<TableSchema>,
        idx: &[usize],
        rows: Vec<ReadRow>,
    ) -> Wanted {
        let mut out = Wanted::default();
        let t = &self.plan;
        for r in rows {
            // The key as the source has it (for rows that cannot be written).
            let raw: Vec<String> = t
                .key
                .iter()
                .map(|&k| match KeyValue::of(&r.values[idx[k]]) {
                    Ok(v) => key_text(std::slice::from_ref(&v)),
                    Err(_) => r.values[idx[k]].to_string(),
                })
                .collect();
            if let Some(why) = &r.unreadable {
                out.dead
                    .insert(key_id(&raw), format!("{}: {why}", raw.join(", ")));
                continue;
            }
            let same = enc.same(t, idx, &r.values);
            let change = crate::snapshot::insert_of(schema, r.values);
            let changes = match enc.prepare(&change) {
                Ok(c) => c,
                Err((_, e)) => {
                    out.dead
                        .insert(key_id(&raw), format!("{}: {e}", raw.join(", ")));
                    continue;
                }
            };
            for c in changes {
                if c.table != self.index || !matches!(c.kind, MyKind::Upsert | MyKind::Update) {
                    continue;
                }
                let cells: Vec<Vec<Option<String>>> = t
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, col)| {
                        let mut ok = c.values[i]
                            .as_ref()
                            .map_or_else(Vec::new, |v| accepted(v, &col.my));
                        for v in same.get(i).cloned().flatten().unwrap_or_default() {
                            ok.push(normal(&v, &col.my));
                        }
                        ok
                    })
                    .collect();
                let key: Option<Vec<String>> = t
                    .key
                    .iter()
                    .map(|&k| cells[k].first().cloned().flatten())
                    .collect();
                if let Some(key) = key {
                    out.rows.insert(key_id(&key), Want { cells, key });
                }
            }
        }
        out
    }

    /// The verdict on one key (see [`super::Entry::verdict`]).
    pub fn verdict(&self, want: Option<&Want>, held: Option<&MyRow>) -> Option<(Kind, Vec<usize>)> {
        match (want, held) {
            (None, None) => None,
            (Some(_), None) => (self.holds == Holds::Rows).then(|| (Kind::Missing, Vec::new())),
            (None, Some(_)) => (self.holds == Holds::Rows).then(|| (Kind::Extra, Vec::new())),
            (Some(w), Some(h)) => {
                let diff: Vec<usize> = w
                    .cells
                    .iter()
                    .zip(h)
                    .enumerate()
                    .filter(|(_, (ok, v))| !ok.is_empty() && !ok.contains(v))
                    .map(|(i, _)| i)
                    .collect();
                (!diff.is_empty()).then_some((Kind::Different, diff))
            }
        }
    }

    /// The first verdict on a chunk: equal keys counted, the others made suspects.
    fn judge(&mut self, wanted: Wanted, held: Vec<MyRow>, suspects: &mut Vec<Vec<String>>) {
        let mut held: HashMap<String, MyRow> = held
            .into_iter()
            .filter_map(|r| Some((key_id(&key_of(&self.plan, &r)?), r)))
            .collect();
        self.report.rows_checked += (wanted.rows.len() + wanted.dead.len()) as u64;
        for (id, why) in wanted.dead {
            held.remove(&id);
            if self.report.dead_letters.len() < super::DEAD_SHOWN {
                self.report.dead_letters.push(why);
            }
            self.report.dead_lettered += 1;
        }
        for (id, w) in wanted.rows {
            let h = held.remove(&id);
            match self.verdict(Some(&w), h.as_ref()) {
                None => self.report.equal += 1,
                Some(_) => suspects.push(w.key),
            }
        }
        for h in held.into_values() {
            if self.verdict(None, Some(&h)).is_some() {
                self.report.rows_checked += 1;
                suspects.extend(key_of(&self.plan, &h));
            }
        }
    }
}

/// Key texts as the PostgreSQL side's key values (untyped literals there).
fn key_values(key: &[String]) -> Vec<KeyValue> {
    key.iter().map(|k| KeyValue::S(k.clone())).collect()
}

impl Ctx<'_> {
    /// Scans one reverse-only entry, then re-checks what differed.
    pub(super) async fn verify_back(&mut self, b: &mut Back) -> Result<()> {
        let mut snap = PgSnapshot::open_light(&self.cfg.postgres).await?;
        let schema = match snap.table_schema(&b.plan).await {
            Ok(s) => Arc::new(s),
            Err(e) => {
                snap.close().await;
                b.report.skipped = Some(e.to_string());
                return Ok(());
            }
        };
        let mut my = MyTarget::open(&self.cfg.mysql).await?;
        let scanned = self.scan_back(&mut snap, &mut my, &schema, b).await;
        snap.close().await;
        let result = match scanned {
            Ok(suspects) => self.recheck_back(&mut my, &schema, b, suspects).await,
            Err(e) => Err(e),
        };
        my.close().await;
        result
    }

    async fn scan_back(
        &mut self,
        snap: &mut PgSnapshot,
        my: &mut MyTarget,
        schema: &Arc<TableSchema>,
        b: &mut Back,
    ) -> Result<Vec<Vec<String>>> {
        let idx = b.plan.bind(schema).map_err(Error::mapping)?;
        let ranged = b.ranged(schema);
        let mut enc = MyEncoder::new(self.plan.clone(), self.tz(), &self.cfg.pipeline);
        let estimate = if self.opts.progress {
            snap.estimate(schema).await
        } else {
            0
        };
        let mut bar =
            crate::snapshot::progress::Bar::new("verify", &b.plan.source.to_string(), estimate, 0);
        let mut suspects = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut after: Option<Vec<KeyValue>> = None;
        let mut upto: Option<i64> = None;
        loop {
            self.stopped()?;
            let rows = snap.chunk(schema, after.as_deref(), CHUNK).await?;
            let Some(last) = rows.last() else { break };
            let last: Vec<KeyValue> = schema
                .primary_key
                .iter()
                .map(|&i| KeyValue::of(&last.values[i]))
                .collect::<Result<_>>()?;
            let n = rows.len();
            let wanted = b.expect(&mut enc, schema, &idx, rows);
            let held = if ranged {
                let hi = match last[0] {
                    KeyValue::I(i) => i,
                    KeyValue::U(u) => i64::try_from(u).unwrap_or(i64::MAX),
                    _ => unreachable!("an integer key"),
                };
                let held = my.by_range(&b.plan, upto, Some(hi)).await?;
                upto = Some(hi);
                held
            } else {
                seen.extend(wanted.rows.keys().cloned());
                seen.extend(wanted.dead.keys().cloned());
                let keys: Vec<Vec<String>> = wanted.rows.values().map(|w| w.key.clone()).collect();
                my.by_keys(&b.plan, &keys).await?
            };
            b.judge(wanted, held, &mut suspects);
            bar.advance(n as u64);
            self.pace(n).await;
            after = Some(last);
        }
        bar.finish();
        if b.holds == Holds::Rows {
            if ranged {
                let held = my.by_range(&b.plan, upto, None).await?;
                b.judge(Wanted::default(), held, &mut suspects);
            } else {
                let extra = my.keys_not_in(&b.plan, &seen).await?;
                b.report.rows_checked += extra.len() as u64;
                suspects.extend(extra);
            }
        }
        Ok(suspects)
    }

    /// Re-checks a reverse entry's suspects in rounds (see the module's description).
    async fn recheck_back(
        &mut self,
        my: &mut MyTarget,
        schema: &Arc<TableSchema>,
        b: &mut Back,
        suspects: Vec<Vec<String>>,
    ) -> Result<()> {
        let mut once = HashSet::new();
        let mut open: Vec<Vec<String>> = suspects
            .into_iter()
            .filter(|k| once.insert(key_id(k)))
            .collect();
        if open.len() > MAX_SUSPECTS {
            b.report.unsettled += (open.len() - MAX_SUSPECTS) as u64;
            open.truncate(MAX_SUSPECTS);
        }
        let idx = b.plan.bind(schema).map_err(Error::mapping)?;
        let key_cols = b.source_key(schema)?;
        let mut enc = MyEncoder::new(self.plan.clone(), self.tz(), &self.cfg.pipeline);
        let mut dead_letters: Option<HashSet<String>> = None;
        let mut last: HashMap<String, (Option<Want>, Option<MyRow>)> = HashMap::new();
        for _ in 0..ROUNDS {
            if open.is_empty() {
                break;
            }
            self.stopped()?;
            let mut snap = PgSnapshot::open_light(&self.cfg.postgres).await?;
            let at = Position::Postgres(snap.position);
            let keys: Vec<Vec<KeyValue>> = open.iter().map(|k| key_values(k)).collect();
            let rows = snap.rows_where(schema, &key_cols, &keys, false).await;
            snap.close().await;
            let rows = rows?;
            self.streams.reverse_reached(&at).await?;
            let mut held: HashMap<String, MyRow> = my
                .by_keys(&b.plan, &open)
                .await?
                .into_iter()
                .filter_map(|r| Some((key_id(&key_of(&b.plan, &r)?), r)))
                .collect();
            let mut wanted = b.expect(&mut enc, schema, &idx, rows);
            let mut next = Vec::new();
            for key in open {
                let id = key_id(&key);
                if wanted.dead.contains_key(&id) {
                    b.report.dead_lettered += 1;
                    continue;
                }
                let w = wanted.rows.remove(&id);
                let h = held.remove(&id);
                let Some((kind, cols)) = b.verdict(w.as_ref(), h.as_ref()) else {
                    b.report.equal += 1;
                    continue;
                };
                let seen = (w, h);
                if last.get(&id) != Some(&seen) {
                    last.insert(id, seen);
                    next.push(key);
                    continue;
                }
                if dead_letters.is_none() {
                    let db = &self.cfg.mysql.duplex_database;
                    dead_letters =
                        Some(my.dead_letter_keys(db, &self.cfg.pipeline, &b.plan).await?);
                }
                if kind != Kind::Extra
                    && dead_letters
                        .as_ref()
                        .is_some_and(|d| d.contains(&key.join(", ")))
                {
                    b.report.dead_lettered += 1;
                    continue;
                }
                self.confirm_back(b, kind, cols, key, &seen, &at);
            }
            open = next;
        }
        b.report.unsettled += open.len() as u64;
        Ok(())
    }

    /// Records a difference of a reverse entry that survived the re-check.
    fn confirm_back(
        &self,
        b: &mut Back,
        kind: Kind,
        cols: Vec<usize>,
        key: Vec<String>,
        (want, held): &(Option<Want>, Option<MyRow>),
        at: &Position,
    ) {
        match kind {
            Kind::Different => b.report.different += 1,
            Kind::Missing => b.report.missing += 1,
            Kind::Extra => b.report.extra += 1,
        }
        if b.report.differences.len() >= self.opts.show {
            return;
        }
        let columns = cols
            .into_iter()
            .map(|i| ColumnDiff {
                column: b.plan.columns[i].my.name.clone(),
                source: want
                    .as_ref()
                    .and_then(|w| w.cells[i].first().cloned().flatten())
                    .as_deref()
                    .map(super::cells::shown),
                target: held
                    .as_ref()
                    .and_then(|h| h[i].clone())
                    .as_deref()
                    .map(super::cells::shown),
            })
            .collect();
        let names: Vec<String> = b
            .plan
            .key
            .iter()
            .zip(&key)
            .map(|(&k, v)| format!("{}={v}", b.plan.columns[k].my.name))
            .collect();
        b.report.differences.push(Difference {
            kind,
            key: names.join(", "),
            key_values: key_values(&key),
            columns,
            position: at.to_string(),
        });
    }
}

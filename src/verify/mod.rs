//! `duplex verify`: proves that the target holds what the mapping makes of the source, row by
//! row and column by column, while the stream runs; and `duplex repair`, which sends the rows
//! that differ again.
//!
//! Per mapping entry (MySQL → PostgreSQL, the entries mapped `forward` or `both`; for `both` the
//! columns that go both ways are compared there too):
//! 1. **Scan.** The source table is read in primary-key chunks from one consistent read view
//!    ([`crate::snapshot::mysql::MysqlSnapshot`]); each row goes through the sink's own encoder
//!    (the running plan: value maps, transforms, constants, packed jsonb), and the target rows
//!    of the chunk are read — by key range when the target key is the source's integer key,
//!    else by key lists and, at the end, one scan for rows the source does not have. A pivot
//!    is read grouped by its key and compared as the recompute would leave it; look-up
//!    columns are compared with what their look-up gives. Cells are compared in PostgreSQL's
//!    binary format ([`cells`]). Nothing is reported yet: a key that differs is a suspect.
//! 2. **Re-check** ([`settle`]), in rounds over the suspects: wait until PostgreSQL → MySQL
//!    has applied what PostgreSQL has committed by now, read the source rows again (position
//!    P), wait until MySQL → PostgreSQL has passed P, read the target rows. A key is a
//!    difference once two rounds in a row saw the same expected rows and the same target row
//!    differ — both streams caught up in between, so nothing was in flight (a change in
//!    transit, a conflict's answer on its way back). A key whose sides keep changing is
//!    "unsettled" after a few rounds. Under load no in-flight change is reported.
//! 3. **Report** ([`report`]): counts per entry, each difference with key, columns, both
//!    values and the position read at. Rows the mapping cannot write are dead letters, not
//!    differences.
//!
//! Entries mapped `reverse` only are compared from PostgreSQL to MySQL the same way ([`back`]).
//!
//! May use: the snapshot's readers, the sinks' encoders and sinks, the mapping plan,
//! `state`, `connect`, `telemetry`, the model and the configuration; the commands use it.

pub mod back;
pub mod cells;
pub mod entry;
pub mod mytarget;
pub mod repair;
pub mod report;
pub mod settle;
pub mod target;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::mapping::{Direction, Plan};
use crate::model::{Position, TableName, TableSchema};
use crate::sink::postgres::encode::EncodedRow;
use crate::sink::postgres::PgEncoder;
use crate::snapshot::mysql::MysqlSnapshot;
use crate::state::progress::KeyValue;
use crate::telemetry;

pub use entry::{key_text, Entry, Expected, Holds};
pub use report::{ColumnDiff, Difference, EntryReport, Kind, Report};
use settle::Streams;
use target::{Held, TargetReader};

/// How a run goes.
#[derive(Debug, Clone)]
pub struct Options {
    /// Only these tables (source or target names); all when empty.
    pub tables: Vec<String>,
    /// Source rows read per second at most.
    pub max_rows_per_second: Option<u64>,
    /// A `duplex run` streams this pipeline: re-checks wait for it.
    pub online: bool,
    /// How long a re-check waits for a stream to pass a position.
    pub settle_timeout: Duration,
    /// Differences listed per entry (all are counted).
    pub show: usize,
    /// A progress bar on a terminal.
    pub progress: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tables: Vec::new(),
            max_rows_per_second: None,
            online: false,
            settle_timeout: Duration::from_secs(60),
            show: 100,
            progress: true,
        }
    }
}

/// Source rows per chunk.
const CHUNK: usize = 500;
/// Re-check rounds before a key that keeps changing is "unsettled" (a difference needs two).
const ROUNDS: usize = 7;
/// Suspects re-checked per entry; beyond, they count as unsettled.
const MAX_SUSPECTS: usize = 100_000;

/// Runs a verify of the pipeline: every entry `opts` selects, then the report.
pub async fn verify(
    cfg: &Config,
    plan: Arc<Plan>,
    opts: &Options,
    stop: watch::Receiver<bool>,
) -> Result<Report> {
    let started = Instant::now();
    let started_at = chrono::Utc::now().to_rfc3339();
    let (groups, backs, skipped) = entries(&plan, opts)?;
    let client = crate::connect::postgres(&cfg.postgres, "duplex verify").await?;
    let shapes: Vec<(usize, target::Shape)> = groups
        .values()
        .flatten()
        .map(|e| (e.index, e.shape.clone()))
        .collect();
    let fetcher = Arc::new(Fetcher::start(cfg, shapes).await?);
    let mut ctx = Ctx {
        fetcher,
        cfg,
        plan: plan.clone(),
        target: TargetReader::new(client),
        encoder: PgEncoder::new(plan.clone(), cfg.source_time_zone),
        streams: Streams::open(cfg, opts.online, plan.has_reverse(), opts.settle_timeout).await?,
        opts,
        stop,
        read: 0,
        began: Instant::now(),
    };
    let mut reports = skipped;
    for (source, mut group) in groups {
        ctx.verify_source(&source, &mut group).await?;
        reports.extend(group.into_iter().map(|e| e.report));
    }
    for mut b in backs {
        ctx.verify_back(&mut b).await?;
        reports.push(b.report);
    }
    ctx.streams.close().await;
    if let Some(f) = Arc::into_inner(ctx.fetcher) {
        f.stop().await;
    }
    let report = Report {
        pipeline: cfg.pipeline.clone(),
        online: opts.online,
        started_at,
        seconds: started.elapsed().as_secs_f64(),
        entries: reports,
    };
    record_metrics(&report);
    Ok(report)
}

/// Sets the verify metrics from a finished run.
pub fn record_metrics(report: &Report) {
    metrics::counter!(telemetry::VERIFY_ROWS_CHECKED).increment(report.rows_checked());
    let mut per_table: BTreeMap<&str, u64> = BTreeMap::new();
    for e in &report.entries {
        *per_table.entry(&e.target).or_default() += e.mismatches() + e.unsettled;
    }
    for (table, n) in per_table {
        metrics::gauge!(telemetry::VERIFY_MISMATCHES, "table" => table.to_string()).set(n as f64);
    }
    if report.all_equal() {
        metrics::gauge!(telemetry::VERIFY_LAST_SUCCESS).set(chrono::Utc::now().timestamp() as f64);
    }
}

/// Entries by source table.
type Groups = BTreeMap<TableName, Vec<Entry>>;

/// The entries to compare: forward ones grouped by source table, reverse-only ones, and the
/// reports of those skipped.
fn entries(
    plan: &Arc<Plan>,
    opts: &Options,
) -> Result<(Groups, Vec<back::Back>, Vec<EntryReport>)> {
    let wanted = |t: &crate::mapping::TablePlan| {
        opts.tables.is_empty()
            || opts.tables.iter().any(|a| {
                [&t.source, &t.target].iter().any(|n| {
                    a.eq_ignore_ascii_case(&n.to_string()) || a.eq_ignore_ascii_case(&n.name)
                })
            })
    };
    let mut groups: BTreeMap<TableName, Vec<Entry>> = BTreeMap::new();
    let mut skipped = Vec::new();
    let mut backs = Vec::new();
    for (i, t) in plan.tables.iter().enumerate() {
        if !wanted(t) {
            continue;
        }
        if t.direction == Direction::Reverse {
            match back::Back::of(plan, i) {
                Ok(b) => backs.push(b),
                Err(why) => skipped.push(EntryReport {
                    direction: crate::model::REVERSE,
                    source: t.target.to_string(),
                    target: t.source.to_string(),
                    entry: t.origin.clone(),
                    skipped: Some(why),
                    ..Default::default()
                }),
            }
            continue;
        }
        match Entry::of(i, t) {
            Ok(e) => groups.entry(t.source.clone()).or_default().push(e),
            Err(why) => skipped.push(EntryReport {
                direction: crate::model::FORWARD,
                source: t.source.to_string(),
                target: t.target.to_string(),
                entry: t.origin.clone(),
                skipped: Some(why),
                ..Default::default()
            }),
        }
    }
    if groups.is_empty() && backs.is_empty() && skipped.is_empty() {
        let names: Vec<String> = plan
            .tables
            .iter()
            .map(|t| format!("{} → {}", t.source, t.target))
            .collect();
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "no mapped table is called {}; mapped tables: {}",
                opts.tables.join(", "),
                names.join(", ")
            ),
        ));
    }
    Ok((groups, backs, skipped))
}

/// A run's sessions and state.
struct Ctx<'a> {
    cfg: &'a Config,
    /// The target reads of scans, on their own session.
    fetcher: Arc<Fetcher>,
    plan: Arc<Plan>,
    target: TargetReader,
    encoder: PgEncoder,
    streams: Streams,
    opts: &'a Options,
    stop: watch::Receiver<bool>,
    /// Source rows read so far (for the rate limit) since `began`.
    read: u64,
    began: Instant,
}

/// Keys that differed in the scan, per entry.
type Suspects = Vec<Vec<KeyValue>>;

/// What a re-check round saw of a key that differed: the expected rows and the target's.
type Seen = (Option<Vec<EncodedRow>>, Option<Held>);

impl Ctx<'_> {
    fn tz(&self) -> chrono_tz::Tz {
        self.cfg.source_time_zone
    }

    fn stopped(&self) -> Result<()> {
        if *self.stop.borrow() {
            return Err(Error::new(ErrorKind::Config, "verify stopped"));
        }
        Ok(())
    }

    /// Keeps the read rate under the limit.
    async fn pace(&mut self, rows: usize) {
        self.read += rows as u64;
        if let Some(max) = self.opts.max_rows_per_second.filter(|m| *m > 0) {
            let due = Duration::from_secs_f64(self.read as f64 / max as f64);
            let spent = self.began.elapsed();
            if due > spent {
                tokio::time::sleep(due - spent).await;
            }
        }
    }

    /// Scans one source table for all its entries, then re-checks what differed.
    async fn verify_source(&mut self, source: &TableName, group: &mut [Entry]) -> Result<()> {
        let started = Instant::now();
        let schema = group[0].plan.source_schema.clone();
        let mut suspects: Vec<Suspects> = vec![Vec::new(); group.len()];
        let mut opened = MysqlSnapshot::open_light(&self.cfg.mysql).await?;
        // The statistics' estimate is only for the progress bar (it can take a while).
        let estimate = if self.opts.progress {
            opened.estimate(&schema).await
        } else {
            0
        };
        let mut snap = Some(opened);
        let mut bar = crate::snapshot::progress::Bar::new(
            "verify",
            &source.to_string(),
            if self.opts.progress { estimate } else { 0 },
            0,
        );
        let scanned = async {
            let plain: Vec<usize> = (0..group.len())
                .filter(|&i| !group[i].plan.is_pivot())
                .collect();
            if !plain.is_empty() {
                let taken = snap.take().expect("the read view");
                snap = Some(
                    self.scan_plain(taken, &schema, group, &plain, &mut suspects, &mut bar)
                        .await?,
                );
            }
            let pivots: Vec<usize> = (0..group.len())
                .filter(|&i| group[i].plan.is_pivot())
                .collect();
            for i in pivots {
                self.scan_pivot(
                    snap.as_mut().expect("the read view"),
                    &schema,
                    &mut group[i],
                    &mut suspects[i],
                    &mut bar,
                )
                .await?;
            }
            Ok::<_, Error>(())
        }
        .await;
        if let Some(s) = snap {
            s.close().await;
        }
        bar.finish();
        scanned?;
        let scanned_in = started.elapsed();
        for (e, s) in group.iter_mut().zip(suspects) {
            let n = s.len();
            let t = Instant::now();
            self.recheck(&schema, e, s).await?;
            tracing::info!(
                source = %source,
                target = %e.report.target,
                keys = e.report.rows_checked,
                suspects = n,
                differences = e.report.mismatches(),
                scan_seconds = scanned_in.as_secs_f64(),
                recheck_seconds = t.elapsed().as_secs_f64(),
                "verified"
            );
        }
        Ok(())
    }

    /// The plain entries of a source table: one primary-key scan. The source is read on its
    /// own task and the target's ranges on their own session and task, ahead of the encoding
    /// and comparing done here; the read view is handed back.
    async fn scan_plain(
        &mut self,
        snap: MysqlSnapshot,
        schema: &Arc<TableSchema>,
        group: &mut [Entry],
        plain: &[usize],
        suspects: &mut [Suspects],
        bar: &mut crate::snapshot::progress::Bar,
    ) -> Result<MysqlSnapshot> {
        let idx: Vec<Arc<Vec<usize>>> = plain
            .iter()
            .map(|&i| {
                group[i]
                    .plan
                    .bind(schema)
                    .map(Arc::new)
                    .map_err(Error::mapping)
            })
            .collect::<Result<_>>()?;
        let fetcher = self.fetcher.clone();
        let ranged: Vec<(usize, target::Shape)> = plain
            .iter()
            .filter(|&&i| group[i].ranged)
            .map(|&i| (group[i].index, group[i].shape.clone()))
            .collect();
        let (reader, chunks) = read_ahead(snap, schema.clone(), ranged, fetcher.clone(), self.tz());
        // Keys seen per entry read by key lists (for the scan of rows the source lacks).
        let mut seen: Vec<cells::KeySet> = plain.iter().map(|_| cells::KeySet::default()).collect();
        let mut after: Option<Vec<KeyValue>> = None;
        let tz = self.tz();
        let entries: Vec<Entry> = plain.iter().map(|&i| group[i].clone()).collect();
        let encoder = PgEncoder::new(self.plan.clone(), tz);
        let mut encoded = encode_ahead(chunks, entries, encoder, schema.clone(), idx, tz);
        let scanned = async {
            while let Some(chunk) = encoded.recv().await {
                self.stopped()?;
                let (expected, answers, n, last) = chunk?;
                let mut answers = answers.into_iter();
                for (k, exp) in expected.into_iter().enumerate() {
                    let e = &mut group[plain[k]];
                    let held = if e.ranged {
                        Fetcher::answer(answers.next().expect("an answer per ranged entry")).await?
                    } else {
                        let keys = exp
                            .rows
                            .values()
                            .map(|(_, k)| e.shape.encode_key(k, tz))
                            .collect::<Result<Vec<_>>>()?;
                        if e.holds != Holds::Nothing {
                            seen[k].extend(exp.rows.keys().cloned());
                            seen[k].extend(exp.dead.keys().cloned());
                        }
                        Fetcher::answer(fetcher.ask(Fetch::Keys(e.index, keys)).await?).await?
                    };
                    judge(e, exp, held, &mut suspects[plain[k]]);
                }
                bar.advance(n as u64);
                self.pace(n).await;
                after = Some(last);
            }
            Ok::<_, Error>(())
        }
        .await;
        drop(encoded);
        let snap = reader.await.map_err(|e| {
            Error::new(
                ErrorKind::Invariant,
                format!("the verify reader failed: {e}"),
            )
        })?;
        scanned?;
        // Rows the source does not have: past the last key read, or not among the keys seen.
        for (k, &i) in plain.iter().enumerate() {
            let e = &mut group[i];
            if e.ranged {
                let lo = after
                    .as_ref()
                    .map(|a| e.shape.encode_key(a, self.cfg.source_time_zone))
                    .transpose()?;
                let held = self
                    .target
                    .by_range(e.index, &e.shape, lo.as_ref(), None)
                    .await?;
                judge(e, Expected::default(), held, &mut suspects[i]);
            } else if e.holds != Holds::Nothing {
                self.extras(e, &seen[k], &mut suspects[i]).await?;
            }
        }
        Ok(snap)
    }

    /// The target rows an entry read by key lists holds whose key the source did not have.
    async fn extras(
        &mut self,
        e: &mut Entry,
        seen: &cells::KeySet,
        suspects: &mut Suspects,
    ) -> Result<()> {
        let mut after: Option<EncodedRow> = None;
        loop {
            self.stopped()?;
            let held = self.target.scan(e.index, &e.shape, after.as_ref()).await?;
            let n = held.len();
            if let Some(last) = held.last() {
                let mut k = EncodedRow::with_capacity(e.shape.key.len());
                for &i in &e.shape.key {
                    k.push_encoded(last.row.cell(i));
                }
                after = Some(k);
            }
            let unseen: Vec<Held> = held
                .into_iter()
                .filter(|h| !seen.contains(&e.shape.key_of(&h.row)))
                .collect();
            judge(e, Expected::default(), unseen, suspects);
            if n < TargetReader::scan_rows() {
                return Ok(());
            }
        }
    }

    /// A pivot entry: its source rows in key order, whole keys at a time.
    async fn scan_pivot(
        &mut self,
        snap: &mut MysqlSnapshot,
        schema: &Arc<TableSchema>,
        e: &mut Entry,
        suspects: &mut Suspects,
        bar: &mut crate::snapshot::progress::Bar,
    ) -> Result<()> {
        let idx = e.plan.bind(schema).map_err(Error::mapping)?;
        let column = e.key_sources[0].clone();
        let col = schema.column_index(&column).expect("a bound key column");
        let mut after: Option<KeyValue> = None;
        // Keys seen, when the key is not an integer (target rows are then read by key lists).
        let mut seen = cells::KeySet::default();
        let (tx, chunks) = tokio::sync::mpsc::channel(2);
        let read = snap.scan_by(schema, &column, CHUNK, tx);
        let compared = async {
            // Owned here, so that a comparison that fails ends the reading too.
            let mut chunks = chunks;
            while let Some(rows) = chunks.recv().await {
                self.stopped()?;
                let rows: Vec<crate::snapshot::ReadRow> = rows?;
                let n = rows.len();
                let upto = KeyValue::of(&rows[n - 1].values[col])?;
                let exp = e.expect_pivot(&idx, rows, (self.tz(), false));
                let held = if e.ranged {
                    let lo = after
                        .as_ref()
                        .map(|a| e.shape.encode_key(std::slice::from_ref(a), self.tz()))
                        .transpose()?;
                    let hi = e.shape.encode_key(std::slice::from_ref(&upto), self.tz())?;
                    self.target
                        .by_range(e.index, &e.shape, lo.as_ref(), Some(&hi))
                        .await?
                } else {
                    seen.extend(exp.rows.keys().cloned());
                    seen.extend(exp.dead.keys().cloned());
                    let keys = exp
                        .rows
                        .values()
                        .map(|(_, k)| e.shape.encode_key(k, self.tz()))
                        .collect::<Result<Vec<_>>>()?;
                    self.target.by_keys(e.index, &e.shape, &keys).await?
                };
                judge(e, exp, held, suspects);
                bar.advance(n as u64);
                self.pace(n).await;
                after = Some(upto);
            }
            Ok::<_, Error>(())
        };
        let ((), compared) = tokio::join!(read, compared);
        compared?;
        if !e.ranged {
            return self.extras(e, &seen, suspects).await;
        }
        let lo = after
            .as_ref()
            .map(|a| e.shape.encode_key(std::slice::from_ref(a), self.tz()))
            .transpose()?;
        let held = self
            .target
            .by_range(e.index, &e.shape, lo.as_ref(), None)
            .await?;
        judge(e, Expected::default(), held, suspects);
        Ok(())
    }

    /// Re-checks an entry's suspects until each is equal, proved different, or unsettled.
    async fn recheck(
        &mut self,
        schema: &Arc<TableSchema>,
        e: &mut Entry,
        suspects: Suspects,
    ) -> Result<()> {
        let mut open: Vec<Vec<KeyValue>> = Vec::new();
        let mut once = HashSet::new();
        for k in suspects {
            if once.insert(key_text(&k)) {
                open.push(k);
            }
        }
        if open.len() > MAX_SUSPECTS {
            e.report.unsettled += (open.len() - MAX_SUSPECTS) as u64;
            open.truncate(MAX_SUSPECTS);
        }
        let idx = Arc::new(e.plan.bind(schema).map_err(Error::mapping)?);
        let mut dead_letters: Option<HashSet<String>> = None;
        // Per open key, what the last round saw differ: (expected rows, target row).
        let mut last: cells::KeyMap<Seen> = cells::KeyMap::default();
        for _ in 0..ROUNDS {
            if open.is_empty() {
                break;
            }
            self.stopped()?;
            let cells: Vec<EncodedRow> = open
                .iter()
                .map(|k| e.shape.encode_key(k, self.tz()))
                .collect::<Result<_>>()?;
            self.streams.reverse_caught_up().await?;
            let mut snap = MysqlSnapshot::open_light(&self.cfg.mysql).await?;
            let at = Position::Mysql(snap.position.clone());
            let rows = snap.rows_where(schema, &e.key_sources, &open).await;
            snap.close().await;
            let rows = rows?;
            self.streams.forward_reached(&at).await?;
            let mut now = by_id(e, self.target.by_keys(e.index, &e.shape, &cells).await?);
            let mut exp = if e.plan.is_pivot() {
                e.expect_pivot(&idx, rows, (self.tz(), true))
            } else {
                let tz = self.tz();
                entry::expect_rows(
                    &[&*e],
                    &mut self.encoder,
                    schema,
                    std::slice::from_ref(&idx),
                    rows,
                    (tz, true),
                )
                .pop()
                .expect("one entry")
            };
            let mut next = Vec::new();
            for (key, cell) in open.into_iter().zip(cells) {
                let id = cell.identity();
                if exp.dead.contains_key(&id) {
                    e.report.dead_lettered += 1;
                    continue;
                }
                let x = exp.rows.remove(&id).map(|(r, _)| r);
                let held = now.remove(&id);
                let Some((kind, cols)) = e.verdict(x.as_deref(), held.as_ref()) else {
                    e.report.equal += 1;
                    continue;
                };
                // A difference counts once two rounds, with both streams caught up in
                // between, saw the same on both sides: nothing was in flight.
                let seen = (x, held);
                if last.get(&id) != Some(&seen) {
                    last.insert(id, seen);
                    next.push(key);
                    continue;
                }
                if dead_letters.is_none() {
                    dead_letters = Some(dead_letter_keys(&self.target.client, self.cfg, e).await?);
                }
                if dead_letters
                    .as_ref()
                    .is_some_and(|d| d.contains(&key_text(&key)))
                    && kind != Kind::Extra
                {
                    e.report.dead_lettered += 1;
                    continue;
                }
                let texts = exp.texts.get(&id);
                self.confirm(e, kind, cols, key, &cell, texts, &at).await?;
            }
            open = next;
        }
        e.report.unsettled += open.len() as u64;
        Ok(())
    }

    /// Records a difference that survived the re-check.
    #[allow(clippy::too_many_arguments)]
    async fn confirm(
        &mut self,
        e: &mut Entry,
        kind: Kind,
        cols: Vec<usize>,
        key: Vec<KeyValue>,
        cell: &EncodedRow,
        texts: Option<&Vec<Option<String>>>,
        at: &Position,
    ) -> Result<()> {
        match kind {
            Kind::Different => e.report.different += 1,
            Kind::Missing => e.report.missing += 1,
            Kind::Extra => e.report.extra += 1,
        }
        if e.report.differences.len() >= self.opts.show {
            return Ok(());
        }
        let held = self.target.text(e.index, &e.shape, cell).await?;
        let n = e.shape.cols.len();
        let columns = cols
            .into_iter()
            .map(|i| {
                let (column, source, target) = if i < n {
                    let source = if kind == Kind::Extra {
                        None
                    } else {
                        texts.and_then(|t| t.get(i).cloned().flatten())
                    };
                    (
                        e.shape.cols[i].name.clone(),
                        source,
                        held.as_ref().and_then(|h| h[i].clone()),
                    )
                } else {
                    let j = i - n;
                    let source = held.as_ref().and_then(|h| h[n + 2 * j + 1].clone());
                    let target = held.as_ref().and_then(|h| h[n + 2 * j].clone());
                    (e.shape.lookups[j].0.clone(), source, target)
                };
                ColumnDiff {
                    column,
                    source: source.as_deref().map(cells::shown),
                    target: target.as_deref().map(cells::shown),
                }
            })
            .collect();
        let names: Vec<String> = e
            .shape
            .key
            .iter()
            .zip(&key)
            .map(|(&i, k)| {
                format!(
                    "{}={}",
                    e.shape.cols[i].name,
                    key_text(std::slice::from_ref(k))
                )
            })
            .collect();
        e.report.differences.push(Difference {
            kind,
            key: names.join(", "),
            key_values: key,
            columns,
            position: at.to_string(),
        });
        Ok(())
    }
}

/// The keys (as text) of the entry's source rows that are unresolved dead letters.
async fn dead_letter_keys(
    client: &tokio_postgres::Client,
    cfg: &Config,
    e: &Entry,
) -> Result<HashSet<String>> {
    let parts: Vec<String> = e
        .key_sources
        .iter()
        .map(|c| format!("row_data->>'{}'", c.replace('\'', "''")))
        .collect();
    let sql = format!(
        "SELECT concat_ws(', ', {}) FROM {}.dead_letter WHERE pipeline = $1 AND direction = $2 AND source_table = $3 AND NOT resolved",
        parts.join(", "),
        crate::model::pg_ident(&cfg.postgres.duplex_schema)
    );
    let rows = client
        .query(
            &sql,
            &[
                &cfg.pipeline,
                &crate::model::FORWARD,
                &e.plan.source.to_string(),
            ],
        )
        .await
        .map_err(|err| Error::from_pg(err, true, "reading the dead letters"))?;
    Ok(rows
        .iter()
        .filter_map(|r| r.get::<_, Option<String>>(0))
        .collect())
}

/// A source chunk as read ahead: its rows, the key of the last, and per ranged entry the
/// target read of the chunk's key range (asked for as the chunk was read).
type Chunk = Result<(Vec<crate::snapshot::ReadRow>, Vec<KeyValue>, Vec<Answer>)>;

/// The last key of a chunk read, and the target reads of its range for the ranged entries.
async fn ranges(
    schema: &TableSchema,
    rows: Vec<crate::snapshot::ReadRow>,
    after: Option<&[KeyValue]>,
    ranged: &[(usize, target::Shape)],
    fetcher: &Fetcher,
    tz: chrono_tz::Tz,
) -> Result<(Vec<crate::snapshot::ReadRow>, Vec<KeyValue>, Vec<Answer>)> {
    let Some(r) = rows.last() else {
        return Ok((rows, Vec::new(), Vec::new()));
    };
    let last = schema
        .primary_key
        .iter()
        .map(|&i| KeyValue::of(&r.values[i]))
        .collect::<Result<Vec<_>>>()?;
    let mut answers = Vec::with_capacity(ranged.len());
    for (index, shape) in ranged {
        let lo = after.map(|a| shape.encode_key(a, tz)).transpose()?;
        let hi = shape.encode_key(&last, tz)?;
        answers.push(fetcher.ask(Fetch::Range(*index, lo, Some(hi))).await?);
    }
    Ok((rows, last, answers))
}

/// Reads the source table in key chunks on its own task, a chunk or two ahead; the read view
/// comes back from the task once the chunks are read (or the receiver is gone).
fn read_ahead(
    mut snap: MysqlSnapshot,
    schema: Arc<TableSchema>,
    ranged: Vec<(usize, target::Shape)>,
    fetcher: Arc<Fetcher>,
    tz: chrono_tz::Tz,
) -> (
    tokio::task::JoinHandle<MysqlSnapshot>,
    tokio::sync::mpsc::Receiver<Chunk>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(2);
    let (raw_tx, mut raw_rx) = tokio::sync::mpsc::channel(2);
    let scan_schema = schema.clone();
    let scan = tokio::spawn(async move {
        snap.scan(&scan_schema, CHUNK, raw_tx).await;
        snap
    });
    let task = tokio::spawn(async move {
        let mut after: Option<Vec<KeyValue>> = None;
        while let Some(read) = raw_rx.recv().await {
            let chunk = match read {
                Ok(rows) => ranges(&schema, rows, after.as_deref(), &ranged, &fetcher, tz).await,
                Err(e) => Err(e),
            };
            let next = chunk.as_ref().ok().map(|(_, last, _)| last.clone());
            let failed = chunk.is_err();
            if tx.send(chunk).await.is_err() || failed {
                break;
            }
            after = next;
        }
        drop(raw_rx);
        match scan.await {
            Ok(snap) => snap,
            Err(e) => panic!("the verify scan failed: {e}"),
        }
    });
    (task, rx)
}

/// A chunk as encoded ahead: per entry what the mapping makes of it, the target reads of its
/// range, its size and its last key.
type Encoded = Result<(Vec<Expected>, Vec<Answer>, usize, Vec<KeyValue>)>;

/// Maps and encodes the chunks read on its own task, a chunk ahead of the comparing.
fn encode_ahead(
    mut chunks: tokio::sync::mpsc::Receiver<Chunk>,
    entries: Vec<Entry>,
    mut encoder: PgEncoder,
    schema: Arc<TableSchema>,
    idx: Vec<Arc<Vec<usize>>>,
    tz: chrono_tz::Tz,
) -> tokio::sync::mpsc::Receiver<Encoded> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Encoded>(1);
    tokio::spawn(async move {
        let refs: Vec<&Entry> = entries.iter().collect();
        while let Some(chunk) = chunks.recv().await {
            let out = chunk.map(|(rows, last, answers)| {
                let n = rows.len();
                let expected =
                    entry::expect_rows(&refs, &mut encoder, &schema, &idx, rows, (tz, false));
                (expected, answers, n, last)
            });
            if tx.send(out).await.is_err() {
                break;
            }
        }
    });
    rx
}

/// A target read a scan asks for.
enum Fetch {
    /// Entry (plan index), rows in the key range `(lo, hi]`.
    Range(usize, Option<EncodedRow>, Option<EncodedRow>),
    /// Entry (plan index), rows with these keys.
    Keys(usize, Vec<EncodedRow>),
}

type Answer = tokio::sync::oneshot::Receiver<Result<Vec<Held>>>;

/// The target reads of a scan, on their own session and task, so that they overlap with the
/// encoding of the source rows.
struct Fetcher {
    tx: tokio::sync::mpsc::Sender<(Fetch, tokio::sync::oneshot::Sender<Result<Vec<Held>>>)>,
    task: tokio::task::JoinHandle<()>,
}

impl Fetcher {
    async fn start(cfg: &Config, shapes: Vec<(usize, target::Shape)>) -> Result<Fetcher> {
        let client = crate::connect::postgres(&cfg.postgres, "duplex verify").await?;
        let mut reader = TargetReader::new(client);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(
            Fetch,
            tokio::sync::oneshot::Sender<Result<Vec<Held>>>,
        )>(4);
        let task = tokio::spawn(async move {
            while let Some((fetch, answer)) = rx.recv().await {
                let index = match &fetch {
                    Fetch::Range(i, ..) | Fetch::Keys(i, _) => *i,
                };
                let shape = &shapes
                    .iter()
                    .find(|(i, _)| *i == index)
                    .expect("a shape per entry")
                    .1;
                let held = match fetch {
                    Fetch::Range(i, lo, hi) => {
                        reader.by_range(i, shape, lo.as_ref(), hi.as_ref()).await
                    }
                    Fetch::Keys(i, keys) => reader.by_keys(i, shape, &keys).await,
                };
                let _ = answer.send(held);
            }
        });
        Ok(Fetcher { tx, task })
    }

    /// Sends a read; its rows come with [`Fetcher::answer`].
    async fn ask(&self, fetch: Fetch) -> Result<Answer> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send((fetch, tx))
            .await
            .map_err(|_| Error::new(ErrorKind::Invariant, "the verify target reader stopped"))?;
        Ok(rx)
    }

    async fn answer(rx: Answer) -> Result<Vec<Held>> {
        rx.await
            .map_err(|_| Error::new(ErrorKind::Invariant, "the verify target reader stopped"))?
    }

    async fn stop(self) {
        drop(self.tx);
        let _ = self.task.await;
    }
}

/// Dead letters listed per entry.
const DEAD_SHOWN: usize = 20;

/// Target rows by key.
fn by_id(e: &Entry, held: Vec<Held>) -> cells::KeyMap<Held> {
    held.into_iter()
        .map(|h| (e.shape.key_of(&h.row), h))
        .collect()
}

/// The first verdict on a chunk: equal keys counted, the others made suspects.
fn judge(e: &mut Entry, exp: Expected, held: Vec<Held>, suspects: &mut Suspects) {
    let mut held = by_id(e, held);
    e.report.rows_checked += (exp.rows.len() + exp.dead.len()) as u64;
    for (id, why) in &exp.dead {
        held.remove(id);
        if e.report.dead_letters.len() < DEAD_SHOWN {
            e.report.dead_letters.push(why.clone());
        }
    }
    e.report.dead_lettered += exp.dead.len() as u64;
    for (id, (rows, key)) in exp.rows {
        let h = held.remove(&id);
        match e.verdict(Some(&rows), h.as_ref()) {
            None => e.report.equal += 1,
            Some(_) => suspects.push(key),
        }
    }
    for h in held.into_values() {
        if e.verdict(None, Some(&h)).is_none() {
            continue;
        }
        e.report.rows_checked += 1;
        match e.shape.key_values(&h.row) {
            Some(k) => suspects.push(k),
            None => e.report.unsettled += 1,
        }
    }
}

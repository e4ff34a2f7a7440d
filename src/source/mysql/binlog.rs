//! The binlog stream: connects as a replica with its own server id, starts from a MariaDB GTID
//! list (or binlog file:pos), groups row events into transactions and sends them on.
//!
//! A MariaDB transaction is `GTID … XID` (no BEGIN query event); a MySQL one is
//! `GTID/ANONYMOUS_GTID, QUERY BEGIN … XID`. A non-transactional table's changes end with a
//! `QUERY COMMIT`; a standalone DDL statement is `GTID(standalone) QUERY`. Row events of tables
//! no mapping reads are skipped without decoding; transactions that touch none of them produce
//! only a throttled [`SourceEvent::Idle`] so the checkpoint can still move forward.
//!
//! [`MysqlSource::run`] is a loop of three steps: receive the next binlog event, decode it into
//! the reader's state (`Reader`: the open transaction, the table map cache, the binlog file and
//! GTID state), hand over what it completed. Owns the binlog event codes and the replica
//! connection's setup. May use the sibling modules (connections, [`super::rows`] for row events,
//! [`super::schema`] for table definitions, `txn` for transaction assembly), the model,
//! the configuration, and the checkpoint table's name (to recognise duplex's own writes).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mysql_async::binlog::events::{Event, EventData, RowsEventData, TableMapEvent};
use mysql_async::prelude::*;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn};
use mysql_common::binlog::value::BinlogValue;
use tokio::sync::mpsc;

use super::rows::decode_rows;
use super::schema::{Collations, SchemaCache, Version};
use super::statement;
use super::txn::{end_position, finish, position_at, send_chunk, OpenTxn, TxnGtid, IDLE_EVERY};
use crate::config::MysqlConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::model::{
    GtidState, MariaGtidList, MysqlGtidSet, MysqlPosition, Position, SourceEvent, TableName,
};
use crate::source::Source;

/// The server sends a heartbeat after this much idle time; no event for `[mysql] read_timeout_s`
/// means the connection is dead.
const HEARTBEAT_PERIOD_NS: u64 = 1_000_000_000;

// Binlog event type codes (MySQL `log_event.h`, MariaDB `log_event.h`).
const QUERY_EVENT: u8 = 2;
const ROTATE_EVENT: u8 = 4;
const XID_EVENT: u8 = 16;
const TABLE_MAP_EVENT: u8 = 19;
const HEARTBEAT_EVENT: u8 = 27;
const MYSQL_GTID_EVENT: u8 = 33;
const MYSQL_ANONYMOUS_GTID_EVENT: u8 = 34;
const MARIADB_GTID_EVENT: u8 = 162;
/// MySQL 8.0.20+: a whole transaction's events, compressed (`binlog_transaction_compression`).
const MYSQL_TRANSACTION_PAYLOAD_EVENT: u8 = 40;
const MARIADB_QUERY_COMPRESSED: u8 = 165;
const MARIADB_ROWS_COMPRESSED_FIRST: u8 = 166;
const MARIADB_ROWS_COMPRESSED_LAST: u8 = 171;
/// MariaDB GTID flag: the transaction is a single statement without XID (DDL, MyISAM).
const FL_STANDALONE: u8 = 1;

pub struct MysqlSource {
    cfg: MysqlConfig,
    /// The pipeline: transactions its MySQL sink wrote (marked with its checkpoint row) are
    /// dropped; other pipelines' are read like any.
    pipeline: String,
    watched: HashSet<TableName>,
    chunk_rows: usize,
    /// Per copied table, the oldest position its copy was taken at (see [`super::statement`]).
    copied: HashMap<TableName, Position>,
}

impl MysqlSource {
    pub fn new(
        cfg: MysqlConfig,
        pipeline: String,
        watched: HashSet<TableName>,
        chunk_rows: usize,
    ) -> Self {
        MysqlSource {
            cfg,
            pipeline,
            watched,
            chunk_rows: chunk_rows.max(1),
            copied: HashMap::new(),
        }
    }

    /// The copies of watched tables: per table the oldest position its copy was taken at. A
    /// statement-logged change before it is held by the copy and passed.
    pub fn with_copies(mut self, copied: HashMap<TableName, Position>) -> Self {
        self.copied = copied;
        self
    }
}

/// Formats a 16-byte server UUID the way MySQL prints it.
fn format_uuid(b: &[u8; 16]) -> String {
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// MySQL's wire form of a GTID set, for COM_BINLOG_DUMP_GTID.
fn to_sids(set: &MysqlGtidSet) -> Result<Vec<mysql_async::Sid<'static>>> {
    set.sets
        .iter()
        .map(|(source, intervals)| {
            let text: String = std::iter::once(source.clone())
                .chain(intervals.iter().map(|(a, b)| format!("{a}-{b}")))
                .collect::<Vec<_>>()
                .join(":");
            text.parse::<mysql_async::Sid<'static>>()
                .map_err(|e| Error::new(ErrorKind::Config, format!("GTID set {text}: {e}")))
        })
        .collect()
}

/// Parses a MariaDB GTID event body: sequence number, domain id, flags.
pub fn parse_mariadb_gtid(data: &[u8]) -> Result<(u64, u32, u8)> {
    if data.len() < 13 {
        return Err(Error::new(
            ErrorKind::SourceDefinite,
            format!("MariaDB GTID event too short ({} bytes)", data.len()),
        ));
    }
    let seq = u64::from_le_bytes(data[0..8].try_into().expect("8 bytes"));
    let domain = u32::from_le_bytes(data[8..12].try_into().expect("4 bytes"));
    Ok((seq, domain, data[12]))
}

/// A file name as a Rotate or heartbeat event carries it: the first (fake) Rotate event may carry
/// the 4 checksum bytes at its end, which are cut off.
pub fn clean_rotate_name(raw: &[u8]) -> String {
    fn looks_right(n: &[u8]) -> bool {
        match n.iter().rposition(|b| *b == b'.') {
            Some(dot) => dot + 1 < n.len() && n[dot + 1..].iter().all(|b| b.is_ascii_digit()),
            None => false,
        }
    }
    let name = if !looks_right(raw) && raw.len() > 4 && looks_right(&raw[..raw.len() - 4]) {
        &raw[..raw.len() - 4]
    } else {
        raw
    };
    String::from_utf8_lossy(name).into_owned()
}

/// The position a heartbeat reports, if it is one the stream has reached. A heartbeat carries the
/// sender's coordinates: the file it is reading (its body) and the offset in that file (its
/// log_pos). Right after a rotation the sender can still report the old file's end while its
/// Rotate event has already named the next file; pairing that offset with the next file's name
/// made a position far ahead of the stream, and the next real one looked like a step backward
/// (the full bench stopped on "checkpoint … would move backward"). So a heartbeat of any other
/// file than the current one gives no position.
fn heartbeat_position(
    current_file: &str,
    body: &[u8],
    log_pos: u64,
    gtid: &GtidState,
) -> Option<MysqlPosition> {
    let file = clean_rotate_name(body);
    (file == current_file && log_pos > 0).then(|| position_at(current_file, log_pos, gtid))
}

impl Source for MysqlSource {
    async fn run(&mut self, from: Option<Position>, tx: mpsc::Sender<SourceEvent>) -> Result<()> {
        let mut meta = crate::connect::mysql(&self.cfg, None, false).await?;
        let mariadb = super::is_mariadb(&mut meta).await?;
        let start = match from {
            Some(Position::Mysql(p)) => p,
            Some(other) => {
                return Err(Error::new(
                    ErrorKind::Invariant,
                    format!("MySQL source asked to start from {other}"),
                ))
            }
            None => super::current_position(&mut meta).await?,
        };
        let mut stream = self.open_stream(&start, mariadb).await?;
        tracing::info!(position = %start, server_id = self.cfg.server_id, "binlog stream started");

        let collations = Collations::read(&mut meta).await?;
        let mut reader = Reader::new(self, Some(meta), collations, &start, mariadb);
        let read_timeout = Duration::from_secs(self.cfg.read_timeout_s);
        loop {
            let event = receive(&mut stream, read_timeout).await?;
            let Some(out) = reader.decode(&event).await? else {
                continue;
            };
            if !reader.hand_over(out, &tx).await {
                return Ok(());
            }
        }
    }
}

impl MysqlSource {
    /// Connects as a replica and asks for the binlog from `start`.
    async fn open_stream(&self, start: &MysqlPosition, mariadb: bool) -> Result<BinlogStream> {
        let mut conn = crate::connect::mysql(&self.cfg, None, false).await?;
        let mut setup = vec![format!(
            "SET @master_heartbeat_period = {HEARTBEAT_PERIOD_NS}"
        )];
        if mariadb {
            setup.push("SET @mariadb_slave_capability = 4".into());
            if let Some(GtidState::Maria(g)) = start.gtid.as_ref().filter(|g| !g.is_empty()) {
                setup.push(format!("SET @slave_connect_state = '{g}'"));
                setup.push("SET @slave_gtid_strict_mode = 0".into());
                setup.push("SET @slave_gtid_ignore_duplicates = 0".into());
            }
        }
        for q in setup {
            conn.query_drop(&q).await.map_err(|e| {
                Error::from_mysql(e, false, &format!("preparing the binlog connection ({q})"))
            })?;
        }
        let file = start.file.0.clone();
        let mut request = BinlogStreamRequest::new(self.cfg.server_id);
        match start.gtid.as_ref() {
            // MySQL with GTIDs: the server starts after everything in the set.
            Some(GtidState::Mysql(set)) if !mariadb && !set.is_empty() => {
                request = request.with_gtid().with_gtid_set(to_sids(set)?);
            }
            _ => request = request.with_filename(file.as_bytes()).with_pos(start.pos),
        }
        conn.get_binlog_stream(request).await.map_err(|e| {
            Error::from_mysql(e, false, &format!("requesting the binlog from {start}"))
        })
    }
}

/// Receive: the next binlog event. The server sends a heartbeat when it has nothing else, so a
/// silence of `limit` is an error, as is the end of the stream.
async fn receive(stream: &mut BinlogStream, limit: Duration) -> Result<Event> {
    let next = match tokio::time::timeout(limit, stream.next()).await {
        Ok(Some(ev)) => ev,
        Ok(None) => {
            return Err(Error::new(
                ErrorKind::SourceTransient,
                "the MySQL server ended the binlog stream",
            ))
        }
        Err(_) => {
            return Err(Error::new(
                ErrorKind::SourceTransient,
                format!("no binlog event or heartbeat for {} s", limit.as_secs()),
            ))
        }
    };
    next.map_err(|e| match &e {
        mysql_async::Error::Server(s) if s.code == ER_MASTER_FATAL_ERROR_READING_BINLOG => {
            Error::new(
                ErrorKind::SourceDefinite,
                format!(
                    "the binlog no longer holds duplex's position (the server says: {}): its files \
                     were purged, RESET MASTER ran, or a replica was promoted without this history, \
                     so the changes since cannot be read and duplex does not read on from \
                     elsewhere. If another server still has them (the old primary, a replica), \
                     point [mysql] at it and start duplex; otherwise start the pipeline over: \
                     `duplex setup --start-over`, then start duplex (it copies every table again, \
                     removing rows the source no longer has)",
                    s.message
                ),
            )
        }
        _ => Error::from_mysql(e, false, "reading the binlog"),
    })
}

/// Whether a rows event of the checkpoint table writes pipeline `pipeline`'s row (its first
/// column, `pipeline`: see [`crate::state::checkpoint::my_ddl`]).
fn marks_pipeline(rows: &RowsEventData<'_>, tme: &TableMapEvent<'_>, pipeline: &str) -> bool {
    let Some(Ok((before, after))) = rows.rows(tme).next() else {
        return false;
    };
    after.or(before).is_some_and(|row| {
        matches!(
            row.as_ref(0),
            Some(BinlogValue::Value(mysql_async::Value::Bytes(b))) if b == pipeline.as_bytes()
        )
    })
}

/// Table ids remembered at most; past this many they are forgotten at the next transaction's
/// end (see [`Reader::end`]).
const MAX_TABLE_IDS: usize = 4096;

/// The server cannot send the binlog asked for (MySQL and MariaDB error 1236): the position is
/// not in its binlog (purged, reset, another server's).
const ER_MASTER_FATAL_ERROR_READING_BINLOG: u16 = 1236;

/// What decoding one event leaves to hand over to the pipeline.
enum Handover {
    /// A heartbeat while no transaction is open: its position, as an idle position.
    Heartbeat(MysqlPosition),
    /// The open transaction has gathered a chunk of rows.
    Chunk,
    /// A transaction ended; the position right after it.
    End(OpenTxn, MysqlPosition),
}

/// The state the reader carries from one binlog event to the next.
struct Reader<'a> {
    watched: &'a HashSet<TableName>,
    copied: &'a HashMap<TableName, Position>,
    chunk_rows: usize,
    /// The query connection, for re-reading table definitions (`None` only in unit tests that
    /// feed events without a server).
    meta: Option<Conn>,
    cache: SchemaCache,
    table_ids: HashMap<u64, Option<Version>>,
    /// duplex's checkpoint table and its binlog table maps by id: a transaction that writes
    /// this pipeline's row of it first is this pipeline's own (the MySQL sink writes the
    /// checkpoint first in every transaction) and is dropped.
    marker: TableName,
    marker_ids: HashMap<u64, TableMapEvent<'static>>,
    pipeline: &'a str,
    current_file: String,
    gtid_state: GtidState,
    txn: Option<OpenTxn>,
    last_idle: Instant,
}

impl<'a> Reader<'a> {
    fn new(
        source: &'a MysqlSource,
        meta: Option<Conn>,
        collations: Collations,
        start: &MysqlPosition,
        mariadb: bool,
    ) -> Self {
        Reader {
            watched: &source.watched,
            copied: &source.copied,
            chunk_rows: source.chunk_rows,
            meta,
            cache: SchemaCache::new(collations),
            table_ids: HashMap::new(),
            marker: TableName::new(
                source.cfg.duplex_database.clone(),
                crate::state::checkpoint::TABLE,
            ),
            marker_ids: HashMap::new(),
            pipeline: &source.pipeline,
            current_file: start.file.0.clone(),
            gtid_state: start.gtid.clone().unwrap_or(if mariadb {
                GtidState::Maria(MariaGtidList::default())
            } else {
                GtidState::Mysql(MysqlGtidSet::default())
            }),
            txn: None,
            last_idle: Instant::now() - IDLE_EVERY,
        }
    }

    /// Decode: applies one event to the reader's state; returns what is ready to hand over.
    async fn decode(&mut self, event: &Event) -> Result<Option<Handover>> {
        let header = event.header();
        let ty = header.event_type_raw();
        let log_pos = header.log_pos() as u64;
        match ty {
            ROTATE_EVENT => {
                if let Ok(Some(EventData::RotateEvent(r))) = event.read_data() {
                    self.current_file = clean_rotate_name(r.name_raw());
                }
            }
            MARIADB_GTID_EVENT => {
                let (seq, domain, flags) = parse_mariadb_gtid(event.data())?;
                let server = header.server_id();
                self.txn = Some(OpenTxn::new(
                    format!("{domain}-{server}-{seq}"),
                    Some(TxnGtid::Maria(domain, server, seq)),
                    flags & FL_STANDALONE != 0,
                    header.timestamp(),
                    MysqlPosition::new(self.current_file.clone(), log_pos),
                ));
            }
            MYSQL_GTID_EVENT | MYSQL_ANONYMOUS_GTID_EVENT => {
                let gtid = match event.read_data() {
                    Ok(Some(EventData::GtidEvent(g))) if ty == MYSQL_GTID_EVENT => {
                        Some(TxnGtid::Mysql(format_uuid(&g.sid()), g.gno()))
                    }
                    _ => None,
                };
                let id = match &gtid {
                    Some(TxnGtid::Mysql(u, n)) => format!("{u}:{n}"),
                    _ => format!("{}:{log_pos}", self.current_file),
                };
                // Standalone until a BEGIN query says otherwise: MySQL logs a DDL statement as
                // GTID + QUERY with no XID, and such a transaction must end at its query (else its
                // GTID never enters the stored set, and a purge of the hole fails the resume).
                self.txn = Some(OpenTxn::new(
                    id,
                    gtid,
                    true,
                    header.timestamp(),
                    MysqlPosition::new(self.current_file.clone(), log_pos),
                ));
            }
            QUERY_EVENT => return self.query(event, header.timestamp(), log_pos),
            XID_EVENT => return Ok(self.end(log_pos)),
            TABLE_MAP_EVENT => self.table_map(event, log_pos).await?,
            MARIADB_QUERY_COMPRESSED..=MARIADB_ROWS_COMPRESSED_LAST
                if ty == MARIADB_QUERY_COMPRESSED || ty >= MARIADB_ROWS_COMPRESSED_FIRST =>
            {
                return Err(Error::new(
                    ErrorKind::ServerSetting,
                    "the binlog holds compressed events (log_bin_compress = ON): SET GLOBAL log_bin_compress = OFF",
                ));
            }
            MYSQL_TRANSACTION_PAYLOAD_EVENT => {
                // Its rows are inside, compressed: passing it would lose them silently. The
                // transaction is still open, so the checkpoint stays before it.
                return Err(Error::new(
                    ErrorKind::ServerSetting,
                    format!(
                        "the binlog at {}:{log_pos} holds a compressed transaction (binlog_transaction_compression = ON), which duplex does not read. \
                         Fix: SET GLOBAL binlog_transaction_compression = OFF (and in the server config), then copy the mapped tables again with `duplex snapshot --table <table>` and start duplex",
                        self.current_file
                    ),
                ));
            }
            HEARTBEAT_EVENT => {
                if self.txn.is_none() && self.last_idle.elapsed() >= IDLE_EVERY {
                    if let Some(pos) = heartbeat_position(
                        &self.current_file,
                        event.data(),
                        log_pos,
                        &self.gtid_state,
                    ) {
                        return Ok(Some(Handover::Heartbeat(pos)));
                    }
                }
            }
            _ => return self.rows(event, log_pos),
        }
        Ok(None)
    }

    /// A query event: `BEGIN` opens a transaction (MySQL); `COMMIT`, or any other statement in a
    /// standalone transaction or outside one (DDL: the table definitions are forgotten), ends it.
    fn query(&mut self, event: &Event, timestamp: u32, log_pos: u64) -> Result<Option<Handover>> {
        let (query, db) = match event.read_data() {
            Ok(Some(EventData::QueryEvent(q))) => (q.query().to_string(), q.schema().to_string()),
            _ => (String::new(), String::new()),
        };
        let q = query.trim();
        if statement::is_dml(q) {
            self.statement_dml(q, &db, log_pos)?;
            return Ok(None);
        }
        if statement::is_truncate(q) {
            self.truncate(q, &db, log_pos)?;
        }
        if q.eq_ignore_ascii_case("BEGIN") {
            if let Some(t) = self.txn.as_mut() {
                // A MySQL GTID's transaction of data changes: it ends at XID or COMMIT.
                t.standalone = false;
            } else {
                self.txn = Some(OpenTxn::new(
                    format!("{}:{log_pos}", self.current_file),
                    None,
                    false,
                    timestamp,
                    MysqlPosition::new(self.current_file.clone(), log_pos),
                ));
            }
        } else if q.eq_ignore_ascii_case("COMMIT")
            || self.txn.as_ref().is_some_and(|t| t.standalone)
            || self.txn.is_none()
        {
            if !q.eq_ignore_ascii_case("COMMIT") {
                // DDL (or another statement): table definitions may have changed.
                tracing::info!(statement = %q.chars().take(200).collect::<String>(), "DDL in the binlog");
                self.cache.clear();
                self.table_ids.clear();
            }
            return Ok(self.end(log_pos));
        }
        Ok(None)
    }

    /// A data change logged as a statement: passed (counted) when it names no watched table or
    /// copies taken after it hold every one it names; otherwise the direction stops here, before
    /// the checkpoint passes it, saying what to do.
    fn statement_dml(&mut self, q: &str, db: &str, log_pos: u64) -> Result<()> {
        let named = statement::watched_in(q, db, self.watched);
        if named.is_empty() {
            metrics::counter!(crate::telemetry::EVENTS_PASSED).increment(1);
            return Ok(());
        }
        if self.held_by_copies(&named, log_pos) {
            return Ok(());
        }
        let tables: Vec<String> = named.iter().map(|t| t.to_string()).collect();
        let first = tables.first().cloned().unwrap_or_default();
        Err(Error::new(
            ErrorKind::ServerSetting,
            format!(
                "a change of {} at {}:{log_pos} is logged as a statement, not as rows (binlog_format is not ROW for it): duplex cannot replicate it. \
                 Fix: SET GLOBAL binlog_format = 'ROW' (and make sure no session sets STATEMENT or MIXED), then copy the table again with `duplex snapshot --table {first}` (each table named), and start duplex: it passes this statement once a later copy holds it. The statement: {}",
                tables.join(", "),
                self.current_file,
                q.chars().take(200).collect::<String>()
            ),
        ))
    }

    /// A TRUNCATE of a watched table stops the direction here, before the checkpoint passes it,
    /// unless copies taken after it hold every table it names. duplex does not empty the
    /// other side's tables by itself: that is the operator's decision (README, "When the source
    /// changes under duplex").
    fn truncate(&mut self, q: &str, db: &str, log_pos: u64) -> Result<()> {
        let named = statement::watched_in(q, db, self.watched);
        if named.is_empty() || self.held_by_copies(&named, log_pos) {
            return Ok(());
        }
        let first = named.first().map(|t| t.name.clone()).unwrap_or_default();
        let tables: Vec<String> = named.iter().map(|t| t.to_string()).collect();
        Err(Error::new(
            ErrorKind::SourceDefinite,
            format!(
                "TRUNCATE of {} at {}:{log_pos}: duplex does not empty the PostgreSQL tables mapped from it on its own. \
                 To follow it, resync the table: `duplex snapshot --table {first}` (each table named) copies it again and removes the rows MySQL no longer has, \
                 then start duplex: it passes the TRUNCATE once a later copy holds the table. \
                 To keep PostgreSQL's rows instead, take the table out of the mappings before starting duplex. The statement: {}",
                tables.join(", "),
                self.current_file,
                q.chars().take(200).collect::<String>()
            ),
        ))
    }

    /// Whether copies taken after the event at `log_pos` of the current file hold `tables`
    /// (the event is passed then, and counted).
    fn held_by_copies(&self, tables: &[&TableName], log_pos: u64) -> bool {
        let at = Position::Mysql(MysqlPosition::new(self.current_file.clone(), log_pos));
        crate::source::held_by_copies(tables, &at, self.copied)
    }

    /// Ends the open transaction (if any) at `log_pos`: it goes to the pipeline whole.
    fn end(&mut self, log_pos: u64) -> Option<Handover> {
        let t = self.txn.take()?;
        // Every transaction maps the tables it uses again, so between two the ids can go: a
        // server that churns its table cache hands out new ids without end.
        if self.table_ids.len() > MAX_TABLE_IDS {
            self.table_ids.clear();
            self.marker_ids.clear();
        }
        let pos = end_position(&t, &mut self.gtid_state, &self.current_file, log_pos);
        Some(Handover::End(t, pos))
    }

    /// A table map event: which table a binlog table id stands for from here on, and for a
    /// watched table the definition it had when the event was written (see [`super::schema`]).
    /// A watched table's map without column names (`binlog_row_metadata` not FULL) stops the
    /// direction here, unless a copy taken after it holds the table (its rows are passed then).
    async fn table_map(&mut self, event: &Event, log_pos: u64) -> Result<()> {
        let Ok(Some(EventData::TableMapEvent(tme))) = event.read_data() else {
            return Ok(());
        };
        let name = TableName::new(tme.database_name(), tme.table_name());
        if name == self.marker {
            self.marker_ids
                .insert(tme.table_id(), tme.clone().into_owned());
        } else {
            self.marker_ids.remove(&tme.table_id());
        }
        if !self.watched.contains(&name) {
            self.table_ids.insert(tme.table_id(), None);
            return Ok(());
        }
        if let Some(v) = self
            .cache
            .version(
                self.meta.as_mut().ok_or_else(|| {
                    Error::new(
                        ErrorKind::Invariant,
                        "the binlog reader has no query connection",
                    )
                })?,
                event.data(),
                &tme,
            )
            .await?
        {
            self.table_ids.insert(tme.table_id(), Some(v));
            return Ok(());
        }
        if self.held_by_copies(&[&name], log_pos) {
            self.table_ids.insert(tme.table_id(), None);
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::ServerSetting,
            format!(
                "the binlog at {}:{log_pos} carries no column names for {name} (binlog_row_metadata is not FULL): \
                 duplex cannot tell which definition of the table its rows were written with, and does not guess. \
                 Fix: SET GLOBAL binlog_row_metadata = 'FULL' (and binlog_row_metadata = FULL in the server config), \
                 then copy the table again with `duplex snapshot --table {}` and start duplex: it passes the events the copy holds",
                self.current_file, name.name
            ),
        ))
    }

    /// Any other event: a rows event of a watched table is decoded into the open transaction
    /// (duplex's own too: it is marked, and its rows refresh the mirror columns); a full chunk
    /// is handed over.
    fn rows(&mut self, event: &Event, log_pos: u64) -> Result<Option<Handover>> {
        let Ok(Some(EventData::RowsEvent(rows))) = event.read_data() else {
            return Ok(None);
        };
        let table_id = rows.table_id();
        if let Some(open) = self.txn.as_mut() {
            if !open.seen_rows {
                open.seen_rows = true;
                open.own = self
                    .marker_ids
                    .get(&table_id)
                    .is_some_and(|tme| marks_pipeline(&rows, tme, self.pipeline));
            }
        }
        let Some(Some((schema, layout))) = self.table_ids.get(&table_id) else {
            return Ok(None);
        };
        let current_file = &self.current_file;
        let Some(open) = self.txn.as_mut() else {
            return Err(Error::new(
                ErrorKind::SourceDefinite,
                format!(
                    "row event for {} at {current_file}:{log_pos} outside a transaction",
                    schema.name
                ),
            ));
        };
        match decode_rows(&rows, layout, schema, &mut open.rows) {
            Ok(()) => {}
            // A partial row image (binlog_row_image not FULL): passed when a copy taken after it
            // holds the table, like a statement (see `statement_dml`).
            Err(e) if e.kind() == ErrorKind::ServerSetting => {
                if self.held_by_copies(&[&schema.name], log_pos) {
                    return Ok(None);
                }
                return Err(e.context(format!(
                    "at {current_file}:{log_pos}; fix: SET GLOBAL binlog_row_image = 'FULL' (and no session MINIMAL or NOBLOB), then copy the table again with `duplex snapshot --table {}` and start duplex: it passes this event once a later copy holds it",
                    schema.name.name
                )));
            }
            Err(e) => return Err(e.context(format!("at {current_file}:{log_pos}"))),
        }
        Ok((open.rows.len() >= self.chunk_rows).then_some(Handover::Chunk))
    }

    /// Hand over: sends what an event completed. `false`: the pipeline is gone and the run ends
    /// (noticed by a heartbeat's or a chunk's send; a transaction's end sends what it can and
    /// reading goes on).
    async fn hand_over(&mut self, out: Handover, tx: &mpsc::Sender<SourceEvent>) -> bool {
        match out {
            Handover::Heartbeat(pos) => {
                self.last_idle = Instant::now();
                tx.send(SourceEvent::Idle(Position::Mysql(pos)))
                    .await
                    .is_ok()
            }
            Handover::Chunk => match self.txn.as_mut() {
                Some(open) => send_chunk(open, tx).await,
                None => true,
            },
            Handover::End(t, pos) => {
                finish(t, pos, tx, &mut self.last_idle).await;
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotate_names() {
        assert_eq!(clean_rotate_name(b"binlog.000012"), "binlog.000012");
        assert_eq!(
            clean_rotate_name(b"binlog.000012\xf1\x02\xa3\x04"),
            "binlog.000012"
        );
        assert_eq!(
            clean_rotate_name(b"mysql-bin.000001abcd"),
            "mysql-bin.000001"
        );
    }

    #[test]
    fn heartbeats_of_another_file_give_no_position() {
        let none = GtidState::Maria(MariaGtidList::default());
        let at = heartbeat_position("binlog.000006", b"binlog.000006", 751, &none).unwrap();
        assert_eq!((at.file.0.as_str(), at.pos), ("binlog.000006", 751));
        // With the checksum bytes after the name, as MariaDB sends it.
        let body = b"binlog.000006\x01\x02\x03\x04";
        assert_eq!(
            heartbeat_position("binlog.000006", body, 900, &none).map(|p| p.pos),
            Some(900)
        );
        // The old file's end, reported after the Rotate event named the next file.
        assert!(
            heartbeat_position("binlog.000006", b"binlog.000005", 1_073_741_900, &none).is_none()
        );
        assert!(heartbeat_position("binlog.000006", b"binlog.000006", 0, &none).is_none());
    }

    #[test]
    fn uuids_and_sids() {
        let b = [
            0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42,
            0x95, 0x62,
        ];
        assert_eq!(format_uuid(&b), "3e11fa47-71ca-11e1-9e33-c80aa9429562");
        let set: MysqlGtidSet = "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7"
            .parse()
            .unwrap();
        let sids = to_sids(&set).unwrap();
        assert_eq!(sids.len(), 1);
        assert_eq!(sids[0].uuid(), b);
        let iv: Vec<(u64, u64)> = sids[0]
            .intervals()
            .iter()
            .map(|i| (i.start(), i.end()))
            .collect();
        assert_eq!(iv, vec![(1, 6), (7, 8)], "half-open on the wire");
    }

    #[test]
    fn gtid_event() {
        let mut d = 42u64.to_le_bytes().to_vec();
        d.extend(7u32.to_le_bytes());
        d.push(FL_STANDALONE);
        assert_eq!(parse_mariadb_gtid(&d).unwrap(), (42, 7, 1));
        assert!(parse_mariadb_gtid(&d[..5]).is_err());
    }
}

/// MySQL 8 event sequences, built as the server sends them, fed to the reader without a server.
#[cfg(test)]
mod mysql8 {
    use mysql_common::binlog::consts::{BinlogVersion, EventFlags, EventType};
    use mysql_common::binlog::events::{BinlogEventHeader, GtidEvent, QueryEvent, XidEvent};
    use mysql_common::binlog::EventStreamReader;
    use mysql_common::proto::MySerialize;

    use super::*;
    use crate::config::{MysqlConfig, Secret};

    const SID: [u8; 16] = [1; 16];
    const UUID: &str = "01010101-0101-0101-0101-010101010101";

    fn event(ty: EventType, log_pos: u32, payload: &impl MySerialize) -> Event {
        let mut body = Vec::new();
        payload.serialize(&mut body);
        raw_event(ty, log_pos, &body)
    }

    /// An event with `body` as its payload, as is.
    fn raw_event(ty: EventType, log_pos: u32, body: &[u8]) -> Event {
        let size = (BinlogEventHeader::LEN + body.len()) as u32;
        let header =
            BinlogEventHeader::new(1_700_000_000, ty, 1, size, log_pos, EventFlags::empty());
        let mut bytes = Vec::new();
        header.serialize(&mut bytes);
        bytes.extend_from_slice(body);
        EventStreamReader::new(BinlogVersion::Version4)
            .read(&bytes[..])
            .expect("a well-formed event")
            .expect("one event")
    }

    fn gtid(gno: u64, log_pos: u32) -> Event {
        event(EventType::GTID_EVENT, log_pos, &GtidEvent::new(SID, gno))
    }

    fn query(sql: &str, log_pos: u32) -> Event {
        let q = QueryEvent::new(Vec::new(), b"shop".to_vec()).with_query(sql.as_bytes().to_vec());
        event(EventType::QUERY_EVENT, log_pos, &q)
    }

    fn source() -> MysqlSource {
        let cfg = MysqlConfig {
            host: "127.0.0.1".into(),
            port: 3306,
            user: "u".into(),
            password: Secret::new(String::new()),
            database: "shop".into(),
            server_id: 7,
            duplex_database: "duplex".into(),
            start_position: None,
            connect_timeout_s: 10,
            read_timeout_s: 15,
            tls: crate::tls::Tls::disabled(),
        };
        MysqlSource::new(cfg, "p".into(), HashSet::new(), 1000)
    }

    /// The GTID state a handover's position carries.
    fn ended(out: Option<Handover>) -> MysqlPosition {
        match out {
            Some(Handover::End(_, pos)) => pos,
            _ => panic!("a transaction should end here"),
        }
    }

    #[tokio::test]
    async fn a_ddl_is_a_transaction_of_its_own_and_its_gtid_is_stored() {
        let source = source();
        let start: MysqlPosition = format!("binlog.000001:100@{UUID}:1-41").parse().unwrap();
        let mut r = Reader::new(&source, None, Collations::default(), &start, false);
        // A DDL: GTID, then the statement; no BEGIN, no XID.
        assert!(r.decode(&gtid(42, 200)).await.unwrap().is_none());
        let pos = ended(
            r.decode(&query("CREATE TABLE x (id int)", 300))
                .await
                .unwrap(),
        );
        assert_eq!(pos.to_string(), format!("binlog.000001:300@{UUID}:1-42"));
        assert!(r.txn.is_none());
        // Data changes: GTID, BEGIN, rows, XID; the transaction ends at the XID only.
        assert!(r.decode(&gtid(43, 400)).await.unwrap().is_none());
        assert!(r.decode(&query("BEGIN", 480)).await.unwrap().is_none());
        assert!(r.txn.as_ref().is_some_and(|t| !t.standalone));
        let xid = event(EventType::XID_EVENT, 600, &XidEvent { xid: 9 });
        let pos = ended(r.decode(&xid).await.unwrap());
        assert_eq!(pos.to_string(), format!("binlog.000001:600@{UUID}:1-43"));
        // Another DDL right after: no hole in the set (1-41:43 made resumes fail once purged).
        assert!(r.decode(&gtid(44, 700)).await.unwrap().is_none());
        let pos = ended(r.decode(&query("DROP TABLE x", 800)).await.unwrap());
        assert_eq!(pos.to_string(), format!("binlog.000001:800@{UUID}:1-44"));
    }

    #[tokio::test]
    async fn a_compressed_transaction_stops_before_the_checkpoint_passes_it() {
        let source = source();
        let start: MysqlPosition = format!("binlog.000001:100@{UUID}:1-5").parse().unwrap();
        let mut r = Reader::new(&source, None, Collations::default(), &start, false);
        assert!(r.decode(&gtid(6, 200)).await.unwrap().is_none());
        let payload = raw_event(EventType::TRANSACTION_PAYLOAD_EVENT, 900, &[0; 16]);
        let Err(e) = r.decode(&payload).await else {
            panic!("a compressed transaction passed");
        };
        assert_eq!(e.kind(), ErrorKind::ServerSetting);
        assert!(
            e.to_string()
                .contains("binlog_transaction_compression = OFF")
                && e.to_string().contains("binlog.000001:900"),
            "{e}"
        );
        assert!(
            r.txn.is_some(),
            "the transaction stays open: nothing passes it"
        );
    }

    #[tokio::test]
    async fn a_transaction_ending_with_commit_ends_there() {
        // MyISAM and other non-transactional changes: GTID, BEGIN, rows, COMMIT query.
        let source = source();
        let start: MysqlPosition = format!("binlog.000001:100@{UUID}:1-5").parse().unwrap();
        let mut r = Reader::new(&source, None, Collations::default(), &start, false);
        assert!(r.decode(&gtid(6, 200)).await.unwrap().is_none());
        assert!(r.decode(&query("BEGIN", 280)).await.unwrap().is_none());
        let pos = ended(r.decode(&query("COMMIT", 400)).await.unwrap());
        assert_eq!(pos.to_string(), format!("binlog.000001:400@{UUID}:1-6"));
    }
}

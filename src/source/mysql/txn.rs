//! Transaction assembly for the binlog reader ([`super::binlog`]): the transaction being read,
//! the position (with GTID state) right after it, and handing it over to the pipeline as
//! `Begin`, `Rows` chunks and `Commit`, or as a throttled `Idle` when it touched no watched table.
//!
//! Owns [`OpenTxn`] and the order of the events one transaction sends. May use the model's
//! positions and events and the pipeline's channel; reads no binlog bytes and opens no connection.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::model::{
    GtidState, MysqlPosition, Position, RowChange, SourceEvent, TxnBegin, TxnCommit,
};

/// At most one idle position per this interval.
pub(super) const IDLE_EVERY: Duration = Duration::from_millis(500);

/// The GTID of one transaction.
pub(super) enum TxnGtid {
    /// MariaDB: domain, server, sequence number.
    Maria(u32, u32, u64),
    /// MySQL: source UUID, transaction number.
    Mysql(String, u64),
}

/// The transaction being assembled.
pub(super) struct OpenTxn {
    id: String,
    gtid: Option<TxnGtid>,
    pub(super) standalone: bool,
    pub(super) begun: bool,
    /// A row event has been seen (the first one decides whether this is duplex's own write).
    pub(super) seen_rows: bool,
    /// duplex's own write (its first row event is the checkpoint marker): passed on, marked.
    pub(super) own: bool,
    pub(super) rows: Vec<RowChange>,
    commit_time_us: i64,
    at: Position,
}

impl OpenTxn {
    pub(super) fn new(
        id: String,
        gtid: Option<TxnGtid>,
        standalone: bool,
        timestamp: u32,
        at: MysqlPosition,
    ) -> Self {
        OpenTxn {
            at: Position::Mysql(at),
            id,
            gtid,
            standalone,
            begun: false,
            seen_rows: false,
            own: false,
            rows: Vec::new(),
            commit_time_us: timestamp as i64 * 1_000_000,
        }
    }

    fn begin(&self) -> TxnBegin {
        TxnBegin {
            id: self.id.clone(),
            commit_time_us: self.commit_time_us,
            at: Some(self.at.clone()),
            own: self.own,
        }
    }
}

/// Sends the rows gathered so far, after the transaction's Begin the first time. `false`: the
/// pipeline is gone.
pub(super) async fn send_chunk(open: &mut OpenTxn, tx: &mpsc::Sender<SourceEvent>) -> bool {
    if !open.begun {
        open.begun = true;
        if tx.send(SourceEvent::Begin(open.begin())).await.is_err() {
            return false;
        }
    }
    let chunk = std::mem::take(&mut open.rows);
    tx.send(SourceEvent::Rows(chunk)).await.is_ok()
}

/// Sends the end of a transaction (or an idle position, at most one per [`IDLE_EVERY`], when it
/// touched no watched table). A closed channel stops the sending, not the reader.
pub(super) async fn finish(
    mut t: OpenTxn,
    pos: MysqlPosition,
    tx: &mpsc::Sender<SourceEvent>,
    last_idle: &mut Instant,
) {
    if !t.begun && t.rows.is_empty() {
        if last_idle.elapsed() >= IDLE_EVERY {
            *last_idle = Instant::now();
            let _ = tx.send(SourceEvent::Idle(Position::Mysql(pos))).await;
        }
        return;
    }
    if !t.begun && tx.send(SourceEvent::Begin(t.begin())).await.is_err() {
        return;
    }
    if !t.rows.is_empty() {
        let rows = std::mem::take(&mut t.rows);
        if tx.send(SourceEvent::Rows(rows)).await.is_err() {
            return;
        }
    }
    let commit = TxnCommit {
        position: Position::Mysql(pos),
        commit_time_us: t.commit_time_us,
    };
    let _ = tx.send(SourceEvent::Commit(commit)).await;
}

/// The binlog position at `log_pos` of `file`, with the GTID state when the server has one.
pub(super) fn position_at(file: &str, log_pos: u64, gtid: &GtidState) -> MysqlPosition {
    MysqlPosition {
        file: crate::model::BinlogFile(file.to_string()),
        pos: log_pos,
        gtid: (!gtid.is_empty()).then(|| gtid.clone()),
    }
}

/// Records a finished transaction's GTID and returns the position right after it.
pub(super) fn end_position(
    t: &OpenTxn,
    gtid_state: &mut GtidState,
    file: &str,
    log_pos: u64,
) -> MysqlPosition {
    match (&t.gtid, gtid_state as &mut GtidState) {
        (Some(TxnGtid::Maria(d, s, n)), GtidState::Maria(state)) => state.advance(*d, *s, *n),
        (Some(TxnGtid::Mysql(u, n)), GtidState::Mysql(state)) => state.add(u, *n),
        _ => {}
    }
    position_at(file, log_pos, gtid_state)
}

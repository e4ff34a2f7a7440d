//! The logical replication protocol, spoken directly over a TCP socket (tokio-postgres has no
//! replication support).
//!
//! [`ReplicationConn`] does the `replication=database` start-up with trust, cleartext, MD5 or
//! SCRAM-SHA-256 authentication and runs replication commands (`IDENTIFY_SYSTEM`,
//! `CREATE_REPLICATION_SLOT`, `DROP_REPLICATION_SLOT`) as simple queries; `start_replication`
//! turns it into a [`ReplicationStream`] in CopyBoth mode, which yields WAL data and keepalives
//! and sends standby status updates.
//!
//! TLS as `[postgres] sslmode` says: an `SSLRequest` first, then, when the server answers `S`,
//! the start-up runs inside tokio-rustls (see [`crate::tls`]).
//!
//! Invariant (kept by the caller): the flushed LSN reported in a status update is never beyond
//! what the target has committed, because PostgreSQL may discard WAL up to it.
//!
//! May use the configuration, errors, the model's [`Lsn`] and [`crate::tls`].

use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::PostgresConfig;
use crate::error::{sqlstate_is_transient, Error, ErrorKind, Result};
use crate::model::Lsn;

/// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;
/// A backend message larger than this is refused rather than allocated.
const MAX_MESSAGE: usize = 1 << 30;

/// One backend message: tag and body.
struct Raw {
    tag: u8,
    body: Bytes,
}

/// A server error: SQLSTATE and message.
fn server_error(body: &[u8], sink: bool, what: &str) -> Error {
    let mut code = String::new();
    let mut message = String::new();
    let mut rest = body;
    while let Some((&field, tail)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let end = tail.iter().position(|b| *b == 0).unwrap_or(tail.len());
        let text = String::from_utf8_lossy(&tail[..end]).into_owned();
        match field {
            b'C' => code = text,
            b'M' => message = text,
            _ => {}
        }
        rest = tail.get(end + 1..).unwrap_or(&[]);
    }
    let transient = sqlstate_is_transient(&code);
    let kind = match (sink, transient) {
        (false, true) => ErrorKind::SourceTransient,
        (false, false) => ErrorKind::SourceDefinite,
        (true, true) => ErrorKind::SinkTransient,
        (true, false) => ErrorKind::SinkDefinite,
    };
    Error::new(kind, format!("{what}: {message} (SQLSTATE {code})"))
}

fn io_error(e: std::io::Error, what: &str) -> Error {
    Error::new(ErrorKind::SourceTransient, format!("{what}: {e}"))
}

fn protocol(what: impl Into<String>) -> Error {
    Error::new(
        ErrorKind::SourceDefinite,
        format!("replication protocol: {}", what.into()),
    )
}

/// The connection under the framing: plain TCP or TLS over it.
enum Socket {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Socket {
    fn is_tls(&self) -> bool {
        matches!(self, Socket::Tls(_))
    }

    async fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Socket::Plain(s) => s.write_all(buf).await,
            Socket::Tls(s) => {
                s.write_all(buf).await?;
                s.flush().await
            }
        }
    }

    async fn read_buf(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        match self {
            Socket::Plain(s) => s.read_buf(buf).await,
            Socket::Tls(s) => s.read_buf(buf).await,
        }
    }
}

/// The `SSLRequest` code (1234 << 16 | 5679).
const SSL_REQUEST: i32 = 80_877_103;

/// Asks for TLS as `tls` says and wraps the socket; plain when TLS is off, or not offered under
/// `prefer`.
async fn secure(mut tcp: TcpStream, cfg: &PostgresConfig, what: &str) -> Result<Socket> {
    let Some(config) = cfg.tls.client_config()? else {
        return Ok(Socket::Plain(tcp));
    };
    let mut request = BytesMut::with_capacity(8);
    request.put_i32(8);
    request.put_i32(SSL_REQUEST);
    tcp.write_all(&request)
        .await
        .map_err(|e| io_error(e, what))?;
    let answer = tcp.read_u8().await.map_err(|e| io_error(e, what))?;
    match answer {
        b'S' => {
            let name = crate::tls::Tls::server_name(&cfg.host)?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| {
                    let text = format!("{e:?} {e}");
                    match cfg.tls.explain(&text, &cfg.host) {
                        Some(why) => Error::new(ErrorKind::Config, format!("{what}: {why}")),
                        None => io_error(e, what),
                    }
                })?;
            Ok(Socket::Tls(Box::new(stream)))
        }
        b'N' if !cfg.tls.required() => Ok(Socket::Plain(tcp)),
        b'N' => Err(Error::new(
            ErrorKind::Config,
            format!("{what}: {}", cfg.tls.not_offered(&cfg.host)),
        )),
        other => Err(protocol(format!(
            "the server answered the SSLRequest with byte {other:#04x}"
        ))),
    }
}

/// A socket with framing for backend messages.
struct Wire {
    socket: Socket,
    read: BytesMut,
    write: BytesMut,
}

impl Wire {
    async fn flush(&mut self, what: &str) -> Result<()> {
        let out = self.write.split();
        self.socket
            .write_all(&out)
            .await
            .map_err(|e| io_error(e, what))
    }

    /// Reads the next whole backend message.
    async fn next(&mut self, what: &str) -> Result<Raw> {
        loop {
            if self.read.len() >= 5 {
                let len =
                    i32::from_be_bytes([self.read[1], self.read[2], self.read[3], self.read[4]]);
                if len < 4 || len as usize > MAX_MESSAGE {
                    return Err(protocol(format!("invalid message length {len}")));
                }
                let total = 1 + len as usize;
                if self.read.len() >= total {
                    let mut msg = self.read.split_to(total);
                    let tag = msg[0];
                    msg.advance(5);
                    return Ok(Raw {
                        tag,
                        body: msg.freeze(),
                    });
                }
                self.read.reserve(total - self.read.len());
            } else {
                self.read.reserve(8192);
            }
            let n = self
                .socket
                .read_buf(&mut self.read)
                .await
                .map_err(|e| io_error(e, what))?;
            if n == 0 {
                return Err(Error::new(
                    ErrorKind::SourceTransient,
                    format!("{what}: the server closed the replication connection"),
                ));
            }
        }
    }
}

/// A replication connection before streaming: runs replication commands.
pub struct ReplicationConn {
    wire: Wire,
}

/// What `IDENTIFY_SYSTEM` reports.
#[derive(Debug, Clone)]
pub struct SystemId {
    pub system_id: String,
    pub timeline: u32,
    pub xlog_pos: Lsn,
    pub dbname: Option<String>,
}

impl ReplicationConn {
    /// Connects and authenticates with `replication=database`.
    pub async fn connect(cfg: &PostgresConfig, application: &str) -> Result<ReplicationConn> {
        Self::connect_with(cfg, application, &[]).await
    }

    /// Like [`ReplicationConn::connect`], with session settings sent in the start-up packet.
    /// The whole start-up (TCP, TLS, authentication) gets `connect_timeout_s`: a server, pooler
    /// or network that accepts and then says nothing fails the attempt instead of hanging it.
    pub async fn connect_with(
        cfg: &PostgresConfig,
        application: &str,
        settings: &[(&str, &str)],
    ) -> Result<ReplicationConn> {
        let what = format!(
            "replication connection to PostgreSQL at {}:{} as {}",
            cfg.host, cfg.port, cfg.user
        );
        let limit = std::time::Duration::from_secs(cfg.connect_timeout_s);
        match tokio::time::timeout(limit, Self::start_up(cfg, application, settings, &what)).await {
            Ok(r) => r,
            Err(_) => Err(Error::new(
                ErrorKind::SourceTransient,
                format!(
                    "{what}: no answer within {} s during start-up",
                    cfg.connect_timeout_s
                ),
            )),
        }
    }

    async fn start_up(
        cfg: &PostgresConfig,
        application: &str,
        settings: &[(&str, &str)],
        what: &str,
    ) -> Result<ReplicationConn> {
        let what = what.to_string();
        let socket = tokio::time::timeout(
            std::time::Duration::from_secs(cfg.connect_timeout_s),
            TcpStream::connect((cfg.host.as_str(), cfg.port)),
        )
        .await
        .map_err(|_| Error::new(ErrorKind::SourceTransient, format!("{what}: timed out")))?
        .map_err(|e| io_error(e, &what))?;
        let _ = socket.set_nodelay(true);
        let socket = secure(socket, cfg, &what).await?;
        let mut wire = Wire {
            socket,
            read: BytesMut::with_capacity(64 * 1024),
            write: BytesMut::with_capacity(1024),
        };
        let mut params = vec![
            ("user", cfg.user.as_str()),
            ("database", cfg.dbname.as_str()),
            ("replication", "database"),
            ("application_name", application),
            ("client_encoding", "UTF8"),
        ];
        params.extend_from_slice(settings);
        frontend::startup_message(params.iter().copied(), &mut wire.write)
            .map_err(|e| io_error(e, &what))?;
        wire.flush(&what).await?;
        let password = cfg.password.expose().as_bytes();
        let mut scram: Option<ScramSha256> = None;
        loop {
            let msg = wire.next(&what).await?;
            match msg.tag {
                b'R' => {
                    let mut body = msg.body.clone();
                    if body.len() < 4 {
                        return Err(protocol("short authentication request"));
                    }
                    let code = body.get_i32();
                    match code {
                        0 => {}
                        3 => {
                            frontend::password_message(password, &mut wire.write).map_err(|e| io_error(e, &what))?;
                            wire.flush(&what).await?;
                        }
                        5 => {
                            if body.len() < 4 {
                                return Err(protocol("short MD5 salt"));
                            }
                            let salt = [body[0], body[1], body[2], body[3]];
                            let hash = postgres_protocol::authentication::md5_hash(cfg.user.as_bytes(), password, salt);
                            frontend::password_message(hash.as_bytes(), &mut wire.write).map_err(|e| io_error(e, &what))?;
                            wire.flush(&what).await?;
                        }
                        10 => {
                            let mechanisms: Vec<String> = body
                                .split(|b| *b == 0)
                                .filter(|m| !m.is_empty())
                                .map(|m| String::from_utf8_lossy(m).into_owned())
                                .collect();
                            if !mechanisms.iter().any(|m| m == SCRAM_SHA_256) {
                                return Err(Error::new(
                                    ErrorKind::Config,
                                    format!("{what}: the server offers {mechanisms:?}, none of which duplex speaks"),
                                ));
                            }
                            // Under TLS the server also offers SCRAM-SHA-256-PLUS; "y" (would
                            // bind, thinks the server cannot) reads as a downgrade there, so the
                            // client says it does not bind ("n").
                            let binding = if wire.socket.is_tls() {
                                ChannelBinding::unsupported()
                            } else {
                                ChannelBinding::unrequested()
                            };
                            let s = ScramSha256::new(password, binding);
                            frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut wire.write)
                                .map_err(|e| io_error(e, &what))?;
                            wire.flush(&what).await?;
                            scram = Some(s);
                        }
                        11 => {
                            let s = scram.as_mut().ok_or_else(|| protocol("SASL continue before SASL start"))?;
                            s.update(&body).map_err(|e| {
                                Error::new(ErrorKind::Config, format!("{what}: SCRAM authentication failed: {e}"))
                            })?;
                            frontend::sasl_response(s.message(), &mut wire.write).map_err(|e| io_error(e, &what))?;
                            wire.flush(&what).await?;
                        }
                        12 => {
                            let s = scram.as_mut().ok_or_else(|| protocol("SASL final before SASL start"))?;
                            s.finish(&body).map_err(|e| {
                                Error::new(ErrorKind::Config, format!("{what}: the server's SCRAM signature is wrong: {e}"))
                            })?;
                        }
                        other => {
                            return Err(Error::new(
                                ErrorKind::Config,
                                format!("{what}: authentication method {other} is not supported (use scram-sha-256, md5 or trust)"),
                            ))
                        }
                    }
                }
                b'E' => {
                    let e = server_error(&msg.body, false, &what);
                    // Bad password or no pg_hba entry will not heal by retrying.
                    return Err(if e.message().contains("SQLSTATE 28") {
                        Error::new(ErrorKind::Config, e.message().to_string())
                    } else {
                        e
                    });
                }
                b'Z' => return Ok(ReplicationConn { wire }),
                // ParameterStatus, BackendKeyData, NoticeResponse.
                _ => {}
            }
        }
    }

    /// Runs one command with the simple query protocol; returns its rows as text.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let what = format!("running {sql:?}");
        frontend::query(sql, &mut self.wire.write).map_err(|e| io_error(e, &what))?;
        self.wire.flush(&what).await?;
        let mut rows = Vec::new();
        let mut failure = None;
        loop {
            let msg = self.wire.next(&what).await?;
            match msg.tag {
                b'D' => {
                    let mut b = msg.body.clone();
                    if b.len() < 2 {
                        return Err(protocol("short DataRow"));
                    }
                    let n = b.get_i16();
                    let mut row = Vec::with_capacity(n.max(0) as usize);
                    for _ in 0..n {
                        if b.len() < 4 {
                            return Err(protocol("short DataRow cell"));
                        }
                        let len = b.get_i32();
                        if len < 0 {
                            row.push(None);
                        } else {
                            if b.len() < len as usize {
                                return Err(protocol("short DataRow value"));
                            }
                            row.push(Some(
                                String::from_utf8_lossy(&b.split_to(len as usize)).into_owned(),
                            ));
                        }
                    }
                    rows.push(row);
                }
                b'E' => failure = Some(server_error(&msg.body, false, &what)),
                b'Z' => {
                    return match failure {
                        Some(e) => Err(e),
                        None => Ok(rows),
                    }
                }
                _ => {}
            }
        }
    }

    /// `server_version_num` (150018 for 15.18).
    pub async fn server_version_num(&mut self) -> Result<u32> {
        let rows = self.simple_query("SHOW server_version_num").await?;
        rows.first()
            .and_then(|r| r.first().cloned().flatten())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| protocol("SHOW server_version_num returned nothing"))
    }

    pub async fn identify_system(&mut self) -> Result<SystemId> {
        let rows = self.simple_query("IDENTIFY_SYSTEM").await?;
        let row = rows
            .first()
            .ok_or_else(|| protocol("IDENTIFY_SYSTEM returned no row"))?;
        let get = |i: usize| row.get(i).cloned().flatten();
        Ok(SystemId {
            system_id: get(0).unwrap_or_default(),
            timeline: get(1).and_then(|t| t.parse().ok()).unwrap_or(0),
            xlog_pos: get(2)
                .unwrap_or_default()
                .parse()
                .map_err(|_| protocol("bad xlogpos"))?,
            dbname: get(3),
        })
    }

    /// Creates a logical slot with pgoutput; returns its consistent point.
    pub async fn create_slot(&mut self, slot: &str) -> Result<Lsn> {
        let rows = self
            .simple_query(&format!(
                "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput NOEXPORT_SNAPSHOT",
                quote_ident(slot)
            ))
            .await?;
        let lsn = rows
            .first()
            .and_then(|r| r.get(1).cloned().flatten())
            .ok_or_else(|| protocol("CREATE_REPLICATION_SLOT returned no consistent point"))?;
        lsn.parse()
    }

    /// Creates a temporary slot (gone when this connection closes) that exports its snapshot:
    /// returns the consistent point and the snapshot name, which other sessions can adopt
    /// with `SET TRANSACTION SNAPSHOT` while this connection stays open and idle.
    pub async fn create_exporting_temp_slot(&mut self, slot: &str) -> Result<(Lsn, String)> {
        let rows = self
            .simple_query(&format!(
                "CREATE_REPLICATION_SLOT {} TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT",
                quote_ident(slot)
            ))
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| protocol("CREATE_REPLICATION_SLOT returned no row"))?;
        let lsn = row
            .get(1)
            .cloned()
            .flatten()
            .ok_or_else(|| protocol("CREATE_REPLICATION_SLOT returned no consistent point"))?;
        let name = row
            .get(2)
            .cloned()
            .flatten()
            .ok_or_else(|| protocol("CREATE_REPLICATION_SLOT exported no snapshot"))?;
        Ok((lsn.parse()?, name))
    }

    pub async fn drop_slot(&mut self, slot: &str) -> Result<()> {
        self.simple_query(&format!("DROP_REPLICATION_SLOT {} WAIT", quote_ident(slot)))
            .await
            .map(|_| ())
    }

    /// Starts streaming `slot` from `start` with pgoutput `options` (name, value); the server
    /// answers with CopyBothResponse ('W', which the generic message parser does not know).
    pub async fn start_replication(
        mut self,
        slot: &str,
        start: Lsn,
        options: &[(&str, &str)],
    ) -> Result<ReplicationStream> {
        let opts: Vec<String> = options
            .iter()
            .map(|(k, v)| format!("{} '{}'", quote_ident(k), v.replace('\'', "''")))
            .collect();
        let sql = format!(
            "START_REPLICATION SLOT {} LOGICAL {start} ({})",
            quote_ident(slot),
            opts.join(", ")
        );
        let what = format!("starting replication from slot {slot} at {start}");
        frontend::query(&sql, &mut self.wire.write).map_err(|e| io_error(e, &what))?;
        self.wire.flush(&what).await?;
        loop {
            let msg = self.wire.next(&what).await?;
            match msg.tag {
                b'W' => return Ok(ReplicationStream { wire: self.wire }),
                b'E' => return Err(server_error(&msg.body, false, &what)),
                _ => {}
            }
        }
    }
}

/// Quotes an identifier for a replication command.
fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// What the server sends while streaming.
#[derive(Debug, Clone)]
pub enum ReplicationMessage {
    /// WAL data: a pgoutput message starting at `wal_start`.
    XLogData {
        wal_start: Lsn,
        wal_end: Lsn,
        send_time_us: i64,
        data: Bytes,
    },
    /// The server's position; `reply` asks for a status update now.
    Keepalive {
        wal_end: Lsn,
        send_time_us: i64,
        reply: bool,
    },
}

/// A replication connection in CopyBoth mode.
pub struct ReplicationStream {
    wire: Wire,
}

impl ReplicationStream {
    /// The next WAL data or keepalive.
    pub async fn next(&mut self) -> Result<ReplicationMessage> {
        let what = "reading the replication stream";
        loop {
            let msg = self.wire.next(what).await?;
            match msg.tag {
                b'd' => {
                    let mut b = msg.body;
                    if b.is_empty() {
                        return Err(protocol("empty CopyData"));
                    }
                    match b.get_u8() {
                        b'w' => {
                            if b.len() < 24 {
                                return Err(protocol("short XLogData header"));
                            }
                            let wal_start = Lsn(b.get_u64());
                            let wal_end = Lsn(b.get_u64());
                            let send_time_us = b.get_i64() + PG_EPOCH_OFFSET_US;
                            return Ok(ReplicationMessage::XLogData {
                                wal_start,
                                wal_end,
                                send_time_us,
                                data: b,
                            });
                        }
                        b'k' => {
                            if b.len() < 17 {
                                return Err(protocol("short keepalive"));
                            }
                            let wal_end = Lsn(b.get_u64());
                            let send_time_us = b.get_i64() + PG_EPOCH_OFFSET_US;
                            let reply = b.get_u8() == 1;
                            return Ok(ReplicationMessage::Keepalive {
                                wal_end,
                                send_time_us,
                                reply,
                            });
                        }
                        other => return Err(protocol(format!("unknown CopyData kind {other:#x}"))),
                    }
                }
                b'E' => return Err(server_error(&msg.body, false, what)),
                b'c' => {
                    return Err(Error::new(
                        ErrorKind::SourceTransient,
                        "the server ended the replication stream (CopyDone)",
                    ))
                }
                // NoticeResponse, ParameterStatus.
                _ => {}
            }
        }
    }

    /// Sends a standby status update. `flushed` must be durable on the target: PostgreSQL may
    /// recycle WAL up to it.
    pub async fn send_status(
        &mut self,
        written: Lsn,
        flushed: Lsn,
        applied: Lsn,
        reply: bool,
    ) -> Result<()> {
        let now = chrono::Utc::now().timestamp_micros() - PG_EPOCH_OFFSET_US;
        let mut payload = BytesMut::with_capacity(34);
        payload.put_u8(b'r');
        payload.put_u64(written.0);
        payload.put_u64(flushed.0);
        payload.put_u64(applied.0);
        payload.put_i64(now);
        payload.put_u8(reply as u8);
        let what = "sending a standby status update";
        frontend::CopyData::new(payload.freeze())
            .map_err(|e| io_error(e, what))?
            .write(&mut self.wire.write);
        self.wire.flush(what).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_are_classified() {
        let body = b"SERROR\0C55006\0Mreplication slot \"s\" is active for PID 42\0\0";
        let e = server_error(body, false, "starting");
        assert_eq!(e.kind(), ErrorKind::SourceTransient);
        assert!(
            e.to_string()
                .contains("is active for PID 42 (SQLSTATE 55006)"),
            "{e}"
        );
        let e = server_error(b"C42704\0Mno such slot\0\0", false, "x");
        assert_eq!(e.kind(), ErrorKind::SourceDefinite);
        // Malformed bodies do not panic.
        let _ = server_error(b"C", false, "x");
        let _ = server_error(b"", false, "x");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}

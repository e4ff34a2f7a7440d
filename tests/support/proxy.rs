//! A TCP proxy for fault tests: sits between a client and one of the private servers and
//! fakes network faults on command.
//!
//! [`Proxy::start`] listens on a free port of 127.0.0.1 and forwards every accepted
//! connection to `127.0.0.1:<upstream>`, both ways, in one of three [`Mode`]s that can be
//! switched at any time and apply to existing and new connections alike:
//!
//! * [`Mode::Pass`]: bytes flow; a half-close (FIN) is passed on, and a connection reset
//!   on one side is passed on as a reset of the other.
//! * [`Mode::Blackhole`]: a partition that drops packets. Nothing is read from either side,
//!   so every byte sent stays in the kernel's buffers (and, once they fill, the sender
//!   blocks); no FIN passes either. New connections are accepted (the client's connect
//!   succeeds) but not connected upstream until the mode leaves blackhole. Back in pass,
//!   the held-back bytes flow on: connections survive, as TCP does a short partition.
//! * [`Mode::Reset`]: every connection is closed at once with a TCP RST on both sides
//!   (`SO_LINGER` 0, then close); new connections are accepted and reset at once, so the
//!   client's connect succeeds and its first read or write fails with "connection reset".
//!
//! Besides the modes, [`Proxy::freeze_existing`] fakes a peer gone for good without a reset (a
//! failover that blackholes the old address while new connections reach the new server): every
//! connection open at that moment stops moving bytes forever, both sockets held open (no FIN,
//! no RST); connections accepted later pass as the mode says.
//!
//! If the upstream refuses the connection (its server is stopped), the client gets a
//! reset too, not a refusal: it has already been accepted. Dropping the [`Proxy`] closes
//! its listener and every connection (plain close, no RST). Everything runs as tasks on
//! the tokio runtime that called [`Proxy::start`].
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// What the proxy does with traffic; see the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    Blackhole,
    Reset,
}

/// A running proxy; dropping it stops it.
pub struct Proxy {
    port: u16,
    upstream_port: u16,
    mode: watch::Sender<Mode>,
    /// Bumped by [`Proxy::freeze_existing`]: connections accepted before are frozen.
    generation: watch::Sender<u64>,
    accepted: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `127.0.0.1:upstream_port`, in
    /// [`Mode::Pass`]. Panics if it cannot listen.
    pub async fn start(upstream_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("proxy: cannot listen on 127.0.0.1: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("proxy: cannot read the listening address: {e}"))
            .port();
        let (mode, watcher) = watch::channel(Mode::Pass);
        let (generation, generations) = watch::channel(0);
        let accepted = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(accept_loop(
            listener,
            upstream_port,
            watcher,
            generations,
            Arc::clone(&accepted),
        ));
        Proxy {
            port,
            upstream_port,
            mode,
            generation,
            accepted,
            task,
        }
    }

    /// The port the proxy listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port it forwards to, on 127.0.0.1.
    pub fn upstream_port(&self) -> u16 {
        self.upstream_port
    }

    /// Lets traffic flow (again); held-back bytes follow.
    pub fn pass(&self) {
        self.set_mode(Mode::Pass);
    }

    /// Holds back all traffic, keeping connections open.
    pub fn blackhole(&self) {
        self.set_mode(Mode::Blackhole);
    }

    /// Resets every connection, and every new one while in this mode.
    pub fn reset(&self) {
        self.set_mode(Mode::Reset);
    }

    /// Switches to `mode`; existing connections follow at once.
    pub fn set_mode(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Freezes every connection open now, for good (see the module doc).
    pub fn freeze_existing(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// How many connections the proxy has accepted so far, in every mode.
    pub fn connections(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // The accept task owns the connection tasks (a JoinSet), which go with it.
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream_port: u16,
    mode: watch::Receiver<Mode>,
    generations: watch::Receiver<u64>,
    accepted: Arc<AtomicU64>,
) {
    let mut connections = JoinSet::new();
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                eprintln!("proxy for port {upstream_port}: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        accepted.fetch_add(1, Ordering::Relaxed);
        while connections.try_join_next().is_some() {}
        let born = *generations.borrow();
        connections.spawn(serve(
            client,
            upstream_port,
            mode.clone(),
            generations.clone(),
            born,
        ));
    }
}

/// How one direction, or a whole connection, ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The sending side closed; the close was passed on.
    Closed,
    /// Reset mode, an I/O error, or the proxy is gone: reset both sides.
    Reset,
}

async fn serve(
    client: TcpStream,
    upstream_port: u16,
    mut mode: watch::Receiver<Mode>,
    mut generations: watch::Receiver<u64>,
    born: u64,
) {
    // In blackhole the client stays connected to us only, its bytes unread.
    if !until_not_blackholed(&mut mode).await {
        abort(client);
        return;
    }
    let mut upstream = match TcpStream::connect(("127.0.0.1", upstream_port)).await {
        Ok(upstream) => upstream,
        Err(_) => {
            abort(client);
            return;
        }
    };
    let mut client = client;
    // Small protocol messages should not wait for Nagle.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let end = {
        let (mut client_in, mut client_out) = client.split();
        let (mut upstream_in, mut upstream_out) = upstream.split();
        let to_upstream = relay(&mut client_in, &mut upstream_out, mode.clone());
        let to_client = relay(&mut upstream_in, &mut client_out, mode);
        tokio::pin!(to_upstream, to_client);
        let (mut up_done, mut down_done) = (false, false);
        loop {
            let end = tokio::select! {
                _ = frozen(&mut generations, born) => {
                    // Frozen: the relays stop where they are, both sockets stay open.
                    std::future::pending::<()>().await;
                    End::Reset
                }
                end = &mut to_upstream, if !up_done => {
                    up_done = true;
                    end
                }
                end = &mut to_client, if !down_done => {
                    down_done = true;
                    end
                }
            };
            if end == End::Reset || (up_done && down_done) {
                break end;
            }
        }
    };
    if end == End::Reset {
        abort(client);
        abort(upstream);
    }
}

/// Copies `from` to `to` while the mode allows; each chunk read is written out in full
/// before the next read, pausing while blackholed.
async fn relay<R, W>(from: &mut R, to: &mut W, mut mode: watch::Receiver<Mode>) -> End
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0_u8; 16 * 1024];
    loop {
        if !until_not_blackholed(&mut mode).await {
            return End::Reset;
        }
        // Both branches are cancel-safe: a read that loses the race has read nothing.
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) => {
                    // Pass the half-close on, but not through a partition.
                    if !until_not_blackholed(&mut mode).await {
                        return End::Reset;
                    }
                    let _ = to.shutdown().await;
                    return End::Closed;
                }
                Ok(n) => n,
                Err(_) => return End::Reset,
            },
            changed = mode.changed() => match changed {
                Ok(()) => continue,
                Err(_) => return End::Reset,
            },
        };
        let mut sent = 0;
        while sent < n {
            if !until_not_blackholed(&mut mode).await {
                return End::Reset;
            }
            tokio::select! {
                written = to.write(&buf[sent..n]) => match written {
                    Ok(0) | Err(_) => return End::Reset,
                    Ok(k) => sent += k,
                },
                changed = mode.changed() => if changed.is_err() {
                    return End::Reset;
                },
            }
        }
    }
}

/// Waits out a blackhole; `true` for pass, `false` for reset (or a dropped proxy).
async fn until_not_blackholed(mode: &mut watch::Receiver<Mode>) -> bool {
    matches!(
        mode.wait_for(|m| *m != Mode::Blackhole).await.as_deref(),
        Ok(Mode::Pass)
    )
}

/// Returns once the connection born in generation `born` is frozen; never if the proxy goes.
async fn frozen(generations: &mut watch::Receiver<u64>, born: u64) {
    loop {
        if *generations.borrow_and_update() > born {
            return;
        }
        if generations.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Closes `stream` with a TCP RST rather than a FIN.
fn abort(stream: TcpStream) {
    // SO_LINGER 0 makes close(2) send a RST and drop unsent data; it does not block.
    let _ = stream.set_zero_linger();
    drop(stream);
}

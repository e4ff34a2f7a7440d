//! systemd's service notifications (`Type=notify`): `READY=1` once every direction streams,
//! `WATCHDOG=1` while the process is healthy (`WatchdogSec=`), `STATUS=` with what each
//! direction is doing (shown by `systemctl status`), `STOPPING=1` on a clean stop.
//!
//! The protocol is one datagram per message to the unix socket named by `$NOTIFY_SOCKET` (a
//! path, or `@name` in the abstract namespace); the watchdog period is `$WATCHDOG_USEC` when
//! `$WATCHDOG_PID` is unset or this process. Without `$NOTIFY_SOCKET` nothing is sent.
//!
//! Healthy means no direction is wedged: each active direction is copying, retrying (with its
//! own backoff and reported reason: restarting would not help), starting, or streaming with
//! progress seen within the watchdog period — its position moved or a heartbeat arrived (the
//! heartbeat moves both every second, so an idle shop still shows progress). A direction that
//! claims to stream but shows neither is stuck, and systemd restarts the process; it resumes
//! from the checkpoints.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use super::live::{DirStatus, State};

/// Where notifications go, and the watchdog period asked for.
pub struct Notifier {
    socket: UnixDatagram,
    address: Address,
    watchdog: Option<Duration>,
}

enum Address {
    Path(std::path::PathBuf),
    Abstract(Vec<u8>),
}

impl Notifier {
    /// The notifier systemd asked for, if any.
    pub fn from_env() -> Option<Notifier> {
        let name = std::env::var_os("NOTIFY_SOCKET")?;
        let name = name.to_string_lossy().into_owned();
        let address = match name.strip_prefix('@') {
            Some(a) => Address::Abstract(a.as_bytes().to_vec()),
            None => Address::Path(name.into()),
        };
        let mine = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|p| p == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|u| *u > 0 && mine)
            .map(Duration::from_micros);
        let socket = match UnixDatagram::unbound() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot open a socket for systemd's notifications");
                return None;
            }
        };
        Some(Notifier {
            socket,
            address,
            watchdog,
        })
    }

    /// Sends one notification (`KEY=value` lines); a failure is logged, not fatal.
    pub fn send(&self, message: &str) {
        let sent = match &self.address {
            Address::Path(p) => self.socket.send_to(message.as_bytes(), p),
            Address::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name)
                    .and_then(|a| self.socket.send_to_addr(message.as_bytes(), &a))
            }
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, message, "systemd notification not sent");
        }
    }

    /// The watchdog period systemd asked for.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }
}

/// What a direction showed at the last look: its position and last heartbeat arrival.
type Seen = (Option<String>, Option<i64>);

/// Tells systemd how the process is, every `tick`, until `stop`: READY once every direction
/// streams, the watchdog while healthy, STATUS on change; STOPPING when stopped.
pub async fn run(
    notifier: Notifier,
    max_lag: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let tick = notifier.watchdog().map_or(Duration::from_secs(1), |w| {
        (w / 3).min(Duration::from_secs(1))
    });
    let stuck_after = notifier
        .watchdog()
        .map_or(Duration::from_secs(60), |w| w.max(Duration::from_secs(5)));
    let mut ready = false;
    let mut status = String::new();
    let mut seen: Vec<(Seen, Instant)> = Vec::new();
    loop {
        let dirs = super::live().status(max_lag).directions;
        if seen.len() != dirs.len() {
            seen = dirs.iter().map(|d| (progress(d), Instant::now())).collect();
        }
        let mut healthy = true;
        for (d, (last, since)) in dirs.iter().zip(seen.iter_mut()) {
            let now = progress(d);
            if now != *last {
                *last = now;
                *since = Instant::now();
            }
            if d.state == State::Streaming && since.elapsed() > stuck_after {
                healthy = false;
            }
        }
        let streaming = !dirs.is_empty() && dirs.iter().all(|d| d.state == State::Streaming);
        let text = describe(&dirs);
        if streaming && !ready {
            ready = true;
            notifier.send(&format!("READY=1\nSTATUS={text}"));
            status = text;
        } else if text != status {
            notifier.send(&format!("STATUS={text}"));
            status = text;
        }
        if healthy && notifier.watchdog().is_some() {
            notifier.send("WATCHDOG=1");
        } else if !healthy {
            tracing::warn!("a direction streams without progress: the watchdog is not fed");
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
    }
    notifier.send("STOPPING=1");
}

fn progress(d: &DirStatus) -> Seen {
    (d.position.clone(), d.last_heartbeat_us)
}

/// One line: each direction's state, and the reason of a retry.
fn describe(dirs: &[DirStatus]) -> String {
    let parts: Vec<String> = dirs
        .iter()
        .map(|d| {
            let mut s = format!("{} {}", d.direction, d.state.as_str());
            if d.state == State::Retrying {
                if let Some(e) = &d.last_error {
                    let first: String = e.message.chars().take(120).collect();
                    s.push_str(&format!(" ({first})"));
                }
            }
            s
        })
        .collect();
    if parts.is_empty() {
        "starting".into()
    } else {
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_reach_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            socket: UnixDatagram::unbound().unwrap(),
            address: Address::Path(path),
            watchdog: None,
        };
        n.send("READY=1\nSTATUS=streaming");
        let mut buf = [0u8; 64];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=streaming");
    }
}

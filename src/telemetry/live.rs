//! The live state of the running process, per direction: what it is doing, where it is, the
//! last error and the retry in progress, and the heartbeat that measures lag. The pipeline
//! writes it; `/ready`, `/status` (read by `duplex status`) and the gauges read it.
//!
//! Lag, exactly: duplex writes a heartbeat row into each source every second, stamped with the
//! time of writing, and notes every attempt (also one that failed because the source is down).
//! When a heartbeat reaches the target (its target transaction committed), every attempt up to
//! its stamp is settled and its transit time is known. The lag is the larger of the last transit
//! time and the age of the oldest attempt not settled yet — so it grows in real time while the
//! source, the target or duplex itself is stuck, and is the true transit time otherwise.

use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::Way;

/// What a direction is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum State {
    #[default]
    Starting,
    Snapshot,
    Streaming,
    Retrying,
    Stopped,
}

impl State {
    pub const ALL: [State; 5] = [
        State::Starting,
        State::Snapshot,
        State::Streaming,
        State::Retrying,
        State::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Snapshot => "snapshot",
            State::Streaming => "streaming",
            State::Retrying => "retrying",
            State::Stopped => "stopped",
        }
    }
}

/// The last error a direction met.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastError {
    pub kind: String,
    pub message: String,
    /// Microseconds since the epoch.
    pub at_us: i64,
}

#[derive(Debug, Default)]
struct Dir {
    active: bool,
    state: State,
    since_us: i64,
    position: Option<String>,
    last_error: Option<LastError>,
    retry_attempt: u32,
    retry_at_us: Option<i64>,
    /// Heartbeat attempts (their stamps) not yet seen at the target, oldest first.
    outstanding: VecDeque<i64>,
    last_transit_us: Option<i64>,
    last_arrival_us: Option<i64>,
}

/// Attempts kept per direction (a day of heartbeats); only the oldest matters for the lag.
const OUTSTANDING_MAX: usize = 86_400;

/// One direction's state as `/status` reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DirStatus {
    pub direction: String,
    pub state: State,
    pub since_us: i64,
    /// The source position of the last committed target transaction.
    pub position: Option<String>,
    pub lag_seconds: Option<f64>,
    pub last_heartbeat_us: Option<i64>,
    pub last_error: Option<LastError>,
    pub retry_attempt: u32,
    pub retry_at_us: Option<i64>,
}

/// The whole process as `/status` reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub pipeline: String,
    pub pid: u32,
    pub started_us: i64,
    pub ready: bool,
    pub not_ready: Vec<String>,
    pub directions: Vec<DirStatus>,
}

pub struct Live {
    pipeline: Mutex<String>,
    started_us: i64,
    dirs: Mutex<[Dir; 2]>,
}

/// The process's live state.
pub fn live() -> &'static Live {
    static LIVE: OnceLock<Live> = OnceLock::new();
    LIVE.get_or_init(|| Live {
        pipeline: Mutex::new(String::new()),
        started_us: now_us(),
        dirs: Mutex::new([Dir::default(), Dir::default()]),
    })
}

pub fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

fn index(way: Way) -> usize {
    match way {
        Way::Forward => 0,
        Way::Reverse => 1,
    }
}

const WAYS: [Way; 2] = [Way::Forward, Way::Reverse];

impl Live {
    fn with<R>(&self, way: Way, f: impl FnOnce(&mut Dir) -> R) -> R {
        let mut dirs = self.dirs.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut dirs[index(way)])
    }

    pub fn set_pipeline(&self, name: &str) {
        *self.pipeline.lock().unwrap_or_else(|p| p.into_inner()) = name.to_string();
    }

    /// The direction runs in this process (its gauges and readiness count).
    pub fn activate(&self, way: Way) {
        self.with(way, |d| {
            if !d.active {
                d.active = true;
                d.since_us = now_us();
            }
        });
        super::zero_counters(way.as_str());
    }

    pub fn set_state(&self, way: Way, state: State) {
        self.with(way, |d| {
            if d.state != state {
                d.state = state;
                d.since_us = now_us();
            }
            if state == State::Streaming {
                d.retry_attempt = 0;
                d.retry_at_us = None;
            }
        });
    }

    /// A failure: the error is remembered; with `retry`, the direction waits `delay` before
    /// attempt number `attempt`.
    pub fn failed(&self, way: Way, e: &crate::error::Error, retry: Option<(u32, Duration)>) {
        let now = now_us();
        self.with(way, |d| {
            d.last_error = Some(LastError {
                kind: e.kind().as_str().to_string(),
                message: e.to_string(),
                at_us: now,
            });
            match retry {
                Some((attempt, delay)) => {
                    d.state = State::Retrying;
                    d.since_us = now;
                    d.retry_attempt = attempt;
                    d.retry_at_us = Some(now + delay.as_micros() as i64);
                }
                None => {
                    d.state = State::Stopped;
                    d.since_us = now;
                    d.retry_at_us = None;
                }
            }
        });
    }

    /// A target transaction committed with this source position.
    pub fn committed(&self, way: Way, position: &crate::model::Position) {
        let text = position.to_string();
        self.with(way, |d| d.position = Some(text));
    }

    /// A heartbeat was written (or tried) with this stamp.
    pub fn heartbeat_attempt(&self, way: Way, stamp_us: i64) {
        self.with(way, |d| {
            if d.outstanding.len() < OUTSTANDING_MAX {
                d.outstanding.push_back(stamp_us);
            }
        });
    }

    /// A heartbeat stamped `stamp_us` reached the target at `now_us`.
    pub fn heartbeat_arrived(&self, way: Way, stamp_us: i64, at_us: i64) {
        self.with(way, |d| {
            while d.outstanding.front().is_some_and(|&s| s <= stamp_us) {
                d.outstanding.pop_front();
            }
            d.last_transit_us = Some((at_us - stamp_us).max(0));
            d.last_arrival_us = Some(at_us);
        });
        metrics::counter!(super::HEARTBEATS, "direction" => way.as_str()).increment(1);
    }

    /// Whether every active direction streams with its lag within `max_lag`, and if not why.
    pub fn readiness(&self, max_lag: Duration) -> (bool, Vec<String>) {
        let dirs = self.dirs.lock().unwrap_or_else(|p| p.into_inner());
        readiness_of(&dirs, now_us(), max_lag)
    }

    pub fn status(&self, max_lag: Duration) -> Status {
        let now = now_us();
        // One look at the state, so that readiness and the directions agree.
        let dirs = self.dirs.lock().unwrap_or_else(|p| p.into_inner());
        let (ready, not_ready) = readiness_of(&dirs, now, max_lag);
        let directions = WAYS
            .iter()
            .filter(|w| dirs[index(**w)].active)
            .map(|&way| {
                let d = &dirs[index(way)];
                DirStatus {
                    direction: way.as_str().to_string(),
                    state: d.state,
                    since_us: d.since_us,
                    position: d.position.clone(),
                    lag_seconds: lag_of(d, now),
                    last_heartbeat_us: d.last_arrival_us,
                    last_error: d.last_error.clone(),
                    retry_attempt: d.retry_attempt,
                    retry_at_us: d.retry_at_us,
                }
            })
            .collect();
        drop(dirs);
        Status {
            pipeline: self
                .pipeline
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            pid: std::process::id(),
            started_us: self.started_us,
            ready,
            not_ready,
            directions,
        }
    }

    /// Sets the gauges that follow the live state (called a few times a second).
    pub fn publish(&self, max_lag: Duration) {
        let status = self.status(max_lag);
        metrics::gauge!(super::READY).set(if status.ready { 1.0 } else { 0.0 });
        for d in &status.directions {
            if let Some(lag) = d.lag_seconds {
                metrics::gauge!(super::LAG_SECONDS, "direction" => d.direction.clone()).set(lag);
            }
            metrics::gauge!(super::RETRY_ATTEMPT, "direction" => d.direction.clone())
                .set(d.retry_attempt as f64);
            for s in State::ALL {
                metrics::gauge!(super::PIPELINE_STATE, "direction" => d.direction.clone(), "state" => s.as_str())
                    .set(if s == d.state { 1.0 } else { 0.0 });
            }
        }
    }
}

/// See [`Live::readiness`].
fn readiness_of(dirs: &[Dir; 2], now: i64, max_lag: Duration) -> (bool, Vec<String>) {
    let mut why = Vec::new();
    for way in WAYS {
        let d = &dirs[index(way)];
        if !d.active {
            continue;
        }
        if d.state != State::Streaming {
            let mut line = format!("{}: {}", way.as_str(), d.state.as_str());
            if let Some(e) = &d.last_error {
                if d.state == State::Retrying || d.state == State::Stopped {
                    line.push_str(&format!(" ({})", e.message));
                }
            }
            why.push(line);
            continue;
        }
        match lag_of(d, now) {
            Some(l) if l > max_lag.as_secs_f64() => why.push(format!(
                "{}: lag {l:.3} s is above {:.3} s",
                way.as_str(),
                max_lag.as_secs_f64()
            )),
            _ => {}
        }
    }
    if dirs.iter().all(|d| !d.active) {
        why.push("no direction has started yet".into());
    }
    (why.is_empty(), why)
}

fn lag_of(d: &Dir, now: i64) -> Option<f64> {
    let waiting = d.outstanding.front().map(|&s| (now - s).max(0));
    let us = match (d.last_transit_us, waiting) {
        (None, None) => return None,
        (a, b) => a.unwrap_or(0).max(b.unwrap_or(0)),
    };
    Some(us as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_transit_time_or_age_of_the_oldest_unsettled_heartbeat() {
        let mut d = Dir::default();
        assert_eq!(lag_of(&d, 1_000), None);
        d.outstanding.push_back(1_000_000);
        // Not arrived yet: its age.
        assert_eq!(lag_of(&d, 1_500_000), Some(0.5));
        // Arrived after 20 ms, the next written a moment ago.
        d.outstanding.pop_front();
        d.last_transit_us = Some(20_000);
        d.outstanding.push_back(2_000_000);
        assert_eq!(lag_of(&d, 2_005_000), Some(0.02));
        // The target is down: the unsettled heartbeat's age takes over and keeps growing.
        assert_eq!(lag_of(&d, 9_000_000), Some(7.0));
    }

    #[test]
    fn arrival_settles_every_attempt_up_to_its_stamp() {
        let l = Live {
            pipeline: Mutex::new("t".into()),
            started_us: 0,
            dirs: Mutex::new([Dir::default(), Dir::default()]),
        };
        for s in [1, 2, 3, 4] {
            l.heartbeat_attempt(Way::Forward, s * 1_000_000);
        }
        l.heartbeat_arrived(Way::Forward, 3_000_000, 3_010_000);
        l.with(Way::Forward, |d| {
            assert_eq!(
                d.outstanding.iter().copied().collect::<Vec<_>>(),
                vec![4_000_000]
            );
            assert_eq!(d.last_transit_us, Some(10_000));
        });
    }
}

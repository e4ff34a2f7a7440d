//! CPU time of duplex, PostgreSQL (the postmaster and all its children, live or reaped),
//! mariadbd and the bench itself over a phase, from `/proc/<pid>/stat`: where the two cores
//! went.

use std::time::Instant;

use super::support;

/// Cumulative CPU ticks (user + system) at one instant.
pub struct Sample {
    at: Instant,
    /// duplex, postgres, mariadbd, bench
    ticks: [u64; 4],
}

/// Fields of `/proc/<pid>/stat` after the command name: (ppid, utime + stime, cutime + cstime).
fn stat(pid: &str) -> Option<(u32, u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    Some((num(1)? as u32, num(11)? + num(12)?, num(13)? + num(14)?))
}

/// CPU ticks (user + system) a process has used so far.
pub fn ticks(pid: u32) -> Option<u64> {
    stat(&pid.to_string()).map(|(_, t, _)| t)
}

fn pid_file(path: &std::path::Path) -> Option<u32> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// PostgreSQL's ticks: the postmaster's own and its reaped children's, plus its live children.
fn postgres_ticks() -> u64 {
    let Some(postmaster) = pid_file(&support::servers().pg_dir.join("data/postmaster.pid")) else {
        return 0;
    };
    let Some((_, own, reaped)) = stat(&postmaster.to_string()) else {
        return 0;
    };
    let children: u64 = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.bytes().all(|b| b.is_ascii_digit()).then_some(name)
        })
        .filter_map(|pid| stat(&pid))
        .filter(|(ppid, _, _)| *ppid == postmaster)
        .map(|(_, t, _)| t)
        .sum();
    own + reaped + children
}

pub fn sample(duplex_pid: u32) -> Sample {
    sample_with(ticks(duplex_pid).unwrap_or(0), Instant::now())
}

/// The servers' and the bench's ticks now, with duplex's ticks and the instant given: for a
/// duplex that has exited (its last reading and exit time), sampled once the PostgreSQL backend
/// it used has been reaped into the postmaster's children's time.
pub fn sample_with(duplex_ticks: u64, at: Instant) -> Sample {
    let ticks_of = |pid: Option<u32>| pid.and_then(ticks).unwrap_or(0);
    let mariadbd = pid_file(&support::servers().mysql_dir.join("mysqld.pid"));
    Sample {
        at,
        ticks: [
            duplex_ticks,
            postgres_ticks(),
            ticks_of(mariadbd),
            ticks_of(Some(std::process::id())),
        ],
    }
}

impl Sample {
    /// `duplex 93 %, postgres 41 %, mariadbd 52 %, bench 9 %` (of one core) since `self`.
    pub fn until(&self, later: &Sample) -> String {
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let secs = (later.at - self.at).as_secs_f64().max(1e-9);
        let names = ["duplex", "postgres", "mariadbd", "bench"];
        let parts: Vec<String> = names
            .iter()
            .zip(self.ticks.iter().zip(later.ticks))
            .map(|(name, (a, b))| {
                let pct = b.saturating_sub(*a) as f64 / hz / secs * 100.0;
                format!("{name} {pct:.0} %")
            })
            .collect();
        parts.join(", ")
    }
}

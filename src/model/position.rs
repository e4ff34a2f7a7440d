//! Source positions: where a source transaction ends, printable and ordered.
//!
//! Ordering rules (a checkpoint never moves backward, so they matter):
//! - [`MysqlPosition`] orders by binlog file sequence number (the numeric suffix of
//!   `binlog.000042`), then by byte offset. That is the total order of one server's binlog.
//!   The GTID list rides along for resuming but does not take part in the order: GTID lists
//!   of several replication domains are only partially ordered.
//! - [`MariaGtidList`] is a set of `domain-server-sequence` triples, one per domain; it is
//!   ordered per domain by sequence number ([`MariaGtidList::covers`]).
//! - [`Lsn`] is PostgreSQL's WAL location, totally ordered as a 64-bit number.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// A binlog file name with its sequence number parsed out for ordering.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BinlogFile(pub String);

impl BinlogFile {
    /// The numeric suffix (`binlog.000042` → 42); 0 when the name has none.
    pub fn sequence(&self) -> u64 {
        self.0
            .rsplit('.')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

impl Ord for BinlogFile {
    fn cmp(&self, other: &Self) -> Ordering {
        self.sequence()
            .cmp(&other.sequence())
            .then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for BinlogFile {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// MariaDB's GTID position: the last transaction seen in each replication domain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct MariaGtidList {
    /// domain id → (server id, sequence number)
    pub domains: BTreeMap<u32, (u32, u64)>,
}

impl MariaGtidList {
    /// Records that the transaction `domain-server-seq` has been seen.
    pub fn advance(&mut self, domain: u32, server: u32, seq: u64) {
        self.domains.insert(domain, (server, seq));
    }

    /// True when every domain of `other` is at or behind `self`.
    pub fn covers(&self, other: &MariaGtidList) -> bool {
        other.domains.iter().all(|(d, (_, seq))| {
            self.domains
                .get(d)
                .map(|(_, mine)| mine >= seq)
                .unwrap_or(false)
        })
    }

    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }
}

impl fmt::Display for MariaGtidList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (domain, (server, seq)) in &self.domains {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{domain}-{server}-{seq}")?;
        }
        Ok(())
    }
}

impl FromStr for MariaGtidList {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let mut list = MariaGtidList::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || {
                Error::config(format!(
                    "bad MariaDB GTID {part:?} in {s:?}: expected domain-server-sequence"
                ))
            };
            let mut it = part.split('-');
            let domain = it.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
            let server = it.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
            let seq = it.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
            if it.next().is_some() {
                return Err(bad());
            }
            if list.domains.insert(domain, (server, seq)).is_some() {
                return Err(Error::config(format!(
                    "MariaDB GTID list {s:?} names domain {domain} twice"
                )));
            }
        }
        Ok(list)
    }
}

/// Where a MySQL/MariaDB transaction ends: the binlog coordinates after its commit event, and
/// the GTID state including it when the server has GTIDs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MysqlPosition {
    pub file: BinlogFile,
    pub pos: u64,
    pub gtid: Option<MariaGtidList>,
}

impl MysqlPosition {
    pub fn new(file: impl Into<String>, pos: u64) -> Self {
        MysqlPosition {
            file: BinlogFile(file.into()),
            pos,
            gtid: None,
        }
    }
}

impl Ord for MysqlPosition {
    fn cmp(&self, other: &Self) -> Ordering {
        self.file
            .cmp(&other.file)
            .then_with(|| self.pos.cmp(&other.pos))
    }
}

impl PartialOrd for MysqlPosition {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for MysqlPosition {
    /// `binlog.000003:4567` or `binlog.000003:4567@0-1-42,1-2-7`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.0, self.pos)?;
        if let Some(g) = &self.gtid {
            write!(f, "@{g}")?;
        }
        Ok(())
    }
}

impl FromStr for MysqlPosition {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let (coords, gtid) = match s.split_once('@') {
            Some((c, g)) => (c, Some(g.parse::<MariaGtidList>()?)),
            None => (s, None),
        };
        let (file, pos) = coords.rsplit_once(':').ok_or_else(|| {
            Error::config(format!("bad binlog position {s:?}: expected file:pos"))
        })?;
        let pos = pos
            .parse()
            .map_err(|_| Error::config(format!("bad binlog offset in {s:?}")))?;
        if file.is_empty() {
            return Err(Error::config(format!(
                "bad binlog position {s:?}: empty file name"
            )));
        }
        Ok(MysqlPosition {
            file: BinlogFile(file.to_string()),
            pos,
            gtid,
        })
    }
}

/// PostgreSQL log sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::config(format!("bad LSN {s:?}: expected XXX/XXX"));
        let (hi, lo) = s.split_once('/').ok_or_else(bad)?;
        let hi = u64::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u64::from_str_radix(lo, 16).map_err(|_| bad())?;
        if hi > u32::MAX as u64 || lo > u32::MAX as u64 {
            return Err(bad());
        }
        Ok(Lsn((hi << 32) | lo))
    }
}

/// A position in either source.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Position {
    Mysql(MysqlPosition),
    Postgres(Lsn),
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Mysql(p) => write!(f, "mysql:{p}"),
            Position::Postgres(l) => write!(f, "pg:{l}"),
        }
    }
}

impl FromStr for Position {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        if let Some(rest) = s.strip_prefix("mysql:") {
            Ok(Position::Mysql(rest.parse()?))
        } else if let Some(rest) = s.strip_prefix("pg:") {
            Ok(Position::Postgres(rest.parse()?))
        } else {
            Err(Error::config(format!(
                "bad position {s:?}: expected mysql:… or pg:…"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_order() {
        let a: MysqlPosition = "binlog.000009:900".parse().unwrap();
        let b: MysqlPosition = "binlog.000010:4@0-1-42,3-7-9".parse().unwrap();
        assert!(a < b, "file sequence orders before offset");
        assert_eq!(b.to_string(), "binlog.000010:4@0-1-42,3-7-9");
        assert_eq!(b.gtid.as_ref().unwrap().domains[&3], (7, 9));
        let p: Position = "mysql:binlog.000010:4@0-1-42".parse().unwrap();
        assert_eq!(p.to_string(), "mysql:binlog.000010:4@0-1-42");
        let l: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(l.to_string(), "16/B374D848");
        assert_eq!(l.0, 0x16_B374_D848);
        assert!("1/2/3".parse::<Lsn>().is_err());
        assert!("x:1".parse::<MysqlPosition>().is_ok());
        assert!(":1".parse::<MysqlPosition>().is_err());
        assert!("0-1".parse::<MariaGtidList>().is_err());
        assert!("0-1-2,0-1-3".parse::<MariaGtidList>().is_err());
    }

    #[test]
    fn gtid_covers() {
        let a: MariaGtidList = "0-1-10,1-1-5".parse().unwrap();
        let b: MariaGtidList = "0-1-9".parse().unwrap();
        assert!(a.covers(&b));
        assert!(!b.covers(&a));
        assert_eq!("".parse::<MariaGtidList>().unwrap().to_string(), "");
    }
}

//! Source positions: where a source transaction ends, printable and ordered.
//!
//! Ordering rules (a checkpoint never moves backward, so they matter):
//! - [`MysqlPosition`] orders by binlog file sequence number (the numeric suffix of
//!   `binlog.000042`), then by byte offset. That is the total order of one server's binlog.
//!   Where both positions carry GTID states and one holds the other, that decides instead
//!   ([`MysqlPosition::is_after`]): file numbers start anew on a promoted replica, after
//!   `RESET MASTER` or with a new `log_bin` name, GTIDs go on. GTID lists of several
//!   replication domains are only partially ordered, hence the fallback.
//! - [`MariaGtidList`] is a set of `domain-server-sequence` triples, one per domain; it is
//!   ordered per domain by sequence number ([`MariaGtidList::covers`]).
//! - [`MysqlGtidSet`] is MySQL's executed GTID set: per server UUID, the transaction numbers
//!   seen, as disjoint intervals. It is a set, so it is only partially ordered (by inclusion).
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

/// MySQL's GTID set (`3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7,…`): per source UUID (and tag,
/// on MySQL 8.4), the transaction numbers seen, as sorted, disjoint, inclusive intervals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct MysqlGtidSet {
    pub sets: BTreeMap<String, Vec<(u64, u64)>>,
}

impl MysqlGtidSet {
    /// Records transaction `gno` of `source` (a UUID, or `uuid:tag`).
    pub fn add(&mut self, source: &str, gno: u64) {
        self.add_interval(source, gno, gno);
    }

    /// Records transactions `first..=last` of `source`, merging touching intervals.
    pub fn add_interval(&mut self, source: &str, first: u64, last: u64) {
        let v = self.sets.entry(source.to_ascii_lowercase()).or_default();
        // Intervals ending before `first - 1` stay; from there, merge what touches.
        let at = v.partition_point(|(_, end)| end.saturating_add(1) < first);
        let (mut lo, mut hi) = (first, last);
        while at < v.len() && v[at].0 <= hi.saturating_add(1) {
            lo = lo.min(v[at].0);
            hi = hi.max(v[at].1);
            v.remove(at);
        }
        v.insert(at, (lo, hi));
    }

    pub fn contains(&self, source: &str, gno: u64) -> bool {
        self.sets
            .get(&source.to_ascii_lowercase())
            .is_some_and(|v| v.iter().any(|(a, b)| *a <= gno && gno <= *b))
    }

    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// True when every transaction of `other` is in `self`.
    pub fn covers(&self, other: &MysqlGtidSet) -> bool {
        other.sets.iter().all(|(source, theirs)| {
            let mine = self.sets.get(source).map(Vec::as_slice).unwrap_or(&[]);
            theirs
                .iter()
                .all(|(x, y)| mine.iter().any(|(a, b)| a <= x && y <= b))
        })
    }

    /// How many transactions the set holds.
    pub fn count(&self) -> u64 {
        self.sets
            .values()
            .flatten()
            .map(|(a, b)| b.saturating_sub(*a) + 1)
            .sum()
    }
}

impl fmt::Display for MysqlGtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (source, intervals)) in self.sets.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(source)?;
            for (a, b) in intervals {
                if a == b {
                    write!(f, ":{a}")?;
                } else {
                    write!(f, ":{a}-{b}")?;
                }
            }
        }
        Ok(())
    }
}

impl FromStr for MysqlGtidSet {
    type Err = Error;

    /// Parses MySQL's text form, as `@@gtid_executed` prints it (newlines allowed).
    fn from_str(s: &str) -> Result<Self, Error> {
        let mut set = MysqlGtidSet::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || {
                Error::config(format!(
                    "bad MySQL GTID set {part:?}: expected uuid:1-5[:7-9…]"
                ))
            };
            let mut fields = part.split(':');
            let uuid = fields.next().ok_or_else(bad)?;
            if uuid.len() != 36 || !uuid.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                return Err(bad());
            }
            let mut source = uuid.to_ascii_lowercase();
            let mut any = false;
            for field in fields {
                if field
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                {
                    // A tag (MySQL 8.4): `uuid:tag:1-5`.
                    source = format!("{}:{}", uuid.to_ascii_lowercase(), field);
                    continue;
                }
                let (a, b) = match field.split_once('-') {
                    Some((a, b)) => (
                        a.parse::<u64>().map_err(|_| bad())?,
                        b.parse::<u64>().map_err(|_| bad())?,
                    ),
                    None => {
                        let a = field.parse::<u64>().map_err(|_| bad())?;
                        (a, a)
                    }
                };
                if a == 0 || b < a {
                    return Err(bad());
                }
                set.add_interval(&source, a, b);
                any = true;
            }
            if !any {
                return Err(bad());
            }
        }
        Ok(set)
    }
}

/// The GTID state of a source: MariaDB's per-domain list or MySQL's set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GtidState {
    Maria(MariaGtidList),
    Mysql(MysqlGtidSet),
}

impl GtidState {
    pub fn is_empty(&self) -> bool {
        match self {
            GtidState::Maria(m) => m.is_empty(),
            GtidState::Mysql(m) => m.is_empty(),
        }
    }

    /// The order of two states of the same kind by inclusion (MariaDB: every domain at or
    /// past); `None` when neither holds the other (or the kinds differ).
    pub fn compare(&self, other: &GtidState) -> Option<Ordering> {
        let (ge, le) = match (self, other) {
            (GtidState::Maria(a), GtidState::Maria(b)) => (a.covers(b), b.covers(a)),
            (GtidState::Mysql(a), GtidState::Mysql(b)) => (a.covers(b), b.covers(a)),
            _ => return None,
        };
        match (ge, le) {
            (true, true) => Some(Ordering::Equal),
            (true, false) => Some(Ordering::Greater),
            (false, true) => Some(Ordering::Less),
            (false, false) => None,
        }
    }

    /// A number that grows with every transaction the state takes in: MariaDB's sequence
    /// numbers summed over the domains, MySQL's transactions counted.
    pub fn weight(&self) -> u64 {
        match self {
            GtidState::Maria(m) => m.domains.values().map(|(_, seq)| *seq).sum(),
            GtidState::Mysql(m) => m.count(),
        }
    }
}

impl fmt::Display for GtidState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GtidState::Maria(m) => write!(f, "{m}"),
            GtidState::Mysql(m) => write!(f, "{m}"),
        }
    }
}

impl FromStr for GtidState {
    type Err = Error;

    /// MySQL sets name a UUID and a colon; MariaDB lists are `domain-server-seq`.
    fn from_str(s: &str) -> Result<Self, Error> {
        if s.contains(':') {
            Ok(GtidState::Mysql(s.parse()?))
        } else {
            Ok(GtidState::Maria(s.parse()?))
        }
    }
}

/// Where a MySQL/MariaDB transaction ends: the binlog coordinates after its commit event, and
/// the GTID state including it when the server has GTIDs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MysqlPosition {
    pub file: BinlogFile,
    pub pos: u64,
    pub gtid: Option<GtidState>,
}

impl MysqlPosition {
    pub fn new(file: impl Into<String>, pos: u64) -> Self {
        MysqlPosition {
            file: BinlogFile(file.into()),
            pos,
            gtid: None,
        }
    }

    /// Strictly after `other`: by the GTID states where both carry one and one holds the other
    /// (a promoted replica, `RESET MASTER` with the state carried over or a new `log_bin` name
    /// number their files anew, GTIDs go on); otherwise by file and offset.
    pub fn is_after(&self, other: &MysqlPosition) -> bool {
        if let (Some(a), Some(b)) = (&self.gtid, &other.gtid) {
            match a.compare(b) {
                Some(Ordering::Greater) => return true,
                Some(Ordering::Less) => return false,
                _ => {}
            }
        }
        self > other
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
            Some((c, g)) => (c, Some(g.parse::<GtidState>()?)),
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

impl Position {
    /// Whether `self` is strictly after `other` in the same source; `false` across sources.
    pub fn is_after(&self, other: &Position) -> bool {
        match (self, other) {
            (Position::Mysql(a), Position::Mysql(b)) => a.is_after(b),
            (Position::Postgres(a), Position::Postgres(b)) => a > b,
            _ => false,
        }
    }
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
        assert_eq!(
            b.gtid,
            Some(GtidState::Maria("0-1-42,3-7-9".parse().unwrap()))
        );
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
    fn gtids_order_positions_across_new_file_numbering() {
        let p = |s: &str| s.parse::<MysqlPosition>().unwrap();
        // A promoted replica (or RESET MASTER with the state carried over): files start again.
        let old = p("binlog.000006:751@0-1-14356");
        let new = p("binlog.000001:342@0-1-14357");
        assert!(new.is_after(&old) && !old.is_after(&new));
        // The same state on another file (idle): neither is after by GTID; file order decides.
        let idle = p("binlog.000001:900@0-1-14356");
        assert!(!idle.is_after(&old));
        // Domains that moved apart: no GTID order, file order decides.
        let a = p("binlog.000002:4@0-1-10,1-1-5");
        let b = p("binlog.000003:4@0-1-9,1-1-6");
        assert!(b.is_after(&a) && !a.is_after(&b));
        // Without GTIDs: file order.
        assert!(p("binlog.000002:4").is_after(&p("binlog.000001:900")));
        // MySQL sets by inclusion.
        let u = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let x = p(&format!("binlog.000009:4@{u}:1-41"));
        let y = p(&format!("binlog.000001:4@{u}:1-42"));
        assert!(y.is_after(&x) && !x.is_after(&y));
        let GtidState::Mysql(set) = y.gtid.clone().unwrap() else {
            panic!()
        };
        assert_eq!(set.count(), 42);
        let holed: MysqlGtidSet = format!("{u}:1-41:43").parse().unwrap();
        assert!(!holed.covers(&set) && !set.covers(&holed));
        assert_eq!(holed.count(), 42);
    }

    #[test]
    fn mysql_gtid_sets() {
        let u = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let mut s = MysqlGtidSet::default();
        for gno in [1, 2, 3, 7, 5, 4, 9] {
            s.add(u, gno);
        }
        assert_eq!(s.to_string(), format!("{u}:1-5:7:9"));
        s.add(u, 8);
        assert_eq!(s.to_string(), format!("{u}:1-5:7-9"));
        s.add(u, 6);
        assert_eq!(s.to_string(), format!("{u}:1-9"));
        assert!(s.contains(u, 9) && !s.contains(u, 10));
        let text = "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5:11-18,\n2174b383-5441-11e8-b90a-c80aa9429562:1-3";
        let parsed: MysqlGtidSet = text.parse().unwrap();
        assert_eq!(parsed.to_string(), "2174b383-5441-11e8-b90a-c80aa9429562:1-3,3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:11-18");
        let p: MysqlPosition = format!("binlog.000003:120@{parsed}").parse().unwrap();
        assert_eq!(p.gtid, Some(GtidState::Mysql(parsed.clone())));
        assert_eq!(p.to_string().parse::<MysqlPosition>().unwrap(), p);
        let tagged: MysqlGtidSet = format!("{u}:orders:1-4").parse().unwrap();
        assert_eq!(tagged.to_string(), format!("{u}:orders:1-4"));
        assert!("nonsense:1-2".parse::<MysqlGtidSet>().is_err());
        assert!(format!("{u}:5-2").parse::<MysqlGtidSet>().is_err());
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

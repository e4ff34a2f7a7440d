//! Decoder of pgoutput, PostgreSQL's logical replication output plugin: one message in, one
//! [`PgOutput`] out.
//!
//! Owns the byte layouts of the "Logical Replication Message Formats" chapter of the
//! PostgreSQL documentation for protocol versions 1 and 2: Begin, Commit, Origin, Relation,
//! Type, Insert, Update, Delete, Truncate and Message. The input of [`decode`] is exactly one
//! message: the payload of an XLogData (`w`) CopyData message after its 25-byte header, or one
//! row's `data` of `pg_logical_slot_{get,peek}_binary_changes`.
//!
//! Invariants:
//! * [`decode`] never panics and never allocates more than the input can fill: every read is
//!   bounds-checked, and every count or length field is checked against the bytes left before
//!   anything is allocated for it.
//! * It is strict: a truncated message, an unknown message or cell tag, a string without its
//!   NUL terminator, a name that is not UTF-8, a negative length or count, or bytes left over
//!   after the message are all errors of kind [`ErrorKind::SourceDefinite`] whose message says
//!   what was being read and at which byte offset. No prefix of a valid message decodes, and
//!   neither does a valid message with bytes appended.
//! * It is stateless. Matching a tuple to its [`Relation`] (by oid, with the same number of
//!   columns) and reading a cell's text as the column's type is the caller's business.
//!
//! Protocol version 2 only adds streaming of in-progress transactions: with `streaming` off
//! (what duplex asks for) every message has the version 1 layout. Inside a streamed
//! transaction the change messages carry an extra transaction id after the tag, which cannot
//! be told apart from the version 1 layout without the surrounding Stream Start; so the
//! stream control messages (Stream Start/Stop/Commit/Abort), like the two-phase messages of
//! version 3, are rejected as unexpected rather than risking misreading what follows.
//! Flag bits that do not change the layout (Commit flags, Truncate options, column flags
//! other than "key", Message flags other than "transactional") are passed on or ignored.
//!
//! May use the model's [`Lsn`] and errors; does no I/O.

use std::fmt;

use crate::error::{Error, ErrorKind, Result};
use crate::model::Lsn;

/// One decoded pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgOutput {
    /// Start of a transaction. `final_lsn` is the LSN of its commit record, the same as the
    /// Commit's `commit_lsn`.
    Begin {
        final_lsn: Lsn,
        /// Microseconds since 2000-01-01 00:00 UTC, as sent.
        commit_time_us: i64,
        xid: u32,
    },
    /// End of a transaction. `end_lsn` is just past its commit record: where a reader that
    /// has applied it resumes, and what it acknowledges.
    Commit {
        flags: u8,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        /// Microseconds since 2000-01-01 00:00 UTC, as sent.
        commit_time_us: i64,
    },
    /// Sent right after Begin when the transaction was made by a session with a replication
    /// origin; `commit_lsn` is what that session set with `pg_replication_origin_xact_setup`.
    Origin {
        commit_lsn: Lsn,
        name: String,
    },
    /// The layout of a table, sent before its first change in a decoding session and again
    /// after its catalog entry is invalidated (ALTER TABLE, but also TRUNCATE, which gives the
    /// table a new file): the latest one for an oid wins.
    Relation(Relation),
    /// A non-built-in type (enum, domain, ...) of a column, sent before the Relation using it.
    Type {
        oid: u32,
        namespace: String,
        name: String,
    },
    Insert {
        rel: u32,
        new: Tuple,
    },
    /// `old` is present when the replica identity is FULL (`OldKind::Full`, the whole old row)
    /// or when an identity column changed (`OldKind::Key`, the old key, other columns null).
    Update {
        rel: u32,
        old: Option<(OldKind, Tuple)>,
        new: Tuple,
    },
    Delete {
        rel: u32,
        old: (OldKind, Tuple),
    },
    Truncate {
        /// Bit 1: CASCADE, bit 2: RESTART IDENTITY.
        options: u8,
        rels: Vec<u32>,
    },
    /// A `pg_logical_emit_message` (only with the `messages` option). A transactional one
    /// comes inside its transaction; a non-transactional one is sent when decoded, outside any
    /// Begin/Commit, so before the Begin of the transaction that emitted it.
    Message {
        transactional: bool,
        /// The end of the message's WAL record (measured on PostgreSQL 15).
        lsn: Lsn,
        prefix: String,
        content: Vec<u8>,
    },
}

/// A table's layout as pgoutput describes it (generated columns are not sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    /// Empty for `pg_catalog`.
    pub namespace: String,
    pub name: String,
    /// `relreplident` of `pg_class`: `d` default (primary key), `n` nothing, `f` full,
    /// `i` index.
    pub replica_identity: u8,
    pub columns: Vec<RelColumn>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelColumn {
    /// Part of the replica identity key (every column with REPLICA IDENTITY FULL).
    pub key: bool,
    pub name: String,
    pub type_oid: u32,
    /// `atttypmod`: -1 when the type has none.
    pub type_modifier: i32,
}

/// One column value of a tuple.
#[derive(Clone, PartialEq, Eq)]
pub enum Cell {
    Null,
    /// An unchanged TOASTed value that was not sent (`u`): keep what the target has.
    Unchanged,
    /// The value in the type's text output format (`t`).
    Text(Vec<u8>),
    /// The value in the type's binary send format (`b`, only with the `binary` option).
    Binary(Vec<u8>),
}

impl fmt::Debug for Cell {
    /// Bytes as escaped ASCII (`Text("42")`), readable in logs and test failures.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cell::Null => f.write_str("Null"),
            Cell::Unchanged => f.write_str("Unchanged"),
            Cell::Text(b) => write!(f, "Text(\"{}\")", b.escape_ascii()),
            Cell::Binary(b) => write!(f, "Binary(\"{}\")", b.escape_ascii()),
        }
    }
}

/// A row image, one cell per column of the relation in its column order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuple(pub Vec<Cell>);

/// What an old row image of an Update or Delete holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldKind {
    /// `K`: the replica identity key columns (the others are null).
    Key,
    /// `O`: the whole old row (REPLICA IDENTITY FULL).
    Full,
}

/// Decodes one pgoutput message. See the module doc for what is accepted.
pub fn decode(buf: &[u8]) -> Result<PgOutput> {
    let mut r = Reader::new(buf);
    let tag = r.u8("message tag")?;
    let msg = match tag {
        b'B' => PgOutput::Begin {
            final_lsn: r.lsn("Begin final LSN")?,
            commit_time_us: r.i64("Begin commit time")?,
            xid: r.u32("Begin xid")?,
        },
        b'C' => PgOutput::Commit {
            flags: r.u8("Commit flags")?,
            commit_lsn: r.lsn("Commit LSN")?,
            end_lsn: r.lsn("Commit end LSN")?,
            commit_time_us: r.i64("Commit time")?,
        },
        b'O' => PgOutput::Origin {
            commit_lsn: r.lsn("Origin commit LSN")?,
            name: r.string("Origin name")?,
        },
        b'R' => PgOutput::Relation(relation(&mut r)?),
        b'Y' => PgOutput::Type {
            oid: r.u32("Type oid")?,
            namespace: r.string("Type namespace")?,
            name: r.string("Type name")?,
        },
        b'I' => {
            let rel = r.u32("Insert relation oid")?;
            r.expect(b'N', "Insert new tuple marker")?;
            PgOutput::Insert {
                rel,
                new: tuple(&mut r, "Insert new tuple")?,
            }
        }
        b'U' => {
            let rel = r.u32("Update relation oid")?;
            let at = r.pos;
            let old = match r.u8("Update tuple marker")? {
                b'K' => Some((OldKind::Key, tuple(&mut r, "Update old key")?)),
                b'O' => Some((OldKind::Full, tuple(&mut r, "Update old row")?)),
                b'N' => None,
                other => return Err(bad_tag("Update tuple marker (K, O or N)", other, at)),
            };
            if old.is_some() {
                r.expect(b'N', "Update new tuple marker")?;
            }
            PgOutput::Update {
                rel,
                old,
                new: tuple(&mut r, "Update new tuple")?,
            }
        }
        b'D' => {
            let rel = r.u32("Delete relation oid")?;
            let at = r.pos;
            let old = match r.u8("Delete tuple marker")? {
                b'K' => (OldKind::Key, tuple(&mut r, "Delete old key")?),
                b'O' => (OldKind::Full, tuple(&mut r, "Delete old row")?),
                other => return Err(bad_tag("Delete tuple marker (K or O)", other, at)),
            };
            PgOutput::Delete { rel, old }
        }
        b'T' => {
            let n = r.count("Truncate relation count", 4)?;
            let options = r.u8("Truncate options")?;
            let mut rels = Vec::with_capacity(n);
            for _ in 0..n {
                rels.push(r.u32("Truncate relation oid")?);
            }
            PgOutput::Truncate { options, rels }
        }
        b'M' => {
            let flags = r.u8("Message flags")?;
            let lsn = r.lsn("Message LSN")?;
            let prefix = r.string("Message prefix")?;
            let len = r.len("Message content length")?;
            PgOutput::Message {
                transactional: flags & 1 != 0,
                lsn,
                prefix,
                content: r.bytes(len, "Message content")?.to_vec(),
            }
        }
        b'S' | b'E' | b'c' | b'A' | b'p' | b'b' | b'P' | b'K' | b'r' => {
            return Err(decode_error(format!(
                "unexpected pgoutput message {:?} at byte 0: streaming and two-phase \
                 messages are not requested and not supported",
                char::from(tag)
            )))
        }
        other => return Err(bad_tag("pgoutput message tag", other, 0)),
    };
    r.finish(tag)?;
    Ok(msg)
}

fn relation(r: &mut Reader<'_>) -> Result<Relation> {
    let oid = r.u32("Relation oid")?;
    let namespace = r.string("Relation namespace")?;
    let name = r.string("Relation name")?;
    let at = r.pos;
    let replica_identity = r.u8("Relation replica identity")?;
    if !matches!(replica_identity, b'd' | b'n' | b'f' | b'i') {
        return Err(bad_tag(
            "Relation replica identity (d, n, f or i)",
            replica_identity,
            at,
        ));
    }
    // Each column takes at least flags + NUL + type oid + modifier = 10 bytes.
    let n = r.count16("Relation column count", 10)?;
    let mut columns = Vec::with_capacity(n);
    for _ in 0..n {
        let flags = r.u8("Relation column flags")?;
        columns.push(RelColumn {
            key: flags & 1 != 0,
            name: r.string("Relation column name")?,
            type_oid: r.u32("Relation column type oid")?,
            type_modifier: r.i32("Relation column type modifier")?,
        });
    }
    Ok(Relation {
        oid,
        namespace,
        name,
        replica_identity,
        columns,
    })
}

/// TupleData: Int16 column count, then per column a kind byte and, for `t` and `b`, an Int32
/// length and that many bytes.
fn tuple(r: &mut Reader<'_>, what: &str) -> Result<Tuple> {
    // Each cell takes at least its kind byte.
    let n = r.count16(what, 1)?;
    let mut cells = Vec::with_capacity(n);
    for _ in 0..n {
        let at = r.pos;
        let cell = match r.u8(what)? {
            b'n' => Cell::Null,
            b'u' => Cell::Unchanged,
            b't' => {
                let len = r.len(what)?;
                Cell::Text(r.bytes(len, what)?.to_vec())
            }
            b'b' => {
                let len = r.len(what)?;
                Cell::Binary(r.bytes(len, what)?.to_vec())
            }
            other => {
                return Err(bad_tag(
                    &format!("{what} cell kind (n, u, t or b)"),
                    other,
                    at,
                ))
            }
        };
        cells.push(cell);
    }
    Ok(Tuple(cells))
}

fn decode_error(message: String) -> Error {
    Error::new(ErrorKind::SourceDefinite, message)
}

fn bad_tag(what: &str, got: u8, at: usize) -> Error {
    decode_error(format!(
        "pgoutput: bad {what} at byte {at}: 0x{got:02x} ({:?})",
        char::from(got)
    ))
}

/// A cursor over one message; every read checks the bytes left and names what it was reading
/// when they run out.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn bytes(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let Some(out) = self
            .pos
            .checked_add(n)
            .and_then(|end| self.buf.get(self.pos..end))
        else {
            return Err(decode_error(format!(
                "pgoutput: truncated {what} at byte {}: need {n} bytes, {} left",
                self.pos,
                self.remaining()
            )));
        };
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut out = [0; N];
        out.copy_from_slice(self.bytes(N, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    fn i16(&mut self, what: &str) -> Result<i16> {
        self.array(what).map(i16::from_be_bytes)
    }

    fn i32(&mut self, what: &str) -> Result<i32> {
        self.array(what).map(i32::from_be_bytes)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        self.array(what).map(u32::from_be_bytes)
    }

    fn i64(&mut self, what: &str) -> Result<i64> {
        self.array(what).map(i64::from_be_bytes)
    }

    fn lsn(&mut self, what: &str) -> Result<Lsn> {
        self.array(what).map(u64::from_be_bytes).map(Lsn)
    }

    /// A byte that must be `want`.
    fn expect(&mut self, want: u8, what: &str) -> Result<()> {
        let at = self.pos;
        match self.u8(what)? {
            got if got == want => Ok(()),
            got => Err(decode_error(format!(
                "pgoutput: bad {what} at byte {at}: expected {:?}, got 0x{got:02x} ({:?})",
                char::from(want),
                char::from(got)
            ))),
        }
    }

    /// An Int32 length of what follows: not negative and not more than the bytes left.
    fn len(&mut self, what: &str) -> Result<usize> {
        self.count(what, 1)
    }

    /// An Int32 count of items that take at least `min_size` bytes each, checked against the
    /// bytes left so that a corrupt count cannot make us allocate.
    fn count(&mut self, what: &str, min_size: usize) -> Result<usize> {
        let at = self.pos;
        let n = self.i32(what)?;
        self.check_count(i64::from(n), what, min_size, at)
    }

    /// As [`Reader::count`], for an Int16 count.
    fn count16(&mut self, what: &str, min_size: usize) -> Result<usize> {
        let at = self.pos;
        let n = self.i16(what)?;
        self.check_count(i64::from(n), what, min_size, at)
    }

    fn check_count(&self, n: i64, what: &str, min_size: usize, at: usize) -> Result<usize> {
        let Ok(n) = usize::try_from(n) else {
            return Err(decode_error(format!(
                "pgoutput: negative {what} {n} at byte {at}"
            )));
        };
        if n.saturating_mul(min_size) > self.remaining() {
            return Err(decode_error(format!(
                "pgoutput: {what} {n} at byte {at} exceeds the {} bytes left",
                self.remaining()
            )));
        }
        Ok(n)
    }

    /// A NUL-terminated UTF-8 string.
    fn string(&mut self, what: &str) -> Result<String> {
        let at = self.pos;
        let rest = &self.buf[at..];
        let Some(nul) = rest.iter().position(|&b| b == 0) else {
            return Err(decode_error(format!(
                "pgoutput: {what} at byte {at} has no NUL terminator"
            )));
        };
        let s = std::str::from_utf8(&rest[..nul]).map_err(|e| {
            decode_error(format!(
                "pgoutput: {what} at byte {at} is not UTF-8 (bad byte at {})",
                at + e.valid_up_to()
            ))
        })?;
        self.pos += nul + 1;
        Ok(s.to_string())
    }

    /// Fails if bytes are left after the message.
    fn finish(&self, tag: u8) -> Result<()> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(decode_error(format!(
                "pgoutput: {} trailing bytes after {:?} message at byte {}",
                self.remaining(),
                char::from(tag),
                self.pos
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngExt;

    /// Builds messages byte by byte, the way PostgreSQL's `proto.c` writes them.
    struct W(Vec<u8>);

    macro_rules! put_be {
        ($($name:ident: $t:ty),*) => {$(
            fn $name(mut self, v: $t) -> Self {
                self.0.extend_from_slice(&v.to_be_bytes());
                self
            }
        )*};
    }

    impl W {
        fn tag(c: u8) -> Self {
            W(vec![c])
        }
        put_be!(u8: u8, i16: i16, i32: i32, u32: u32, i64: i64, u64: u64);
        fn str(self, s: &str) -> Self {
            self.raw(s.as_bytes()).u8(0)
        }
        fn raw(mut self, b: &[u8]) -> Self {
            self.0.extend_from_slice(b);
            self
        }
        fn tuple(mut self, t: &Tuple) -> Self {
            self = self.i16(t.0.len() as i16);
            for c in &t.0 {
                self = match c {
                    Cell::Null => self.u8(b'n'),
                    Cell::Unchanged => self.u8(b'u'),
                    Cell::Text(b) => self.u8(b't').i32(b.len() as i32).raw(b),
                    Cell::Binary(b) => self.u8(b'b').i32(b.len() as i32).raw(b),
                };
            }
            self
        }
    }

    fn text(s: &str) -> Cell {
        Cell::Text(s.as_bytes().to_vec())
    }

    fn col(key: bool, name: &str, type_oid: u32, type_modifier: i32) -> RelColumn {
        let name = name.into();
        RelColumn {
            key,
            name,
            type_oid,
            type_modifier,
        }
    }

    /// Every message type, as bytes and as the value it must decode to.
    #[rustfmt::skip]
    fn valid_cases() -> Vec<(&'static str, Vec<u8>, PgOutput)> {
        let row = Tuple(vec![text("42"), Cell::Null, text("")]);
        let old_key = Tuple(vec![text("42"), Cell::Null]);
        let toasted = Tuple(vec![text("43"), Cell::Unchanged]);
        let full_a = Tuple(vec![text("1"), text("a")]);
        let full_b = Tuple(vec![text("1"), text("b")]);
        let relation = W::tag(b'R').u32(16384).str("public").str("orders").u8(b'd').i16(3)
            .u8(1).str("id").u32(23).i32(-1)
            .u8(0).str("note").u32(1043).i32(54)
            .u8(0).str("größe").u32(1700).i32(0x000A_0006);
        vec![
            ("begin",
             W::tag(b'B').u64(0x16_B374_D848).i64(785_000_000_123_456).u32(747).0,
             PgOutput::Begin {
                 final_lsn: Lsn(0x16_B374_D848), commit_time_us: 785_000_000_123_456, xid: 747,
             }),
            ("commit",
             W::tag(b'C').u8(0).u64(0x16_B374_D848).u64(0x16_B374_D878).i64(-5).0,
             PgOutput::Commit {
                 flags: 0,
                 commit_lsn: Lsn(0x16_B374_D848),
                 end_lsn: Lsn(0x16_B374_D878),
                 commit_time_us: -5,
             }),
            ("origin",
             W::tag(b'O').u64(7).str("duplex_p_0").0,
             PgOutput::Origin { commit_lsn: Lsn(7), name: "duplex_p_0".into() }),
            ("relation",
             relation.0,
             PgOutput::Relation(Relation {
                 oid: 16384,
                 namespace: "public".into(),
                 name: "orders".into(),
                 replica_identity: b'd',
                 columns: vec![
                     col(true, "id", 23, -1),
                     col(false, "note", 1043, 54),
                     col(false, "größe", 1700, 0x000A_0006),
                 ],
             })),
            ("relation without columns in pg_catalog",
             W::tag(b'R').u32(1).str("").str("t").u8(b'n').i16(0).0,
             PgOutput::Relation(Relation {
                 oid: 1, namespace: String::new(), name: "t".into(), replica_identity: b'n',
                 columns: vec![],
             })),
            ("type",
             W::tag(b'Y').u32(16390).str("public").str("mood").0,
             PgOutput::Type { oid: 16390, namespace: "public".into(), name: "mood".into() }),
            ("insert",
             W::tag(b'I').u32(16384).u8(b'N').tuple(&row).0,
             PgOutput::Insert { rel: 16384, new: row.clone() }),
            ("insert with a binary cell, laid out by hand",
             vec![b'I', 0, 0, 0, 5, b'N', 0, 1, b'b', 0, 0, 0, 2, 0, 42],
             PgOutput::Insert { rel: 5, new: Tuple(vec![Cell::Binary(vec![0, 42])]) }),
            ("insert of an empty row",
             W::tag(b'I').u32(5).u8(b'N').i16(0).0,
             PgOutput::Insert { rel: 5, new: Tuple(vec![]) }),
            ("update without old tuple, TOASTed column unchanged",
             W::tag(b'U').u32(16384).u8(b'N').tuple(&toasted).0,
             PgOutput::Update { rel: 16384, old: None, new: toasted.clone() }),
            ("update of the key",
             W::tag(b'U').u32(16384).u8(b'K').tuple(&old_key).u8(b'N').tuple(&toasted).0,
             PgOutput::Update {
                 rel: 16384, old: Some((OldKind::Key, old_key.clone())), new: toasted.clone(),
             }),
            ("update with replica identity full",
             W::tag(b'U').u32(16385).u8(b'O').tuple(&full_a).u8(b'N').tuple(&full_b).0,
             PgOutput::Update {
                 rel: 16385, old: Some((OldKind::Full, full_a.clone())), new: full_b.clone(),
             }),
            ("delete by key",
             W::tag(b'D').u32(16384).u8(b'K').tuple(&old_key).0,
             PgOutput::Delete { rel: 16384, old: (OldKind::Key, old_key.clone()) }),
            ("delete with replica identity full",
             W::tag(b'D').u32(16385).u8(b'O').tuple(&full_b).0,
             PgOutput::Delete { rel: 16385, old: (OldKind::Full, full_b.clone()) }),
            ("truncate of several relations",
             W::tag(b'T').i32(3).u8(3).u32(16384).u32(16385).u32(u32::MAX).0,
             PgOutput::Truncate { options: 3, rels: vec![16384, 16385, u32::MAX] }),
            ("transactional message",
             W::tag(b'M').u8(1).u64(0x1_0000_0000).str("duplex").i32(5).raw(b"hello").0,
             PgOutput::Message {
                 transactional: true,
                 lsn: Lsn(0x1_0000_0000),
                 prefix: "duplex".into(),
                 content: b"hello".to_vec(),
             }),
            ("non-transactional message with binary content",
             W::tag(b'M').u8(0).u64(9).str("duplex").i32(3).raw(&[0, 0xff, 0]).0,
             PgOutput::Message {
                 transactional: false,
                 lsn: Lsn(9),
                 prefix: "duplex".into(),
                 content: vec![0, 0xff, 0],
             }),
        ]
    }

    #[test]
    fn cells_print_as_escaped_text() {
        let cells = [
            Cell::Null,
            Cell::Unchanged,
            text("42"),
            Cell::Binary(vec![0, b'"', 0xff]),
        ];
        assert_eq!(
            format!("{cells:?}"),
            r#"[Null, Unchanged, Text("42"), Binary("\x00\"\xff")]"#
        );
    }

    #[test]
    fn decodes_every_message_type() {
        for (name, bytes, want) in valid_cases() {
            match decode(&bytes) {
                Ok(got) => assert_eq!(got, want, "{name}"),
                Err(e) => panic!("{name}: {e}"),
            }
        }
    }

    #[test]
    fn every_prefix_and_every_extension_is_an_error() {
        for (name, bytes, _) in valid_cases() {
            for len in 0..bytes.len() {
                match decode(&bytes[..len]) {
                    Err(e) => assert_eq!(e.kind(), ErrorKind::SourceDefinite, "{name}"),
                    Ok(m) => panic!("{name}: prefix of {len} bytes decoded as {m:?}"),
                }
            }
            let mut longer = bytes.clone();
            longer.push(0);
            let e = decode(&longer).expect_err(name);
            assert!(e.message().contains("trailing"), "{name}: {e}");
        }
    }

    #[test]
    fn malformed_messages_say_what_and_where() {
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty", vec![], "truncated message tag at byte 0"),
            (
                "unknown tag",
                vec![b'Z'],
                "bad pgoutput message tag at byte 0",
            ),
            (
                "stream start",
                W::tag(b'S').u32(1).u8(1).0,
                "streaming and two-phase",
            ),
            (
                "short begin",
                W::tag(b'B').u64(1).0,
                "truncated Begin commit time at byte 9: need 8 bytes, 0 left",
            ),
            (
                "origin name without NUL",
                W::tag(b'O').u64(1).raw(b"abc").0,
                "Origin name at byte 9 has no NUL terminator",
            ),
            (
                "relation name not UTF-8",
                W::tag(b'R')
                    .u32(1)
                    .str("public")
                    .raw(&[b'x', 0xc3, 0x28, 0])
                    .u8(b'd')
                    .i16(0)
                    .0,
                "Relation name at byte 12 is not UTF-8 (bad byte at 13)",
            ),
            (
                "bad replica identity",
                W::tag(b'R').u32(1).str("").str("t").u8(b'x').i16(0).0,
                "bad Relation replica identity (d, n, f or i) at byte 8",
            ),
            (
                "negative column count",
                W::tag(b'R').u32(1).str("").str("t").u8(b'd').i16(-1).0,
                "negative Relation column count -1 at byte 9",
            ),
            (
                "column count larger than the message",
                W::tag(b'R').u32(1).str("").str("t").u8(b'd').i16(2).0,
                "Relation column count 2 at byte 9 exceeds the 0 bytes left",
            ),
            (
                "insert without N",
                W::tag(b'I').u32(1).u8(b'K').tuple(&Tuple(vec![])).0,
                "bad Insert new tuple marker at byte 5: expected 'N'",
            ),
            (
                "bad cell kind",
                W::tag(b'I').u32(1).u8(b'N').i16(1).u8(b'x').0,
                "bad Insert new tuple cell kind (n, u, t or b) at byte 8",
            ),
            (
                "negative cell length",
                W::tag(b'I').u32(1).u8(b'N').i16(1).u8(b't').i32(-1).0,
                "negative Insert new tuple -1 at byte 9",
            ),
            (
                "cell length past the end",
                W::tag(b'I')
                    .u32(1)
                    .u8(b'N')
                    .i16(1)
                    .u8(b't')
                    .i32(i32::MAX)
                    .raw(b"ab")
                    .0,
                "Insert new tuple 2147483647 at byte 9 exceeds the 2 bytes left",
            ),
            (
                "tuple count larger than the message",
                W::tag(b'I').u32(1).u8(b'N').i16(i16::MAX).0,
                "Insert new tuple 32767 at byte 6 exceeds the 0 bytes left",
            ),
            (
                "update with bad marker",
                W::tag(b'U').u32(1).u8(b'X').tuple(&Tuple(vec![])).0,
                "bad Update tuple marker (K, O or N) at byte 5",
            ),
            (
                "update with old key but no new tuple marker",
                W::tag(b'U')
                    .u32(1)
                    .u8(b'K')
                    .tuple(&Tuple(vec![]))
                    .u8(b'K')
                    .tuple(&Tuple(vec![]))
                    .0,
                "bad Update new tuple marker at byte 8",
            ),
            (
                "delete with N",
                W::tag(b'D').u32(1).u8(b'N').tuple(&Tuple(vec![])).0,
                "bad Delete tuple marker (K or O) at byte 5",
            ),
            (
                "truncate with negative count",
                W::tag(b'T').i32(-3).u8(0).0,
                "negative Truncate relation count -3 at byte 1",
            ),
            (
                "truncate count past the end",
                W::tag(b'T').i32(1_000_000_000).u8(0).u32(1).0,
                "Truncate relation count 1000000000 at byte 1 exceeds",
            ),
            (
                "message with negative length",
                W::tag(b'M').u8(0).u64(1).str("p").i32(-1).0,
                "negative Message content length -1 at byte 12",
            ),
            (
                "trailing bytes",
                W::tag(b'B').u64(1).i64(2).u32(3).u8(9).0,
                "1 trailing bytes after 'B' message at byte 21",
            ),
        ];
        for (name, bytes, want) in cases {
            let e = decode(&bytes).expect_err(name);
            assert_eq!(e.kind(), ErrorKind::SourceDefinite, "{name}");
            assert!(
                e.message().contains(want),
                "{name}: {:?} does not contain {want:?}",
                e.message()
            );
        }
    }

    /// SplitMix64: rand's `StdRng` (ChaCha) is unoptimised in debug builds and would take most
    /// of the property test's time.
    struct SplitMix(u64);

    impl rand::TryRng for SplitMix {
        type Error = std::convert::Infallible;
        fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            Ok(z ^ (z >> 31))
        }
        fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
            Ok((self.try_next_u64()? >> 32) as u32)
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), Self::Error> {
            for chunk in dest.chunks_mut(8) {
                let n = chunk.len();
                chunk.copy_from_slice(&self.try_next_u64()?.to_le_bytes()[..n]);
            }
            Ok(())
        }
    }

    /// Random bytes and random mutations of valid messages: decode returns, whatever it returns.
    #[test]
    fn never_panics_on_random_input() {
        let mut rng = SplitMix(0x70_67_6f_75_74);
        let valid: Vec<Vec<u8>> = valid_cases().into_iter().map(|(_, b, _)| b).collect();
        let tags = b"BCORYIUDTMSEcAx";
        let mut buf = Vec::with_capacity(256);
        let (mut decoded, mut refused) = (0, 0);
        for i in 0..200_000 {
            buf.clear();
            if i % 2 == 0 {
                buf.resize(rng.random_range(0..200), 0);
                rng.fill(&mut buf[..]);
                // Mostly a real tag, so the bytes get past the first check.
                if !buf.is_empty() && rng.random_bool(0.9) {
                    buf[0] = tags[rng.random_range(0..tags.len())];
                }
            } else {
                buf.extend_from_slice(&valid[rng.random_range(0..valid.len())]);
                for _ in 0..rng.random_range(1..4) {
                    match rng.random_range(0..4) {
                        0 if !buf.is_empty() => {
                            let at = rng.random_range(0..buf.len());
                            buf[at] = rng.random();
                        }
                        1 if !buf.is_empty() => {
                            let at = rng.random_range(0..buf.len());
                            buf[at] ^= 1 << rng.random_range(0..8);
                        }
                        2 => {
                            let at = rng.random_range(0..=buf.len());
                            buf.insert(at, rng.random());
                        }
                        _ if !buf.is_empty() => {
                            let at = rng.random_range(0..buf.len());
                            buf.remove(at);
                        }
                        _ => {}
                    }
                }
            }
            match decode(&buf) {
                Ok(_) => decoded += 1,
                Err(_) => refused += 1,
            }
        }
        // Both outcomes occur, so the input reached past the first checks.
        assert!(
            decoded > 1000 && refused > 1000,
            "{decoded} decoded, {refused} refused"
        );
    }
}

//! Encodes [`Value`]s into PostgreSQL's binary wire format for a target column kind.
//!
//! Encoding happens once, in the pipeline, before anything is sent: a value that does not fit
//! (an integer out of range, a NUL byte in text, a string that is not a UUID) is caught here with
//! a message naming the column, and its row goes to the dead-letter table instead of failing a
//! whole batch on the server. Zero and partial MySQL dates become NULL in date/time columns.

use chrono::{NaiveDate, NaiveDateTime, TimeZone};

use crate::error::{Error, Result};
use crate::model::value::format_time;
use crate::model::{TargetKind, Value};

/// Microseconds between 1970-01-01 and PostgreSQL's epoch 2000-01-01.
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;
const PG_EPOCH_DAYS_FROM_CE: i32 = 730_120; // NaiveDate(2000-01-01).num_days_from_ce()
const DAY_US: i64 = 86_400_000_000;

/// One pre-encoded cell as a statement parameter: written as is, whatever type the server
/// inferred (the cell was encoded for the column's type when it was made).
#[derive(Debug)]
pub struct Cell<'a>(pub Option<&'a [u8]>);

impl tokio_postgres::types::ToSql for Cell<'_> {
    fn to_sql(
        &self,
        _ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>>
    {
        match self.0 {
            Some(b) => {
                out.extend_from_slice(b);
                Ok(tokio_postgres::types::IsNull::No)
            }
            None => Ok(tokio_postgres::types::IsNull::Yes),
        }
    }

    fn accepts(_ty: &tokio_postgres::types::Type) -> bool {
        true
    }

    fn to_sql_checked(
        &self,
        ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>>
    {
        self.to_sql(ty, out)
    }
}

/// A row of encoded cells in PostgreSQL's binary COPY layout: for each cell a big-endian i32
/// length (-1 for NULL) and the bytes. A COPY writes the row with one copy; the bytes also
/// identify the row's values (for finding later changes of the same key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncodedRow {
    buf: Vec<u8>,
    cells: u16,
}

impl EncodedRow {
    pub fn with_capacity(cells: usize) -> Self {
        EncodedRow {
            buf: Vec::with_capacity(cells * 12),
            cells: 0,
        }
    }

    /// An empty row whose buffer holds `bytes` before it grows.
    pub fn with_bytes(bytes: usize) -> Self {
        EncodedRow {
            buf: Vec::with_capacity(bytes),
            cells: 0,
        }
    }

    /// Bytes of the encoded cells, length words included.
    pub fn byte_len(&self) -> usize {
        self.buf.len()
    }

    /// The cells in order (`None` for NULL).
    pub fn cells(&self) -> Cells<'_> {
        Cells { rest: &self.buf }
    }

    /// The `i`-th cell (walks the row: [`EncodedRow::cell_list`] reads many).
    pub fn cell(&self, i: usize) -> Option<&[u8]> {
        self.cells().nth(i).flatten()
    }

    /// Every cell in order, for reading many of them by position in one walk of the row.
    pub fn cell_list(&self) -> Vec<Option<&[u8]>> {
        let mut out = Vec::with_capacity(self.cells as usize);
        out.extend(self.cells());
        out
    }

    /// Appends a value encoded for `kind`.
    pub fn push(&mut self, v: &Value, kind: &TargetKind, tz: chrono_tz::Tz) -> Result<()> {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        let len = if encode(v, kind, tz, &mut self.buf)? {
            (self.buf.len() - at - 4) as i32
        } else {
            self.buf.truncate(at + 4);
            -1
        };
        self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
        self.cells += 1;
        Ok(())
    }

    /// Appends an already encoded cell.
    pub fn push_encoded(&mut self, cell: Option<&[u8]>) {
        match cell {
            Some(b) => {
                self.buf.extend_from_slice(&(b.len() as i32).to_be_bytes());
                self.buf.extend_from_slice(b);
            }
            None => self.buf.extend_from_slice(&(-1i32).to_be_bytes()),
        }
        self.cells += 1;
    }

    /// The cells in COPY layout.
    pub fn as_copy_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The row's bytes, identifying its values (lengths included).
    pub fn identity(&self) -> Vec<u8> {
        self.buf.clone()
    }

    /// [`EncodedRow::identity`] without a copy.
    pub fn into_identity(self) -> Vec<u8> {
        self.buf
    }

    pub fn len(&self) -> usize {
        self.cells as usize
    }

    pub fn is_empty(&self) -> bool {
        self.cells == 0
    }
}

/// Iterator over the cells of an [`EncodedRow`].
pub struct Cells<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Cells<'a> {
    type Item = Option<&'a [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.len() < 4 {
            return None;
        }
        let len = i32::from_be_bytes(self.rest[..4].try_into().expect("4 bytes"));
        self.rest = &self.rest[4..];
        if len < 0 {
            return Some(None);
        }
        let (cell, rest) = self.rest.split_at(len as usize);
        self.rest = rest;
        Some(Some(cell))
    }
}

/// Encodes `v` for a column of `kind` into `out`. Returns `false` for NULL (nothing written).
///
/// One arm per column kind; the kinds with more than a line or two of work have a function each.
pub fn encode(v: &Value, kind: &TargetKind, tz: chrono_tz::Tz, out: &mut Vec<u8>) -> Result<bool> {
    use TargetKind as K;
    if v.is_null() {
        return Ok(false);
    }
    if *v == Value::Unchanged {
        return Err(Error::convert(
            "an unchanged value was not sent by the source and cannot be written",
        ));
    }
    if let Value::Unreadable(why) = v {
        return Err(Error::convert(why.clone()));
    }
    match kind {
        K::Bool => encode_bool(v, kind, out)?,
        K::Int2 => out.extend_from_slice(
            &(int_in_range(v, i16::MIN as i128, i16::MAX as i128, "smallint")? as i16)
                .to_be_bytes(),
        ),
        K::Int4 => out.extend_from_slice(
            &(int_in_range(v, i32::MIN as i128, i32::MAX as i128, "integer")? as i32).to_be_bytes(),
        ),
        K::Int8 => encode_int8(v, out)?,
        K::Numeric => return encode_numeric_value(v, kind, out),
        K::Float4 => {
            let f = float_of(v).ok_or_else(|| mismatch(v, kind))?;
            out.extend_from_slice(&(f as f32).to_be_bytes());
        }
        K::Float8 => {
            let f = match v {
                Value::Float(f) => *f as f64,
                _ => float_of(v).ok_or_else(|| mismatch(v, kind))?,
            };
            out.extend_from_slice(&f.to_be_bytes());
        }
        K::Text => encode_text(v, out)?,
        K::Bytea => match v {
            Value::Bytes(b) => out.extend_from_slice(b),
            Value::Text(s) => out.extend_from_slice(s.as_bytes()),
            Value::Bits { bytes, .. } => out.extend_from_slice(bytes),
            _ => return Err(mismatch(v, kind)),
        },
        K::Date => return encode_date(v, kind, out),
        K::Timestamp | K::Timestamptz => return encode_timestamp(v, kind, tz, out),
        K::Time => encode_time(v, kind, out)?,
        K::Interval => match v {
            Value::Time(us) => {
                out.extend_from_slice(&us.to_be_bytes());
                out.extend_from_slice(&0i32.to_be_bytes());
                out.extend_from_slice(&0i32.to_be_bytes());
            }
            _ => return Err(mismatch(v, kind)),
        },
        K::Json | K::Jsonb => encode_json(v, kind, out)?,
        K::Uuid => encode_uuid(v, kind, out)?,
        K::Bit => encode_bit(v, kind, out)?,
        K::Unsupported => return Err(mismatch(v, kind)),
    }
    Ok(true)
}

/// The error for a value of a type that a `kind` column does not take.
fn mismatch(v: &Value, kind: &TargetKind) -> Error {
    Error::convert(format!(
        "a {} value ({}) cannot be stored in a {kind:?} column",
        v.type_name(),
        shorten(&v.to_string())
    ))
}

fn encode_bool(v: &Value, kind: &TargetKind, out: &mut Vec<u8>) -> Result<()> {
    let b = match v {
        Value::Bool(b) => *b,
        Value::Int(i) => *i != 0,
        Value::UInt(u) => *u != 0,
        Value::Bits { bytes, .. } => bytes.iter().any(|b| *b != 0),
        _ => return Err(mismatch(v, kind)),
    };
    out.push(b as u8);
    Ok(())
}

/// A bigint: a BIT value as its unsigned bits, anything else an integer in range.
fn encode_int8(v: &Value, out: &mut Vec<u8>) -> Result<()> {
    match v {
        Value::Bits { bytes, .. } => {
            let mut x: u64 = 0;
            for b in bytes {
                x = (x << 8) | *b as u64;
            }
            out.extend_from_slice(&(x as i64).to_be_bytes());
        }
        _ => out.extend_from_slice(
            &(int_in_range(v, i64::MIN as i128, i64::MAX as i128, "bigint")? as i64).to_be_bytes(),
        ),
    }
    Ok(())
}

/// A numeric from an integer, a decimal or a float (NaN and the infinities included).
fn encode_numeric_value(v: &Value, kind: &TargetKind, out: &mut Vec<u8>) -> Result<bool> {
    let text: std::borrow::Cow<'_, str> = match v {
        Value::Int(i) => i.to_string().into(),
        Value::UInt(u) => u.to_string().into(),
        Value::Decimal(d) => d.as_str().into(),
        Value::Float(f) if !f.is_finite() => return encode_numeric_special(*f as f64, out),
        Value::Double(f) if !f.is_finite() => return encode_numeric_special(*f, out),
        Value::Float(f) => f.to_string().into(),
        Value::Double(f) => f.to_string().into(),
        _ => return Err(mismatch(v, kind)),
    };
    encode_numeric(&text, out)?;
    Ok(true)
}

/// Text: valid UTF-8 without NUL bytes; other values as their text form.
fn encode_text(v: &Value, out: &mut Vec<u8>) -> Result<()> {
    let s: std::borrow::Cow<'_, str> = match v {
        Value::Text(s) | Value::Json(s) | Value::Decimal(s) => s.as_str().into(),
        Value::Bytes(b) => match std::str::from_utf8(b) {
            Ok(s) => s.into(),
            Err(e) => {
                return Err(Error::convert(format!(
                    "text is not valid in its column charset ({e}); bytes: {}",
                    shorten(&v.to_string())
                )))
            }
        },
        Value::Timestamp(_) => v.to_string().into(),
        other => other.to_string().into(),
    };
    if memchr::memchr(0, s.as_bytes()).is_some() {
        return Err(Error::convert(format!(
            "text contains a NUL byte, which PostgreSQL text cannot store: {}",
            shorten(&s.replace('\0', "\\0"))
        )));
    }
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// A date; a zero or partial MySQL date is NULL.
fn encode_date(v: &Value, kind: &TargetKind, out: &mut Vec<u8>) -> Result<bool> {
    match v {
        Value::Date(d) => {
            if d.is_zero_or_partial() {
                return Ok(false);
            }
            let nd = d
                .to_chrono()
                .ok_or_else(|| Error::convert(format!("invalid date {d}")))?;
            out.extend_from_slice(&days_since_pg_epoch(nd).to_be_bytes());
        }
        _ => return Err(mismatch(v, kind)),
    }
    Ok(true)
}

/// A timestamp with or without time zone: a source wall-clock time (DATETIME, DATE) is read in
/// `tz` for `timestamptz`; an instant (TIMESTAMP) is shown in `tz` for `timestamp`. A zero or
/// partial MySQL date is NULL.
fn encode_timestamp(
    v: &Value,
    kind: &TargetKind,
    tz: chrono_tz::Tz,
    out: &mut Vec<u8>,
) -> Result<bool> {
    let with_zone = *kind == TargetKind::Timestamptz;
    let us = match v {
        Value::DateTime(dt) => {
            if dt.date.is_zero_or_partial() {
                return Ok(false);
            }
            let naive = dt
                .to_chrono()
                .ok_or_else(|| Error::convert(format!("invalid datetime {dt}")))?;
            if with_zone {
                local_to_utc_us(naive, tz)
            } else {
                naive.and_utc().timestamp_micros()
            }
        }
        Value::Date(d) => {
            if d.is_zero_or_partial() {
                return Ok(false);
            }
            let naive = d
                .to_chrono()
                .ok_or_else(|| Error::convert(format!("invalid date {d}")))?
                .and_hms_opt(0, 0, 0)
                .expect("midnight exists");
            if with_zone {
                local_to_utc_us(naive, tz)
            } else {
                naive.and_utc().timestamp_micros()
            }
        }
        Value::Timestamp(instant) => {
            if with_zone {
                *instant
            } else {
                // A zoneless target gets the wall clock of the source zone.
                let utc = chrono::DateTime::from_timestamp_micros(*instant)
                    .ok_or_else(|| mismatch(v, kind))?;
                utc.with_timezone(&tz)
                    .naive_local()
                    .and_utc()
                    .timestamp_micros()
            }
        }
        _ => return Err(mismatch(v, kind)),
    };
    out.extend_from_slice(&(us - PG_EPOCH_OFFSET_US).to_be_bytes());
    Ok(true)
}

/// A time of day; a MySQL TIME outside one day needs an interval column.
fn encode_time(v: &Value, kind: &TargetKind, out: &mut Vec<u8>) -> Result<()> {
    match v {
        Value::Time(us) if (0..DAY_US).contains(us) => out.extend_from_slice(&us.to_be_bytes()),
        Value::Time(us) => {
            return Err(Error::convert(format!(
                "TIME {} is outside 00:00:00..24:00:00; map it to an interval column",
                format_time(*us)
            )))
        }
        _ => return Err(mismatch(v, kind)),
    }
    Ok(())
}

/// JSON text, checked to parse; jsonb (version byte 1) also refuses `\u0000`.
fn encode_json(v: &Value, kind: &TargetKind, out: &mut Vec<u8>) -> Result<()> {
    let s = match v {
        Value::Json(s) | Value::Text(s) => s,
        _ => return Err(mismatch(v, kind)),
    };
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(s) {
        return Err(Error::convert(format!(
            "not valid JSON ({e}): {}",
            shorten(s)
        )));
    }
    if *kind == TargetKind::Jsonb {
        if s.contains("\\u0000") {
            return Err(Error::convert(
                "JSON contains \\u0000, which jsonb cannot store",
            ));
        }
        out.push(1);
    }
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// A UUID from its 16 bytes or its text form.
fn encode_uuid(v: &Value, kind: &TargetKind, out: &mut Vec<u8>) -> Result<()> {
    let bytes = match v {
        Value::Uuid(u) => *u,
        Value::Bytes(b) if b.len() == 16 => b.as_slice().try_into().expect("16 bytes"),
        Value::Text(s) => {
            parse_uuid(s).ok_or_else(|| Error::convert(format!("{s:?} is not a UUID")))?
        }
        _ => return Err(mismatch(v, kind)),
    };
    out.extend_from_slice(&bytes);
    Ok(())
}

/// A bit string: its length, then the bits left-aligned.
fn encode_bit(v: &Value, kind: &TargetKind, out: &mut Vec<u8>) -> Result<()> {
    match v {
        Value::Bits { len, bytes } => {
            // MySQL keeps BIT(n) right-aligned; PostgreSQL wants it left-aligned.
            let n = *len as usize;
            let nbytes = n.div_ceil(8);
            let mut value: u128 = 0;
            for b in bytes {
                value = (value << 8) | *b as u128;
            }
            let shift = nbytes * 8 - n;
            let value = value << shift;
            out.extend_from_slice(&(n as i32).to_be_bytes());
            for i in (0..nbytes).rev() {
                out.push((value >> (8 * i)) as u8);
            }
        }
        _ => return Err(mismatch(v, kind)),
    }
    Ok(())
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 80 {
        let mut t: String = s.chars().take(80).collect();
        t.push('…');
        t
    } else {
        s.to_string()
    }
}

fn int_in_range(v: &Value, min: i128, max: i128, name: &str) -> Result<i128> {
    let x: i128 = match v {
        Value::Int(i) => *i as i128,
        Value::UInt(u) => *u as i128,
        Value::Bool(b) => *b as i128,
        Value::Decimal(d) => {
            let t = d.trim_end_matches('0').trim_end_matches('.');
            let t = if d.contains('.') { t } else { d.as_str() };
            t.parse::<i128>().map_err(|_| {
                Error::convert(format!("{d} is not a whole number for a {name} column"))
            })?
        }
        _ => {
            return Err(Error::convert(format!(
                "a {} value cannot be stored in a {name} column",
                v.type_name()
            )))
        }
    };
    if x < min || x > max {
        return Err(Error::convert(format!(
            "{x} is out of range for a {name} column"
        )));
    }
    Ok(x)
}

fn float_of(v: &Value) -> Option<f64> {
    Some(match v {
        Value::Float(f) => *f as f64,
        Value::Double(f) => *f,
        Value::Int(i) => *i as f64,
        Value::UInt(u) => *u as f64,
        Value::Decimal(d) => d.parse().ok()?,
        _ => return None,
    })
}

fn days_since_pg_epoch(d: NaiveDate) -> i32 {
    use chrono::Datelike;
    d.num_days_from_ce() - PG_EPOCH_DAYS_FROM_CE
}

/// Interprets a wall-clock time in `tz` the way PostgreSQL's `AT TIME ZONE` does: an ambiguous
/// time (clocks turned back) takes the offset after the transition (the later instant); a time
/// in a gap (clocks turned forward) takes the offset before the gap.
fn local_to_utc_us(naive: NaiveDateTime, tz: chrono_tz::Tz) -> i64 {
    match tz.from_local_datetime(&naive).latest() {
        Some(t) => t.timestamp_micros(),
        None => {
            let before = naive - chrono::Duration::hours(3);
            let offset = tz
                .from_local_datetime(&before)
                .earliest()
                .map(|t| t.naive_local() - t.naive_utc())
                .unwrap_or_default();
            (naive - offset).and_utc().timestamp_micros()
        }
    }
}

fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: String = s
        .trim()
        .trim_matches(|c| c == '{' || c == '}')
        .chars()
        .filter(|c| *c != '-')
        .collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn encode_numeric_special(f: f64, out: &mut Vec<u8>) -> Result<bool> {
    let sign: u16 = if f.is_nan() {
        0xC000
    } else if f > 0.0 {
        0xD000
    } else {
        0xF000
    };
    out.extend_from_slice(&0i16.to_be_bytes());
    out.extend_from_slice(&0i16.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    Ok(true)
}

/// Encodes exact decimal text (`-123.4500`, `1e5` not accepted) as PostgreSQL binary numeric.
pub fn encode_numeric(text: &str, out: &mut Vec<u8>) -> Result<()> {
    let bad = || Error::convert(format!("{text:?} is not a decimal number"));
    let t = text.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (int_part, frac_part) = t.split_once('.').unwrap_or((t, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(bad());
    }
    if !int_part
        .bytes()
        .chain(frac_part.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let dscale = u16::try_from(frac_part.len()).map_err(|_| bad())?;
    let int_part = int_part.trim_start_matches('0');
    // Base-10000 groups: integer digits grouped from the point leftwards, fraction rightwards
    // (its last group padded with zeros). Written straight after the header, without leading
    // zero groups (the weight says where the first one is) or trailing ones.
    let lead = int_part.len() % 4;
    let mut weight = i16::try_from(int_part.len().div_ceil(4)).map_err(|_| bad())? - 1;
    let value = |chunk: &[u8], width: usize| -> i16 {
        let v = chunk.iter().fold(0i16, |v, b| v * 10 + i16::from(b - b'0'));
        v * 10i16.pow((width - chunk.len()) as u32)
    };
    let int = int_part.as_bytes();
    let groups = (lead > 0)
        .then(|| value(&int[..lead], lead))
        .into_iter()
        .chain(int[lead..].chunks(4).map(|c| value(c, 4)))
        .chain(frac_part.as_bytes().chunks(4).map(|c| value(c, 4)));
    let head = out.len();
    out.extend_from_slice(&[0; 8]);
    let (mut first_weight, mut written, mut kept) = (None, 0usize, 0usize);
    for v in groups {
        if first_weight.is_none() {
            if v == 0 {
                weight -= 1;
                continue;
            }
            first_weight = Some(weight);
        }
        out.extend_from_slice(&v.to_be_bytes());
        written += 1;
        if v != 0 {
            kept = written;
        }
        weight -= 1;
    }
    out.truncate(head + 8 + 2 * kept);
    let ndigits = i16::try_from(kept).map_err(|_| bad())?;
    let sign: u16 = if neg && kept > 0 { 0x4000 } else { 0 };
    out[head..head + 2].copy_from_slice(&ndigits.to_be_bytes());
    out[head + 2..head + 4].copy_from_slice(&first_weight.unwrap_or(0).to_be_bytes());
    out[head + 4..head + 6].copy_from_slice(&sign.to_be_bytes());
    out[head + 6..head + 8].copy_from_slice(&dscale.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::value::DateTime;

    fn num(s: &str) -> (i16, i16, u16, u16, Vec<i16>) {
        let mut out = Vec::new();
        encode_numeric(s, &mut out).unwrap();
        let rd = |i: usize| i16::from_be_bytes([out[i], out[i + 1]]);
        let n = rd(0);
        let digits = (0..n as usize).map(|i| rd(8 + 2 * i)).collect();
        (n, rd(2), rd(4) as u16, rd(6) as u16, digits)
    }

    #[test]
    fn numerics() {
        assert_eq!(num("0"), (0, 0, 0, 0, vec![]));
        assert_eq!(num("0.0000"), (0, 0, 0, 4, vec![]));
        assert_eq!(num("12345.6789"), (3, 1, 0, 4, vec![1, 2345, 6789]));
        assert_eq!(num("-0.0001"), (1, -1, 0x4000, 4, vec![1]));
        assert_eq!(
            num("18446744073709551615"),
            (5, 4, 0, 0, vec![1844, 6744, 737, 955, 1615])
        );
        assert_eq!(num("10000"), (1, 1, 0, 0, vec![1]));
        assert_eq!(num("0.5"), (1, -1, 0, 1, vec![5000]));
        assert_eq!(num("1.00005"), (3, 0, 0, 5, vec![1, 0, 5000]));
        assert_eq!(num("-0.00005"), (1, -2, 0x4000, 5, vec![5000]));
        assert_eq!(num("00120000.0000"), (1, 1, 0, 4, vec![12]));
        assert_eq!(num("+7"), (1, 0, 0, 0, vec![7]));
        assert_eq!(num(".25"), (1, -1, 0, 2, vec![2500]));
        assert_eq!(num("-0"), (0, 0, 0, 0, vec![]));
        // Appended after what the buffer holds.
        let mut out = vec![9u8];
        encode_numeric("3", &mut out).unwrap();
        assert_eq!(out, [9, 0, 1, 0, 0, 0, 0, 0, 0, 0, 3]);
        assert!(encode_numeric("1e5", &mut Vec::new()).is_err());
        assert!(encode_numeric("-", &mut Vec::new()).is_err());
    }

    #[test]
    fn zero_dates_are_null_and_ranges_checked() {
        let tz = chrono_tz::Asia::Almaty;
        let zero = Value::DateTime(DateTime::ZERO);
        let mut out = Vec::new();
        assert!(!encode(&zero, &TargetKind::Timestamptz, tz, &mut out).unwrap());
        assert!(out.is_empty());
        assert!(encode(&Value::UInt(u64::MAX), &TargetKind::Int8, tz, &mut out).is_err());
        assert!(encode(&Value::Int(40_000), &TargetKind::Int2, tz, &mut out).is_err());
        let e = encode(&Value::Text("a\0b".into()), &TargetKind::Text, tz, &mut out).unwrap_err();
        assert!(e.to_string().contains("NUL"), "{e}");
        // Invalid UTF-8 in a utf8 column reaches the encoder as bytes (the decoder does not
        // guess) and is a dead letter that shows them.
        let e = encode(
            &Value::Bytes(vec![0x61, 0xFF, 0xFE]),
            &TargetKind::Text,
            tz,
            &mut out,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("text is not valid in its column charset"),
            "{e}"
        );
    }

    #[test]
    fn local_time_in_zone() {
        // 2024-06-01 12:00 in Almaty (UTC+5 since 2024-03-01) is 07:00 UTC.
        let naive = NaiveDate::from_ymd_opt(2024, 6, 1)
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap();
        let us = local_to_utc_us(naive, chrono_tz::Asia::Almaty);
        assert_eq!(
            us,
            NaiveDate::from_ymd_opt(2024, 6, 1)
                .unwrap()
                .and_hms_opt(7, 0, 0)
                .unwrap()
                .and_utc()
                .timestamp_micros()
        );
        assert_eq!(
            days_since_pg_epoch(NaiveDate::from_ymd_opt(2000, 1, 2).unwrap()),
            1
        );
    }

    #[test]
    fn bits_left_aligned() {
        let mut out = Vec::new();
        let v = Value::Bits {
            len: 10,
            bytes: vec![0b10, 0b0000_0001],
        };
        encode(&v, &TargetKind::Bit, chrono_tz::UTC, &mut out).unwrap();
        assert_eq!(out, vec![0, 0, 0, 10, 0b1000_0000, 0b0100_0000]);
    }
}

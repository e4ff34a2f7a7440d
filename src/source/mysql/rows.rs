//! Row-event decoding: turns the row images of a WRITE/UPDATE/DELETE rows event into
//! [`RowChange`]s.
//!
//! The column layout of a table (binlog type and type metadata per column) is worked out once
//! per table map event ([`RowLayout`]); each value is then read straight from the event bytes
//! with the binlog value parser, and converted with the table's column facts ([`decode`]). This
//! avoids the generic row reader's per-row work (re-walking the metadata of every column and
//! building a column description per value), which dominated the cost of wide tables.
//!
//! May use value decoding ([`decode`]), the model and errors; does no I/O.

use std::sync::Arc;

use mysql_async::binlog::events::{RowsEventData, TableMapEvent};
use mysql_common::binlog::decimal::{decimal_bin_size, DIG_PER_DEC, DIG_TO_BYTES};
use mysql_common::binlog::misc::{
    datetime_from_packed, my_datetime_packed_from_binary, my_timestamp_from_binary,
};
use mysql_common::binlog::value::BinlogValue;
use mysql_common::constants::ColumnType;
use mysql_common::io::ParseBuf;

use super::decode::{decode, decode_value, int_value, text_value, timestamp_value};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{ColumnSchema, Image, Op, RowChange, SourceType, TableSchema, Value};

/// Binlog type and type metadata of each column of one table map.
#[derive(Debug)]
pub struct RowLayout {
    columns: Vec<(ColumnType, Vec<u8>)>,
}

impl RowLayout {
    pub fn new(tme: &TableMapEvent<'_>) -> Result<RowLayout> {
        let n = tme.columns_count() as usize;
        let mut columns = Vec::with_capacity(n);
        for i in 0..n {
            let ty = match tme.get_column_type(i) {
                Ok(Some(t)) => t,
                _ => {
                    return Err(Error::new(
                        ErrorKind::SourceDefinite,
                        format!(
                            "table map of {}.{}: column {i} has an unknown binlog type",
                            tme.database_name(),
                            tme.table_name()
                        ),
                    ))
                }
            };
            let meta = tme.get_column_metadata(i).unwrap_or(&[]).to_vec();
            columns.push((ty, meta));
        }
        Ok(RowLayout { columns })
    }
}

fn short(what: &str, schema: &TableSchema) -> Error {
    Error::new(
        ErrorKind::SourceDefinite,
        format!("rows event of {} ends inside {what}", schema.name),
    )
}

/// Reads one row image: the null bitmap of the present columns, then each non-null value.
fn read_image<'a>(
    buf: &mut &'a [u8],
    present: &[bool],
    layout: &'a RowLayout,
    schema: &TableSchema,
) -> Result<Vec<Value>> {
    let count = present.iter().filter(|p| **p).count();
    if count != schema.columns.len() || present.len() != layout.columns.len() {
        return Err(Error::new(
            ErrorKind::ServerSetting,
            format!(
                "a row image of {} has {count} of {} columns: binlog_row_image must be FULL",
                schema.name,
                schema.columns.len()
            ),
        ));
    }
    let null_len = count.div_ceil(8);
    if buf.len() < null_len {
        return Err(short("a null bitmap", schema));
    }
    let (nulls, rest) = buf.split_at(null_len);
    *buf = rest;
    let mut values = Vec::with_capacity(count);
    let mut image_index = 0;
    for (i, (ty, meta)) in layout.columns.iter().enumerate() {
        if !present[i] {
            continue;
        }
        let is_null = nulls[image_index / 8] & (1 << (image_index % 8)) != 0;
        image_index += 1;
        let col = &schema.columns[values.len()];
        if is_null {
            values.push(Value::Null);
            continue;
        }
        if let Some((v, len)) = fast_value(buf, *ty, meta, col) {
            *buf = &buf[len..];
            values.push(v);
            continue;
        }
        let mut pb = ParseBuf(buf);
        // Signedness is applied from the column facts in `decode`, so the parser reads raw.
        let raw: BinlogValue<'_> = pb
            .parse((*ty, meta.as_slice(), false, false))
            .map_err(|e| {
                Error::new(
                    ErrorKind::SourceDefinite,
                    format!("decoding column {} of {}: {e}", col.name, schema.name),
                )
            })?;
        *buf = pb.0;
        // A value that cannot be converted (an ENUM index past its labels, binary JSON that does
        // not parse) is kept as unreadable: only a mapping that uses the column turns it into a
        // dead letter; the stream goes on.
        values.push(match decode(raw, col) {
            Ok(v) => v,
            Err(e) if e.kind() == ErrorKind::Convert => Value::Unreadable(e.to_string()),
            Err(e) => return Err(e.context(format!("table {}", schema.name))),
        });
    }
    Ok(values)
}

/// Reads a value of the commonest column types straight from the event bytes into its
/// [`Value`]: integers, character and binary strings, DECIMAL, DATETIME2 and TIMESTAMP2 (most of
/// a Bitrix row). The value is the one the binlog parser and [`decode`] give together (a
/// differential test holds it to that), without the parser's intermediate value, and for
/// TIMESTAMP2 without its text. Returns the value and the bytes read; `None` for any other
/// type, a column whose facts do not match its binlog type, or input that is short or out of
/// range, all of which the generic path then reads.
fn fast_value(
    bytes: &[u8],
    ty: ColumnType,
    meta: &[u8],
    col: &ColumnSchema,
) -> Option<(Value, usize)> {
    use ColumnType::*;
    match (ty, &col.ty) {
        (
            MYSQL_TYPE_TINY | MYSQL_TYPE_SHORT | MYSQL_TYPE_INT24 | MYSQL_TYPE_LONG
            | MYSQL_TYPE_LONGLONG,
            SourceType::Int {
                bytes: width,
                unsigned,
            },
        ) => {
            let n = match ty {
                MYSQL_TYPE_TINY => 1,
                MYSQL_TYPE_SHORT => 2,
                MYSQL_TYPE_INT24 => 3,
                MYSQL_TYPE_LONG => 4,
                _ => 8,
            };
            // The parser sign-extends from the binlog width, `int_value` from the column's.
            if usize::from(*width) != n {
                return None;
            }
            let raw = bytes.get(..n)?;
            let v = raw.iter().rev().fold(0u64, |v, b| v << 8 | u64::from(*b));
            Some((int_value(v, *width, *unsigned), n))
        }
        (
            MYSQL_TYPE_VARCHAR
            | MYSQL_TYPE_VAR_STRING
            | MYSQL_TYPE_STRING
            | MYSQL_TYPE_BLOB
            | MYSQL_TYPE_TINY_BLOB
            | MYSQL_TYPE_MEDIUM_BLOB
            | MYSQL_TYPE_LONG_BLOB,
            SourceType::Text { .. } | SourceType::Binary,
        ) => {
            let prefix = string_prefix(ty, meta)?;
            let len = bytes
                .get(..prefix)?
                .iter()
                .rev()
                .fold(0usize, |v, b| v << 8 | usize::from(*b));
            let s = bytes.get(prefix..prefix + len)?.to_vec();
            let v = match &col.ty {
                SourceType::Text { charset } => text_value(s, charset),
                _ => Value::Bytes(s),
            };
            Some((v, prefix + len))
        }
        (MYSQL_TYPE_NEWDECIMAL, SourceType::Decimal { .. }) => {
            let (text, len) = decimal_text(bytes, meta)?;
            Some((Value::Decimal(String::from_utf8(text).ok()?), len))
        }
        (MYSQL_TYPE_DATETIME2, SourceType::DateTime) => {
            let mut rest = bytes;
            let packed =
                my_datetime_packed_from_binary(&mut rest, u32::from(*meta.first()?)).ok()?;
            let v = decode_value(datetime_from_packed(packed), col).ok()?;
            Some((v, bytes.len() - rest.len()))
        }
        (MYSQL_TYPE_TIMESTAMP2, SourceType::Timestamp) => {
            let mut rest = bytes;
            let (sec, usec) = my_timestamp_from_binary(&mut rest, *meta.first()?).ok()?;
            // The parser's text has at most 6 fraction digits only for these.
            if !(0..1_000_000).contains(&usec) {
                return None;
            }
            let v = timestamp_value(i64::from(sec), i64::from(usec));
            Some((v, bytes.len() - rest.len()))
        }
        _ => None,
    }
}

/// Bytes of the length that precedes a string value of binlog type `ty` with metadata `meta`,
/// as the binlog parser works it out.
fn string_prefix(ty: ColumnType, meta: &[u8]) -> Option<usize> {
    use ColumnType::*;
    let (m0, m1) = (*meta.first()?, meta.get(1).copied());
    let max_len = match ty {
        MYSQL_TYPE_VARCHAR | MYSQL_TYPE_VAR_STRING => usize::from(m0) | usize::from(m1?) << 8,
        MYSQL_TYPE_STRING if m0 == 0 => usize::from(m1?) << 8,
        // CHAR: the real type's byte, whose bits 4-5 carry the top of a long CHAR's length.
        MYSQL_TYPE_STRING if m0 & 0x30 != 0x30 => {
            usize::from(m1?) | usize::from((m0 & 0x30) ^ 0x30) << 4
        }
        MYSQL_TYPE_STRING => usize::from(m1?),
        // BLOB and TEXT: the metadata is the length's size.
        _ => return (1..=4).contains(&m0).then_some(usize::from(m0)),
    };
    Some(if max_len < 256 { 1 } else { 2 })
}

/// Reads a binary DECIMAL(precision, scale) (`meta` = [precision, scale]) straight into its
/// text, `[-]int[.frac]` with exactly `scale` fraction digits and no leading zeros: the text the
/// binlog parser gives, without its intermediate digit vector and formatter (they were 16 % of
/// the forward catch-up's CPU on `b_sale_order`). Returns the text and the bytes read; `None` for
/// anything unexpected (short input, a digit group out of range), which the generic parser then
/// reads as before.
///
/// The format: integer digits, then fraction digits, each side in groups of 9 digits stored as
/// big-endian 4-byte integers, the integer side's leftover digits first and the fraction side's
/// last in fewer bytes; a negative value has every bit inverted; the first bit is flipped.
fn decimal_text(bytes: &[u8], meta: &[u8]) -> Option<(Vec<u8>, usize)> {
    let (&precision, &scale) = (meta.first()?, meta.get(1)?);
    let (precision, scale) = (precision as usize, scale as usize);
    if precision == 0 || scale > precision {
        return None;
    }
    let intg = precision - scale;
    let (int_lead, int_full) = (intg % DIG_PER_DEC, intg / DIG_PER_DEC);
    let (frac_full, frac_tail) = (scale / DIG_PER_DEC, scale % DIG_PER_DEC);
    let size = decimal_bin_size(precision, scale);
    let raw = bytes.get(..size)?;
    let negative = raw[0] & 0x80 == 0;
    let mask = if negative { 0xFF } else { 0 };
    let mut at = 0;
    // One group of `digits` digits: its value, or None when it is out of range.
    let mut group = |digits: usize| -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..DIG_TO_BYTES[digits] {
            let mut b = raw[at] ^ mask;
            if at == 0 {
                b ^= 0x80;
            }
            v = v << 8 | u32::from(b);
            at += 1;
        }
        (v < 10u32.pow(digits as u32)).then_some(v)
    };
    let mut out = Vec::with_capacity(precision + 3);
    if negative {
        out.push(b'-');
    }
    // Writes `v` as `width` digits (zero-padded), or unpadded when `trim`.
    let put = |out: &mut Vec<u8>, mut v: u32, width: usize, trim: bool| {
        let mut digits = [0u8; DIG_PER_DEC];
        for d in digits[..width].iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
        let from = if trim {
            digits[..width]
                .iter()
                .position(|d| *d != b'0')
                .unwrap_or(width)
        } else {
            0
        };
        out.extend_from_slice(&digits[from..width]);
    };
    let mut started = false;
    let lead = (int_lead > 0).then_some(int_lead);
    for width in lead
        .into_iter()
        .chain(std::iter::repeat_n(DIG_PER_DEC, int_full))
    {
        let v = group(width)?;
        if started || v != 0 {
            put(&mut out, v, width, !started);
            started = true;
        }
    }
    if !started {
        if scale == 0 {
            // Zero: no sign (as the binlog parser gives it).
            out.clear();
        }
        out.push(b'0');
    }
    if scale > 0 {
        out.push(b'.');
        let tail = (frac_tail > 0).then_some(frac_tail);
        for width in std::iter::repeat_n(DIG_PER_DEC, frac_full).chain(tail) {
            let v = group(width)?;
            put(&mut out, v, width, false);
        }
    }
    Some((out, size))
}

/// Appends the row changes of one rows event to `out`.
pub fn decode_rows(
    event: &RowsEventData<'_>,
    layout: &RowLayout,
    schema: &Arc<TableSchema>,
    out: &mut Vec<RowChange>,
) -> Result<()> {
    let op = match event {
        RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_) => Op::Insert,
        RowsEventData::UpdateRowsEvent(_) | RowsEventData::UpdateRowsEventV1(_) => Op::Update,
        RowsEventData::DeleteRowsEvent(_) | RowsEventData::DeleteRowsEventV1(_) => Op::Delete,
        RowsEventData::PartialUpdateRowsEvent(_) => {
            return Err(Error::new(
                ErrorKind::ServerSetting,
                format!(
                "partial JSON update of {} in the binlog: SET GLOBAL binlog_row_value_options = ''",
                schema.name
            ),
            ))
        }
    };
    let n = event.num_columns() as usize;
    let before_cols: Vec<bool> = event
        .columns_before_image()
        .map(|b| {
            (0..n)
                .map(|i| b.get(i).map(|x| *x).unwrap_or(false))
                .collect()
        })
        .unwrap_or_default();
    let after_cols: Vec<bool> = event
        .columns_after_image()
        .map(|b| {
            (0..n)
                .map(|i| b.get(i).map(|x| *x).unwrap_or(false))
                .collect()
        })
        .unwrap_or_default();
    let mut buf = event.rows_data();
    while !buf.is_empty() {
        let before = match op {
            Op::Update | Op::Delete => Some(read_image(&mut buf, &before_cols, layout, schema)?),
            Op::Insert => None,
        };
        let after = match op {
            Op::Update | Op::Insert => Some(read_image(&mut buf, &after_cols, layout, schema)?),
            Op::Delete => None,
        };
        out.push(RowChange {
            table: schema.clone(),
            op,
            before,
            after,
            image: Image::Full,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_common::binlog::decimal::Decimal;

    /// The binary form of a DECIMAL(precision, scale) with these digit groups (integer side's
    /// leftover group first, fraction side's last, as the format orders them).
    fn encode(groups: &[(usize, u32)], negative: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for &(digits, v) in groups {
            let n = usize::from(DIG_TO_BYTES[digits]);
            out.extend_from_slice(&v.to_be_bytes()[4 - n..]);
        }
        if negative {
            out.iter_mut().for_each(|b| *b = !*b);
        }
        out[0] ^= 0x80;
        out
    }

    /// The group widths of DECIMAL(precision, scale), in stored order.
    fn widths(precision: usize, scale: usize) -> Vec<usize> {
        let intg = precision - scale;
        let mut w = Vec::new();
        if !intg.is_multiple_of(9) {
            w.push(intg % 9);
        }
        w.extend(std::iter::repeat_n(9, intg / 9 + scale / 9));
        if !scale.is_multiple_of(9) {
            w.push(scale % 9);
        }
        w
    }

    /// A repeatable pseudo-random sequence (xorshift64) from `state`.
    fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }

    fn reference(bytes: &[u8], precision: usize, scale: usize) -> String {
        Decimal::read_bin(bytes, precision, scale, false)
            .unwrap()
            .to_string()
    }

    /// Every precision and scale MySQL allows, random values (zero groups often, to test the
    /// trimming), both signs: the text equals the binlog parser's, and the bytes read are the
    /// value's size (a trailing byte is left alone).
    #[test]
    fn decimal_text_is_the_parsers_text() {
        let mut next = xorshift(0x0064_6563_696d_616c);
        let mut checked = 0;
        for precision in 1..=65usize {
            for scale in 0..=precision.min(30) {
                for round in 0..40 {
                    let groups: Vec<(usize, u32)> = widths(precision, scale)
                        .into_iter()
                        .map(|w| {
                            let v = match next() % 4 {
                                0 => 0,
                                1 => 10u32.pow(w as u32) - 1,
                                _ => (next() % u64::from(10u32.pow(w as u32))) as u32,
                            };
                            (w, if round == 0 { 0 } else { v })
                        })
                        .collect();
                    let negative = next().is_multiple_of(2);
                    let mut bytes = encode(&groups, negative);
                    let want = reference(&bytes, precision, scale);
                    bytes.push(0xAB);
                    let (text, len) = decimal_text(&bytes, &[precision as u8, scale as u8])
                        .unwrap_or_else(|| panic!("({precision},{scale}) {groups:?}"));
                    assert_eq!(
                        String::from_utf8(text).unwrap(),
                        want,
                        "DECIMAL({precision},{scale}) groups {groups:?} negative {negative}"
                    );
                    assert_eq!(len, bytes.len() - 1);
                    checked += 1;
                }
            }
        }
        assert!(checked > 40_000, "{checked}");
    }

    /// Known values, and input the fast path leaves to the generic parser.
    #[test]
    fn decimal_text_known_values_and_refusals() {
        let text = |groups: &[(usize, u32)], neg: bool, p: u8, s: u8| {
            String::from_utf8(decimal_text(&encode(groups, neg), &[p, s]).unwrap().0).unwrap()
        };
        assert_eq!(text(&[(9, 1234), (2, 5)], false, 11, 2), "1234.05");
        assert_eq!(text(&[(9, 1234), (2, 5)], true, 11, 2), "-1234.05");
        assert_eq!(text(&[(9, 0), (2, 50)], true, 11, 2), "-0.50");
        assert_eq!(text(&[(9, 0)], true, 9, 0), "0");
        assert_eq!(text(&[(2, 99)], false, 2, 2), "0.99");
        assert_eq!(
            text(&[(1, 1), (9, 0), (4, 1)], false, 14, 4),
            "1000000000.0001"
        );
        // A group out of range, a short buffer, scale past precision: not decoded here.
        assert!(decimal_text(&encode(&[(2, 100)], false), &[2, 0]).is_none());
        assert!(decimal_text(&[0x80], &[10, 2]).is_none());
        assert!(decimal_text(&[0x80, 0, 0, 0], &[2, 3]).is_none());
        assert!(decimal_text(&[0x80], &[]).is_none());
    }

    /// The reference: the binlog parser, then `decode` (an error becomes the unreadable value
    /// `read_image` keeps). `None` where the parser refuses the bytes.
    fn generic(
        bytes: &[u8],
        ty: ColumnType,
        meta: &[u8],
        col: &ColumnSchema,
    ) -> Option<(Value, usize)> {
        let mut pb = ParseBuf(bytes);
        let raw: BinlogValue<'_> = pb.parse((ty, meta, false, false)).ok()?;
        let used = bytes.len() - pb.0.len();
        let v = decode(raw, col).unwrap_or_else(|e| Value::Unreadable(e.to_string()));
        Some((v, used))
    }

    fn column(ty: SourceType) -> ColumnSchema {
        ColumnSchema {
            name: "c".into(),
            ty,
            nullable: true,
            column_type: String::new(),
        }
    }

    /// Integers of every width and signedness, strings of every binlog string type (short and
    /// long length words, valid and invalid text, several charsets, binary), DATETIME2 and
    /// TIMESTAMP2 of every precision, from random bytes with a tail after the value: the fast
    /// path gives what the parser and `decode` give, and reads as many bytes. It must also
    /// take most of them (or the test would prove nothing).
    #[test]
    fn fast_value_is_the_generic_value() {
        use ColumnType::*;
        let mut next = xorshift(0x6661_7374_7661_6c75);
        let (mut cases, mut taken) = ([0; 6], [0; 6]);
        for round in 0..60_000 {
            let pick = next();
            let (ty, meta, col, value): (ColumnType, Vec<u8>, ColumnSchema, Vec<u8>) =
                match round % 6 {
                    0 => {
                        let (ty, width) = [
                            (MYSQL_TYPE_TINY, 1),
                            (MYSQL_TYPE_SHORT, 2),
                            (MYSQL_TYPE_INT24, 3),
                            (MYSQL_TYPE_LONG, 4),
                            (MYSQL_TYPE_LONGLONG, 8),
                        ][(pick % 5) as usize];
                        let col = column(SourceType::Int {
                            bytes: width,
                            unsigned: pick & 0x100 != 0,
                        });
                        (ty, Vec::new(), col, next().to_le_bytes().to_vec())
                    }
                    1..=3 => {
                        let len = (next() % 300) as usize;
                        let text: Vec<u8> = (0..len)
                            .map(|_| match pick % 3 {
                                0 => b'a' + (next() % 26) as u8,
                                1 => 0xC0 + (next() % 64) as u8,
                                _ => next() as u8,
                            })
                            .collect();
                        let ty_src = match (pick >> 8) % 5 {
                            0 => SourceType::Binary,
                            1 => SourceType::Text {
                                charset: "cp1251".into(),
                            },
                            2 => SourceType::Text {
                                charset: "latin1".into(),
                            },
                            3 => SourceType::Text {
                                charset: "binary".into(),
                            },
                            _ => SourceType::Text {
                                charset: "utf8mb4".into(),
                            },
                        };
                        let long = pick & 0x1_0000 != 0 || len > 255;
                        let (ty, meta, prefix) = match round % 6 {
                            1 => {
                                let max: u16 = if long { 1000 } else { 255 };
                                let ty = if pick & 0x2_0000 != 0 {
                                    MYSQL_TYPE_VARCHAR
                                } else {
                                    MYSQL_TYPE_VAR_STRING
                                };
                                (ty, max.to_le_bytes().to_vec(), if long { 2 } else { 1 })
                            }
                            // CHAR(n): a long one carries the top bits of its length in
                            // bits 4-5 of the type byte (inverted).
                            2 => match (long, pick & 0x4_0000 != 0) {
                                (false, _) => (MYSQL_TYPE_STRING, vec![0xfe, 255], 1),
                                (true, false) => (MYSQL_TYPE_STRING, vec![0xfe ^ 0x10, 0x2c], 2),
                                (true, true) => (MYSQL_TYPE_STRING, vec![0, 0x03], 2),
                            },
                            _ => {
                                let size = if long { 2 + (pick >> 20) % 3 } else { 1 };
                                (MYSQL_TYPE_BLOB, vec![size as u8], size as usize)
                            }
                        };
                        let mut v = len.to_le_bytes()[..prefix].to_vec();
                        v.extend_from_slice(&text);
                        (ty, meta, column(ty_src), v)
                    }
                    4 => {
                        let dec = (pick % 7) as u8;
                        // A real DATETIME2 half the time: year, month, day, time in the packed
                        // layout; random bytes otherwise.
                        let mut v = next().to_be_bytes().to_vec();
                        if pick & 0x100 != 0 {
                            let ym = (1900 + next() % 200) * 13 + next() % 13;
                            let packed = (ym << 22)
                                | ((next() % 32) << 17)
                                | ((next() % 24) << 12)
                                | ((next() % 60) << 6)
                                | (next() % 60)
                                | (1 << 39);
                            v[..5].copy_from_slice(&packed.to_be_bytes()[3..]);
                        }
                        (
                            MYSQL_TYPE_DATETIME2,
                            vec![dec],
                            column(SourceType::DateTime),
                            v,
                        )
                    }
                    _ => {
                        let dec = (pick % 7) as u8;
                        // Seconds, then the fraction in (dec + 1) / 2 bytes: a valid one half
                        // the time (random bytes can exceed a second), zero seconds sometimes.
                        let mut v = next().to_be_bytes().to_vec();
                        if pick & 0x100 != 0 {
                            let frac = match dec {
                                1 | 2 => next() % 100,
                                3 | 4 => next() % 10_000,
                                _ => next() % 1_000_000,
                            };
                            let n = usize::from(dec).div_ceil(2);
                            v[4..4 + n].copy_from_slice(&frac.to_be_bytes()[8 - n..]);
                        }
                        if pick & 0x200 != 0 {
                            v[..4].fill(0);
                        }
                        (
                            MYSQL_TYPE_TIMESTAMP2,
                            vec![dec],
                            column(SourceType::Timestamp),
                            v,
                        )
                    }
                };
            let mut bytes = value;
            bytes.extend_from_slice(&[0xA5; 9]);
            cases[round % 6] += 1;
            if let Some(fast) = fast_value(&bytes, ty, &meta, &col) {
                taken[round % 6] += 1;
                assert_eq!(
                    Some(&fast),
                    generic(&bytes, ty, &meta, &col).as_ref(),
                    "{ty:?} {meta:?} {:?} {bytes:02x?}",
                    col.ty
                );
            }
        }
        // Random TIMESTAMP2 fractions past a second go the generic way: only half of those
        // are valid.
        let wanted = [9, 9, 9, 9, 9, 5];
        assert!(
            (0..6).all(|i| taken[i] * 10 >= cases[i] * wanted[i]),
            "the fast path took {taken:?} of {cases:?}"
        );
    }

    /// Column facts that do not match the binlog type, and short input, go the generic way.
    #[test]
    fn fast_value_leaves_mismatches_to_the_parser() {
        use ColumnType::*;
        let int4 = column(SourceType::Int {
            bytes: 4,
            unsigned: false,
        });
        assert!(fast_value(&[1, 2, 3, 4], MYSQL_TYPE_LONG, &[], &int4).is_some());
        assert!(fast_value(&[1, 2, 3, 4], MYSQL_TYPE_LONGLONG, &[], &int4).is_none());
        assert!(fast_value(&[1, 2, 3], MYSQL_TYPE_LONG, &[], &int4).is_none());
        let text = column(SourceType::Text {
            charset: "utf8mb4".into(),
        });
        assert!(fast_value(&[3, b'a', b'b'], MYSQL_TYPE_VARCHAR, &[10, 0], &text).is_none());
        assert!(fast_value(&[1, 2], MYSQL_TYPE_LONG, &[], &text).is_none());
        assert!(fast_value(&[0; 8], MYSQL_TYPE_DATETIME2, &[0], &text).is_none());
        let json = column(SourceType::Json);
        assert!(fast_value(&[1, b'1'], MYSQL_TYPE_BLOB, &[1], &json).is_none());
        assert_eq!(
            fast_value(&[2, 0, b'o', b'k', 9], MYSQL_TYPE_VARCHAR, &[0, 1], &text),
            Some((Value::Text("ok".into()), 4))
        );
    }
}

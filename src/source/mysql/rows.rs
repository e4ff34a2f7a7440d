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
use mysql_common::binlog::value::BinlogValue;
use mysql_common::constants::ColumnType;
use mysql_common::io::ParseBuf;

use super::decode::decode;
use crate::error::{Error, ErrorKind, Result};
use crate::model::{Image, Op, RowChange, TableSchema, Value};

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
        let fast = (*ty == ColumnType::MYSQL_TYPE_NEWDECIMAL)
            .then(|| decimal_text(buf, meta))
            .flatten();
        let raw: BinlogValue<'_> = match fast {
            Some((text, len)) => {
                *buf = &buf[len..];
                BinlogValue::Value(mysql_common::Value::Bytes(text))
            }
            None => {
                let mut pb = ParseBuf(buf);
                // Signedness is applied from the column facts in `decode`, so the parser reads
                // raw.
                let raw = pb
                    .parse((*ty, meta.as_slice(), false, false))
                    .map_err(|e| {
                        Error::new(
                            ErrorKind::SourceDefinite,
                            format!("decoding column {} of {}: {e}", col.name, schema.name),
                        )
                    })?;
                *buf = pb.0;
                raw
            }
        };
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
        let mut state = 0x0064_6563_696d_616c_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
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
                    let negative = next() % 2 == 0;
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
}

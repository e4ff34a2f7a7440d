//! Decoding of binlog row values into [`Value`]s, using the column facts the binlog lacks.
//!
//! The binlog carries raw storage formats: integers without their signedness (unless the server
//! writes optional metadata), strings as bytes in the column's charset, ENUM as an index and SET
//! as a bit mask, DECIMAL as exact text. This module applies `information_schema`'s facts:
//! signedness, charset (cp1251/latin1 → UTF-8), ENUM/SET labels, BIT width, YEAR 0.
//!
//! May use the model's values and column facts and errors; does no I/O.

use mysql_async::binlog::value::BinlogValue;
use mysql_async::Value as MyValue;

use crate::error::{Error, Result};
use crate::model::value::{Date, DateTime};
use crate::model::{ColumnSchema, SourceType, Value};

/// Decodes one column value of a row image.
pub fn decode(value: BinlogValue<'_>, col: &ColumnSchema) -> Result<Value> {
    match value {
        BinlogValue::Value(v) => decode_value(v, col),
        BinlogValue::Jsonb(j) => {
            let json = serde_json::Value::try_from(j).map_err(|e| {
                Error::convert(format!("column {}: bad binary JSON: {e}", col.name))
            })?;
            Ok(Value::Json(json.to_string()))
        }
        BinlogValue::JsonDiff(_) => Err(Error::new(
            crate::error::ErrorKind::ServerSetting,
            format!(
                "column {}: partial JSON update in the binlog; set binlog_row_value_options='' (full JSON images)",
                col.name
            ),
        )),
    }
}

/// Decodes one value as the binlog or a query result carries it (queries return TIMESTAMP as
/// `UNIX_TIMESTAMP()`, ENUM and SET as numbers; see the snapshot reader).
pub fn decode_value(v: MyValue, col: &ColumnSchema) -> Result<Value> {
    let bad = |what: &str| {
        Error::convert(format!(
            "column {} ({}): unexpected binlog value {what}",
            col.name, col.column_type
        ))
    };
    if let MyValue::NULL = v {
        return Ok(Value::Null);
    }
    Ok(match (&col.ty, v) {
        (SourceType::Int { bytes, unsigned }, MyValue::Int(i)) => {
            int_value(i as u64, *bytes, *unsigned)
        }
        (SourceType::Int { bytes, unsigned }, MyValue::UInt(u)) => int_value(u, *bytes, *unsigned),
        (SourceType::Float, MyValue::Float(f)) => Value::Float(f),
        (SourceType::Float, MyValue::Double(f)) => Value::Float(f as f32),
        (SourceType::Double, MyValue::Double(f)) => Value::Double(f),
        (SourceType::Double, MyValue::Float(f)) => Value::Double(f as f64),
        (SourceType::Decimal { .. }, MyValue::Bytes(b)) => {
            Value::Decimal(String::from_utf8(b).map_err(|_| bad("decimal bytes"))?)
        }
        (SourceType::Text { charset }, MyValue::Bytes(b)) => text_value(b, charset),
        (SourceType::Json, MyValue::Bytes(b)) => match String::from_utf8(b) {
            Ok(s) => Value::Json(s),
            Err(e) => Value::Bytes(e.into_bytes()),
        },
        (SourceType::Binary, MyValue::Bytes(b)) => Value::Bytes(b),
        (SourceType::Date, MyValue::Date(year, month, day, ..)) => {
            Value::Date(Date { year, month, day })
        }
        (SourceType::DateTime, MyValue::Date(year, month, day, hour, minute, second, micro)) => {
            Value::DateTime(DateTime {
                date: Date { year, month, day },
                hour,
                minute,
                second,
                micro,
            })
        }
        // TIMESTAMP2 arrives as "seconds[.micros]" since the epoch; 0 is MySQL's zero timestamp.
        (SourceType::Timestamp, MyValue::Bytes(b)) => {
            let s = std::str::from_utf8(&b).map_err(|_| bad("timestamp bytes"))?;
            let (sec, frac) = s.split_once('.').unwrap_or((s, "0"));
            let sec: i64 = sec.parse().map_err(|_| bad(s))?;
            let mut frac = frac.to_string();
            while frac.len() < 6 {
                frac.push('0');
            }
            let us: i64 = frac[..6].parse().map_err(|_| bad(s))?;
            timestamp_value(sec, us)
        }
        (SourceType::Timestamp, MyValue::Int(sec)) => timestamp_value(sec, 0),
        (SourceType::Time, MyValue::Time(neg, days, h, m, s, us)) => {
            let total = ((days as i64 * 24 + h as i64) * 3600 + m as i64 * 60 + s as i64)
                * 1_000_000
                + us as i64;
            Value::Time(if neg { -total } else { total })
        }
        // The library adds 1900 to the stored byte; the stored 0 means YEAR 0000.
        (SourceType::Year, MyValue::Bytes(b)) => {
            let y: i64 = std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("year"))?;
            Value::Int(if y == 1900 { 0 } else { y })
        }
        (SourceType::Year, MyValue::Int(y)) => Value::Int(y),
        (SourceType::Enum(labels), v @ (MyValue::Int(_) | MyValue::UInt(_))) => {
            let i = match v {
                MyValue::Int(i) => i as usize,
                MyValue::UInt(u) => u as usize,
                _ => unreachable!("matched above"),
            };
            // Index 0 is the empty string MySQL stores for an invalid value.
            Value::Text(if i == 0 {
                String::new()
            } else {
                labels
                    .get(i - 1)
                    .cloned()
                    .ok_or_else(|| bad(&format!("enum index {i}")))?
            })
        }
        (SourceType::Set(labels), MyValue::Bytes(b)) => {
            let mut mask: u64 = 0;
            for (i, byte) in b.iter().enumerate().take(8) {
                mask |= (*byte as u64) << (8 * i);
            }
            set_value(labels, mask)
        }
        (SourceType::Set(labels), v @ (MyValue::Int(_) | MyValue::UInt(_))) => {
            let mask = match v {
                MyValue::Int(i) => i as u64,
                MyValue::UInt(u) => u,
                _ => unreachable!("matched above"),
            };
            set_value(labels, mask)
        }
        (SourceType::Bit(n), MyValue::Bytes(bytes)) => Value::Bits { len: *n, bytes },
        (_, other) => return Err(bad(&format!("{other:?}"))),
    })
}

/// The labels of the bits set in a SET column's mask, comma-separated.
fn set_value(labels: &[String], mask: u64) -> Value {
    let names: Vec<&str> = labels
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1u64 << i) != 0)
        .map(|(_, l)| l.as_str())
        .collect();
    Value::Text(names.join(","))
}

/// Applies the column's signedness to a raw integer of `bytes` width.
pub(super) fn int_value(raw: u64, bytes: u8, unsigned: bool) -> Value {
    let bits = bytes as u32 * 8;
    let mask = if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    let v = raw & mask;
    if unsigned {
        Value::UInt(v)
    } else if bits >= 64 {
        Value::Int(v as i64)
    } else {
        // Sign-extend from `bits`.
        let shift = 64 - bits;
        Value::Int(((v << shift) as i64) >> shift)
    }
}

pub(super) fn timestamp_value(sec: i64, us: i64) -> Value {
    if sec == 0 && us == 0 {
        Value::DateTime(DateTime::ZERO)
    } else {
        Value::Timestamp(sec * 1_000_000 + us)
    }
}

/// Converts text bytes in a MySQL charset to UTF-8. Bytes that are not valid in the charset stay
/// [`Value::Bytes`], so the sink rejects the row into the dead-letter table instead of storing
/// replacement characters.
pub fn text_value(bytes: Vec<u8>, charset: &str) -> Value {
    let encoding = match charset {
        "utf8" | "utf8mb3" | "utf8mb4" | "ascii" => None,
        "binary" => return Value::Bytes(bytes),
        // MySQL's latin1 is Windows-1252 with the five undefined bytes mapped to C1 controls,
        // which is exactly the WHATWG windows-1252 decoder.
        "latin1" => Some(encoding_rs::WINDOWS_1252),
        "cp1251" => Some(encoding_rs::WINDOWS_1251),
        "cp1250" => Some(encoding_rs::WINDOWS_1250),
        "cp1256" => Some(encoding_rs::WINDOWS_1256),
        "cp1257" => Some(encoding_rs::WINDOWS_1257),
        "cp866" => Some(encoding_rs::IBM866),
        "koi8r" => Some(encoding_rs::KOI8_R),
        "koi8u" => Some(encoding_rs::KOI8_U),
        "latin2" => Some(encoding_rs::ISO_8859_2),
        "greek" => Some(encoding_rs::ISO_8859_7),
        "hebrew" => Some(encoding_rs::ISO_8859_8),
        "latin5" => Some(encoding_rs::WINDOWS_1254),
        "latin7" => Some(encoding_rs::ISO_8859_13),
        "sjis" | "cp932" => Some(encoding_rs::SHIFT_JIS),
        "ujis" | "eucjpms" => Some(encoding_rs::EUC_JP),
        "euckr" => Some(encoding_rs::EUC_KR),
        "gbk" | "gb2312" => Some(encoding_rs::GBK),
        "gb18030" => Some(encoding_rs::GB18030),
        "big5" => Some(encoding_rs::BIG5),
        "utf16" | "utf16le" | "ucs2" | "utf32" => {
            return match decode_wide(&bytes, charset) {
                Some(s) => Value::Text(s),
                None => Value::Bytes(bytes),
            }
        }
        other => encoding_rs::Encoding::for_label(other.as_bytes()),
    };
    match encoding {
        // simdutf8 validates several times faster than `String::from_utf8` on Cyrillic text,
        // which is most of a Bitrix row.
        None => match simdutf8::basic::from_utf8(&bytes) {
            // SAFETY: the bytes were just validated as UTF-8.
            Ok(_) => Value::Text(unsafe { String::from_utf8_unchecked(bytes) }),
            Err(_) => Value::Bytes(bytes),
        },
        Some(enc) => match enc.decode_without_bom_handling_and_without_replacement(&bytes) {
            Some(s) => Value::Text(s.into_owned()),
            None => Value::Bytes(bytes),
        },
    }
}

fn decode_wide(bytes: &[u8], charset: &str) -> Option<String> {
    match charset {
        "utf32" => {
            if !bytes.len().is_multiple_of(4) {
                return None;
            }
            bytes
                .chunks(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        }
        _ => {
            if !bytes.len().is_multiple_of(2) {
                return None;
            }
            let le = charset == "utf16le";
            let units = bytes.chunks(2).map(|c| {
                if le {
                    u16::from_le_bytes([c[0], c[1]])
                } else {
                    u16::from_be_bytes([c[0], c[1]])
                }
            });
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signedness() {
        assert_eq!(int_value(255, 1, false), Value::Int(-1));
        assert_eq!(int_value(-1i64 as u64, 1, true), Value::UInt(255));
        assert_eq!(int_value(0x80_0000, 3, false), Value::Int(-8_388_608));
        assert_eq!(int_value(u64::MAX, 8, true), Value::UInt(u64::MAX));
        assert_eq!(int_value(i64::MIN as u64, 8, false), Value::Int(i64::MIN));
        assert_eq!(
            int_value(-2147483648i64 as u64, 4, false),
            Value::Int(-2147483648)
        );
    }

    #[test]
    fn values_that_cannot_be_converted_are_convert_errors() {
        // The reader keeps these as unreadable values: a dead letter only where mapped.
        let col = ColumnSchema {
            name: "e".into(),
            ty: SourceType::Enum(vec!["new".into()]),
            nullable: true,
            column_type: "enum('new')".into(),
        };
        let e = decode_value(MyValue::Int(3), &col).unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::Convert);
        assert!(e.to_string().contains("enum index 3"), "{e}");
        assert_eq!(
            decode_value(MyValue::Int(1), &col).unwrap(),
            Value::Text("new".into())
        );
    }

    #[test]
    fn charsets() {
        // "Привет" in cp1251
        let cp = [0xCF, 0xF0, 0xE8, 0xE2, 0xE5, 0xF2];
        assert_eq!(
            text_value(cp.to_vec(), "cp1251"),
            Value::Text("Привет".into())
        );
        assert_eq!(text_value(vec![0xE9], "latin1"), Value::Text("é".into()));
        assert_eq!(text_value(vec![0x80], "latin1"), Value::Text("€".into()));
        assert_eq!(
            text_value(vec![0x81], "latin1"),
            Value::Text("\u{81}".into())
        );
        assert_eq!(
            text_value("🌹".as_bytes().to_vec(), "utf8mb4"),
            Value::Text("🌹".into())
        );
        assert_eq!(
            text_value(vec![0xFF, 0xFE], "utf8mb3"),
            Value::Bytes(vec![0xFF, 0xFE])
        );
    }
}

//! Decoding of pgoutput text cells into [`Value`]s by column type.
//!
//! The replication session is started with fixed output settings (`DateStyle=ISO`,
//! `TimeZone=UTC`, `IntervalStyle=iso_8601`, `extra_float_digits=3`, `bytea_output=hex`,
//! see [`SESSION_SETTINGS`]), so every type's text form is known exactly and parsed here
//! without guessing. A value that has no counterpart on the MySQL side (an infinite timestamp,
//! an interval in months) is an error for that row, which becomes a dead letter.
//!
//! May use the model's values and errors; does no I/O. The snapshot and the dead letter queue
//! use it too.

use crate::error::{Error, Result};
use crate::model::value::{Date, DateTime};
use crate::model::{TargetKind, Value};

/// Session settings for the replication connection, so text output is unambiguous.
pub const SESSION_SETTINGS: &[(&str, &str)] = &[
    ("DateStyle", "ISO, YMD"),
    ("TimeZone", "UTC"),
    ("IntervalStyle", "iso_8601"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
];

/// Decodes the text form of a value of a column of `kind`.
pub fn decode_text(kind: &TargetKind, text: &[u8]) -> Result<Value> {
    let s = std::str::from_utf8(text).map_err(|_| Error::convert("a text cell is not UTF-8"))?;
    let bad = || Error::convert(format!("cannot read {kind:?} value {s:?}"));
    Ok(match kind {
        TargetKind::Bool => match s {
            "t" => Value::Bool(true),
            "f" => Value::Bool(false),
            _ => return Err(bad()),
        },
        TargetKind::Int2 | TargetKind::Int4 | TargetKind::Int8 => {
            Value::Int(s.parse().map_err(|_| bad())?)
        }
        TargetKind::Numeric => {
            let digits = s.strip_prefix('-').unwrap_or(s);
            let ok = !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                && digits.bytes().filter(|b| *b == b'.').count() <= 1;
            if !ok {
                return Err(Error::convert(format!(
                    "numeric {s} has no MySQL DECIMAL counterpart"
                )));
            }
            Value::Decimal(s.to_string())
        }
        TargetKind::Float4 => Value::Float(parse_float(s).ok_or_else(bad)? as f32),
        TargetKind::Float8 => Value::Double(parse_float(s).ok_or_else(bad)?),
        TargetKind::Text | TargetKind::Unsupported => Value::Text(s.to_string()),
        TargetKind::Json | TargetKind::Jsonb => Value::Json(s.to_string()),
        TargetKind::Bytea => {
            let hex = s.strip_prefix("\\x").ok_or_else(bad)?;
            if hex.len() % 2 != 0 {
                return Err(bad());
            }
            let mut out = Vec::with_capacity(hex.len() / 2);
            for i in (0..hex.len()).step_by(2) {
                out.push(u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| bad())?);
            }
            Value::Bytes(out)
        }
        TargetKind::Uuid => {
            let hex: String = s.chars().filter(|c| *c != '-').collect();
            if hex.len() != 32 {
                return Err(bad());
            }
            let mut out = [0u8; 16];
            for (i, o) in out.iter_mut().enumerate() {
                *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
            }
            Value::Uuid(out)
        }
        TargetKind::Date => Value::Date(parse_date(s).ok_or_else(bad)?),
        TargetKind::Time => Value::Time(parse_time_of_day(s).ok_or_else(bad)?),
        TargetKind::Timestamp => Value::DateTime(parse_datetime(s).ok_or_else(bad)?),
        TargetKind::Timestamptz => {
            // With TimeZone=UTC the offset is always +00.
            let wall = s.strip_suffix("+00").ok_or_else(bad)?;
            let dt = parse_datetime(wall).ok_or_else(bad)?;
            let naive = dt.to_chrono().ok_or_else(bad)?;
            Value::Timestamp(naive.and_utc().timestamp_micros())
        }
        TargetKind::Interval => Value::Time(parse_iso_interval(s).ok_or_else(|| {
            Error::convert(format!(
                "interval {s} has no MySQL TIME counterpart (months or years)"
            ))
        })?),
        TargetKind::Bit => {
            let len = s.len();
            if len > u16::MAX as usize || !s.bytes().all(|b| b == b'0' || b == b'1') {
                return Err(bad());
            }
            // Right-aligned big-endian bytes, as MySQL keeps BIT(n).
            let nbytes = len.div_ceil(8);
            let mut bytes = vec![0u8; nbytes];
            for (i, b) in s.bytes().rev().enumerate() {
                if b == b'1' {
                    bytes[nbytes - 1 - i / 8] |= 1 << (i % 8);
                }
            }
            Value::Bits {
                len: len as u16,
                bytes,
            }
        }
    })
}

fn parse_float(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

/// `YYYY-MM-DD` (no BC, no infinity: MySQL has neither).
fn parse_date(s: &str) -> Option<Date> {
    let mut it = s.splitn(3, '-');
    let year: u16 = it.next()?.parse().ok()?;
    let month: u8 = it.next()?.parse().ok()?;
    let day: u8 = it.next()?.parse().ok()?;
    chrono::NaiveDate::from_ymd_opt(year as i32, month as u32, day as u32)?;
    Some(Date { year, month, day })
}

/// `HH:MM:SS[.ffffff]` → microseconds.
fn parse_time_of_day(s: &str) -> Option<i64> {
    let (hms, frac) = s.split_once('.').unwrap_or((s, ""));
    let mut it = hms.splitn(3, ':');
    let h: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let sec: i64 = it.next()?.parse().ok()?;
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let us: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").parse().ok()?
    };
    Some(((h * 60 + m) * 60 + sec) * 1_000_000 + us)
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]`.
fn parse_datetime(s: &str) -> Option<DateTime> {
    let (d, t) = s.split_once(' ')?;
    let date = parse_date(d)?;
    let us = parse_time_of_day(t)?;
    if !(0..86_400_000_000).contains(&us) {
        return None;
    }
    let secs = us / 1_000_000;
    Some(DateTime {
        date,
        hour: (secs / 3600) as u8,
        minute: (secs / 60 % 60) as u8,
        second: (secs % 60) as u8,
        micro: (us % 1_000_000) as u32,
    })
}

/// ISO 8601 durations as PostgreSQL prints them (`P1DT2H3M4.5S`, `PT-1H`, `-P…` is not used):
/// days, hours, minutes and seconds → microseconds; years or months have no fixed length.
fn parse_iso_interval(s: &str) -> Option<i64> {
    let rest = s.strip_prefix('P')?;
    let (date_part, time_part) = rest.split_once('T').unwrap_or((rest, ""));
    let mut total: i64 = 0;
    let mut take = |part: &str, units: &[(char, i64)]| -> Option<()> {
        let mut num = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() || c == '-' || c == '.' {
                num.push(c);
                continue;
            }
            let unit = units.iter().find(|(u, _)| *u == c)?.1;
            let value: f64 = num.parse().ok()?;
            total += (value * unit as f64).round() as i64;
            num.clear();
        }
        num.is_empty().then_some(())
    };
    take(date_part, &[('D', 86_400_000_000)])?;
    take(
        time_part,
        &[('H', 3_600_000_000), ('M', 60_000_000), ('S', 1_000_000)],
    )?;
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(kind: TargetKind, s: &str) -> Result<Value> {
        decode_text(&kind, s.as_bytes())
    }

    #[test]
    fn values() {
        assert_eq!(d(TargetKind::Bool, "t").unwrap(), Value::Bool(true));
        assert_eq!(
            d(TargetKind::Int8, "-9223372036854775808").unwrap(),
            Value::Int(i64::MIN)
        );
        assert_eq!(
            d(TargetKind::Numeric, "-0.0001").unwrap(),
            Value::Decimal("-0.0001".into())
        );
        assert!(d(TargetKind::Numeric, "NaN").is_err());
        assert_eq!(d(TargetKind::Float8, "0.1").unwrap(), Value::Double(0.1));
        assert_eq!(
            d(TargetKind::Bytea, "\\x00ff").unwrap(),
            Value::Bytes(vec![0, 255])
        );
        assert_eq!(
            d(TargetKind::Timestamptz, "2024-06-01 07:00:00.5+00").unwrap(),
            Value::Timestamp(
                chrono::NaiveDate::from_ymd_opt(2024, 6, 1)
                    .unwrap()
                    .and_hms_milli_opt(7, 0, 0, 500)
                    .unwrap()
                    .and_utc()
                    .timestamp_micros()
            )
        );
        assert!(d(TargetKind::Timestamptz, "infinity").is_err());
        assert_eq!(
            d(TargetKind::Timestamp, "2024-02-29 23:59:59.000001")
                .unwrap()
                .to_string(),
            "2024-02-29 23:59:59.000001"
        );
        assert_eq!(
            d(TargetKind::Date, "1000-01-01").unwrap().to_string(),
            "1000-01-01"
        );
        assert_eq!(
            d(TargetKind::Time, "23:59:59.999999").unwrap(),
            Value::Time(86_399_999_999)
        );
        assert_eq!(
            d(TargetKind::Interval, "P1DT2H3M4.5S").unwrap(),
            Value::Time(93_784_500_000)
        );
        assert_eq!(
            d(TargetKind::Interval, "PT-838H-59M-59S").unwrap(),
            Value::Time(-(838 * 3600 + 59 * 60 + 59) * 1_000_000)
        );
        assert!(d(TargetKind::Interval, "P1M").is_err());
        assert_eq!(
            d(TargetKind::Bit, "1000000001").unwrap(),
            Value::Bits {
                len: 10,
                bytes: vec![0b10, 0b1]
            }
        );
        assert_eq!(
            d(TargetKind::Uuid, "01234567-89ab-cdef-0123-456789abcdef")
                .unwrap()
                .to_string(),
            "01234567-89ab-cdef-0123-456789abcdef"
        );
    }
}

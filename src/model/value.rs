//! The closed set of values a row can carry between databases.
//!
//! Values keep what the source said, not what a target will make of it: a MySQL zero date stays a
//! zero [`DateTime`] here and becomes NULL only where a sink that cannot store it encodes it.
//! Decimals are exact decimal text; text is always valid UTF-8 (sources convert their charsets).

use std::fmt;

/// A calendar date as MySQL stores it: month and day may be zero (`0000-00-00`, `2024-00-00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    pub year: u16,
    pub month: u8,
    pub day: u8,
}

impl Date {
    /// True for dates PostgreSQL cannot represent: MySQL's zero and partial-zero dates.
    pub fn is_zero_or_partial(&self) -> bool {
        self.month == 0 || self.day == 0
    }

    pub fn to_chrono(&self) -> Option<chrono::NaiveDate> {
        chrono::NaiveDate::from_ymd_opt(self.year as i32, self.month as u32, self.day as u32)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// A wall-clock date and time without a zone (MySQL DATETIME), microsecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DateTime {
    pub date: Date,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    pub micro: u32,
}

impl DateTime {
    /// MySQL's zero datetime `0000-00-00 00:00:00`.
    pub const ZERO: DateTime = DateTime {
        date: Date {
            year: 0,
            month: 0,
            day: 0,
        },
        hour: 0,
        minute: 0,
        second: 0,
        micro: 0,
    };

    pub fn to_chrono(&self) -> Option<chrono::NaiveDateTime> {
        self.date.to_chrono()?.and_hms_micro_opt(
            self.hour as u32,
            self.minute as u32,
            self.second as u32,
            self.micro,
        )
    }
}

impl fmt::Display for DateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:02}:{:02}:{:02}",
            self.date, self.hour, self.minute, self.second
        )?;
        if self.micro != 0 {
            write!(f, ".{:06}", self.micro)?;
        }
        Ok(())
    }
}

/// One column value of a row image.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f32),
    Double(f64),
    /// Exact decimal as text: optional `-`, digits, optional `.` and digits.
    Decimal(String),
    Text(String),
    Bytes(Vec<u8>),
    Date(Date),
    /// Wall-clock time without a zone; interpreted in the source time zone where a zone is needed.
    DateTime(DateTime),
    /// An instant: microseconds since 1970-01-01 00:00:00 UTC (MySQL TIMESTAMP).
    Timestamp(i64),
    /// A signed duration in microseconds (MySQL TIME spans -838:59:59 .. 838:59:59).
    Time(i64),
    /// JSON document as text.
    Json(String),
    /// BIT(n): `len` bits, big-endian bytes.
    Bits {
        len: u16,
        bytes: Vec<u8>,
    },
    Uuid([u8; 16]),
    /// A value the source did not send because it did not change (PostgreSQL's unchanged
    /// TOASTed column in an update); a sink leaves the target column as it is.
    Unchanged,
    /// A value the source sent that cannot be read (PostgreSQL's `infinity` timestamp, a `NaN`
    /// numeric, an interval in months), with why. Harmless in a column nothing maps; a sink
    /// asked to write it sets the row aside as a dead letter with that reason.
    Unreadable(String),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// A short name of the variant, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::UInt(_) => "unsigned int",
            Value::Float(_) => "float",
            Value::Double(_) => "double",
            Value::Decimal(_) => "decimal",
            Value::Text(_) => "text",
            Value::Bytes(_) => "bytes",
            Value::Date(_) => "date",
            Value::DateTime(_) => "datetime",
            Value::Timestamp(_) => "timestamp",
            Value::Time(_) => "time",
            Value::Json(_) => "json",
            Value::Bits { .. } => "bit",
            Value::Uuid(_) => "uuid",
            Value::Unchanged => "unchanged",
            Value::Unreadable(_) => "unreadable",
        }
    }
}

/// Formats a TIME value (microseconds) the way MySQL prints it: `-838:59:59.000001`.
pub fn format_time(micros: i64) -> String {
    let neg = micros < 0;
    let m = micros.unsigned_abs();
    let us = m % 1_000_000;
    let s = m / 1_000_000;
    let mut out = format!(
        "{}{:02}:{:02}:{:02}",
        if neg { "-" } else { "" },
        s / 3600,
        (s / 60) % 60,
        s % 60
    );
    if us != 0 {
        out.push_str(&format!(".{us:06}"));
    }
    out
}

impl fmt::Display for Value {
    /// A readable rendering for logs and dead letters; not a SQL literal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::UInt(u) => write!(f, "{u}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Double(x) => write!(f, "{x}"),
            Value::Decimal(d) => f.write_str(d),
            Value::Text(s) => f.write_str(s),
            Value::Bytes(b) => {
                f.write_str("\\x")?;
                for byte in b {
                    write!(f, "{byte:02x}")?;
                }
                Ok(())
            }
            Value::Date(d) => write!(f, "{d}"),
            Value::DateTime(dt) => write!(f, "{dt}"),
            Value::Timestamp(us) => match chrono::DateTime::from_timestamp_micros(*us) {
                Some(t) => write!(f, "{}", t.format("%Y-%m-%d %H:%M:%S%.6f UTC")),
                None => write!(f, "timestamp({us})"),
            },
            Value::Time(us) => f.write_str(&format_time(*us)),
            Value::Json(j) => f.write_str(j),
            Value::Bits { len, bytes } => {
                let total = bytes.len() * 8;
                let mut s = String::with_capacity(*len as usize);
                for i in (total - *len as usize)..total {
                    let bit = bytes[i / 8] >> (7 - (i % 8)) & 1;
                    s.push(if bit == 1 { '1' } else { '0' });
                }
                write!(f, "b'{s}'")
            }
            Value::Unchanged => f.write_str("(unchanged)"),
            Value::Unreadable(why) => write!(f, "(unreadable: {why})"),
            Value::Uuid(u) => {
                for (i, b) in u.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        f.write_str("-")?;
                    }
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display() {
        assert_eq!(
            format_time(-(838 * 3600 + 59 * 60 + 59) * 1_000_000),
            "-838:59:59"
        );
        assert_eq!(format_time(1), "00:00:00.000001");
        let v = Value::Bits {
            len: 10,
            bytes: vec![0b10, 0b0000_0001],
        };
        assert_eq!(v.to_string(), "b'1000000001'");
        let d = DateTime::ZERO;
        assert_eq!(Value::DateTime(d).to_string(), "0000-00-00 00:00:00");
        assert!(d.date.is_zero_or_partial());
        assert!(d.to_chrono().is_none());
    }
}

//! What a reverse entry's MySQL table holds, read and made comparable: its rows by key, by key
//! range, and the keys it has; each value as a normal text per the column's MySQL type, the
//! form in which an expected value (what the MySQL sink would write) and a stored one are equal
//! exactly when MySQL stores the one as the other.
//!
//! The rules are MySQL's and MariaDB's for storing a value: integers and decimals rounded half
//! away from zero at the column's scale, FLOAT as single precision, `CHAR(n)` without trailing
//! spaces, `BINARY(n)` without trailing zero bytes, SET members in any order, JSON by meaning,
//! fractional seconds cut to the column's precision (MariaDB truncates, MySQL rounds: both are
//! accepted).

use mysql_async::prelude::Queryable;
use mysql_async::Value as My;

use super::cells::normal_decimal;
use crate::config::MysqlConfig;
use crate::error::{Error, Result};
use crate::mapping::ReversePlan;
use crate::model::{my_ident, ColumnSchema, SourceType};

/// A MySQL row as normal texts, one per plan column (`None`: NULL).
pub type MyRow = Vec<Option<String>>;

/// Keys asked for per statement (lists are padded to it: one prepared statement serves all).
const KEYS_AT_ONCE: usize = 500;

/// The normal text of a value MySQL holds (or would hold) in column `c`, truncating fractional
/// seconds to the column's precision.
pub fn normal(v: &My, c: &ColumnSchema) -> Option<String> {
    normal_as(v, c, false)
}

/// The normal texts a column may hold once the value `v` is written to it (more than one where
/// servers differ).
pub fn accepted(v: &My, c: &ColumnSchema) -> Vec<Option<String>> {
    let cut = normal_as(v, c, false);
    match c.ty {
        SourceType::DateTime | SourceType::Timestamp | SourceType::Time => {
            let round = normal_as(v, c, true);
            if round != cut {
                return vec![cut, round];
            }
            vec![cut]
        }
        _ => vec![cut],
    }
}

fn normal_as(v: &My, c: &ColumnSchema, round: bool) -> Option<String> {
    use SourceType as S;
    if *v == My::NULL {
        return None;
    }
    let ct = c.column_type.to_ascii_lowercase();
    Some(match &c.ty {
        S::Int { .. } | S::Year => normal_decimal(&number_text(v), Some(0)),
        S::Decimal { scale, .. } => normal_decimal(&number_text(v), Some(*scale)),
        S::Float => format!("{:?}", float(v) as f32),
        S::Double => format!("{:?}", float(v)),
        S::Text { .. } | S::Enum(_) => {
            let s = text(v);
            if ct.starts_with("char") {
                s.trim_end_matches(' ').to_string()
            } else {
                s
            }
        }
        S::Set(_) => {
            let s = text(v);
            let mut parts: Vec<&str> = s.split(',').filter(|p| !p.is_empty()).collect();
            parts.sort_unstable();
            parts.dedup();
            parts.join(",")
        }
        S::Binary => {
            let mut b = match v {
                My::Bytes(b) => b.clone(),
                other => text(other).into_bytes(),
            };
            if ct.starts_with("binary") {
                while b.last() == Some(&0) {
                    b.pop();
                }
            }
            match String::from_utf8(b) {
                Ok(s) => s,
                Err(e) => e.into_bytes().iter().map(|b| format!("{b:02x}")).collect(),
            }
        }
        S::Json => {
            let s = text(v);
            match serde_json::from_str::<serde_json::Value>(&s) {
                Ok(j) => j.to_string(),
                Err(_) => s,
            }
        }
        S::Bit(_) => match v {
            My::Bytes(b) => b
                .iter()
                .fold(0u64, |acc, x| (acc << 8) | u64::from(*x))
                .to_string(),
            other => number_text(other),
        },
        S::Date => match v {
            My::Date(y, m, d, ..) => format!("{y:04}-{m:02}-{d:02}"),
            other => text(other),
        },
        S::DateTime | S::Timestamp => match v {
            My::Date(y, mo, d, h, mi, s, us) => {
                let digits = precision(&ct);
                let (us, carry) = fraction(*us, digits, round);
                let (y, mo, d, h, mi, s) = if carry {
                    next_second(*y, *mo, *d, *h, *mi, *s)
                } else {
                    (*y, *mo, *d, *h, *mi, *s)
                };
                let mut out = format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}");
                push_fraction(&mut out, us, digits);
                out
            }
            other => text(other),
        },
        S::Time => match v {
            My::Time(neg, d, h, mi, s, us) => {
                let digits = precision(&ct);
                let (us, carry) = fraction(*us, digits, round);
                let mut secs = (u64::from(*d) * 24 + u64::from(*h)) * 3600
                    + u64::from(*mi) * 60
                    + u64::from(*s);
                if carry {
                    secs += 1;
                }
                let sign = if *neg { "-" } else { "" };
                let mut out = format!(
                    "{sign}{:02}:{:02}:{:02}",
                    secs / 3600,
                    secs / 60 % 60,
                    secs % 60
                );
                push_fraction(&mut out, us, digits);
                out
            }
            other => text(other),
        },
        S::Postgres(_) => text(v),
    })
}

/// The fractional-second digits of a temporal column type (`datetime(3)`: 3).
fn precision(column_type: &str) -> u32 {
    column_type
        .split_once('(')
        .and_then(|(_, r)| r.trim_end_matches(')').parse().ok())
        .unwrap_or(0)
}

/// Microseconds cut (or rounded) to `digits`, and whether the rounding reached the next second.
fn fraction(us: u32, digits: u32, round: bool) -> (u32, bool) {
    let unit = 10u32.pow(6 - digits.min(6));
    let mut v = us / unit * unit;
    if round && us % unit >= unit / 2 {
        v += unit;
    }
    if v >= 1_000_000 {
        return (0, true);
    }
    (v, false)
}

/// The second after a wall time (a zero date stays as it is).
fn next_second(y: u16, mo: u8, d: u8, h: u8, mi: u8, s: u8) -> (u16, u8, u8, u8, u8, u8) {
    use chrono::{Datelike, Timelike};
    chrono::NaiveDate::from_ymd_opt(i32::from(y), u32::from(mo), u32::from(d))
        .and_then(|day| day.and_hms_opt(u32::from(h), u32::from(mi), u32::from(s)))
        .map(|t| t + chrono::Duration::seconds(1))
        .map_or((y, mo, d, h, mi, s), |t| {
            (
                t.year() as u16,
                t.month() as u8,
                t.day() as u8,
                t.hour() as u8,
                t.minute() as u8,
                t.second() as u8,
            )
        })
}

fn push_fraction(out: &mut String, us: u32, digits: u32) {
    if digits > 0 {
        let f = format!("{us:06}");
        out.push('.');
        out.push_str(&f[..digits.min(6) as usize]);
    }
}

fn text(v: &My) -> String {
    match v {
        My::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        My::Int(i) => i.to_string(),
        My::UInt(u) => u.to_string(),
        My::Float(f) => f.to_string(),
        My::Double(f) => f.to_string(),
        other => other.as_sql(false).trim_matches('\'').to_string(),
    }
}

fn number_text(v: &My) -> String {
    match v {
        My::Float(f) => format!("{}", *f as f64),
        other => text(other),
    }
}

fn float(v: &My) -> f64 {
    match v {
        My::Float(f) => f64::from(*f),
        My::Double(f) => *f,
        My::Int(i) => *i as f64,
        My::UInt(u) => *u as f64,
        other => text(other).trim().parse().unwrap_or(f64::NAN),
    }
}

/// A session reading reverse entries' MySQL tables (in UTC and UTF-8, as the sink writes).
pub struct MyTarget {
    conn: mysql_async::Conn,
}

impl MyTarget {
    pub async fn open(cfg: &MysqlConfig) -> Result<MyTarget> {
        let mut conn = crate::connect::mysql(cfg, None, true).await?;
        conn.query_drop("SET time_zone = '+00:00', NAMES utf8mb4")
            .await
            .map_err(|e| Error::from_mysql(e, true, "preparing the verify session"))?;
        Ok(MyTarget { conn })
    }

    fn select(t: &ReversePlan) -> String {
        let cols: Vec<String> = t.columns.iter().map(|c| my_ident(&c.my.name)).collect();
        format!("SELECT {} FROM {}", cols.join(", "), t.target.my_quoted())
    }

    /// The rows whose single integer key is in `(lo, hi]` (an end `None`: open).
    pub async fn by_range(
        &mut self,
        t: &ReversePlan,
        lo: Option<i64>,
        hi: Option<i64>,
    ) -> Result<Vec<MyRow>> {
        let k = my_ident(&t.columns[t.key[0]].my.name);
        let sql = format!(
            "{} WHERE {k} > ? AND {k} <= ? ORDER BY {k}",
            Self::select(t)
        );
        let params = vec![
            My::Int(lo.unwrap_or(i64::MIN)),
            My::Int(hi.unwrap_or(i64::MAX)),
        ];
        self.rows(t, sql, params).await
    }

    /// The rows with these keys (normal texts of the key columns, in the plan's key order).
    pub async fn by_keys(&mut self, t: &ReversePlan, keys: &[Vec<String>]) -> Result<Vec<MyRow>> {
        let names: Vec<String> = t
            .key
            .iter()
            .map(|&k| my_ident(&t.columns[k].my.name))
            .collect();
        let one = if names.len() == 1 {
            "?".to_string()
        } else {
            format!("({})", vec!["?"; names.len()].join(", "))
        };
        let sql = format!(
            "{} WHERE ({}) IN ({})",
            Self::select(t),
            names.join(", "),
            vec![one.as_str(); KEYS_AT_ONCE].join(", ")
        );
        let mut out = Vec::new();
        for part in keys.chunks(KEYS_AT_ONCE) {
            let last = part.last().expect("chunks are not empty");
            let params: Vec<My> = part
                .iter()
                .chain(std::iter::repeat_n(last, KEYS_AT_ONCE - part.len()))
                .flatten()
                .map(|k| My::Bytes(k.clone().into_bytes()))
                .collect();
            out.extend(self.rows(t, sql.clone(), params).await?);
        }
        Ok(out)
    }

    /// Every key the table holds that `seen` (ids, see [`key_id`]) lacks.
    pub async fn keys_not_in(
        &mut self,
        t: &ReversePlan,
        seen: &std::collections::HashSet<String>,
    ) -> Result<Vec<Vec<String>>> {
        let names: Vec<String> = t
            .key
            .iter()
            .map(|&k| my_ident(&t.columns[k].my.name))
            .collect();
        let sql = format!("SELECT {} FROM {}", names.join(", "), t.target.my_quoted());
        let what = |e| Error::from_mysql(e, true, &format!("reading the keys of {}", t.target));
        let mut result = self.conn.exec_iter(sql, ()).await.map_err(what)?;
        let mut out = Vec::new();
        while let Some(row) = result.next().await.map_err(what)? {
            let values = row.unwrap();
            let key: Option<Vec<String>> = t
                .key
                .iter()
                .zip(values.iter())
                .map(|(&k, v)| normal(v, &t.columns[k].my))
                .collect();
            if let Some(key) = key {
                if !seen.contains(&key_id(&key)) {
                    out.push(key);
                }
            }
        }
        Ok(out)
    }

    async fn rows(&mut self, t: &ReversePlan, sql: String, params: Vec<My>) -> Result<Vec<MyRow>> {
        let what = |e| Error::from_mysql(e, true, &format!("reading rows of {}", t.target));
        let rows: Vec<mysql_async::Row> = self.conn.exec(sql, params).await.map_err(what)?;
        let mut out = Vec::with_capacity(rows.len());
        let mut once = std::collections::HashSet::new();
        for row in rows {
            let values = row.unwrap();
            let r: MyRow = values
                .iter()
                .zip(&t.columns)
                .map(|(v, c)| normal(v, &c.my))
                .collect();
            // A padded key list may name a row more than once.
            if let Some(k) = key_of(t, &r) {
                if once.insert(key_id(&k)) {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }

    /// The unresolved dead letters of the reverse direction from PostgreSQL table `t.source`,
    /// as their key text (`a, b`, in the plan's key order).
    pub async fn dead_letter_keys(
        &mut self,
        database: &str,
        pipeline: &str,
        t: &ReversePlan,
    ) -> Result<std::collections::HashSet<String>> {
        let parts: Vec<String> = t
            .key
            .iter()
            .map(|&k| {
                format!(
                    "JSON_UNQUOTE(JSON_EXTRACT(row_data, '$.\"{}\"'))",
                    t.columns[k].pg_name.replace(['\'', '"', '\\'], "")
                )
            })
            .collect();
        let sql = format!(
            "SELECT CONCAT_WS(', ', {}) FROM {}.dead_letter WHERE pipeline = ? AND direction = ? AND source_table = ? AND resolved = 0",
            parts.join(", "),
            my_ident(database)
        );
        let keys: Vec<Option<String>> = self
            .conn
            .exec(sql, (pipeline, crate::model::REVERSE, t.source.to_string()))
            .await
            .map_err(|e| Error::from_mysql(e, true, "reading the dead letters"))?;
        Ok(keys.into_iter().flatten().collect())
    }

    pub async fn close(self) {
        let _ = self.conn.disconnect().await;
    }
}

/// The key texts of a row (`None` when a key column is NULL).
pub fn key_of(t: &ReversePlan, row: &MyRow) -> Option<Vec<String>> {
    t.key.iter().map(|&k| row[k].clone()).collect()
}

/// One string per key, for maps.
pub fn key_id(key: &[String]) -> String {
    key.join("\u{1f}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(ty: SourceType, column_type: &str) -> ColumnSchema {
        ColumnSchema {
            name: "c".into(),
            ty,
            nullable: true,
            column_type: column_type.into(),
        }
    }

    #[test]
    fn values_are_compared_as_the_column_stores_them() {
        let dec = col(
            SourceType::Decimal {
                precision: 12,
                scale: 2,
            },
            "decimal(12,2)",
        );
        assert_eq!(
            normal(&My::Bytes(b"12.3456".to_vec()), &dec),
            normal(&My::Bytes(b"12.35".to_vec()), &dec)
        );
        let int = col(
            SourceType::Int {
                bytes: 4,
                unsigned: false,
            },
            "int(11)",
        );
        assert_eq!(
            normal(&My::Bytes(b"7".to_vec()), &int),
            normal(&My::Int(7), &int)
        );
        let f = col(SourceType::Float, "float");
        assert_eq!(normal(&My::Double(1.1), &f), normal(&My::Float(1.1), &f));
        let ch = col(
            SourceType::Text {
                charset: "cp1251".into(),
            },
            "char(5)",
        );
        assert_eq!(
            normal(&My::Bytes(b"ab  ".to_vec()), &ch),
            Some("ab".to_string())
        );
        let set = col(
            SourceType::Set(vec!["a".into(), "b".into()]),
            "set('a','b')",
        );
        assert_eq!(
            normal(&My::Bytes(b"b,a".to_vec()), &set),
            normal(&My::Bytes(b"a,b".to_vec()), &set)
        );
        assert_eq!(normal(&My::NULL, &set), None);
    }

    #[test]
    fn fractional_seconds_may_be_cut_or_rounded() {
        let dt = col(SourceType::DateTime, "datetime");
        let written = My::Date(2026, 12, 7, 10, 0, 0, 700_000);
        let held = normal(&My::Date(2026, 12, 7, 10, 0, 0, 0), &dt);
        assert!(accepted(&written, &dt).contains(&held), "MariaDB cuts");
        let ms = col(SourceType::DateTime, "datetime(3)");
        let written = My::Date(2026, 12, 7, 10, 0, 0, 123_600);
        assert!(accepted(&written, &ms)
            .contains(&normal(&My::Date(2026, 12, 7, 10, 0, 0, 124_000), &ms)));
        assert!(!accepted(&written, &ms)
            .contains(&normal(&My::Date(2026, 12, 7, 10, 0, 0, 125_000), &ms)));
    }
}

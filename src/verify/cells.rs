//! Whether a cell the mapping would write equals the cell the target holds, both in
//! PostgreSQL's binary format: the expected cell is encoded by the sink's own encoder, the
//! target's is read as the server sends it. Equal bytes are equal values for every kind but a
//! few whose binary form is not canonical: numeric (digit groups and display scale; the
//! column's scale rounds what it stores), json/jsonb (the server normalises the text),
//! and blank-padded `character(n)`.

use crate::model::{TargetColumn, TargetKind};

/// Whether `expected` (as the sink encodes it) and `actual` (as read) are the same value of
/// `column`.
pub fn same(column: &TargetColumn, expected: Option<&[u8]>, actual: Option<&[u8]>) -> bool {
    let (e, a) = match (expected, actual) {
        (None, None) => return true,
        (Some(e), Some(a)) => (e, a),
        _ => return false,
    };
    if e == a {
        return true;
    }
    match column.kind {
        TargetKind::Numeric => {
            let scale = numeric_scale(&column.type_name);
            match (numeric_text(e), numeric_text(a)) {
                (Some(e), Some(a)) => normal_decimal(&e, scale) == normal_decimal(&a, scale),
                _ => false,
            }
        }
        TargetKind::Json | TargetKind::Jsonb => {
            let text = |b: &[u8]| {
                let b = if column.kind == TargetKind::Jsonb {
                    b.get(1..).unwrap_or_default()
                } else {
                    b
                };
                serde_json::from_slice::<serde_json::Value>(b).ok()
            };
            matches!((text(e), text(a)), (Some(x), Some(y)) if x == y)
        }
        TargetKind::Text if is_bpchar(&column.type_name) => {
            e.trim_ascii_end() == a.trim_ascii_end()
        }
        _ => false,
    }
}

fn is_bpchar(type_name: &str) -> bool {
    type_name.starts_with("character(") || type_name == "character" || type_name == "bpchar"
}

/// The scale of `numeric(p,s)`; `None` for an unconstrained numeric.
fn numeric_scale(type_name: &str) -> Option<u32> {
    let inner = type_name.strip_prefix("numeric(")?.strip_suffix(')')?;
    match inner.split_once(',') {
        Some((_, s)) => s.trim().parse().ok(),
        None => Some(0),
    }
}

/// A binary numeric as decimal text (`NaN`, `Infinity` and `-Infinity` as such).
pub fn numeric_text(b: &[u8]) -> Option<String> {
    let word = |i: usize| -> Option<i16> { Some(i16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?])) };
    let ndigits = word(0)? as usize;
    let weight = word(2)? as i32;
    let sign = word(4)? as u16;
    let dscale = word(6)? as u16 as usize;
    match sign {
        0xC000 => return Some("NaN".into()),
        0xD000 => return Some("Infinity".into()),
        0xF000 => return Some("-Infinity".into()),
        _ => {}
    }
    let digits: Vec<i16> = (0..ndigits)
        .map(|i| word(8 + 2 * i))
        .collect::<Option<_>>()?;
    // Integer part: groups 0..=weight; fraction: the groups after.
    let mut int = String::new();
    for g in 0..=weight.max(-1) {
        let d = digits.get(g as usize).copied().unwrap_or(0);
        if int.is_empty() {
            if d != 0 {
                int = d.to_string();
            }
        } else {
            int.push_str(&format!("{d:04}"));
        }
    }
    if int.is_empty() {
        int.push('0');
    }
    let mut frac = String::new();
    let mut g = weight + 1;
    while frac.len() < dscale {
        let d = if g < 0 {
            0
        } else {
            digits.get(g as usize).copied().unwrap_or(0)
        };
        frac.push_str(&format!("{d:04}"));
        g += 1;
    }
    frac.truncate(dscale);
    let sign = if sign == 0x4000 { "-" } else { "" };
    Some(if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    })
}

/// Decimal text rounded half away from zero to `scale` digits (as a numeric(p,s) column
/// stores it), then without trailing zeros, and `-0` as `0`.
pub fn normal_decimal(text: &str, scale: Option<u32>) -> String {
    let (neg, body) = match text.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, text),
    };
    if !body.bytes().all(|c| c.is_ascii_digit() || c == b'.') {
        return text.to_string();
    }
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let mut digits: Vec<u8> = int.bytes().chain(frac.bytes()).map(|c| c - b'0').collect();
    let mut point = int.len();
    if let Some(s) = scale.map(|s| s as usize) {
        if frac.len() > s {
            let keep = point + s;
            let up = digits[keep] >= 5;
            digits.truncate(keep);
            if up {
                let mut i = keep;
                loop {
                    if i == 0 {
                        digits.insert(0, 1);
                        point += 1;
                        break;
                    }
                    i -= 1;
                    if digits[i] == 9 {
                        digits[i] = 0;
                    } else {
                        digits[i] += 1;
                        break;
                    }
                }
            }
        }
    }
    let (i, f) = digits.split_at(point);
    let i: String = i.iter().map(|d| (d + b'0') as char).collect();
    let f: String = f.iter().map(|d| (d + b'0') as char).collect();
    let i = i.trim_start_matches('0');
    let f = f.trim_end_matches('0');
    let i = if i.is_empty() { "0" } else { i };
    let zero = i == "0" && f.is_empty();
    let sign = if neg && !zero { "-" } else { "" };
    if f.is_empty() {
        format!("{sign}{i}")
    } else {
        format!("{sign}{i}.{f}")
    }
}

/// FNV-1a: the keys hashed here are a few bytes of encoded key cells, read from our own
/// databases (no adversary picks them), and SipHash was a visible part of verify's time.
#[derive(Default, Clone, Copy)]
pub struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// Maps and sets keyed by encoded keys.
pub type KeyMap<V> = std::collections::HashMap<Vec<u8>, V, std::hash::BuildHasherDefault<Fnv>>;
pub type KeySet = std::collections::HashSet<Vec<u8>, std::hash::BuildHasherDefault<Fnv>>;

/// A value for a report: at most `MAX_SHOWN` characters, control characters escaped.
pub fn shown(text: &str) -> String {
    const MAX_SHOWN: usize = 120;
    let mut out: String = text
        .chars()
        .take(MAX_SHOWN)
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    if text.chars().count() > MAX_SHOWN {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(kind: TargetKind, type_name: &str) -> TargetColumn {
        TargetColumn {
            name: "c".into(),
            type_name: type_name.into(),
            kind,
            oid: 0,
            nullable: true,
        }
    }

    fn numeric(text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        crate::sink::postgres::encode::encode_numeric(text, &mut out).unwrap();
        out
    }

    #[test]
    fn numerics_compare_by_value_at_the_column_scale() {
        for t in [
            "12.5",
            "-0.0001",
            "100000000",
            "0",
            "123456789.123456789",
            "-7",
        ] {
            assert_eq!(
                normal_decimal(&numeric_text(&numeric(t)).unwrap(), None),
                normal_decimal(t, None)
            );
        }
        let c = col(TargetKind::Numeric, "numeric(12,2)");
        assert!(same(&c, Some(&numeric("12.3456")), Some(&numeric("12.35"))));
        assert!(same(&c, Some(&numeric("12.5000")), Some(&numeric("12.50"))));
        assert!(!same(
            &c,
            Some(&numeric("12.3449")),
            Some(&numeric("12.35"))
        ));
        assert!(same(&c, Some(&numeric("99.995")), Some(&numeric("100.00"))));
        assert!(same(&c, Some(&numeric("-0.001")), Some(&numeric("0"))));
        let free = col(TargetKind::Numeric, "numeric");
        assert!(!same(
            &free,
            Some(&numeric("12.3456")),
            Some(&numeric("12.35"))
        ));
        assert!(same(&free, Some(&numeric("1.10")), Some(&numeric("1.1"))));
    }

    #[test]
    fn json_and_blank_padded_text_compare_by_meaning() {
        let j = col(TargetKind::Jsonb, "jsonb");
        let a = b"\x01{\"b\":1, \"a\":\"x\"}".to_vec();
        let b = b"\x01{\"a\": \"x\", \"b\": 1}".to_vec();
        assert!(same(&j, Some(&a), Some(&b)));
        assert!(!same(&j, Some(&a), Some(b"\x01{\"a\": \"y\", \"b\": 1}")));
        let c = col(TargetKind::Text, "character(5)");
        assert!(same(&c, Some(b"ab"), Some(b"ab   ")));
        let t = col(TargetKind::Text, "text");
        assert!(!same(&t, Some(b"ab"), Some(b"ab   ")));
        assert!(!same(&t, Some(b"ab"), None));
        assert!(same(&t, None, None));
    }

    #[test]
    fn shown_values_are_short_and_visible() {
        assert_eq!(shown("a\0b"), "a\\u{0}b");
        assert_eq!(shown(&"x".repeat(200)).chars().count(), 121);
    }
}

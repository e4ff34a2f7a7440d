//! Renders generated rows two ways: as MariaDB multi-row `INSERT` statements with literal
//! values, and as PostgreSQL binary `COPY` tuples (the raw-limit reference). Zero dates
//! become NULL in PostgreSQL, as duplex does.

use std::fmt::Write as _;

use chrono::{NaiveDate, NaiveDateTime};

use super::schema::{Cell, Table};

/// `INSERT INTO `table` (`A`, `B`, …) VALUES (…), (…)` for `rows`.
pub fn insert_sql(table: &Table, rows: &[Vec<Cell>]) -> String {
    insert_sql_into(table, table.name, rows)
}

/// Like [`insert_sql`], into the table `name` (a copy of `table`'s shape).
pub fn insert_sql_into(table: &Table, name: &str, rows: &[Vec<Cell>]) -> String {
    let names: Vec<String> = table
        .columns
        .iter()
        .map(|c| format!("`{}`", c.name))
        .collect();
    let mut sql = String::with_capacity(rows.len() * 800 + 2_000);
    let _ = write!(sql, "INSERT INTO `{name}` ({}) VALUES ", names.join(", "));
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            sql.push(',');
        }
        sql.push('(');
        for (j, cell) in row.iter().enumerate() {
            if j > 0 {
                sql.push(',');
            }
            push_literal(&mut sql, cell);
        }
        sql.push(')');
    }
    sql
}

/// `rows` as the text `LOAD DATA` reads by default: fields separated by tabs, rows ended by
/// newlines, `\N` for NULL, backslash escapes for tab, newline, NUL and backslash.
pub fn load_data_rows(rows: &[Vec<Cell>]) -> Vec<u8> {
    let mut out = String::with_capacity(rows.len() * 700);
    for row in rows {
        for (j, cell) in row.iter().enumerate() {
            if j > 0 {
                out.push('\t');
            }
            match cell {
                Cell::Null => out.push_str("\\N"),
                Cell::Int(i) => {
                    let _ = write!(out, "{i}");
                }
                Cell::Text(t) => {
                    for c in t.chars() {
                        match c {
                            '\\' => out.push_str("\\\\"),
                            '\t' => out.push_str("\\t"),
                            '\n' => out.push_str("\\n"),
                            '\0' => out.push_str("\\0"),
                            c => out.push(c),
                        }
                    }
                }
                Cell::Dec(d) => out.push_str(d),
                Cell::Dt(dt) => {
                    let _ = write!(out, "{}", dt.format("%Y-%m-%d %H:%M:%S"));
                }
                Cell::ZeroDt => out.push_str("0000-00-00 00:00:00"),
                Cell::Date(d) => {
                    let _ = write!(out, "{}", d.format("%Y-%m-%d"));
                }
                Cell::Dbl(f) => {
                    let _ = write!(out, "{f}");
                }
            }
        }
        out.push('\n');
    }
    out.into_bytes()
}

/// Appends `cell` as a MariaDB literal (`sql_mode=''`, so backslash escapes apply).
fn push_literal(sql: &mut String, cell: &Cell) {
    match cell {
        Cell::Null => sql.push_str("NULL"),
        Cell::Int(i) => {
            let _ = write!(sql, "{i}");
        }
        Cell::Text(t) => push_quoted(sql, t),
        Cell::Dec(d) => sql.push_str(d),
        Cell::Dt(dt) => {
            let _ = write!(sql, "'{}'", dt.format("%Y-%m-%d %H:%M:%S"));
        }
        Cell::ZeroDt => sql.push_str("'0000-00-00 00:00:00'"),
        Cell::Date(d) => {
            let _ = write!(sql, "'{}'", d.format("%Y-%m-%d"));
        }
        Cell::Dbl(f) => {
            let _ = write!(sql, "{f}");
        }
    }
}

fn push_quoted(sql: &mut String, text: &str) {
    sql.push('\'');
    for c in text.chars() {
        match c {
            '\'' => sql.push_str("\\'"),
            '\\' => sql.push_str("\\\\"),
            '\0' => sql.push_str("\\0"),
            '\n' => sql.push_str("\\n"),
            '\r' => sql.push_str("\\r"),
            '\u{1a}' => sql.push_str("\\Z"),
            c => sql.push(c),
        }
    }
    sql.push('\'');
}

/// The binary COPY header (signature, flags, header extension length).
pub const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The binary COPY trailer (a tuple with field count -1).
pub const COPY_TRAILER: &[u8] = &[0xff, 0xff];

/// Appends one binary COPY tuple for `row`.
pub fn push_copy_tuple(out: &mut Vec<u8>, row: &[Cell]) {
    out.extend_from_slice(&(row.len() as i16).to_be_bytes());
    for cell in row {
        push_copy_field(out, cell);
    }
}

fn push_copy_field(out: &mut Vec<u8>, cell: &Cell) {
    let len_at = out.len();
    out.extend_from_slice(&0_i32.to_be_bytes());
    let start = out.len();
    match cell {
        Cell::Null | Cell::ZeroDt => {
            out.truncate(len_at);
            out.extend_from_slice(&(-1_i32).to_be_bytes());
            return;
        }
        Cell::Int(i) => out.extend_from_slice(&(*i as i32).to_be_bytes()),
        Cell::Text(t) => out.extend_from_slice(t.as_bytes()),
        Cell::Dec(d) => push_numeric(out, d),
        Cell::Dt(dt) => out.extend_from_slice(&pg_timestamp(dt).to_be_bytes()),
        Cell::Date(d) => out.extend_from_slice(&pg_date(d).to_be_bytes()),
        Cell::Dbl(f) => out.extend_from_slice(&f.to_be_bytes()),
    }
    let len = (out.len() - start) as i32;
    out[len_at..start].copy_from_slice(&len.to_be_bytes());
}

fn pg_epoch() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2000, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .expect("valid date")
}

/// Microseconds since 2000-01-01 00:00:00.
fn pg_timestamp(dt: &NaiveDateTime) -> i64 {
    (*dt - pg_epoch())
        .num_microseconds()
        .expect("timestamp in range")
}

/// Days since 2000-01-01.
fn pg_date(d: &NaiveDate) -> i32 {
    (*d - pg_epoch().date()).num_days() as i32
}

/// PostgreSQL's binary `numeric` for a non-negative decimal like `12345.6700`: base-10000
/// digits, weight of the first digit, sign and display scale.
fn push_numeric(out: &mut Vec<u8>, text: &str) {
    let (int_part, frac_part) = text.split_once('.').unwrap_or((text, ""));
    let scale = frac_part.len();
    // Left-pad the integer part and right-pad the fraction to whole groups of four.
    let int_pad = (4 - int_part.len() % 4) % 4;
    let frac_pad = (4 - scale % 4) % 4;
    let int_digits = format!("{}{int_part}", "0".repeat(int_pad));
    let frac_digits = format!("{frac_part}{}", "0".repeat(frac_pad));
    let group = |s: &str| -> Vec<i16> {
        s.as_bytes()
            .chunks(4)
            .map(|c| {
                std::str::from_utf8(c)
                    .expect("ascii")
                    .parse()
                    .expect("digits")
            })
            .collect()
    };
    let mut digits = group(&int_digits);
    let mut weight = digits.len() as i16 - 1;
    digits.extend(group(&frac_digits));
    while digits.first() == Some(&0) {
        digits.remove(0);
        weight -= 1;
    }
    while digits.last() == Some(&0) {
        digits.pop();
    }
    if digits.is_empty() {
        weight = 0;
    }
    out.extend_from_slice(&(digits.len() as i16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&0_u16.to_be_bytes());
    out.extend_from_slice(&(scale as i16).to_be_bytes());
    for d in digits {
        out.extend_from_slice(&d.to_be_bytes());
    }
}

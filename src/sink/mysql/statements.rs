//! The text of the MySQL sink's row statements: multi-row `INSERT … ON DUPLICATE KEY UPDATE`,
//! `UPDATE` of one row (with its change-time columns), `DELETE` by key, and the literals they
//! carry (quoted for the session's `sql_mode`). Pure functions of the reverse plan and the
//! changes; `duplex plan` prints them with placeholders ([`shapes`]).

use mysql_async::Value as My;

use super::{MyChange, MyKind};
use crate::mapping::ReversePlan;
use crate::model::my_ident;

/// Statement text for a session.
pub struct Text {
    /// The session's sql_mode has NO_BACKSLASH_ESCAPES (changes how literals are quoted).
    pub no_backslash_escapes: bool,
}

impl Text {
    /// A multi-row `INSERT … ON DUPLICATE KEY UPDATE` of a run with the `sent` columns.
    pub fn upsert_sql(&self, t: &ReversePlan, run: &[MyChange], sent: &[bool]) -> String {
        let cols: Vec<usize> = (0..t.columns.len()).filter(|c| sent[*c]).collect();
        let timed = !run[0].at.is_empty();
        let names = row_columns(t, sent, timed);
        let rows: Vec<String> = run
            .iter()
            .map(|c| self.literal_tuple(c.values.iter().flatten().chain(c.at.iter())))
            .collect();
        // Change-time columns first: MySQL assigns left to right, so their conditions still see
        // the old values.
        let mut updates: Vec<String> = Vec::new();
        if timed {
            for set in &t.set {
                let n = my_ident(&set.column.name);
                let same: Vec<String> = set
                    .when
                    .iter()
                    .filter(|w| sent[**w])
                    .map(|w| {
                        let m = my_ident(&t.columns[*w].my.name);
                        format!("{m} <=> VALUES({m})")
                    })
                    .collect();
                if same.is_empty() {
                    updates.push(format!("{n} = VALUES({n})"));
                } else {
                    updates.push(format!(
                        "{n} = IF({}, {n}, VALUES({n}))",
                        same.join(" AND ")
                    ));
                }
            }
        }
        updates.extend(cols.iter().filter(|c| !t.key.contains(c)).map(|c| {
            let n = my_ident(&t.columns[*c].my.name);
            format!("{n} = VALUES({n})")
        }));
        let on_dup = if updates.is_empty() {
            // Only key columns: keep the row as is.
            let k = my_ident(&t.columns[t.key[0]].my.name);
            format!("{k} = {k}")
        } else {
            updates.join(", ")
        };
        format!(
            "INSERT INTO {} ({}) VALUES {} ON DUPLICATE KEY UPDATE {on_dup}",
            t.target.my_quoted(),
            names.join(", "),
            rows.join(", ")
        )
    }

    /// `DELETE … WHERE (key) IN (…)` of a run.
    pub fn delete_sql(&self, t: &ReversePlan, run: &[MyChange]) -> String {
        let names: Vec<String> = t
            .key
            .iter()
            .map(|k| my_ident(&t.columns[*k].my.name))
            .collect();
        let tuples: Vec<String> = run
            .iter()
            .map(|c| self.literal_tuple(c.values.iter().flatten()))
            .collect();
        format!(
            "DELETE FROM {} WHERE ({}) IN ({})",
            t.target.my_quoted(),
            names.join(", "),
            tuples.join(", ")
        )
    }

    /// `key1 = v1 AND …` of a change's row.
    pub fn key_condition(&self, t: &ReversePlan, c: &MyChange) -> String {
        let cond: Vec<String> = t
            .key
            .iter()
            .map(|k| {
                let v = c.values[*k].as_ref().expect("keys are sent");
                format!("{} = {}", my_ident(&t.columns[*k].my.name), self.literal(v))
            })
            .collect();
        cond.join(" AND ")
    }

    /// `(v1, v2, …)` as SQL literals. Rows go out as text statements: one round trip, and no
    /// prepared statement per row count for the server and the client to keep.
    pub fn literal_tuple<'a>(&self, values: impl Iterator<Item = &'a My>) -> String {
        let parts: Vec<String> = values.map(|v| self.literal(v)).collect();
        format!("({})", parts.join(", "))
    }

    /// One value as an SQL literal.
    pub fn literal(&self, v: &My) -> String {
        match v {
            // Display would print 1.7976931348623157e308 as 309 digits, which MySQL reads as an
            // out-of-range DECIMAL literal; the exponent form reads back exactly.
            My::Double(x) if x.is_finite() => format!("{x:e}"),
            My::Float(x) if x.is_finite() => format!("{x:e}"),
            _ => v.as_sql(self.no_backslash_escapes),
        }
    }

    /// `UPDATE … SET … WHERE key` of one row: change-time columns first (set when one of their
    /// trigger columns gets a new value), then the sent columns. A column already holding a
    /// value the map reads as the new one (`P` when the CRM says `paid`, whose code is `PD`)
    /// is left as it is, and does not count as changed.
    pub fn update_sql(&self, t: &ReversePlan, c: &MyChange) -> String {
        let lit = |v: &My| self.literal(v);
        // SQL that is true when column `i` already holds the new value `v`.
        let unchanged = |i: usize, v: &My| {
            let n = my_ident(&t.columns[i].my.name);
            match c.same.get(i) {
                Some(Some(codes)) => {
                    let list: Vec<String> = codes.iter().map(lit).collect();
                    format!("{n} IN ({})", list.join(", "))
                }
                _ => format!("{n} <=> {}", lit(v)),
            }
        };
        let mut sets = Vec::new();
        for (set, at) in t.set.iter().zip(&c.at) {
            let n = my_ident(&set.column.name);
            let same: Vec<String> = set
                .when
                .iter()
                .filter_map(|w| c.values[*w].as_ref().map(|v| unchanged(*w, v)))
                .collect();
            if set.when.is_empty() {
                sets.push(format!("{n} = {}", lit(at)));
            } else if !same.is_empty() {
                sets.push(format!(
                    "{n} = IF({}, {n}, {})",
                    same.join(" AND "),
                    lit(at)
                ));
            }
        }
        for (i, v) in c.values.iter().enumerate() {
            if let (false, Some(v)) = (t.key.contains(&i), v) {
                let n = my_ident(&t.columns[i].my.name);
                match c.same.get(i) {
                    Some(Some(_)) => {
                        sets.push(format!("{n} = IF({}, {n}, {})", unchanged(i, v), lit(v)))
                    }
                    _ => sets.push(format!("{n} = {}", lit(v))),
                }
            }
        }
        if sets.is_empty() {
            let k = my_ident(&t.columns[t.key[0]].my.name);
            sets.push(format!("{k} = {k}"));
        }
        format!(
            "UPDATE {} SET {} WHERE {}",
            t.target.my_quoted(),
            sets.join(", "),
            self.key_condition(t, c)
        )
    }
}

/// The MySQL columns a row of a run fills, in the order its values come: the `sent` columns,
/// then, when the run carries change times (`timed`), the change-time columns.
pub fn row_columns(t: &ReversePlan, sent: &[bool], timed: bool) -> Vec<String> {
    let mut names: Vec<String> = t
        .columns
        .iter()
        .zip(sent)
        .filter(|(_, s)| **s)
        .map(|(c, _)| my_ident(&c.my.name))
        .collect();
    if timed {
        names.extend(t.set.iter().map(|s| my_ident(&s.column.name)));
    }
    names
}

/// The statements the way back runs for reverse entry `t`, with `?` where values go (what
/// `duplex plan` shows): per kind of write, a label and the SQL.
pub fn shapes(t: &ReversePlan) -> Vec<(&'static str, String)> {
    let text = Text {
        no_backslash_escapes: false,
    };
    let hole = || Some(My::Bytes(vec![1]));
    let change = |kind: MyKind| MyChange {
        table: 0,
        kind,
        values: t.columns.iter().map(|_| hole()).collect(),
        at: t.set.iter().map(|_| My::Bytes(vec![1])).collect(),
        same: Vec::new(),
        guard: None,
        relay: None,
    };
    let holes = |sql: String| sql.replace("'\u{1}'", "?");
    let mut out = Vec::new();
    match t.write {
        crate::mapping::ReverseWrite::Update => {
            out.push(("update", holes(text.update_sql(t, &change(MyKind::Update)))));
        }
        crate::mapping::ReverseWrite::Upsert => {
            let c = change(MyKind::Upsert);
            let sent = vec![true; t.columns.len()];
            out.push((
                "upsert",
                holes(text.upsert_sql(t, std::slice::from_ref(&c), &sent)),
            ));
            let mut d = change(MyKind::Delete);
            d.values = t.key.iter().map(|_| hole()).collect();
            out.push(("delete", holes(text.delete_sql(t, &[d]))));
        }
    }
    out
}

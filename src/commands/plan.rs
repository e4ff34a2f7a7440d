//! `duplex plan`: the mapping set as duplex compiled it against both live schemas — per entry
//! the columns with their types, transforms, maps, directions and conflict policy, the filter,
//! the pivot and the look-ups — and the SQL statements and publication duplex will use. To read
//! before `setup`, or when a mapping does not do what was meant.

use std::process::ExitCode;

use crate::config::Config;
use crate::mapping::{load_plan, ColumnSource, Direction, Plan, TablePlan};

/// Runs `duplex plan`: every entry, or those whose source or target is `table`.
pub async fn main(cfg: &Config, table: Option<String>) -> ExitCode {
    match load_plan(cfg).await {
        Ok(plan) => {
            let text = render(cfg, &plan, table.as_deref());
            if text.is_empty() {
                eprintln!(
                    "error: no mapped table is called {}",
                    table.unwrap_or_default()
                );
                return ExitCode::FAILURE;
            }
            super::print(&text);
            ExitCode::SUCCESS
        }
        Err(e) => super::failed(&e),
    }
}

/// The plan as text.
pub fn render(cfg: &Config, plan: &Plan, only: Option<&str>) -> String {
    let wanted = |t: &TablePlan| {
        only.is_none_or(|a| {
            [&t.source, &t.target]
                .iter()
                .any(|n| a.eq_ignore_ascii_case(&n.to_string()) || a.eq_ignore_ascii_case(&n.name))
        })
    };
    let mut out = String::new();
    for t in plan.tables.iter().filter(|t| wanted(t)) {
        out.push_str(&entry(cfg, plan, t));
        out.push('\n');
    }
    if out.is_empty() {
        return out;
    }
    if only.is_none() && plan.has_reverse() {
        let tables: Vec<String> = crate::source::postgres::publication::tables(cfg, plan, false)
            .iter()
            .map(|t| t.pg_quoted())
            .collect();
        out.push_str(&format!(
            "publication (created by `duplex setup`; without the replication-origin functions, duplex's checkpoint table joins it):\n  CREATE PUBLICATION {} FOR TABLE {}\nreplication slot: {} (pgoutput)\n",
            crate::model::pg_ident(&crate::model::slot_name(&cfg.pipeline)),
            tables.join(", "),
            crate::model::slot_name(&cfg.pipeline)
        ));
    }
    out
}

fn entry(cfg: &Config, plan: &Plan, t: &TablePlan) -> String {
    let mut out = format!("entry {}\n", t.origin);
    let direction = match t.direction {
        Direction::Forward => "forward (MySQL → PostgreSQL)",
        Direction::Reverse => "reverse (PostgreSQL → MySQL)",
        Direction::Both => "both",
    };
    let key: Vec<&str> = t
        .key
        .iter()
        .map(|&k| t.columns[k].target.name.as_str())
        .collect();
    out.push_str(&format!(
        "  {} → {}   direction {direction}, key ({}), on_delete {:?}",
        t.source,
        t.target,
        key.join(", "),
        t.on_delete
    ));
    if t.direction != Direction::Forward {
        out.push_str(&format!(", reverse_write {:?}", t.reverse_write));
    }
    out.push('\n');
    for f in &t.filters {
        out.push_str(&format!("  filter: {} {:?}\n", f.column, f.test));
    }
    let rows: Vec<Vec<String>> = t
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let from = match &c.from {
                ColumnSource::Column(_) => c.source_name.clone(),
                ColumnSource::Const(v) => format!("= {v}"),
                ColumnSource::Pack(cols) => {
                    let names: Vec<&str> = cols.iter().map(|(n, _)| n.as_str()).collect();
                    format!("pack({})", names.join(", "))
                }
            };
            let way = if t.key.contains(&i) {
                "key".to_string()
            } else if c.reverse {
                match c.conflict {
                    Some(p) => format!("both (conflict {p:?})"),
                    None => "both".into(),
                }
            } else {
                "forward".into()
            };
            vec![
                format!("    {from}"),
                format!("→ {}", c.target.name),
                c.target.type_name.clone(),
                way,
                c.transform.describe(),
            ]
        })
        .collect();
    out.push_str("  columns:\n");
    out.push_str(&super::table(&rows));
    if let Some(p) = &t.pivot {
        let mut codes: Vec<(&String, &Vec<crate::mapping::compile::PivotTarget>)> =
            p.codes.iter().collect();
        codes.sort_by(|a, b| a.0.cmp(b.0));
        out.push_str(&format!(
            "  pivot: rows ({}, {}, {}) per key\n",
            t.columns[t.key[0]].source_name, t.slots[p.name_slot], t.slots[p.value_slot]
        ));
        for (code, targets) in codes {
            for pt in targets {
                out.push_str(&format!(
                    "    {code} → {} (priority {}{})\n",
                    p.columns[pt.column].name,
                    pt.priority,
                    if pt.transform.is_identity() {
                        String::new()
                    } else {
                        format!(", {}", pt.transform.describe())
                    }
                ));
            }
        }
    }
    for l in &t.lookups {
        out.push_str(&format!(
            "  look-up: {} = {}.{} where {}.{} = {}\n",
            l.column.name, l.table, l.take, l.table, l.match_, l.from
        ));
    }
    if t.direction != Direction::Reverse {
        out.push_str("  SQL, MySQL → PostgreSQL:\n");
        let shapes = crate::sink::postgres::sql::shapes(t);
        if shapes.is_empty() {
            out.push_str(&format!(
                "    pivoted values kept in {}.pivot, the target's columns recomputed from them\n",
                crate::model::pg_ident(&cfg.postgres.duplex_schema)
            ));
        }
        for (what, sql) in shapes {
            out.push_str(&format!("    {what}: {sql}\n"));
        }
    }
    if let Some(r) = plan
        .reverse
        .iter()
        .find(|r| r.origin == t.origin && r.target == t.source)
    {
        out.push_str("  SQL, PostgreSQL → MySQL:\n");
        for (what, sql) in crate::sink::mysql::statements::shapes(r) {
            out.push_str(&format!("    {what}: {sql}\n"));
        }
    }
    out
}

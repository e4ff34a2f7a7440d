//! `duplex dlq list|show|retry|drop`: the dead-letter tables on both sides, read, sent through
//! the mapping again, or dropped. The work is [`crate::dlq`]; this file turns the command line
//! into a [`Select`] and prints the outcome.

use std::process::ExitCode;

use super::table;
use crate::config::Config;
use crate::dlq::{self, Letter, Select, Which};
use crate::error::{Error, Result};

/// The filters every `dlq` action takes.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// `mysql_to_pg` / `pg_to_mysql` (or `forward` / `reverse`).
    pub direction: Option<String>,
    /// A source or target table, `schema.table` or the bare name.
    pub table: Option<String>,
}

/// What `duplex dlq` was asked to do.
#[derive(Debug, Clone)]
pub enum Action {
    List {
        filter: Filter,
        all: bool,
        limit: usize,
        json: bool,
    },
    Show {
        id: i64,
        filter: Filter,
        json: bool,
    },
    Retry {
        ids: Vec<i64>,
        filter: Filter,
    },
    Drop {
        ids: Vec<i64>,
        filter: Filter,
        all: bool,
        resolved: bool,
    },
}

/// Runs a `duplex dlq` action and prints its outcome.
pub async fn main(cfg: &Config, action: Action) -> ExitCode {
    match act(cfg, action).await {
        Ok(text) => {
            super::print(&text);
            ExitCode::SUCCESS
        }
        Err(e) => super::failed(&e),
    }
}

fn select(filter: &Filter) -> Result<Select> {
    Ok(Select {
        direction: filter
            .direction
            .as_deref()
            .map(dlq::parse_direction)
            .transpose()?,
        table: filter.table.clone(),
        ..Default::default()
    })
}

async fn act(cfg: &Config, action: Action) -> Result<String> {
    match action {
        Action::List {
            filter,
            all,
            limit,
            json,
        } => {
            let s = Select {
                which: if all { Which::All } else { Which::Unresolved },
                limit: Some(limit),
                ..select(&filter)?
            };
            let letters = dlq::list(cfg, &s).await?;
            if json {
                return Ok(serde_json::to_string_pretty(&letters).unwrap_or_default() + "\n");
            }
            Ok(render_letters(&letters))
        }
        Action::Show { id, filter, json } => {
            let s = Select {
                ids: vec![id],
                ..select(&filter)?
            };
            let letters = dlq::list(cfg, &s).await?;
            if json {
                return Ok(serde_json::to_string_pretty(&letters[0]).unwrap_or_default() + "\n");
            }
            Ok(render_letter(&letters[0]))
        }
        Action::Retry { ids, filter } => {
            let s = Select {
                ids,
                ..select(&filter)?
            };
            Ok(render_outcomes(&dlq::retry(cfg, &s).await?))
        }
        Action::Drop {
            ids,
            filter,
            all,
            resolved,
        } => {
            if !all && ids.is_empty() && filter.table.is_none() && !resolved {
                return Err(Error::config(
                    "say which letters to drop: ids, --table T, --resolved or --all",
                ));
            }
            let s = Select {
                ids,
                which: match (all, resolved) {
                    (true, _) => Which::All,
                    (false, true) => Which::Resolved,
                    (false, false) => Which::Unresolved,
                },
                ..select(&filter)?
            };
            let n = dlq::drop(cfg, &s).await?;
            Ok(format!("dropped {n} dead letter(s)\n"))
        }
    }
}

/// `duplex dlq retry`: a line per letter and the count.
fn render_outcomes(outcomes: &[dlq::Outcome]) -> String {
    let mut out = String::new();
    for o in outcomes {
        out.push_str(&format!(
            "{} {}/{} {}: {}\n",
            if o.applied { "applied" } else { "failed " },
            o.direction,
            o.id,
            o.table,
            o.detail
        ));
    }
    let ok = outcomes.iter().filter(|o| o.applied).count();
    out.push_str(&format!(
        "{ok} of {} letter(s) applied and resolved; {} still failing\n",
        outcomes.len(),
        outcomes.len() - ok
    ));
    out
}

/// `duplex dlq list` as a table.
pub fn render_letters(letters: &[Letter]) -> String {
    if letters.is_empty() {
        return "no dead letters\n".into();
    }
    let mut rows = vec![vec![
        "id".to_string(),
        "direction".into(),
        "table".into(),
        "op".into(),
        "attempts".into(),
        "last attempt".into(),
        "state".into(),
        "reason".into(),
    ]];
    for l in letters {
        let mut reason: String = l.reason.chars().take(100).collect();
        if l.reason.chars().count() > 100 {
            reason.push('…');
        }
        rows.push(vec![
            l.id.to_string(),
            l.direction.clone(),
            l.target_table.clone(),
            l.op.clone(),
            l.attempts.to_string(),
            l.last_attempt.chars().take(19).collect(),
            if l.resolved { "resolved" } else { "open" }.into(),
            reason.replace('\n', " "),
        ]);
    }
    table(&rows)
}

/// `duplex dlq show` in full.
pub fn render_letter(l: &Letter) -> String {
    format!(
        "id            {}\ndirection     {}\nsource table  {}\ntarget table  {}\nop            {}\nposition      {}\ntransaction   {}\nfirst attempt {}\nlast attempt  {}\nattempts      {}\nstate         {}\nreason        {}\nrow\n{}\n",
        l.id,
        l.direction,
        l.source_table,
        l.target_table,
        l.op,
        l.position,
        l.txn_id,
        l.first_attempt,
        l.last_attempt,
        l.attempts,
        if l.resolved { "resolved" } else { "open" },
        l.reason,
        serde_json::to_string_pretty(&l.row).unwrap_or_default()
    )
}

//! `duplex dlq list|show|retry|drop`: the dead-letter tables on both sides, read, sent through
//! the mapping again, or dropped. The work is [`crate::dlq`]; this file turns the command line
//! into a [`Select`] and prints the outcome.

use std::process::ExitCode;

use super::table;
use crate::config::Config;
use crate::dlq::{self, Letter, Select, Which};
use crate::error::{Error, Result};

/// The filters every `dlq` action takes.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Filter {
    /// Only this direction: mysql_to_pg (forward) or pg_to_mysql (reverse).
    #[arg(long)]
    pub direction: Option<String>,
    /// Only letters of this source or target table (`schema.table` or the bare name).
    #[arg(long)]
    pub table: Option<String>,
}

/// What `duplex dlq` was asked to do (the subcommands of `duplex dlq`).
#[derive(clap::Subcommand, Debug, Clone)]
pub enum Action {
    /// List the unresolved letters (newest first).
    List {
        #[command(flatten)]
        filter: Filter,
        /// Also the resolved ones.
        #[arg(long)]
        all: bool,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// One letter in full: the row, the source position, the reason, the attempts.
    Show {
        id: i64,
        #[command(flatten)]
        filter: Filter,
        #[arg(long)]
        json: bool,
    },
    /// Send letters through the current mapping again (after fixing the cause): each row is
    /// read again from the source by its key; applied ones are marked resolved.
    Retry {
        /// Letter ids; none: every unresolved letter that passes the filters.
        ids: Vec<i64>,
        #[command(flatten)]
        filter: Filter,
    },
    /// Delete letters for good.
    Drop {
        ids: Vec<i64>,
        #[command(flatten)]
        filter: Filter,
        /// Every letter that passes the filters, resolved or not.
        #[arg(long)]
        all: bool,
        /// Every resolved letter that passes the filters.
        #[arg(long)]
        resolved: bool,
        /// Do not ask before `--all` (needed when stdin is not a terminal).
        #[arg(long)]
        yes: bool,
    },
}

/// Runs a `duplex dlq` action and prints its outcome.
/// Exit status 1 when a retry left letters failing (scripts see it), as for an error.
pub async fn main(cfg: &Config, action: Action) -> ExitCode {
    match act(cfg, action).await {
        Ok((text, all_done)) => {
            super::print(&text);
            if all_done {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
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

/// The text to print, and whether everything asked for was done (a retry: every letter applied).
async fn act(cfg: &Config, action: Action) -> Result<(String, bool)> {
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
                return Ok((
                    serde_json::to_string_pretty(&letters).unwrap_or_default() + "\n",
                    true,
                ));
            }
            Ok((render_letters(&letters), true))
        }
        Action::Show { id, filter, json } => {
            let s = Select {
                ids: vec![id],
                ..select(&filter)?
            };
            let letters = dlq::list(cfg, &s).await?;
            if json {
                return Ok((
                    serde_json::to_string_pretty(&letters[0]).unwrap_or_default() + "\n",
                    true,
                ));
            }
            Ok((render_letter(&letters[0]), true))
        }
        Action::Retry { ids, filter } => {
            let s = Select {
                ids,
                ..select(&filter)?
            };
            let outcomes = dlq::retry(cfg, &s).await?;
            Ok((
                render_outcomes(&outcomes),
                outcomes.iter().all(|o| o.applied),
            ))
        }
        Action::Drop {
            ids,
            filter,
            all,
            resolved,
            yes,
        } => {
            if !all && ids.is_empty() && filter.table.is_none() && !resolved {
                return Err(Error::config(
                    "say which letters to drop: ids, --table T, --resolved or --all",
                ));
            }
            if all {
                super::confirm(
                    "dlq drop --all deletes every dead letter that passes the filters, unresolved ones (rows never applied) too",
                    yes,
                )?;
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
            Ok((format!("dropped {n} dead letter(s)\n"), true))
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

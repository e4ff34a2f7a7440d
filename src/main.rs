//! The `duplex` command line: a thin layer over [`duplex::app`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "duplex",
    version,
    about = "Change data capture between 1C-Bitrix MySQL/MariaDB and a CRM's PostgreSQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replicate until SIGTERM: the transaction in flight is finished and checkpointed, exit 0.
    Run {
        /// The configuration file.
        #[arg(short, long, default_value = "duplex.toml")]
        config: PathBuf,
    },
    /// Check the configuration, server settings, privileges and mappings; print what to fix.
    Check {
        #[arg(short, long, default_value = "duplex.toml")]
        config: PathBuf,
    },
    /// Create duplex's own tables and record the starting position; for tables also replicated
    /// from PostgreSQL, create the publication, the replication slot and the origin.
    Setup {
        #[arg(short, long, default_value = "duplex.toml")]
        config: PathBuf,
    },
    /// Copy the rows that already exist (tables never copied, or an interrupted copy, which
    /// resumes after its last chunk), then exit; `duplex run` does this itself on start.
    Snapshot {
        #[arg(short, long, default_value = "duplex.toml")]
        config: PathBuf,
        /// Copy this table again from its first row (source or target name), e.g. after a
        /// mapping change.
        #[arg(long)]
        table: Option<String>,
    },
    /// Per pipeline: position on each side, lag, state, last error, dead letters (asks the
    /// running process at the metrics listener, and reads both databases).
    Status {
        #[arg(short, long, default_value = "duplex.toml")]
        config: PathBuf,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// The dead-letter tables: rows that could not be applied, with why.
    Dlq {
        #[arg(short, long, default_value = "duplex.toml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Drop the replication slot, the publication and the origin (stop `duplex run` first):
    /// an abandoned slot makes PostgreSQL keep WAL forever.
    Teardown {
        #[arg(short, long, default_value = "duplex.toml")]
        config: PathBuf,
    },
}

#[derive(clap::Args, Clone)]
struct DlqFilter {
    /// Only this direction: mysql_to_pg (forward) or pg_to_mysql (reverse).
    #[arg(long)]
    direction: Option<String>,
    /// Only letters of this source or target table (`schema.table` or the bare name).
    #[arg(long)]
    table: Option<String>,
}

#[derive(Subcommand)]
enum DlqAction {
    /// List the unresolved letters (newest first).
    List {
        #[command(flatten)]
        filter: DlqFilter,
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
        filter: DlqFilter,
        #[arg(long)]
        json: bool,
    },
    /// Send letters through the current mapping again (after fixing the cause): each row is
    /// read again from the source by its key; applied ones are marked resolved.
    Retry {
        /// Letter ids; none: every unresolved letter that passes the filters.
        ids: Vec<i64>,
        #[command(flatten)]
        filter: DlqFilter,
    },
    /// Delete letters for good.
    Drop {
        ids: Vec<i64>,
        #[command(flatten)]
        filter: DlqFilter,
        /// Every letter that passes the filters, resolved or not.
        #[arg(long)]
        all: bool,
        /// Every resolved letter that passes the filters.
        #[arg(long)]
        resolved: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let path = match &cli.command {
            Command::Run { config }
            | Command::Check { config }
            | Command::Setup { config }
            | Command::Snapshot { config, .. }
            | Command::Status { config, .. }
            | Command::Dlq { config, .. }
            | Command::Teardown { config } => config.clone(),
        };
        let cfg = match duplex::config::Config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        match cli.command {
            Command::Run { .. } => match duplex::app::run(&cfg).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "duplex stopped");
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            },
            Command::Check { .. } => {
                let lines = duplex::app::check(&cfg).await;
                let mut out = String::new();
                let failed = lines.iter().filter(|l| !l.ok).count();
                for l in &lines {
                    if l.ok {
                        out.push_str(&format!("ok    {}\n", l.what));
                    } else {
                        out.push_str(&format!("FAIL  {}\n      fix: {}\n", l.what, l.fix));
                    }
                }
                if failed == 0 {
                    out.push_str(&format!("all {} checks passed\n", lines.len()));
                } else {
                    out.push_str(&format!("{failed} of {} checks failed\n", lines.len()));
                }
                // A closed pipe (`duplex check | head`) is not an error worth a panic.
                let _ = std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes());
                if failed == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Command::Snapshot { table, .. } => {
                let request = duplex::snapshot::Request { table };
                match duplex::app::snapshot(&cfg, &request).await {
                    Ok(reports) => {
                        if reports.is_empty() {
                            println!("nothing to copy: every mapped table has been copied (use --table to copy one again)");
                        }
                        for r in &reports {
                            println!("{r}");
                        }
                        if reports.iter().all(|r| r.finished) {
                            ExitCode::SUCCESS
                        } else {
                            ExitCode::FAILURE
                        }
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            Command::Status { json, .. } => match duplex::app::status(&cfg).await {
                Ok(report) => {
                    let text = if json {
                        serde_json::to_string_pretty(&report).unwrap_or_default() + "\n"
                    } else {
                        duplex::app::render_status(&report)
                    };
                    let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
                    // Exit 0 only when a process answers and is ready.
                    if report.process.as_ref().is_some_and(|p| p.ready) {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            },
            Command::Dlq { action, .. } => match dlq(&cfg, action).await {
                Ok(text) => {
                    let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            },
            Command::Teardown { .. } => match duplex::app::teardown(&cfg).await {
                Ok(done) => {
                    for line in done {
                        println!("{line}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            },
            Command::Setup { .. } => match duplex::app::setup(&cfg).await {
                Ok(pos) => {
                    println!(
                        "duplex tables ready in schema {}; pipeline {} starts at {}",
                        cfg.postgres.duplex_schema,
                        cfg.pipeline,
                        pos.map(|p| p.to_string())
                            .unwrap_or_else(|| "the current binlog end".into())
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            },
        }
    })
}

fn select(filter: &DlqFilter) -> duplex::Result<duplex::dlq::Select> {
    Ok(duplex::dlq::Select {
        direction: filter
            .direction
            .as_deref()
            .map(duplex::dlq::parse_direction)
            .transpose()?,
        table: filter.table.clone(),
        ..Default::default()
    })
}

async fn dlq(cfg: &duplex::config::Config, action: DlqAction) -> duplex::Result<String> {
    use duplex::dlq;
    match action {
        DlqAction::List {
            filter,
            all,
            limit,
            json,
        } => {
            let s = dlq::Select {
                which: if all {
                    dlq::Which::All
                } else {
                    dlq::Which::Unresolved
                },
                limit: Some(limit),
                ..select(&filter)?
            };
            let letters = dlq::list(cfg, &s).await?;
            if json {
                return Ok(serde_json::to_string_pretty(&letters).unwrap_or_default() + "\n");
            }
            Ok(duplex::app::render_letters(&letters))
        }
        DlqAction::Show { id, filter, json } => {
            let s = dlq::Select {
                ids: vec![id],
                ..select(&filter)?
            };
            let letters = dlq::list(cfg, &s).await?;
            if json {
                return Ok(serde_json::to_string_pretty(&letters[0]).unwrap_or_default() + "\n");
            }
            Ok(duplex::app::render_letter(&letters[0]))
        }
        DlqAction::Retry { ids, filter } => {
            let s = dlq::Select {
                ids,
                ..select(&filter)?
            };
            let outcomes = dlq::retry(cfg, &s).await?;
            let mut out = String::new();
            for o in &outcomes {
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
            Ok(out)
        }
        DlqAction::Drop {
            ids,
            filter,
            all,
            resolved,
        } => {
            if !all && ids.is_empty() && filter.table.is_none() && !resolved {
                return Err(duplex::Error::config(
                    "say which letters to drop: ids, --table T, --resolved or --all",
                ));
            }
            let s = dlq::Select {
                ids,
                which: match (all, resolved) {
                    (true, _) => dlq::Which::All,
                    (false, true) => dlq::Which::Resolved,
                    (false, false) => dlq::Which::Unresolved,
                },
                ..select(&filter)?
            };
            let n = dlq::drop(cfg, &s).await?;
            Ok(format!("dropped {n} dead letter(s)\n"))
        }
    }
}

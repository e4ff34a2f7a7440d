//! The `duplex` command line: parses the arguments, sets up logging and the runtime, loads the
//! configuration and hands over to [`duplex::commands`].

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
        let cfg = match duplex::config::Config::load(cli.command.config()) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        use duplex::commands;
        match cli.command {
            Command::Run { .. } => commands::run::main(&cfg).await,
            Command::Check { .. } => commands::check::main(&cfg).await,
            Command::Setup { .. } => commands::setup::main(&cfg).await,
            Command::Snapshot { table, .. } => commands::snapshot::main(&cfg, table).await,
            Command::Status { json, .. } => commands::status::main(&cfg, json).await,
            Command::Dlq { action, .. } => commands::dlq::main(&cfg, action.into()).await,
            Command::Teardown { .. } => commands::teardown::main(&cfg).await,
        }
    })
}

impl Command {
    fn config(&self) -> &PathBuf {
        match self {
            Command::Run { config }
            | Command::Check { config }
            | Command::Setup { config }
            | Command::Snapshot { config, .. }
            | Command::Status { config, .. }
            | Command::Dlq { config, .. }
            | Command::Teardown { config } => config,
        }
    }
}

impl From<DlqFilter> for duplex::commands::dlq::Filter {
    fn from(f: DlqFilter) -> Self {
        duplex::commands::dlq::Filter {
            direction: f.direction,
            table: f.table,
        }
    }
}

impl From<DlqAction> for duplex::commands::dlq::Action {
    fn from(a: DlqAction) -> Self {
        use duplex::commands::dlq::Action;
        match a {
            DlqAction::List {
                filter,
                all,
                limit,
                json,
            } => Action::List {
                filter: filter.into(),
                all,
                limit,
                json,
            },
            DlqAction::Show { id, filter, json } => Action::Show {
                id,
                filter: filter.into(),
                json,
            },
            DlqAction::Retry { ids, filter } => Action::Retry {
                ids,
                filter: filter.into(),
            },
            DlqAction::Drop {
                ids,
                filter,
                all,
                resolved,
            } => Action::Drop {
                ids,
                filter: filter.into(),
                all,
                resolved,
            },
        }
    }
}

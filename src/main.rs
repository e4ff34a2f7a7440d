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
        /// Start the pipeline over from the servers' current positions: after a binlog that no
        /// longer holds the checkpoint, or a PostgreSQL restored from a backup. Drops the slot,
        /// forgets both checkpoints and turns every copy into a pending resync, which the next
        /// `duplex run` performs (rows the source no longer has are removed).
        #[arg(long)]
        start_over: bool,
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
        action: duplex::commands::dlq::Action,
    },
    /// Compare both sides through the mapping, column by column, while `duplex run` streams:
    /// a difference is reported only after it survived a re-check past the stream's
    /// position. Exit 0 when everything is equal, 1 when something differs, 2 on an error.
    Verify {
        #[arg(short, long, default_value = "duplex.toml")]
        config: PathBuf,
        #[command(flatten)]
        opts: VerifyOpts,
    },
    /// Verify, send the rows that differ again through the sink (rows the source does not have
    /// are deleted or cleared), log each repair in duplex's `repair_log`, and verify again.
    Repair {
        #[arg(short, long, default_value = "duplex.toml")]
        config: PathBuf,
        #[command(flatten)]
        opts: VerifyOpts,
        /// Only this key (the target key's values, `a, b` for a composite key); repeatable.
        #[arg(long = "key")]
        keys: Vec<String>,
        /// Print what would be repaired, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Drop the replication slot, the publication and the origin (stop `duplex run` first):
    /// an abandoned slot makes PostgreSQL keep WAL forever.
    Teardown {
        #[arg(short, long, default_value = "duplex.toml")]
        config: PathBuf,
    },
}

#[derive(clap::Args)]
struct VerifyOpts {
    /// Only this table (source or target name); repeatable.
    #[arg(long = "table")]
    tables: Vec<String>,
    /// Print JSON instead of the report.
    #[arg(long)]
    json: bool,
    /// Read at most this many source rows per second (spare the shop).
    #[arg(long)]
    max_rows_per_second: Option<u64>,
    /// Differences listed per table (all are counted).
    #[arg(long, default_value_t = 100)]
    show: usize,
    /// How long a re-check waits for the stream to pass a position, in seconds.
    #[arg(long, default_value_t = 60)]
    settle_timeout: u64,
}

impl VerifyOpts {
    fn args(self) -> duplex::commands::verify::Args {
        duplex::commands::verify::Args {
            tables: self.tables,
            json: self.json,
            max_rows_per_second: self.max_rows_per_second,
            show: self.show,
            settle_timeout_s: self.settle_timeout,
            keys: Vec::new(),
            dry_run: false,
        }
    }
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
            Command::Setup { start_over, .. } => commands::setup::main(&cfg, start_over).await,
            Command::Snapshot { table, .. } => commands::snapshot::main(&cfg, table).await,
            Command::Status { json, .. } => commands::status::main(&cfg, json).await,
            Command::Dlq { action, .. } => commands::dlq::main(&cfg, action).await,
            Command::Teardown { .. } => commands::teardown::main(&cfg).await,
            Command::Verify { opts, .. } => commands::verify::main(&cfg, opts.args()).await,
            Command::Repair {
                opts,
                keys,
                dry_run,
                ..
            } => {
                let mut args = opts.args();
                args.keys = keys;
                args.dry_run = dry_run;
                commands::verify::repair_main(&cfg, args).await
            }
        }
    })
}

impl Command {
    fn config(&self) -> &PathBuf {
        match self {
            Command::Run { config }
            | Command::Check { config }
            | Command::Setup { config, .. }
            | Command::Snapshot { config, .. }
            | Command::Status { config, .. }
            | Command::Dlq { config, .. }
            | Command::Verify { config, .. }
            | Command::Repair { config, .. }
            | Command::Teardown { config } => config,
        }
    }
}

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
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("DUPLEX_BUILD_COMMIT"), ")"),
    about = "Change data capture between 1C-Bitrix MySQL/MariaDB and a CRM's PostgreSQL"
)]
struct Cli {
    /// The configuration file.
    #[arg(
        short,
        long,
        global = true,
        env = "DUPLEX_CONFIG",
        default_value = "/etc/duplex/duplex.toml"
    )]
    config: PathBuf,
    /// Log lines as text (colour only on a terminal) or as JSON objects, one per line.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "DUPLEX_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    /// The log level (`error`, `warn`, `info`, `debug`, `trace`), or a filter such as
    /// `info,duplex::sink=debug`; `RUST_LOG`, when set, wins.
    #[arg(long, global = true, env = "DUPLEX_LOG_LEVEL", default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Replicate until SIGTERM: the transaction in flight is finished and checkpointed, exit 0.
    Run,
    /// Check the configuration, server settings, privileges and mappings; print what to fix.
    Check {
        /// Without any server: the configuration and the whole mapping set (map names,
        /// transforms, look-ups, pivots, keys, directions); tables, columns and types need the
        /// servers.
        #[arg(long)]
        offline: bool,
    },
    /// Create duplex's own tables and record the starting position; for tables also replicated
    /// from PostgreSQL, create the publication, the replication slot and the origin.
    Setup {
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
        /// Copy this table again from its first row (source or target name), e.g. after a
        /// mapping change.
        #[arg(long)]
        table: Option<String>,
    },
    /// Per pipeline: position on each side, lag, state, last error, dead letters (asks the
    /// running process at the metrics listener, and reads both databases).
    Status {
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// The dead-letter tables: rows that could not be applied, with why.
    Dlq {
        #[command(subcommand)]
        action: duplex::commands::dlq::Action,
    },
    /// Compare both sides through the mapping, column by column, while `duplex run` streams:
    /// a difference is reported only after it survived a re-check past the stream's
    /// position. Exit 0 when everything is equal, 1 when something differs, 2 on an error.
    Verify {
        #[command(flatten)]
        opts: VerifyOpts,
    },
    /// Verify, send the rows that differ again through the sink (rows the source does not have
    /// are deleted or cleared), log each repair in duplex's `repair_log`, and verify again.
    Repair {
        #[command(flatten)]
        opts: VerifyOpts,
        /// Only this key (the target key's values, `a, b` for a composite key); repeatable.
        #[arg(long = "key")]
        keys: Vec<String>,
        /// Print what would be repaired, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show the mapping set as compiled against both live schemas — per table the columns,
    /// types, transforms, maps, directions, conflict policy, filter, pivot and look-ups — and
    /// the SQL statements and publication duplex will use.
    Plan {
        /// Only this table (source or target name).
        #[arg(long)]
        table: Option<String>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to standard
    /// output, e.g. `duplex completions bash > /etc/bash_completion.d/duplex`.
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff) to standard output, e.g.
    /// `duplex man > /usr/local/share/man/man1/duplex.1`.
    Man,
    /// Drop the replication slot, the publication and the origin (stop `duplex run` first):
    /// an abandoned slot makes PostgreSQL keep WAL forever.
    Teardown {
        /// Do not ask (needed when stdin is not a terminal).
        #[arg(long)]
        yes: bool,
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
    let cli = Cli::parse();
    // Generated from this very definition; they need no configuration.
    match &cli.command {
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "duplex",
                &mut std::io::stdout(),
            );
            return ExitCode::SUCCESS;
        }
        Command::Man => {
            use clap::CommandFactory;
            return match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    init_logging(cli.log_format, &cli.log_level);
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
        let cfg = match duplex::config::Config::load(&cli.config) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                // verify's scripts tell "differs" (1) from "could not tell" (2).
                if matches!(cli.command, Command::Verify { .. } | Command::Repair { .. }) {
                    return ExitCode::from(2);
                }
                return duplex::commands::exit_code(&e);
            }
        };
        use duplex::commands;
        match cli.command {
            Command::Run => commands::run::main(&cfg).await,
            Command::Check { offline: false } => commands::check::main(&cfg).await,
            Command::Check { offline: true } => commands::check::offline(&cfg),
            Command::Setup { start_over } => commands::setup::main(&cfg, start_over).await,
            Command::Snapshot { table } => commands::snapshot::main(&cfg, table).await,
            Command::Status { json } => commands::status::main(&cfg, json).await,
            Command::Dlq { action } => commands::dlq::main(&cfg, action).await,
            Command::Teardown { yes } => commands::teardown::main(&cfg, yes).await,
            Command::Plan { table } => commands::plan::main(&cfg, table).await,
            Command::Completions { .. } | Command::Man => unreachable!("handled above"),
            Command::Verify { opts } => commands::verify::main(&cfg, opts.args()).await,
            Command::Repair {
                opts,
                keys,
                dry_run,
            } => {
                let mut args = opts.args();
                args.keys = keys;
                args.dry_run = dry_run;
                commands::verify::repair_main(&cfg, args).await
            }
        }
    })
}

/// Logs to stderr: text (coloured only on a terminal) or one JSON object per line; `RUST_LOG`
/// wins over `level`.
fn init_logging(format: LogFormat, level: &str) {
    use std::io::IsTerminal;
    // A bare level also quiets the PostgreSQL client's NOTICEs (`relation … already exists,
    // skipping` on every re-run `setup`) to debug: shown with --log-level debug, not at info.
    let directives = match level {
        "debug" | "trace" => format!("{level},tokio_postgres={level}"),
        l if !l.contains([',', '=']) => format!("{l},tokio_postgres=warn"),
        l => l.to_string(),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&directives))
        .unwrap_or_else(|e| {
            eprintln!("warning: --log-level {level:?} is not a level or filter ({e}); using info");
            tracing_subscriber::EnvFilter::new("info")
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(duplex::telemetry::terminal::log_writer);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_current_span(false).init(),
    }
}

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
    /// Drop the replication slot, the publication and the origin (stop `duplex run` first):
    /// an abandoned slot makes PostgreSQL keep WAL forever.
    Teardown {
        #[arg(short, long, default_value = "duplex.toml")]
        config: PathBuf,
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

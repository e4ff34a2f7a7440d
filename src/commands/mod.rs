//! The commands of the `duplex` binary, one thin file each: they load the configuration's plan,
//! call the pipeline, the snapshot, the dead-letter tools or the state and telemetry modules,
//! and print what happened. No replication logic lives here.
//!
//! Layering (each layer imports only from the layers below it):
//! `main` → [`commands`](self) → `pipeline`, `snapshot`, `dlq`, `heartbeat` → `source`, `sink`,
//! `mapping`, `telemetry`, `origin` → `state`, `catalog` → `connect` → `model`, `config`,
//! `error`, `tls`.

pub mod check;
pub mod dlq;
mod lock;
pub mod run;
pub mod setup;
mod signals;
pub mod snapshot;
pub mod status;
pub mod teardown;
pub mod verify;

use std::process::ExitCode;

use crate::error::Error;

/// Writes a command's output to standard output; a closed pipe (`duplex check | head`) is not an
/// error worth a panic.
fn print(text: &str) {
    let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
}

/// Reports a command's error on standard error: the exit code of a failed command.
fn failed(e: &Error) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::FAILURE
}

/// Lines of cells as a left-aligned table.
fn table(rows: &[Vec<String>]) -> String {
    crate::verify::report::table(rows)
}

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
pub mod grants;
mod lock;
pub mod plan;
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
    exit_code(e)
}

/// The exit status of an error that starting again cannot mend (the configuration, a mapping,
/// a missing privilege or server setting): `EX_CONFIG` from sysexits.h. The systemd unit names
/// it in `RestartPreventExitStatus`, so such a failure is not restarted every few seconds.
pub const EXIT_CONFIG: u8 = 78;

/// The exit status for an error: [`EXIT_CONFIG`] for what needs a person, 1 otherwise.
pub fn exit_code(e: &Error) -> ExitCode {
    if needs_a_person(e) {
        ExitCode::from(EXIT_CONFIG)
    } else {
        ExitCode::FAILURE
    }
}

/// Whether an error is one only a person can mend: configuration, mappings, server settings, or
/// a privilege the server refused.
pub fn needs_a_person(e: &Error) -> bool {
    use crate::error::ErrorKind as K;
    matches!(e.kind(), K::Config | K::Mapping | K::ServerSetting) || e.is_privilege()
}

/// Asks on a terminal before something that cannot be undone (`what` says what it does); with
/// no terminal to ask on, only `--yes` goes on.
fn confirm(what: &str, yes: bool) -> crate::error::Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Error::config(format!(
            "{what}; stdin is not a terminal to ask on: pass --yes to go on"
        )));
    }
    eprint!("{what}.\nType yes to go on: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    if line.trim() == "yes" {
        Ok(())
    } else {
        Err(Error::config("not confirmed; nothing was changed"))
    }
}

/// Lines of cells as a left-aligned table.
fn table(rows: &[Vec<String>]) -> String {
    crate::verify::report::table(rows)
}

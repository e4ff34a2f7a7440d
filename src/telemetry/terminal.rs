//! The operator's terminal: progress bars (one per table being copied, stacked) and the log
//! writer that prints each log line above them instead of through them.

use std::io::Write;
use std::sync::OnceLock;

/// Every progress bar of the process. On stderr when it is a terminal; hidden otherwise
/// (indicatif checks), so a log file or a pipe never gets redraw codes.
pub fn bars() -> &'static indicatif::MultiProgress {
    static BARS: OnceLock<indicatif::MultiProgress> = OnceLock::new();
    BARS.get_or_init(indicatif::MultiProgress::new)
}

/// The log writer: stderr, with the bars cleared while a line is written and redrawn below it.
/// `tracing_subscriber` formats an event into one buffer and writes it with one call.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        bars().suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// For `tracing_subscriber::fmt().with_writer(…)`.
pub fn log_writer() -> LogWriter {
    LogWriter
}

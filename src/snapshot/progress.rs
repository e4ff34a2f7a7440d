//! Progress of a table copy for the operator: a bar redrawn in place on a terminal (rows,
//! rows/s, ETA; one line per table copied at once, log lines printed above them), or a log line
//! every few seconds otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::telemetry;

const LOG_EVERY: Duration = Duration::from_secs(10);

/// direction and table, filled share, rows of the estimate, rate, time left.
const TEMPLATE: &str =
    "{prefix} [{bar:30}] {human_pos:>11} / ~{human_len:<11} {rate:>9} rows/s  ETA {eta}";

pub struct Bar {
    direction: &'static str,
    table: String,
    /// The source's row estimate (0: unknown).
    estimate: u64,
    /// Rows done before this run (a resumed copy).
    before: u64,
    done: u64,
    started: Instant,
    logged: Instant,
    /// The terminal's bar; `None` when stderr is not a terminal (log lines instead).
    bar: Option<ProgressBar>,
}

impl Bar {
    pub fn new(direction: &'static str, table: &str, estimate: u64, before: i64) -> Bar {
        metrics::gauge!(telemetry::SNAPSHOT_ROWS_ESTIMATED, "direction" => direction, "table" => table.to_string())
            .set(estimate as f64);
        let before = before.max(0) as u64;
        let bar = if std::io::stderr().is_terminal() {
            let bar = telemetry::terminal::bars().add(terminal_bar(direction, table, estimate));
            bar.set_position(before);
            // The rate and ETA count this run's rows only.
            bar.reset_eta();
            Some(bar)
        } else {
            tracing::info!(
                direction,
                table,
                estimated_rows = estimate,
                already_copied = before,
                "copying"
            );
            None
        };
        Bar {
            direction,
            table: table.to_string(),
            estimate,
            before,
            done: 0,
            started: Instant::now(),
            logged: Instant::now(),
            bar,
        }
    }

    pub fn advance(&mut self, rows: u64) {
        self.done += rows;
        match &self.bar {
            Some(bar) => {
                bar.inc(rows);
                grow(bar);
            }
            None if self.logged.elapsed() >= LOG_EVERY => {
                self.logged = Instant::now();
                let total = self.before + self.done;
                let rate = self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
                let estimate = self.estimate.max(total);
                let eta = if rate > 0.0 && estimate > total {
                    format!("{:.0} s", (estimate - total) as f64 / rate)
                } else {
                    "-".into()
                };
                tracing::info!(direction = self.direction, table = %self.table, rows = total, estimated_rows = estimate, rows_per_s = rate as u64, eta = %eta, "copying");
            }
            None => {}
        }
    }

    /// The copy is done: the bar stays on the terminal, full.
    pub fn finish(&mut self) {
        if let Some(bar) = &self.bar {
            let done = bar.position();
            bar.set_length(done);
            bar.finish();
        }
    }
}

/// A bar of `estimate` rows labelled with the direction and the table.
fn terminal_bar(direction: &str, table: &str, estimate: u64) -> ProgressBar {
    let style = ProgressStyle::with_template(TEMPLATE)
        .expect("the progress template is valid")
        .with_key(
            "rate",
            |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0}", state.per_sec());
            },
        )
        .progress_chars("## ");
    ProgressBar::new(estimate)
        .with_style(style)
        .with_prefix(format!("{direction} {table:<28}"))
}

/// The estimate can be low: the bar's length follows the rows copied, never past 100 %.
fn grow(bar: &ProgressBar) {
    let done = bar.position();
    if bar.length().is_some_and(|len| done > len) {
        bar.set_length(done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_fills_with_the_share_copied_and_follows_a_low_estimate() {
        let bar = terminal_bar("mysql_to_pg", "shop.b_sale_order", 1000);
        bar.set_position(500);
        assert_eq!(bar.length(), Some(1000));
        bar.inc(1500);
        grow(&bar);
        assert_eq!((bar.position(), bar.length()), (2000, Some(2000)));
        assert!(bar.prefix().starts_with("mysql_to_pg shop.b_sale_order "));
    }
}

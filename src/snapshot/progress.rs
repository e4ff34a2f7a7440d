//! Progress of a table copy for the operator: a bar redrawn in place on a terminal (rows,
//! rows/s, ETA), or a log line every few seconds otherwise.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::telemetry;

const REDRAW_EVERY: Duration = Duration::from_millis(200);
const LOG_EVERY: Duration = Duration::from_secs(10);
const WIDTH: usize = 30;

pub struct Bar {
    direction: &'static str,
    table: String,
    /// The source's row estimate (0: unknown).
    estimate: u64,
    /// Rows done before this run (a resumed copy).
    before: u64,
    done: u64,
    started: Instant,
    shown: Instant,
    terminal: bool,
}

impl Bar {
    pub fn new(direction: &'static str, table: &str, estimate: u64, before: i64) -> Bar {
        metrics::gauge!(telemetry::SNAPSHOT_ROWS_ESTIMATED, "direction" => direction, "table" => table.to_string())
            .set(estimate as f64);
        let terminal = std::io::stderr().is_terminal();
        if !terminal {
            tracing::info!(
                direction,
                table,
                estimated_rows = estimate,
                already_copied = before,
                "copying"
            );
        }
        Bar {
            direction,
            table: table.to_string(),
            estimate,
            before: before.max(0) as u64,
            done: 0,
            started: Instant::now(),
            shown: Instant::now(),
            terminal,
        }
    }

    pub fn advance(&mut self, rows: u64) {
        self.done += rows;
        let every = if self.terminal {
            REDRAW_EVERY
        } else {
            LOG_EVERY
        };
        if self.shown.elapsed() >= every {
            self.shown = Instant::now();
            self.show(false);
        }
    }

    pub fn finish(&mut self) {
        self.show(true);
    }

    fn show(&self, last: bool) {
        let total = self.before + self.done;
        let rate = self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        // The estimate can be low; never show more than 100 %.
        let estimate = self.estimate.max(total);
        let eta = if rate > 0.0 && estimate > total {
            format!("{:.0} s", (estimate - total) as f64 / rate)
        } else {
            "-".into()
        };
        if self.terminal {
            let mut err = std::io::stderr().lock();
            let _ = write!(
                err,
                "\r{}",
                bar_line(self.direction, &self.table, total, estimate, rate, &eta)
            );
            if last {
                let _ = writeln!(err);
            }
        } else if !last {
            tracing::info!(direction = self.direction, table = %self.table, rows = total, estimated_rows = estimate, rows_per_s = rate as u64, eta = %eta, "copying");
        }
    }
}

/// One redraw of the bar: direction, table, filled share, rows of the estimate, rate, ETA.
fn bar_line(
    direction: &str,
    table: &str,
    total: u64,
    estimate: u64,
    rate: f64,
    eta: &str,
) -> String {
    let frac = if estimate == 0 {
        1.0
    } else {
        total as f64 / estimate as f64
    };
    let filled = ((frac * WIDTH as f64) as usize).min(WIDTH);
    format!(
        "{direction} {table:<28} [{}{}] {total:>10} / ~{estimate:<10} {rate:>9.0} rows/s  ETA {eta:<8}",
        "#".repeat(filled),
        " ".repeat(WIDTH - filled),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_fills_with_the_share_copied() {
        let line = bar_line("mysql_to_pg", "shop.b_sale_order", 500, 1000, 250.0, "2 s");
        assert!(
            line.contains(&format!("[{}{}]", "#".repeat(15), " ".repeat(15))),
            "{line}"
        );
        assert!(line.contains("500 / ~1000"), "{line}");
        assert!(line.contains("250 rows/s  ETA 2 s"), "{line}");
        let done = bar_line("mysql_to_pg", "t", 7, 0, 1.0, "-");
        assert!(done.contains(&format!("[{}]", "#".repeat(WIDTH))), "{done}");
    }
}

//! What a long run shows on stderr: a bar on a terminal (rows done, rows/s, time left), plain
//! lines every [`LOG_EVERY`] otherwise, and the summary at the end.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The period of the plain progress lines when stderr is not a terminal.
pub const LOG_EVERY: Duration = Duration::from_secs(10);
/// Bar positions: the fraction of the input done, in thousandths.
const SCALE: u64 = 1000;

pub struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
    last_line: Instant,
    pub rows: u64,
    pub batches: u64,
    pub skipped: u64,
}

impl Progress {
    pub fn new() -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(SCALE), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {percent:>3}% {msg} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        let now = Instant::now();
        Progress {
            bar,
            started: now,
            last_line: now,
            rows: 0,
            batches: 0,
            skipped: 0,
        }
    }

    pub fn rate(&self) -> f64 {
        let secs = self.started.elapsed().as_secs_f64();
        if secs > 0.0 {
            self.rows as f64 / secs
        } else {
            0.0
        }
    }

    /// After a batch is written; `fraction`: of the input read, when the reader knows it.
    pub fn update(&mut self, fraction: Option<f64>) {
        let rate = self.rate();
        if let Some(bar) = &self.bar {
            if let Some(f) = fraction {
                bar.set_position((f.clamp(0.0, 1.0) * SCALE as f64) as u64);
            }
            bar.set_message(format!("{} rows, {rate:.0} rows/s", self.rows));
        } else if self.last_line.elapsed() >= LOG_EVERY {
            self.last_line = Instant::now();
            let left = fraction
                .filter(|f| *f > 0.0)
                .map(|f| {
                    let secs = self.started.elapsed().as_secs_f64() * (1.0 - f) / f;
                    format!(", {:.0}% read, about {secs:.0} s left", f * 100.0)
                })
                .unwrap_or_default();
            eprintln!("predict: {} rows done, {rate:.0} rows/s{left}", self.rows);
        }
    }

    /// Hides the bar before other lines are printed.
    pub fn suspend(&self, f: impl FnOnce()) {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    /// Ends the bar and prints the summary.
    pub fn finish(&self, how: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{} rows, {:.0} rows/s", self.rows, self.rate()));
            bar.abandon();
        }
        let skipped = if self.skipped > 0 {
            format!(", {} bad rows skipped", self.skipped)
        } else {
            String::new()
        };
        eprintln!(
            "predict: {how}: {} rows in {} batches, {:.2} s, {:.0} rows/s{skipped}",
            self.rows,
            self.batches,
            self.started.elapsed().as_secs_f64(),
            self.rate()
        );
    }
}

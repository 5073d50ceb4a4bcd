//! The progress bar over a run's scenarios and systems, drawn only when standard output is a terminal.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::memory::MIB;
use crate::report::SystemResult;

/// How often the spinner and elapsed time are redrawn.
const TICK: Duration = Duration::from_millis(200);
const TEMPLATE: &str = "{spinner} [{elapsed_precise}] [{bar:30}] {pos}/{len} runs  {msg}";

/// Progress over every (scenario, system) run. Without a terminal on
/// standard output it draws nothing, and its notes go to standard error as
/// plain lines instead.
pub struct Bar {
    bar: ProgressBar,
    visible: bool,
}

impl Bar {
    pub fn new(runs: u64) -> Self {
        let visible = std::io::stdout().is_terminal();
        let target = if visible {
            ProgressDrawTarget::stdout()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(runs), target);
        if visible {
            // The template is a constant, so it always parses.
            if let Ok(style) = ProgressStyle::with_template(TEMPLATE) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.enable_steady_tick(TICK);
        }
        Self { bar, visible }
    }

    /// A run begins.
    pub fn start(&self, scenario: &str, system: &str) {
        self.bar.set_message(format!("{scenario} against {system}"));
        if !self.visible {
            self.note(&format!("hermod-bench: {scenario} against {system}"));
        }
    }

    /// A run ended: one line of what it measured, and a step of the bar.
    pub fn finish_one(&self, scenario: &str, system: &str, result: &SystemResult) {
        let summary = match result {
            SystemResult::Ran(m) => {
                let p99 = m.p99_us.map_or(String::new(), |p| format!(", p99 {p} us"));
                let rss = m.memory.as_ref().map_or(String::new(), |memory| {
                    format!(", peak RSS {:.1} MiB", memory.rss_peak_bytes as f64 / MIB as f64)
                });
                let failover = m.failover.as_ref().map_or(String::new(), |times| {
                    format!(
                        ", failover median {:.0} ms, worst {} ms",
                        times.failover_median_ms, times.failover_worst_ms
                    )
                });
                format!("{:.0} msg/s{p99}{rss}{failover}", m.msgs_per_s)
            }
            SystemResult::Failed { error } => format!("FAILED: {error}"),
        };
        self.note(&format!("hermod-bench: {scenario} {system}: {summary}"));
        self.bar.inc(1);
    }

    /// A line above the bar, or on standard error when there is no bar.
    fn note(&self, line: &str) {
        if self.visible {
            self.bar.println(line);
        } else {
            eprintln!("{line}");
        }
    }

    /// Removes the bar before the table is printed.
    pub fn clear(&self) {
        self.bar.finish_and_clear();
    }
}

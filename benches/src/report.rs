//! What a run measured, the human table and the JSON report with the machine it ran on.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::SystemTime;

use serde::Serialize;

use crate::cli::{Peer, Settings};
use crate::measure::{Percentiles, Recorder, Window};
use crate::scenario::{Primary, Produced, Spec};

/// Everything one system's run of one scenario recorded, before it is summarised.
#[derive(Debug)]
pub struct Outcome {
    window: Window,
    pub sent: u64,
    pub sent_in_window: u64,
    pub acks: Option<Recorder>,
    pub deliveries: Option<Recorder>,
    /// Whether every expected delivery arrived before the drain ended.
    pub drained: bool,
    /// Expected deliveries that never arrived.
    pub lost: u64,
    pub server_cpu_percent: Option<f64>,
    pub bench_cpu_percent: Option<f64>,
}

impl Outcome {
    pub fn new(window: Window) -> Self {
        Self {
            window,
            sent: 0,
            sent_in_window: 0,
            acks: None,
            deliveries: None,
            drained: true,
            lost: 0,
            server_cpu_percent: None,
            bench_cpu_percent: None,
        }
    }

    pub fn add_produced(&mut self, produced: Produced) {
        self.sent += produced.sent;
        self.sent_in_window += produced.sent_in_window;
        if let Some(acks) = produced.acks {
            merge_into(&mut self.acks, &acks);
        }
    }

    pub fn add_deliveries(&mut self, recorder: &Recorder) {
        merge_into(&mut self.deliveries, recorder);
    }

    /// Messages the system took: those acked, or those sent where there are no acks.
    pub fn published(&self) -> u64 {
        self.acks.as_ref().map_or(self.sent, |acks| acks.total)
    }

    /// The summary, with `primary` as the latency of p50/p99 and the
    /// throughput of `msgs_per_s` (acks for publish scenarios, deliveries otherwise).
    pub fn measured(self, primary: Primary) -> Measured {
        let seconds = self.window.seconds();
        let publish_rate = match &self.acks {
            Some(acks) => acks.rate(),
            None => self.sent_in_window as f64 / seconds,
        };
        let delivery_rate = self.deliveries.as_ref().map(Recorder::rate);
        let publish_to_ack = self.acks.as_ref().and_then(Recorder::percentiles);
        let publish_to_delivery = self.deliveries.as_ref().and_then(Recorder::percentiles);
        let (msgs_per_s, latency, label) = match primary {
            Primary::PublishToAck => (publish_rate, publish_to_ack, "publish_to_ack"),
            Primary::PublishToDelivery => (
                delivery_rate.unwrap_or(0.0),
                publish_to_delivery,
                "publish_to_delivery",
            ),
        };
        let mut errors = 0;
        let mut first_error = None;
        for recorder in [&self.acks, &self.deliveries].into_iter().flatten() {
            errors += recorder.errors;
            if first_error.is_none() {
                first_error.clone_from(&recorder.first_error);
            }
        }
        Measured {
            msgs_per_s: round1(msgs_per_s),
            p50_us: latency.map(|p| p.p50_us),
            p99_us: latency.map(|p| p.p99_us),
            latency: label,
            publish_rate: round1(publish_rate),
            delivery_rate: delivery_rate.map(round1),
            publish_to_ack,
            publish_to_delivery,
            sent: self.sent,
            acked: self.acks.as_ref().map(|acks| acks.total),
            delivered: self.deliveries.as_ref().map(|d| d.total),
            lost: self.lost,
            errors,
            first_error,
            server_cpu_percent: self.server_cpu_percent,
            bench_cpu_percent: self.bench_cpu_percent,
            server_log_warnings: 0,
            server_log_sample: Vec::new(),
            server_metrics: BTreeMap::new(),
        }
    }
}

fn merge_into(slot: &mut Option<Recorder>, recorder: &Recorder) {
    match slot {
        Some(existing) => existing.merge(recorder),
        None => *slot = Some(recorder.clone()),
    }
}

fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// One system's figures for one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    /// Acks per second for publish scenarios, deliveries per second (over all subscribers) otherwise.
    pub msgs_per_s: f64,
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    /// Which latency `p50_us` and `p99_us` are.
    pub latency: &'static str,
    /// Publishes acked per second (sent per second where the system gives no ack).
    pub publish_rate: f64,
    pub delivery_rate: Option<f64>,
    pub publish_to_ack: Option<Percentiles>,
    pub publish_to_delivery: Option<Percentiles>,
    /// Messages handed to the client, warm-up and drain included.
    pub sent: u64,
    pub acked: Option<u64>,
    pub delivered: Option<u64>,
    /// Deliveries expected from the messages published that never arrived.
    pub lost: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// CPU used during the measured window, in percent of one core.
    pub server_cpu_percent: Option<f64>,
    pub bench_cpu_percent: Option<f64>,
    pub server_log_warnings: usize,
    pub server_log_sample: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub server_metrics: BTreeMap<String, f64>,
}

impl Measured {
    /// Adds what the server's log and metrics said.
    pub fn with_server(mut self, warnings: (usize, Vec<String>), metrics: BTreeMap<String, f64>) -> Self {
        (self.server_log_warnings, self.server_log_sample) = warnings;
        self.server_metrics = metrics;
        self
    }
}

/// One system's run: its figures, or why there are none.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum SystemResult {
    Ran(Box<Measured>),
    Failed { error: String },
}

impl SystemResult {
    fn measured(&self) -> Option<&Measured> {
        match self {
            Self::Ran(measured) => Some(measured),
            Self::Failed { .. } => None,
        }
    }
}

/// One scenario: Hermod, the peer, and their ratios.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub name: &'static str,
    pub description: &'static str,
    pub rate: Option<f64>,
    pub producers: usize,
    pub consumers: usize,
    pub hermod: SystemResult,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats: Option<SystemResult>,
    /// Hermod's msgs_per_s over the peer's (higher is better for Hermod).
    pub ratio: Option<f64>,
    /// Hermod's p99 over the peer's (lower is better for Hermod).
    pub p99_ratio: Option<f64>,
}

impl ScenarioReport {
    pub fn new(spec: &Spec, hermod: SystemResult, nats: Option<SystemResult>) -> Self {
        let pair = hermod
            .measured()
            .zip(nats.as_ref().and_then(SystemResult::measured));
        let ratio = pair
            .filter(|(_, n)| n.msgs_per_s > 0.0)
            .map(|(h, n)| round2(h.msgs_per_s / n.msgs_per_s));
        let p99_ratio = pair
            .and_then(|(h, n)| Some((h.p99_us?, n.p99_us?)))
            .filter(|(_, n)| *n > 0)
            .map(|(h, n)| round2(h as f64 / n as f64));
        Self {
            name: spec.name.as_str(),
            description: spec.name.description(),
            rate: spec.rate,
            producers: spec.settings.producers,
            consumers: spec.consumers,
            hermod,
            nats,
            ratio,
            p99_ratio,
        }
    }
}

/// The machine a report was measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub date: String,
    pub git_commit: Option<String>,
    pub git_dirty: Option<bool>,
    pub cpu_model: Option<String>,
    pub kernel: Option<String>,
    pub memory_mib: Option<u64>,
    pub hermod_version: Option<String>,
    pub nats_server_version: Option<String>,
}

impl Machine {
    async fn detect(hermod: &Path, nats: &Path, with_nats: bool) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|line| line.starts_with("model name"))
            .and_then(|line| line.split_once(':'))
            .map(|(_, model)| model.trim().to_owned());
        let memory_mib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| {
            let line = text.lines().find(|line| line.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib / 1024)
        });
        // scripts/bench.sh names the checkout; otherwise the current directory's.
        let source = std::env::var("HERMOD_BENCH_SOURCE").unwrap_or_else(|_| ".".to_owned());
        let git_status = output(
            "git",
            &["-C", &source, "status", "--porcelain", "--untracked-files=no"],
        )
        .await;
        Self {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            date: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            git_commit: output("git", &["-C", &source, "rev-parse", "--short", "HEAD"]).await,
            git_dirty: git_status.map(|status| !status.is_empty()),
            cpu_model,
            kernel: output("uname", &["-r"]).await,
            memory_mib,
            hermod_version: output(hermod, &["--version"]).await,
            nats_server_version: if with_nats {
                output(nats, &["--version"]).await
            } else {
                None
            },
        }
    }
}

/// The trimmed standard output of a command that succeeded (an empty
/// output counts), bounded in time.
async fn output(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Option<String> {
    let run = tokio::process::Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(10), run)
        .await
        .ok()?
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The whole report, as written to `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub settings: Settings,
    pub compare: Option<Peer>,
    pub scenarios: Vec<ScenarioReport>,
}

impl Report {
    pub async fn new(
        settings: Settings,
        compare: Option<Peer>,
        scenarios: Vec<ScenarioReport>,
        hermod: &Path,
        nats: &Path,
    ) -> Self {
        Self {
            machine: Machine::detect(hermod, nats, compare.is_some()).await,
            settings,
            compare,
            scenarios,
        }
    }

    /// Whether every system ran every scenario.
    pub fn all_ran(&self) -> bool {
        self.scenarios
            .iter()
            .all(|s| s.hermod.measured().is_some() && s.nats.as_ref().is_none_or(|n| n.measured().is_some()))
    }

    /// The human table, with the machine and any failures below it.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<14} {:>12} {:>9} {:>9} | {:>12} {:>9} {:>9} | {:>7} {:>7}",
            "scenario",
            "hermod msg/s",
            "p50 us",
            "p99 us",
            "nats msg/s",
            "p50 us",
            "p99 us",
            "ratio",
            "p99 x"
        );
        let _ = writeln!(out, "{}", "-".repeat(103));
        let mut failures = Vec::new();
        for scenario in &self.scenarios {
            let hermod = cells(Some(&scenario.hermod));
            let nats = cells(scenario.nats.as_ref());
            let ratio = scenario.ratio.map_or("-".to_owned(), |r| format!("{r:.2}"));
            let p99_ratio = scenario.p99_ratio.map_or("-".to_owned(), |r| format!("{r:.2}"));
            let _ = writeln!(
                out,
                "{:<14} {} | {} | {:>7} {:>7}",
                scenario.name, hermod, nats, ratio, p99_ratio
            );
            for (system, result) in [
                ("hermod", Some(&scenario.hermod)),
                ("nats", scenario.nats.as_ref()),
            ] {
                match result {
                    Some(SystemResult::Failed { error }) => {
                        failures.push(format!("{} {system}: {error}", scenario.name))
                    }
                    Some(SystemResult::Ran(m)) if m.errors > 0 || m.lost > 0 => failures.push(format!(
                        "{} {system}: {} errors, {} lost (first error: {})",
                        scenario.name,
                        m.errors,
                        m.lost,
                        m.first_error.as_deref().unwrap_or("none")
                    )),
                    _ => {}
                }
            }
        }
        let m = &self.machine;
        let _ = writeln!(
            out,
            "\nratio = Hermod msg/s / NATS msg/s; p99 x = Hermod p99 / NATS p99. Latency is publish->ack for\n\
             *-publish scenarios, publish->delivery otherwise. {} cores, {}, commit {}{}.",
            m.nproc,
            m.date,
            m.git_commit.as_deref().unwrap_or("unknown"),
            if m.git_dirty == Some(true) {
                " (with local changes)"
            } else {
                ""
            }
        );
        for failure in failures {
            let _ = writeln!(out, "problem: {failure}");
        }
        out
    }
}

/// Throughput, p50 and p99 columns of one system.
fn cells(result: Option<&SystemResult>) -> String {
    let micros = |value: Option<u64>| value.map_or("-".to_owned(), |v| v.to_string());
    match result {
        Some(SystemResult::Ran(m)) => format!(
            "{:>12.1} {:>9} {:>9}",
            m.msgs_per_s,
            micros(m.p50_us),
            micros(m.p99_us)
        ),
        Some(SystemResult::Failed { .. }) => format!("{:>12} {:>9} {:>9}", "FAILED", "-", "-"),
        None => format!("{:>12} {:>9} {:>9}", "-", "-", "-"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;
    use crate::cli::Options;
    use crate::scenario::ScenarioName;

    /// A summary of `acked` publishes acked inside a window of one second, each after 100 µs.
    fn measured(acked: u64) -> Measured {
        let window = Window::starting_now(Duration::ZERO, Duration::from_secs(1));
        let mut acks = Recorder::new(window);
        for _ in 0..acked {
            acks.record(
                window.measure_from,
                window.measure_from + Duration::from_micros(100),
            );
        }
        let mut outcome = Outcome::new(window);
        outcome.add_produced(Produced {
            sent: acked,
            sent_in_window: acked,
            acks: Some(acks),
        });
        outcome.measured(Primary::PublishToAck)
    }

    #[test]
    fn the_ratios_compare_hermod_with_the_peer() {
        let options = Options::parse_from(["hermod-bench", "--scenario", "alo-publish"]);
        let settings = options.settings().expect("settings");
        let spec = Spec::new(ScenarioName::AloPublish, &settings, &options);
        let hermod = SystemResult::Ran(Box::new(measured(300)));
        let nats = SystemResult::Ran(Box::new(measured(200)));
        let scenario = ScenarioReport::new(&spec, hermod, Some(nats));
        assert_eq!(scenario.ratio, Some(1.5));
        assert_eq!(scenario.p99_ratio, Some(1.0));
        assert_eq!(scenario.consumers, 0);
        let json = serde_json::to_value(&scenario).expect("json");
        assert_eq!(json["hermod"]["msgs_per_s"], 300.0);
        assert_eq!(json["nats"]["p50_us"], 100);
        assert_eq!(json["name"], "alo-publish");
    }

    #[test]
    fn a_failed_run_has_no_ratio_and_shows_in_the_table() {
        let options = Options::parse_from(["hermod-bench", "--scenario", "amo-fanout-1"]);
        let settings = options.settings().expect("settings");
        let spec = Spec::new(ScenarioName::AmoFanout1, &settings, &options);
        let failed = SystemResult::Failed {
            error: "no hermod binary".into(),
        };
        let scenario = ScenarioReport::new(&spec, failed, Some(SystemResult::Ran(Box::new(measured(10)))));
        assert_eq!(scenario.ratio, None);
        let report = Report {
            machine: Machine {
                nproc: 2,
                date: "2026-01-01T00:00:00Z".into(),
                git_commit: Some("abc1234".into()),
                git_dirty: Some(false),
                cpu_model: None,
                kernel: None,
                memory_mib: None,
                hermod_version: None,
                nats_server_version: None,
            },
            settings,
            compare: Some(Peer::Nats),
            scenarios: vec![scenario],
        };
        assert!(!report.all_ran());
        let table = report.table();
        assert!(table.contains("FAILED"), "{table}");
        assert!(
            table.contains("problem: amo-fanout-1 hermod: no hermod binary"),
            "{table}"
        );
        assert!(table.contains("commit abc1234"), "{table}");
    }
}

//! The report: per scenario both systems' figures and their ratios, and `report.json` (the human table is `table.rs`).

use std::path::Path;

use serde::Serialize;

use crate::cli::{Peer, Settings};
use crate::machine::Machine;
use crate::outcome::Measured;
use crate::scenario::{ScenarioName, Shape, Spec};

/// One system's run: its figures, or why there are none.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum SystemResult {
    Ran(Box<Measured>),
    Failed { error: String },
}

impl SystemResult {
    pub fn measured(&self) -> Option<&Measured> {
        match self {
            Self::Ran(measured) => Some(measured),
            Self::Failed { .. } => None,
        }
    }
}

/// What a scenario's `ratio` compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RatioOf {
    /// Hermod's `msgs_per_s` over the peer's: higher is better for Hermod.
    MsgsPerS,
    /// Hermod's `rss_peak_bytes` over the peer's: lower is better for Hermod.
    RssPeakBytes,
    /// Hermod's `failover_median_ms` over the peer's: lower is better for Hermod.
    FailoverMedianMs,
}

impl RatioOf {
    fn of(name: ScenarioName) -> Self {
        match name.shape() {
            Shape::MemoryBacklog => Self::RssPeakBytes,
            Shape::Failover => Self::FailoverMedianMs,
            _ => Self::MsgsPerS,
        }
    }

    /// The figure of one system that the ratio divides.
    fn figure(self, m: &Measured) -> Option<f64> {
        match self {
            Self::MsgsPerS => Some(m.msgs_per_s),
            Self::RssPeakBytes => m.memory.as_ref().map(|memory| memory.rss_peak_bytes as f64),
            Self::FailoverMedianMs => m.failover.as_ref().map(|times| times.failover_median_ms),
        }
    }

    fn lower_is_better(self) -> bool {
        matches!(self, Self::RssPeakBytes | Self::FailoverMedianMs)
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
    /// Broker processes per system.
    pub nodes: usize,
    pub hermod: SystemResult,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats: Option<SystemResult>,
    /// Hermod's figure over the peer's: `msgs_per_s` (higher is better for
    /// Hermod), in memory-backlog `rss_peak_bytes` and in leader-failover
    /// `failover_median_ms` (lower is better).
    pub ratio: Option<f64>,
    /// Which figure `ratio` divides.
    pub ratio_of: RatioOf,
    /// Whether a `ratio` below 1 favours Hermod (true for memory and failover).
    pub ratio_lower_is_better: bool,
    /// Hermod's p99 over the peer's (lower is better for Hermod).
    pub p99_ratio: Option<f64>,
}

impl ScenarioReport {
    pub fn new(spec: &Spec, hermod: SystemResult, nats: Option<SystemResult>) -> Self {
        let pair = hermod
            .measured()
            .zip(nats.as_ref().and_then(SystemResult::measured));
        let ratio_of = RatioOf::of(spec.name);
        let ratio = pair
            .and_then(|(h, n)| Some((ratio_of.figure(h)?, ratio_of.figure(n)?)))
            .filter(|(_, n)| *n > 0.0)
            .map(|(h, n)| round2(h / n));
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
            nodes: spec.name.nodes(),
            hermod,
            nats,
            ratio,
            ratio_of,
            ratio_lower_is_better: ratio_of.lower_is_better(),
            p99_ratio,
        }
    }

    /// Each system that ran, with its name.
    pub fn systems(&self) -> Vec<(&'static str, &Measured)> {
        let mut systems = Vec::new();
        if let Some(m) = self.hermod.measured() {
            systems.push(("hermod", m));
        }
        if let Some(m) = self.nats.as_ref().and_then(SystemResult::measured) {
            systems.push(("nats", m));
        }
        systems
    }
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
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

    /// The scenario of this name, if it ran.
    pub fn scenario(&self, name: ScenarioName) -> Option<&ScenarioReport> {
        self.scenarios.iter().find(|s| s.name == name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;
    use crate::cli::Options;
    use crate::failover::FailoverTimes;
    use crate::load::Produced;
    use crate::measure::{Recorder, Window};
    use crate::memory::{MIB, MemoryUse};
    use crate::outcome::Outcome;
    use crate::scenario::Primary;

    /// A summary of `acked` publishes acked inside a window of one second, each after 100 µs.
    pub fn measured(acked: u64) -> Measured {
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

    fn machine() -> Machine {
        Machine {
            nproc: 2,
            date: "2026-01-01T00:00:00Z".into(),
            git_commit: Some("abc1234".into()),
            git_dirty: Some(false),
            cpu_model: None,
            kernel: None,
            memory_mib: None,
            hermod_version: None,
            nats_server_version: None,
        }
    }

    /// A report of `scenarios` against NATS with the default settings.
    fn report_of(scenarios: Vec<ScenarioReport>) -> Report {
        Report {
            machine: machine(),
            settings: Options::parse_from(["hermod-bench"])
                .settings()
                .expect("settings"),
            compare: Some(Peer::Nats),
            scenarios,
        }
    }

    fn scenario(name: ScenarioName, hermod: SystemResult, nats: Option<SystemResult>) -> ScenarioReport {
        let options = Options::parse_from(["hermod-bench", "--scenario", name.as_str()]);
        let settings = options.settings().expect("settings");
        ScenarioReport::new(&Spec::new(name, &settings, &options), hermod, nats)
    }

    #[test]
    fn the_ratios_compare_hermod_with_the_peer() {
        let hermod = SystemResult::Ran(Box::new(measured(300)));
        let nats = SystemResult::Ran(Box::new(measured(200)));
        let scenario = scenario(ScenarioName::AloPublish, hermod, Some(nats));
        assert_eq!(scenario.ratio, Some(1.5));
        assert_eq!(scenario.ratio_of, RatioOf::MsgsPerS);
        assert!(!scenario.ratio_lower_is_better);
        assert_eq!(scenario.p99_ratio, Some(1.0));
        assert_eq!(scenario.consumers, 0);
        let json = serde_json::to_value(&scenario).expect("json");
        assert_eq!(json["hermod"]["msgs_per_s"], 300.0);
        assert_eq!(json["nats"]["p50_us"], 100);
        assert_eq!(json["name"], "alo-publish");
    }

    #[test]
    fn a_failed_run_has_no_ratio_and_shows_in_the_table() {
        let failed = SystemResult::Failed {
            error: "no hermod binary".into(),
        };
        let nats = Some(SystemResult::Ran(Box::new(measured(10))));
        let scenario = scenario(ScenarioName::AmoFanout1, failed, nats);
        assert_eq!(scenario.ratio, None);
        let report = report_of(vec![scenario]);
        assert!(!report.all_ran());
        let table = report.table();
        assert!(table.contains("FAILED"), "{table}");
        assert!(
            table.contains("problem: amo-fanout-1 hermod: no hermod binary"),
            "{table}"
        );
        assert!(table.contains("commit abc1234"), "{table}");
    }

    /// A fill of 100 publishes whose server peaked at `peak_mib`, with
    /// Hermod's bound for a cache of 256 MiB when `bounded`.
    fn with_memory(peak_mib: u64, bounded: bool) -> SystemResult {
        let memory = MemoryUse {
            rss_start_bytes: 10 * MIB,
            rss_peak_bytes: peak_mib * MIB,
            rss_end_bytes: peak_mib * MIB / 2,
            rss_per_million_msgs_bytes: MIB,
            fill_end_s: 1.0,
            rss_sample_interval_ms: 250,
            rss_timeline: vec![(0.25, 10 * MIB), (1.0, peak_mib * MIB)],
            bound: None,
        };
        let memory = if bounded {
            memory.with_bound(256, true)
        } else {
            memory
        };
        SystemResult::Ran(Box::new(measured(100).with_memory(Some(memory))))
    }

    #[test]
    fn memory_backlog_compares_peak_rss_and_shows_the_verdict() {
        let hermod = with_memory(600, true);
        let nats = with_memory(300, false);
        let scenario = scenario(ScenarioName::MemoryBacklog, hermod, Some(nats));
        assert_eq!(scenario.ratio, Some(2.0));
        assert_eq!(scenario.ratio_of, RatioOf::RssPeakBytes);
        assert!(scenario.ratio_lower_is_better);
        let json = serde_json::to_value(&scenario).expect("json");
        assert_eq!(json["ratio_of"], "rss_peak_bytes");
        assert_eq!(json["hermod"]["rss_peak_bytes"], 600 * MIB);
        assert_eq!(json["hermod"]["cache_bytes"], 256 * MIB);
        assert_eq!(json["hermod"]["within_bound"], false);
        assert!(json["nats"].get("within_bound").is_none());
        let report = report_of(vec![scenario]);
        let table = report.table();
        assert!(table.contains("lower is better"), "{table}");
        let row = table
            .lines()
            .find(|line| line.starts_with("memory-backlog") && line.contains("NO"))
            .unwrap_or_else(|| panic!("no memory row in {table}"));
        assert!(
            row.contains("600.0") && row.contains("512.0") && row.ends_with("2.00"),
            "{row}"
        );
    }

    /// A publisher of 100 acks whose rounds of failover took `rounds_ms`.
    fn with_failover(system: &str, rounds_ms: &[u64]) -> SystemResult {
        let rounds = rounds_ms
            .iter()
            .enumerate()
            .map(|(index, ms)| crate::failover::Round {
                killed: format!("{system}-{index}"),
                failover_ms: *ms,
                failed_attempts: 5,
                rejoin_ms: 2000,
            })
            .collect();
        let mut measured = measured(100);
        measured.failover = FailoverTimes::new(rounds);
        SystemResult::Ran(Box::new(measured))
    }

    #[test]
    fn leader_failover_compares_median_failover_times() {
        let hermod = with_failover("hermod", &[3000, 4000, 2000]);
        let nats = with_failover("nats", &[6000, 5000, 7000]);
        let scenario = scenario(ScenarioName::LeaderFailover, hermod, Some(nats));
        assert_eq!(scenario.ratio, Some(0.5));
        assert_eq!(scenario.ratio_of, RatioOf::FailoverMedianMs);
        assert!(scenario.ratio_lower_is_better);
        let json = serde_json::to_value(&scenario).expect("json");
        assert_eq!(json["ratio_of"], "failover_median_ms");
        assert_eq!(json["hermod"]["failover_median_ms"], 3000.0);
        assert_eq!(json["nats"]["failover_worst_ms"], 7000);
        assert_eq!(json["hermod"]["failover_rounds_ms"][2], 2000);
        let table = report_of(vec![scenario]).table();
        let row = table
            .lines()
            .find(|line| line.starts_with("leader-failover") && line.ends_with("0.50"))
            .unwrap_or_else(|| panic!("no failover row in {table}"));
        assert!(row.contains("3000") && row.contains("7000"), "{row}");
        assert!(
            table.contains("hermod rounds: 3000 (hermod-0), 4000 (hermod-1), 2000 (hermod-2)"),
            "{table}"
        );
    }

    #[test]
    fn the_table_compares_one_node_with_three() {
        let run = |n| Some(SystemResult::Ran(Box::new(measured(n))));
        let one = scenario(ScenarioName::AloPublish, run(400).expect("ran"), run(800));
        let three = scenario(ScenarioName::ClusterPublish, run(200).expect("ran"), run(200));
        assert_eq!(three.nodes, 3);
        let report = report_of(vec![one, three]);
        let table = report.table();
        assert!(
            table.contains("1 node -> 3 nodes (durable publish): hermod 400 -> 200 msg/s (x0.50); nats 800 -> 200 msg/s (x0.25)"),
            "{table}"
        );
    }
}

//! The command line of `hermod-bench`, and the settings each scenario runs with.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::Serialize;

use crate::scenario::ScenarioName;

/// Duration of each measured run when neither `--duration` nor a suite says otherwise.
const DEFAULT_DURATION_S: f64 = 10.0;
/// Warm-up before each measured run when neither `--warmup` nor a suite says otherwise.
const DEFAULT_WARMUP_S: f64 = 2.0;
/// The quick suite's measured run and warm-up: nine timed scenarios against
/// two systems (eighteen runs, with start-up, backlogs and drain) take about
/// three minutes on 2 cores.
const QUICK_DURATION_S: f64 = 8.0;
const QUICK_WARMUP_S: f64 = 2.0;
/// Messages memory-backlog publishes: the 10 million of the memory bound's issue.
const DEFAULT_MESSAGES: u64 = 10_000_000;
/// Messages memory-backlog publishes in the quick suite, which keeps the
/// suite under five minutes (10 million take several minutes on their own).
const QUICK_MESSAGES: u64 = 1_000_000;
/// The most messages memory-backlog may publish.
const MAX_MESSAGES: u64 = 100_000_000;
/// The cache passed to every Hermod started, in MiB: the broker's own default.
const DEFAULT_CACHE_MB: u64 = 256;
/// The largest cache accepted, in MiB (1 TiB).
const MAX_CACHE_MB: u64 = 1024 * 1024;
/// Kills of the leader leader-failover makes, each followed by a restart.
const DEFAULT_ROUNDS: u32 = 5;
/// leader-failover's rounds in the quick suite: about 50 s against both
/// systems on 2 cores, which keeps the whole suite under five minutes.
const QUICK_ROUNDS: u32 = 3;
/// The most rounds leader-failover may make (each takes several seconds).
const MAX_ROUNDS: u32 = 100;
/// Messages published before a backlog scenario consumes them.
const DEFAULT_BACKLOG: u64 = 100_000;
/// The largest backlog allowed: it is filled before the measured time starts.
const MAX_BACKLOG: u64 = 10_000_000;

/// Load generator for Hermod, with NATS as the peer in the same run.
#[derive(Debug, Clone, Parser)]
#[command(name = "hermod-bench", version)]
pub struct Options {
    /// A scenario to run; repeat to run several, in the order given.
    #[arg(long = "scenario", value_enum, value_name = "NAME")]
    pub scenarios: Vec<ScenarioName>,

    /// A named set of scenarios: `quick` runs every scenario briefly.
    #[arg(long, value_enum)]
    pub suite: Option<Suite>,

    /// Run every scenario against this peer too, and report Hermod/peer ratios.
    #[arg(long, value_enum)]
    pub compare: Option<Peer>,

    /// Write DIR/report.json and the charts (DIR/*.png) here.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Seconds measured per scenario and system (default 10; 8 in the quick
    /// suite); a backlog scenario ends sooner once its backlog is consumed.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,

    /// Seconds of load before measuring starts (default 2).
    #[arg(long, value_name = "SECS")]
    pub warmup: Option<f64>,

    /// Payload size in bytes; the first 8 carry the send time.
    #[arg(long, value_name = "BYTES", default_value_t = 128)]
    pub message_size: usize,

    /// Publishes awaiting their ack per producer, and deliveries a consumer
    /// may have outstanding (its prefetch).
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub window: usize,

    /// Target publish rate in messages per second, shared by the producers
    /// (default: as fast as the window allows; 1000 in latency-1k, 10000 in
    /// latency-10k; backlogs are always published as fast as possible).
    #[arg(long, value_name = "N")]
    pub rate: Option<f64>,

    /// Messages published before a backlog scenario consumes them.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_BACKLOG)]
    pub backlog: u64,

    /// Messages memory-backlog publishes and leaves unconsumed (default
    /// 10000000; 1000000 in the quick suite).
    #[arg(long, value_name = "N")]
    pub messages: Option<u64>,

    /// Times leader-failover kills the leader (and restarts it) per system
    /// (default 5; 3 in the quick suite).
    #[arg(long, value_name = "N")]
    pub rounds: Option<u32>,

    /// RocksDB's block cache and memtables of every Hermod started, in MiB,
    /// passed as `hermod serve --cache-mb` when the broker has that flag;
    /// memory-backlog's bound on peak RSS is this plus 256 MiB.
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_CACHE_MB)]
    pub cache_mb: u64,

    /// Producer tasks, each with its own connection.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub producers: usize,

    /// Consumer tasks, each with its own connection: subscribers in a
    /// fan-out scenario, consumers sharing the durable subscription otherwise
    /// (default 1; publish-only scenarios have none).
    #[arg(long, value_name = "N")]
    pub consumers: Option<usize>,

    /// The `hermod` binary (default: `hermod` next to this executable).
    #[arg(long, value_name = "PATH")]
    pub hermod_bin: Option<PathBuf>,

    /// The `nats-server` binary.
    #[arg(long, value_name = "PATH", default_value = "nats-server")]
    pub nats_bin: PathBuf,

    /// The TrueType font of the charts' text (default: DejaVu Sans or
    /// Liberation Sans where Debian installs them).
    #[arg(long, value_name = "PATH", env = "HERMOD_BENCH_FONT")]
    pub font: Option<PathBuf>,
}

/// A named set of scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Suite {
    /// Every scenario, with short runs.
    Quick,
}

/// A system to compare Hermod with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Peer {
    /// nats-server: core NATS for at-most-once, JetStream (file storage, R1) for the durable scenarios.
    Nats,
}

/// What every scenario of one invocation shares, resolved from the options.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,
    #[serde(serialize_with = "seconds")]
    pub warmup: Duration,
    pub message_size: usize,
    pub window: usize,
    pub rate: Option<f64>,
    pub producers: usize,
    pub backlog: u64,
    /// Messages memory-backlog publishes.
    pub messages: u64,
    /// Kills of the leader in leader-failover.
    pub rounds: u32,
    /// The cache asked of every Hermod started (see `HermodLaunch` for the one it ran with).
    pub cache_mb: u64,
}

fn seconds<S: serde::Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(value.as_secs_f64())
}

impl Options {
    /// The scenarios to run: those named, then the suite's (without repeats).
    pub fn selected(&self) -> anyhow::Result<Vec<ScenarioName>> {
        let mut names = self.scenarios.clone();
        if self.suite == Some(Suite::Quick) {
            names.extend(ScenarioName::ALL);
        }
        let mut seen = Vec::new();
        names.retain(|name| {
            let first = !seen.contains(name);
            seen.push(*name);
            first
        });
        anyhow::ensure!(!names.is_empty(), "name a --scenario or a --suite");
        Ok(names)
    }

    /// The shared settings, checked.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let quick = self.suite == Some(Suite::Quick);
        let duration = self.duration.unwrap_or(if quick {
            QUICK_DURATION_S
        } else {
            DEFAULT_DURATION_S
        });
        let warmup = self
            .warmup
            .unwrap_or(if quick { QUICK_WARMUP_S } else { DEFAULT_WARMUP_S });
        anyhow::ensure!(
            duration.is_finite() && duration > 0.0 && duration <= 3600.0,
            "--duration: {duration} is not between 0 and 3600 seconds"
        );
        anyhow::ensure!(
            warmup.is_finite() && (0.0..=600.0).contains(&warmup),
            "--warmup: {warmup} is not between 0 and 600 seconds"
        );
        anyhow::ensure!(
            (8..=1024 * 1024).contains(&self.message_size),
            "--message-size: {} is not between 8 bytes (the send time) and 1 MiB",
            self.message_size
        );
        anyhow::ensure!(
            (1..=100_000).contains(&self.window),
            "--window: {} is not between 1 and 100000",
            self.window
        );
        if let Some(rate) = self.rate {
            anyhow::ensure!(
                rate.is_finite() && rate > 0.0,
                "--rate: {rate} is not a positive number of messages per second"
            );
        }
        anyhow::ensure!(
            (1..=MAX_BACKLOG).contains(&self.backlog),
            "--backlog: {} is not between 1 and {MAX_BACKLOG}",
            self.backlog
        );
        let messages = self
            .messages
            .unwrap_or(if quick { QUICK_MESSAGES } else { DEFAULT_MESSAGES });
        anyhow::ensure!(
            (1..=MAX_MESSAGES).contains(&messages),
            "--messages: {messages} is not between 1 and {MAX_MESSAGES}"
        );
        let rounds = self
            .rounds
            .unwrap_or(if quick { QUICK_ROUNDS } else { DEFAULT_ROUNDS });
        anyhow::ensure!(
            (1..=MAX_ROUNDS).contains(&rounds),
            "--rounds: {rounds} is not between 1 and {MAX_ROUNDS}"
        );
        anyhow::ensure!(
            (1..=MAX_CACHE_MB).contains(&self.cache_mb),
            "--cache-mb: {} is not between 1 and {MAX_CACHE_MB}",
            self.cache_mb
        );
        anyhow::ensure!(
            (1..=64).contains(&self.producers),
            "--producers: {} is not between 1 and 64",
            self.producers
        );
        if let Some(consumers) = self.consumers {
            anyhow::ensure!(
                (1..=64).contains(&consumers),
                "--consumers: {consumers} is not between 1 and 64"
            );
        }
        Ok(Settings {
            duration: Duration::from_secs_f64(duration),
            warmup: Duration::from_secs_f64(warmup),
            message_size: self.message_size,
            window: self.window,
            rate: self.rate,
            producers: self.producers,
            backlog: self.backlog,
            messages,
            rounds,
            cache_mb: self.cache_mb,
        })
    }

    /// The `hermod` binary to start.
    pub fn hermod_binary(&self) -> anyhow::Result<PathBuf> {
        if let Some(path) = &self.hermod_bin {
            return Ok(path.clone());
        }
        let exe = std::env::current_exe()?;
        Ok(exe.with_file_name("hermod"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quick_suite_selects_every_scenario_once() {
        let options = Options::parse_from(["hermod-bench", "--scenario", "latency-1k", "--suite", "quick"]);
        let names = options.selected().expect("selected");
        assert_eq!(names.len(), ScenarioName::ALL.len());
        assert_eq!(names[0], ScenarioName::Latency1k);
        let settings = options.settings().expect("settings");
        assert_eq!(settings.duration, Duration::from_secs_f64(QUICK_DURATION_S));
        assert_eq!(settings.messages, QUICK_MESSAGES);
        assert_eq!(settings.rounds, QUICK_ROUNDS);
        assert_eq!(settings.cache_mb, DEFAULT_CACHE_MB);
        let alone = Options::parse_from(["hermod-bench", "--scenario", "memory-backlog"]);
        let alone = alone.settings().expect("settings");
        assert_eq!((alone.messages, alone.rounds), (DEFAULT_MESSAGES, DEFAULT_ROUNDS));
    }

    #[test]
    fn bad_settings_name_their_option() {
        let options = Options::parse_from(["hermod-bench", "--scenario", "alo-publish", "--window", "0"]);
        let error = options.settings().unwrap_err().to_string();
        assert!(error.starts_with("--window"), "{error}");
        let no_cache = Options::parse_from(["hermod-bench", "--cache-mb", "0"]);
        let error = no_cache.settings().unwrap_err().to_string();
        assert!(error.starts_with("--cache-mb"), "{error}");
        let no_rounds = Options::parse_from(["hermod-bench", "--rounds", "0"]);
        let error = no_rounds.settings().unwrap_err().to_string();
        assert!(error.starts_with("--rounds"), "{error}");
        let none = Options::parse_from(["hermod-bench"]);
        assert!(none.selected().is_err());
    }
}

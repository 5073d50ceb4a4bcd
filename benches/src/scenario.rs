//! The scenarios, what one run of a scenario shares between its tasks, and the top-level run of the harness.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::ValueEnum;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cli::{Options, Peer, Settings};
use crate::measure::{Clock, Progress, Recorder, Window};
use crate::report::{Measured, Outcome, Report, ScenarioReport, SystemResult};
use crate::{hermod, nats, process};

/// How long after the producers stop the last acks may take.
pub const ACK_DRAIN: Duration = Duration::from_secs(30);
/// How long after the producers finish the last deliveries may take.
const DELIVERY_DRAIN: Duration = Duration::from_secs(5);
/// How long a consumer may take to stop once told.
const CONSUMER_STOP: Duration = Duration::from_secs(10);
/// How long closing a publisher or subscriber may take.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Beyond warm-up and duration, how long one system's run of a scenario may take in all.
const RUN_SLACK: Duration = Duration::from_secs(180);

/// A scenario of the load generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
pub enum ScenarioName {
    /// At-most-once publish→deliver throughput to one live subscriber.
    #[value(name = "amo-fanout-1")]
    #[serde(rename = "amo-fanout-1")]
    AmoFanout1,
    /// Durable at-least-once publish throughput (fsync before ack), pipelined.
    #[value(name = "alo-publish")]
    #[serde(rename = "alo-publish")]
    AloPublish,
    /// Exactly-once publish throughput, every message with its own id.
    #[value(name = "eo-publish")]
    #[serde(rename = "eo-publish")]
    EoPublish,
    /// End-to-end latency at 1000 msg/s, durable, through an acking durable subscription.
    #[value(name = "latency-1k")]
    #[serde(rename = "latency-1k")]
    Latency1k,
}

/// What a scenario does, independent of the system it runs against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shape {
    /// At-most-once publishes to live subscribers, each of which gets every message.
    FanOut,
    /// Durable publishes with no consumer; `exactly_once` gives each message an id.
    DurablePublish { exactly_once: bool },
    /// Durable publishes at a fixed rate, consumed and acked through a durable subscription.
    DurableLatency,
}

/// Which latency a scenario reports as its p50/p99.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Primary {
    PublishToAck,
    PublishToDelivery,
}

impl ScenarioName {
    pub const ALL: [ScenarioName; 4] = [
        Self::AmoFanout1,
        Self::AloPublish,
        Self::EoPublish,
        Self::Latency1k,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AmoFanout1 => "amo-fanout-1",
            Self::AloPublish => "alo-publish",
            Self::EoPublish => "eo-publish",
            Self::Latency1k => "latency-1k",
        }
    }

    /// One line for the report.
    pub fn description(self) -> &'static str {
        match self {
            Self::AmoFanout1 => {
                "at-most-once publish->deliver, 1 live subscriber (Hermod ephemeral pattern subscription; NATS core subscription)"
            }
            Self::AloPublish => {
                "durable at-least-once publish, fsync before ack, pipelined (NATS: JetStream R1 file store, async publish)"
            }
            Self::EoPublish => {
                "exactly-once publish with a unique id per message (NATS: JetStream with Nats-Msg-Id)"
            }
            Self::Latency1k => {
                "publish->delivery latency at 1000 msg/s, durable at-least-once, acking durable subscription (NATS: JetStream pull consumer)"
            }
        }
    }

    pub fn shape(self) -> Shape {
        match self {
            Self::AmoFanout1 => Shape::FanOut,
            Self::AloPublish => Shape::DurablePublish { exactly_once: false },
            Self::EoPublish => Shape::DurablePublish { exactly_once: true },
            Self::Latency1k => Shape::DurableLatency,
        }
    }

    pub fn primary(self) -> Primary {
        match self.shape() {
            Shape::DurablePublish { .. } => Primary::PublishToAck,
            Shape::FanOut | Shape::DurableLatency => Primary::PublishToDelivery,
        }
    }

    /// The rate the scenario runs at unless `--rate` says otherwise.
    fn default_rate(self) -> Option<f64> {
        match self {
            Self::Latency1k => Some(1000.0),
            _ => None,
        }
    }

    /// Consumers (subscribers in a fan-out) unless `--consumers` says otherwise.
    fn default_consumers(self) -> usize {
        match self.shape() {
            Shape::FanOut | Shape::DurableLatency => 1,
            Shape::DurablePublish { .. } => 0,
        }
    }
}

/// One scenario with every setting resolved.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: ScenarioName,
    pub settings: Settings,
    /// Total publish rate over all producers, if paced.
    pub rate: Option<f64>,
    pub consumers: usize,
}

impl Spec {
    pub fn new(name: ScenarioName, settings: &Settings, options: &Options) -> Self {
        let consumers = match name.shape() {
            // A publish-only scenario has nobody to consume.
            Shape::DurablePublish { .. } => 0,
            _ => options.consumers.unwrap_or(name.default_consumers()),
        };
        Self {
            name,
            settings: settings.clone(),
            rate: settings.rate.or(name.default_rate()),
            consumers,
        }
    }

    /// Each producer's share of the rate.
    pub fn rate_per_producer(&self) -> Option<f64> {
        self.rate.map(|rate| rate / self.settings.producers as f64)
    }

    /// Deliveries each published message should cause.
    pub fn fanout(&self) -> u64 {
        match self.name.shape() {
            Shape::FanOut => self.consumers as u64,
            Shape::DurableLatency => u64::from(self.consumers > 0),
            Shape::DurablePublish { .. } => 0,
        }
    }
}

/// What the tasks of one run share.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub clock: Clock,
    pub window: Window,
    pub progress: Arc<Progress>,
    /// Becomes true when consumers should stop.
    pub stop: watch::Receiver<bool>,
    pub message_size: usize,
    /// Publishes in flight per producer, and each consumer's prefetch.
    pub in_flight: usize,
    pub rate: Option<f64>,
}

/// What one producer did.
#[derive(Debug)]
pub struct Produced {
    /// Messages handed to the client, warm-up included.
    pub sent: u64,
    /// Messages handed to the client inside the measured window.
    pub sent_in_window: u64,
    /// Publish acks, for systems and scenarios that have them.
    pub acks: Option<Recorder>,
}

/// One run in progress: its clock and window, and the means to end it.
pub struct Load {
    context: RunContext,
    stop: watch::Sender<bool>,
    cpu: JoinHandle<(Option<f64>, Option<f64>)>,
}

impl Load {
    /// Starts the clock: warm-up now, then the measured window. Call it once
    /// the consumers are subscribed, right before spawning the tasks.
    pub fn begin(spec: &Spec, server_pid: Option<u32>) -> Self {
        let window = Window::starting_now(spec.settings.warmup, spec.settings.duration);
        let (stop, stop_rx) = watch::channel(false);
        let cpu = tokio::spawn(process::cpu_during(
            server_pid,
            window.measure_from,
            window.stop_at,
        ));
        Self {
            context: RunContext {
                clock: Clock::new(),
                window,
                progress: Arc::new(Progress::default()),
                stop: stop_rx,
                message_size: spec.settings.message_size,
                in_flight: spec.settings.window,
                rate: spec.rate_per_producer(),
            },
            stop,
            cpu,
        }
    }

    pub fn context(&self) -> RunContext {
        self.context.clone()
    }

    /// Waits for the producers, then for the deliveries they caused
    /// (`fanout` per published message, bounded), stops the consumers and
    /// gathers what every task recorded.
    pub async fn finish(
        self,
        producers: Vec<JoinHandle<anyhow::Result<Produced>>>,
        consumers: Vec<JoinHandle<Recorder>>,
        fanout: u64,
    ) -> anyhow::Result<Outcome> {
        let window = self.context.window;
        let mut outcome = Outcome::new(window);
        let mut failure = None;
        for producer in producers {
            let joined = tokio::time::timeout_at(window.stop_at + ACK_DRAIN + CLOSE_TIMEOUT, producer).await;
            match joined {
                Ok(Ok(Ok(produced))) => outcome.add_produced(produced),
                Ok(Ok(Err(error))) => {
                    failure.get_or_insert(error);
                }
                Ok(Err(join)) => {
                    failure.get_or_insert(anyhow::anyhow!("a producer task failed: {join}"));
                }
                Err(_) => {
                    failure.get_or_insert(anyhow::anyhow!(
                        "a producer did not finish within {ACK_DRAIN:?} of the end"
                    ));
                }
            }
        }
        let expected = outcome.published() * fanout;
        if fanout > 0 {
            outcome.drained = self.context.progress.wait_for(expected, DELIVERY_DRAIN).await;
        }
        let _ = self.stop.send(true);
        for consumer in consumers {
            let abort = consumer.abort_handle();
            match tokio::time::timeout(CONSUMER_STOP, consumer).await {
                Ok(Ok(recorder)) => outcome.add_deliveries(&recorder),
                Ok(Err(join)) => {
                    failure.get_or_insert(anyhow::anyhow!("a consumer task failed: {join}"));
                }
                Err(_) => {
                    abort.abort();
                    failure.get_or_insert(anyhow::anyhow!(
                        "a consumer did not stop within {CONSUMER_STOP:?}"
                    ));
                }
            }
        }
        (outcome.server_cpu_percent, outcome.bench_cpu_percent) = self.cpu.await.unwrap_or((None, None));
        if let Some(error) = failure {
            return Err(error);
        }
        outcome.lost = expected.saturating_sub(self.context.progress.delivered());
        Ok(outcome)
    }
}

/// Runs one scenario against one system, bounded in time.
async fn run_one<F>(spec: &Spec, run: F) -> SystemResult
where
    F: Future<Output = anyhow::Result<Measured>>,
{
    let limit = spec.settings.warmup + spec.settings.duration + RUN_SLACK;
    match tokio::time::timeout(limit, run).await {
        Ok(Ok(measured)) => SystemResult::Ran(Box::new(measured)),
        Ok(Err(error)) => SystemResult::Failed {
            error: format!("{error:#}"),
        },
        Err(_) => SystemResult::Failed {
            error: format!("did not finish within {limit:?}"),
        },
    }
}

/// Runs the selected scenarios, prints the table and writes the report;
/// returns whether every run succeeded.
pub async fn run(options: Options) -> anyhow::Result<bool> {
    let names = options.selected()?;
    let settings = options.settings()?;
    let hermod_binary = options.hermod_binary()?;
    let mut scenarios = Vec::new();
    for name in names {
        let spec = Spec::new(name, &settings, &options);
        eprintln!("hermod-bench: {} against hermod", name.as_str());
        let hermod = run_one(&spec, hermod::run(&spec, &hermod_binary)).await;
        let peer = match options.compare {
            Some(Peer::Nats) => {
                eprintln!("hermod-bench: {} against nats", name.as_str());
                Some(run_one(&spec, nats::run(&spec, &options.nats_bin)).await)
            }
            None => None,
        };
        scenarios.push(ScenarioReport::new(&spec, hermod, peer));
    }
    let report = Report::new(
        settings,
        options.compare,
        scenarios,
        &hermod_binary,
        &options.nats_bin,
    )
    .await;
    println!("{}", report.table());
    if let Some(dir) = &options.out {
        write_report(&report, dir)?;
        eprintln!("hermod-bench: wrote {}", dir.join("report.json").display());
    }
    Ok(report.all_ran())
}

fn write_report(report: &Report, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("report.json");
    let json = serde_json::to_string_pretty(report)?;
    std::fs::write(&path, json + "\n").with_context(|| format!("writing {}", path.display()))
}

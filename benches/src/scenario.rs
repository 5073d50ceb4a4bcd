//! The scenarios: their names, what each does and measures, and a scenario with every setting resolved.

use std::time::Duration;

use clap::ValueEnum;
use serde::Serialize;

use crate::cli::{Options, Settings};
use crate::failover;
use crate::memory::RSS_SETTLE_S;

/// How long publishing a backlog may take at least.
const FILL_LIMIT: Duration = Duration::from_secs(120);
/// The slowest fill of a large backlog allowed, in messages per second: a
/// backlog too large for `FILL_LIMIT` may take as long as publishing it at
/// this rate takes (10 million messages: 2000 s).
const MIN_FILL_RATE_MSGS_PER_S: f64 = 5_000.0;

/// A scenario of the load generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScenarioName {
    /// At-most-once publish→deliver throughput to one live subscriber.
    #[value(name = "amo-fanout-1")]
    #[serde(rename = "amo-fanout-1")]
    AmoFanout1,
    /// At-most-once publish→deliver to four live subscribers, each getting every message.
    #[value(name = "amo-fanout-4")]
    #[serde(rename = "amo-fanout-4")]
    AmoFanout4,
    /// Durable at-least-once publish throughput (fsync before ack), pipelined.
    #[value(name = "alo-publish")]
    AloPublish,
    /// Exactly-once publish throughput, every message with its own id.
    #[value(name = "eo-publish")]
    EoPublish,
    /// Consume and ack a backlog published beforehand, through a durable subscription.
    #[value(name = "consume-backlog")]
    ConsumeBacklog,
    /// End-to-end latency at 1000 msg/s, durable, through an acking durable subscription.
    #[value(name = "latency-1k")]
    #[serde(rename = "latency-1k")]
    Latency1k,
    /// End-to-end latency at 10000 msg/s, durable, through an acking durable subscription.
    #[value(name = "latency-10k")]
    #[serde(rename = "latency-10k")]
    Latency10k,
    /// A backlog of four priorities, consumed: the rate and whether the order honoured priorities.
    #[value(name = "priority-backlog")]
    PriorityBacklog,
    /// Durable publish throughput and latency on a 3-node cluster, 3 replicas.
    #[value(name = "cluster-publish")]
    ClusterPublish,
    /// The server's resident memory while a durable subscription nobody
    /// consumes fills with `--messages` messages.
    #[value(name = "memory-backlog")]
    MemoryBacklog,
    /// Time from SIGKILL of a 3-node cluster's leader to the first publish
    /// acknowledged after it, over `--rounds` kills and restarts.
    #[value(name = "leader-failover")]
    LeaderFailover,
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
    /// A backlog published first, then consumed and acked through a durable
    /// subscription; with `priorities`, the messages cycle through four priorities.
    Backlog { priorities: bool },
    /// A backlog published to a durable subscription that nobody consumes,
    /// with the server's resident memory sampled during the fill and a settle after it.
    MemoryBacklog,
    /// Durable publishes one at a time while the cluster's leader is killed
    /// and restarted, round after round.
    Failover,
}

/// What a scenario reports as its throughput and latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Primary {
    /// Publish acks per second, publish→ack latency.
    PublishToAck,
    /// Deliveries per second, publish→delivery latency.
    PublishToDelivery,
    /// Deliveries per second from a backlog; no latency (the wait in the backlog is the scenario's own making).
    Consume,
}

impl ScenarioName {
    pub const ALL: [ScenarioName; 11] = [
        Self::AmoFanout1,
        Self::AmoFanout4,
        Self::AloPublish,
        Self::EoPublish,
        Self::ConsumeBacklog,
        Self::Latency1k,
        Self::Latency10k,
        Self::PriorityBacklog,
        Self::ClusterPublish,
        Self::MemoryBacklog,
        Self::LeaderFailover,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AmoFanout1 => "amo-fanout-1",
            Self::AmoFanout4 => "amo-fanout-4",
            Self::AloPublish => "alo-publish",
            Self::EoPublish => "eo-publish",
            Self::ConsumeBacklog => "consume-backlog",
            Self::Latency1k => "latency-1k",
            Self::Latency10k => "latency-10k",
            Self::PriorityBacklog => "priority-backlog",
            Self::ClusterPublish => "cluster-publish",
            Self::MemoryBacklog => "memory-backlog",
            Self::LeaderFailover => "leader-failover",
        }
    }

    /// One line for the report.
    pub fn description(self) -> &'static str {
        match self {
            Self::AmoFanout1 => {
                "at-most-once publish->deliver, 1 live subscriber (Hermod ephemeral pattern subscription; NATS core subscription)"
            }
            Self::AmoFanout4 => {
                "at-most-once publish->deliver, 4 live subscribers each receiving every message"
            }
            Self::AloPublish => {
                "durable at-least-once publish, fsync before ack, pipelined (NATS: JetStream R1 file store, async publish)"
            }
            Self::EoPublish => {
                "exactly-once publish with a unique id per message (NATS: JetStream with Nats-Msg-Id)"
            }
            Self::ConsumeBacklog => {
                "consume+ack rate from a backlog published first (durable subscription; NATS: JetStream pull consumer)"
            }
            Self::Latency1k => {
                "publish->delivery latency at 1000 msg/s, durable at-least-once, acking durable subscription (NATS: JetStream pull consumer)"
            }
            Self::Latency10k => {
                "publish->delivery latency at 10000 msg/s, durable, acking durable subscription"
            }
            Self::PriorityBacklog => {
                "a backlog of 4 priorities in turn, then consumed: rate and whether delivery order honoured priorities (NATS has none: FIFO)"
            }
            Self::ClusterPublish => {
                "durable publish on a 3-node cluster with 3 replicas, producer on the leader (NATS: 3 servers, R3 stream)"
            }
            Self::MemoryBacklog => {
                "server resident memory while an unconsumed durable subscription fills with --messages messages (NATS: JetStream file stream, durable consumer, nothing pulled)"
            }
            Self::LeaderFailover => {
                "SIGKILL of the leader of a 3-node cluster (3 replicas) under a one-at-a-time durable publisher: time to the first acked publish, --rounds times (NATS: the R3 stream's leader)"
            }
        }
    }

    pub fn shape(self) -> Shape {
        match self {
            Self::AmoFanout1 | Self::AmoFanout4 => Shape::FanOut,
            Self::AloPublish | Self::ClusterPublish => Shape::DurablePublish { exactly_once: false },
            Self::EoPublish => Shape::DurablePublish { exactly_once: true },
            Self::Latency1k | Self::Latency10k => Shape::DurableLatency,
            Self::ConsumeBacklog => Shape::Backlog { priorities: false },
            Self::PriorityBacklog => Shape::Backlog { priorities: true },
            Self::MemoryBacklog => Shape::MemoryBacklog,
            Self::LeaderFailover => Shape::Failover,
        }
    }

    pub fn primary(self) -> Primary {
        match self.shape() {
            // The fill's rate and publish->ack latency go beside the memory
            // figures; the publisher's beside the failover times.
            Shape::DurablePublish { .. } | Shape::MemoryBacklog | Shape::Failover => Primary::PublishToAck,
            Shape::FanOut | Shape::DurableLatency => Primary::PublishToDelivery,
            Shape::Backlog { .. } => Primary::Consume,
        }
    }

    /// Broker processes the scenario runs against.
    pub fn nodes(self) -> usize {
        match self {
            Self::ClusterPublish | Self::LeaderFailover => 3,
            _ => 1,
        }
    }

    /// The rate the scenario runs at unless `--rate` says otherwise.
    fn default_rate(self) -> Option<f64> {
        match self {
            Self::Latency1k => Some(1_000.0),
            Self::Latency10k => Some(10_000.0),
            _ => None,
        }
    }

    /// Consumers (subscribers in a fan-out) unless `--consumers` says otherwise.
    fn default_consumers(self) -> usize {
        match self {
            Self::AmoFanout4 => 4,
            _ => 1,
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
    /// Messages published before consuming, in a backlog scenario; in
    /// memory-backlog, the messages published and never consumed.
    pub backlog: Option<u64>,
}

impl Spec {
    pub fn new(name: ScenarioName, settings: &Settings, options: &Options) -> Self {
        let consumers = match name.shape() {
            // A publish-only scenario has nobody to consume.
            Shape::DurablePublish { .. } | Shape::MemoryBacklog | Shape::Failover => 0,
            // The order of deliveries says something only with one consumer.
            Shape::Backlog { priorities: true } => 1,
            _ => options.consumers.unwrap_or(name.default_consumers()),
        };
        let backlog = match name.shape() {
            Shape::Backlog { .. } => Some(settings.backlog),
            Shape::MemoryBacklog => Some(settings.messages),
            Shape::FanOut | Shape::DurablePublish { .. } | Shape::DurableLatency | Shape::Failover => None,
        };
        // A backlog is published as fast as the system takes it; the
        // failover publisher sends one message at a time, unpaced.
        let rate = if backlog.is_some() || name.shape() == Shape::Failover {
            None
        } else {
            settings.rate.or(name.default_rate())
        };
        Self {
            name,
            settings: settings.clone(),
            rate,
            consumers,
            backlog,
        }
    }

    /// Each producer's share of the rate.
    pub fn rate_per_producer(&self) -> Option<f64> {
        self.rate.map(|rate| rate / self.settings.producers as f64)
    }

    /// Each producer's share of the backlog (rounded up).
    pub fn backlog_per_producer(&self) -> Option<u64> {
        let producers = self.settings.producers as u64;
        self.backlog.map(|backlog| backlog.div_ceil(producers))
    }

    /// Deliveries each published message should cause.
    pub fn fanout(&self) -> u64 {
        match self.name.shape() {
            Shape::FanOut => self.consumers as u64,
            Shape::DurableLatency | Shape::Backlog { .. } => u64::from(self.consumers > 0),
            Shape::DurablePublish { .. } | Shape::MemoryBacklog | Shape::Failover => 0,
        }
    }

    /// How long publishing the backlog may take: `FILL_LIMIT`, or longer for
    /// a backlog too large to publish in that time at `MIN_FILL_RATE_MSGS_PER_S`.
    pub fn fill_limit(&self) -> Duration {
        let messages = self.backlog.unwrap_or(0) as f64;
        FILL_LIMIT.max(Duration::from_secs_f64(messages / MIN_FILL_RATE_MSGS_PER_S))
    }

    /// The longest the load of one system's run may last: warm-up and
    /// duration; a backlog's fill and then its drain (over the duration);
    /// memory-backlog's fill and the settle after it; or leader-failover's
    /// rounds, each at most its warm-up, failover and rejoin.
    pub fn load_limit(&self) -> Duration {
        let settings = &self.settings;
        match self.name.shape() {
            Shape::Backlog { .. } => self.fill_limit() + settings.duration,
            Shape::MemoryBacklog => self.fill_limit() + Duration::from_secs(RSS_SETTLE_S),
            Shape::Failover => settings.rounds * failover::round_limit(settings.warmup),
            Shape::FanOut | Shape::DurablePublish { .. } | Shape::DurableLatency => {
                settings.warmup + settings.duration
            }
        }
    }

    /// The subject (NATS) or topic (Hermod) of the scenario.
    pub fn topic(&self) -> String {
        format!("bench.{}", self.name.as_str().replace('-', "_"))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn spec(args: &[&str], name: ScenarioName) -> Spec {
        let options = Options::parse_from(args);
        let settings = options.settings().expect("settings");
        Spec::new(name, &settings, &options)
    }

    #[test]
    fn each_scenario_has_its_own_defaults() {
        let fanout = spec(&["hermod-bench"], ScenarioName::AmoFanout4);
        assert_eq!((fanout.consumers, fanout.fanout()), (4, 4));
        let latency = spec(&["hermod-bench"], ScenarioName::Latency10k);
        assert_eq!(latency.rate, Some(10_000.0));
        assert_eq!(latency.backlog, None);
        let publish = spec(
            &["hermod-bench", "--consumers", "3"],
            ScenarioName::ClusterPublish,
        );
        assert_eq!((publish.consumers, publish.name.nodes()), (0, 3));
    }

    #[test]
    fn a_backlog_is_unpaced_and_shared_by_the_producers() {
        let args = [
            "hermod-bench",
            "--rate",
            "5",
            "--producers",
            "3",
            "--consumers",
            "2",
            "--backlog",
            "10",
        ];
        let priority = spec(&args, ScenarioName::PriorityBacklog);
        assert_eq!(priority.rate, None);
        assert_eq!(priority.consumers, 1);
        assert_eq!(priority.backlog_per_producer(), Some(4));
        let consume = spec(&args, ScenarioName::ConsumeBacklog);
        assert_eq!((consume.consumers, consume.fanout()), (2, 1));
        assert_eq!(consume.topic(), "bench.consume_backlog");
        assert_eq!(ScenarioName::ALL.len(), ScenarioName::value_variants().len());
    }

    #[test]
    fn memory_backlog_publishes_its_messages_with_nobody_consuming() {
        let memory = spec(
            &["hermod-bench", "--messages", "20000000", "--consumers", "3"],
            ScenarioName::MemoryBacklog,
        );
        assert_eq!((memory.consumers, memory.fanout()), (0, 0));
        assert_eq!(memory.backlog, Some(20_000_000));
        assert_eq!(memory.name.primary(), Primary::PublishToAck);
        assert_eq!(memory.fill_limit(), Duration::from_secs(4000));
        assert_eq!(memory.load_limit(), Duration::from_secs(4000 + RSS_SETTLE_S));
        let small = spec(&["hermod-bench"], ScenarioName::ConsumeBacklog);
        assert_eq!(small.fill_limit(), FILL_LIMIT);
    }

    #[test]
    fn leader_failover_runs_on_three_nodes_for_its_rounds() {
        let args = [
            "hermod-bench",
            "--rounds",
            "4",
            "--rate",
            "10",
            "--consumers",
            "2",
        ];
        let failover = spec(&args, ScenarioName::LeaderFailover);
        assert_eq!((failover.consumers, failover.fanout()), (0, 0));
        assert_eq!((failover.rate, failover.backlog), (None, None));
        assert_eq!(failover.name.nodes(), 3);
        assert_eq!(failover.name.primary(), Primary::PublishToAck);
        let round = failover::round_limit(failover.settings.warmup);
        assert_eq!(failover.load_limit(), 4 * round);
        assert_eq!(failover.topic(), "bench.leader_failover");
    }
}

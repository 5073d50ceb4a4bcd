//! Topic and subscription settings as the admin calls take and return them.
//!
//! In a config, `None` means "the broker's default". In an info (what the
//! broker reports), the defaults are filled in and `None` means "no limit"
//! (or, for a TTL, "never expires").

use std::time::{Duration, SystemTime};

use crate::message::Delivery;

/// When a topic's messages may be deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Retention {
    /// Keep messages until max age, max messages or max bytes is passed.
    #[default]
    Limits,
    /// Delete a message once every subscription has acknowledged it (the
    /// limits still apply as a ceiling).
    Interest,
}

impl Retention {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Limits => "limits",
            Self::Interest => "interest",
        }
    }
}

/// How a subscription orders priorities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PriorityPolicy {
    /// A higher priority always goes first.
    #[default]
    Strict,
    /// Priorities share deliveries by weight (8:4:2:1), so none starves.
    Weighted,
}

impl PriorityPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Strict => "strict",
            Self::Weighted => "weighted",
        }
    }
}

/// Where a new durable subscription starts reading each matching topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StartPosition {
    /// Only messages published after the subscription is created.
    #[default]
    New,
    /// Every message still retained.
    Earliest,
    /// From this sequence on, in every matching topic.
    Sequence(u64),
    /// Messages published at or after this time.
    Time(SystemTime),
}

/// Settings of a topic to create; unset fields take the broker's defaults.
///
/// ```
/// use std::time::Duration;
/// use hermod_client::{Retention, TopicConfig};
///
/// let config = TopicConfig::new()
///     .retention(Retention::Interest)
///     .dedup_window(Duration::from_secs(3600))
///     .max_message_bytes(4 * 1024 * 1024);
/// assert_eq!(config.retention, Some(Retention::Interest));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicConfig {
    pub retention: Option<Retention>,
    pub max_age: Option<Duration>,
    pub max_messages: Option<u64>,
    pub max_bytes: Option<u64>,
    /// TTL of messages that do not carry their own.
    pub default_ttl: Option<Duration>,
    /// How long a message id is remembered for deduplication.
    pub dedup_window: Option<Duration>,
    /// Largest payload accepted.
    pub max_message_bytes: Option<u64>,
}

impl TopicConfig {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = Some(retention);
        self
    }

    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    pub fn max_messages(mut self, max_messages: u64) -> Self {
        self.max_messages = Some(max_messages);
        self
    }

    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = Some(max_bytes);
        self
    }

    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = Some(ttl);
        self
    }

    pub fn dedup_window(mut self, window: Duration) -> Self {
        self.dedup_window = Some(window);
        self
    }

    pub fn max_message_bytes(mut self, bytes: u64) -> Self {
        self.max_message_bytes = Some(bytes);
        self
    }
}

/// A topic as the broker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    /// The effective settings, defaults filled in; `None` is "no limit".
    pub config: TopicConfig,
    pub created_at: SystemTime,
    pub first_sequence: u64,
    pub last_sequence: u64,
    /// Messages retained now.
    pub messages: u64,
    /// Bytes retained now.
    pub bytes: u64,
}

/// Settings of a durable subscription to create; unset fields take the
/// broker's defaults.
///
/// ```
/// use std::time::Duration;
/// use hermod_client::{Delivery, StartPosition, SubscriptionConfig};
///
/// let config = SubscriptionConfig::new("orders.>")
///     .delivery(Delivery::ExactlyOnce)
///     .ack_deadline(Duration::from_secs(10))
///     .max_deliveries(5)
///     .dead_letter_topic("dead.orders")
///     .start(StartPosition::Earliest);
/// assert_eq!(config.pattern, "orders.>");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionConfig {
    /// The topics the subscription reads (`*` one token, `>` the rest).
    pub pattern: String,
    pub delivery: Option<Delivery>,
    /// How long a consumer has to settle a delivery before it is redelivered.
    pub ack_deadline: Option<Duration>,
    /// Attempts before a message is dead-lettered (or dropped).
    pub max_deliveries: Option<u32>,
    /// Where messages go after `max_deliveries`, a reject or expiry.
    pub dead_letter_topic: Option<String>,
    pub start: Option<StartPosition>,
    pub priority_policy: Option<PriorityPolicy>,
    /// First redelivery backoff (it doubles per attempt).
    pub backoff_initial: Option<Duration>,
    /// Redelivery backoff ceiling.
    pub backoff_max: Option<Duration>,
}

impl SubscriptionConfig {
    pub fn new(pattern: impl Into<String>) -> Self {
        Self {
            pattern: pattern.into(),
            delivery: None,
            ack_deadline: None,
            max_deliveries: None,
            dead_letter_topic: None,
            start: None,
            priority_policy: None,
            backoff_initial: None,
            backoff_max: None,
        }
    }

    pub fn delivery(mut self, delivery: Delivery) -> Self {
        self.delivery = Some(delivery);
        self
    }

    pub fn ack_deadline(mut self, deadline: Duration) -> Self {
        self.ack_deadline = Some(deadline);
        self
    }

    pub fn max_deliveries(mut self, max: u32) -> Self {
        self.max_deliveries = Some(max);
        self
    }

    pub fn dead_letter_topic(mut self, topic: impl Into<String>) -> Self {
        self.dead_letter_topic = Some(topic.into());
        self
    }

    pub fn start(mut self, start: StartPosition) -> Self {
        self.start = Some(start);
        self
    }

    pub fn priority_policy(mut self, policy: PriorityPolicy) -> Self {
        self.priority_policy = Some(policy);
        self
    }

    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = Some(initial);
        self.backoff_max = Some(max);
        self
    }
}

/// A durable subscription as the broker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionInfo {
    pub name: String,
    /// The effective settings, defaults filled in.
    pub config: SubscriptionConfig,
    pub created_at: SystemTime,
    /// Messages waiting to be delivered (delayed ones included).
    pub backlog: u64,
    /// Deliveries awaiting settlement.
    pub in_flight: u64,
    /// Consumers attached now.
    pub consumers: u32,
}

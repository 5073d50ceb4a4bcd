//! Messages as the client sends them, and the broker's receipt for a publish.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

/// Delivery priority; within a subscription a higher one is delivered first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
    Critical,
}

impl Priority {
    pub const ALL: [Priority; 4] = [Self::Low, Self::Normal, Self::High, Self::Critical];

    /// `low`, `normal`, `high` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Normal => "normal",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

/// The delivery guarantee of a message or a subscription; a consumer gets
/// the weaker of the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Delivery {
    /// Not stored, not replicated; delivered to the consumers connected now.
    AtMostOnce,
    /// Stored on a quorum before the publish is acknowledged; redelivered
    /// until acked.
    #[default]
    AtLeastOnce,
    /// At least once, plus publish deduplication by id and confirmed acks.
    ExactlyOnce,
}

impl Delivery {
    pub const ALL: [Delivery; 3] = [Self::AtMostOnce, Self::AtLeastOnce, Self::ExactlyOnce];

    /// `at-most-once`, `at-least-once` or `exactly-once`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AtMostOnce => "at-most-once",
            Self::AtLeastOnce => "at-least-once",
            Self::ExactlyOnce => "exactly-once",
        }
    }
}

/// A word that names no value of the enum it was parsed as.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not one of {expected}")]
pub struct ParseEnumError {
    pub value: String,
    pub expected: &'static str,
}

macro_rules! str_enum {
    ($ty:ty, $expected:literal) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = ParseEnumError;

            /// Case-insensitive; `_` may stand for `-`.
            fn from_str(value: &str) -> Result<Self, Self::Err> {
                let wanted = value.to_ascii_lowercase().replace('_', "-");
                Self::ALL
                    .into_iter()
                    .find(|v| v.as_str() == wanted)
                    .ok_or_else(|| ParseEnumError {
                        value: value.to_owned(),
                        expected: $expected,
                    })
            }
        }
    };
}

str_enum!(Priority, "low, normal, high, critical");
str_enum!(Delivery, "at-most-once, at-least-once, exactly-once");

/// A message to publish.
///
/// ```
/// use std::time::Duration;
/// use hermod_client::{Delivery, OutgoingMessage, Priority};
///
/// let message = OutgoingMessage::new("orders.eu.created", "{\"order\": 42}")
///     .id("order-42")
///     .priority(Priority::High)
///     .ttl(Duration::from_secs(60))
///     .delivery(Delivery::ExactlyOnce)
///     .header("content-type", "application/json");
/// assert_eq!(message.headers["content-type"], "application/json");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    pub topic: String,
    pub payload: Bytes,
    /// Idempotency key. `None`: the client makes a UUIDv7 once, before the
    /// first attempt, and sends the same one on every retry.
    pub id: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub priority: Priority,
    /// `None`: the topic's default TTL applies.
    pub ttl: Option<Duration>,
    /// `None`: deliverable at once.
    pub delay: Option<Duration>,
    pub delivery: Delivery,
}

impl OutgoingMessage {
    /// A message with normal priority, at-least-once delivery and no headers.
    pub fn new(topic: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            payload: payload.into(),
            id: None,
            headers: BTreeMap::new(),
            priority: Priority::Normal,
            ttl: None,
            delay: None,
            delivery: Delivery::AtLeastOnce,
        }
    }

    /// Sets the idempotency key (at most 128 bytes, no whitespace).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Expire the message `ttl` after it is published (millisecond precision).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Deliver no sooner than `delay` after it is published.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    pub fn delivery(mut self, delivery: Delivery) -> Self {
        self.delivery = delivery;
        self
    }

    /// Adds (or replaces) a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }
}

/// The broker's answer to a successful publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishReceipt {
    /// The message id: the caller's, or the one the client generated.
    pub id: String,
    pub topic: String,
    /// Position in the topic; 0 for at-most-once messages, which are not stored.
    pub sequence: u64,
    /// The id was already published within the topic's dedup window: nothing
    /// was stored and `sequence` is the first publish's.
    pub duplicate: bool,
    pub publish_time: SystemTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builder_sets_every_field() {
        let message = OutgoingMessage::new("a.b", "x")
            .id("id-1")
            .priority(Priority::Critical)
            .ttl(Duration::from_secs(30))
            .delay(Duration::from_secs(5))
            .delivery(Delivery::ExactlyOnce)
            .header("k", "v")
            .header("k", "w");
        assert_eq!(message.topic, "a.b");
        assert_eq!(message.payload, Bytes::from_static(b"x"));
        assert_eq!(message.id.as_deref(), Some("id-1"));
        assert_eq!(message.priority, Priority::Critical);
        assert_eq!(message.ttl, Some(Duration::from_secs(30)));
        assert_eq!(message.delay, Some(Duration::from_secs(5)));
        assert_eq!(message.delivery, Delivery::ExactlyOnce);
        assert_eq!(message.headers.len(), 1);
        assert_eq!(message.headers["k"], "w");

        let plain = OutgoingMessage::new("t", Vec::from(&b"\xff"[..]));
        assert_eq!(plain.id, None);
        assert_eq!(plain.priority, Priority::Normal);
        assert_eq!(plain.delivery, Delivery::AtLeastOnce);
    }

    #[test]
    fn enums_parse_their_names() {
        assert_eq!("HIGH".parse::<Priority>(), Ok(Priority::High));
        assert_eq!("exactly_once".parse::<Delivery>(), Ok(Delivery::ExactlyOnce));
        assert_eq!(Delivery::AtMostOnce.to_string(), "at-most-once");
        let err = "urgent".parse::<Priority>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"urgent\" is not one of low, normal, high, critical"
        );
        assert!(Priority::Critical > Priority::Low);
    }
}

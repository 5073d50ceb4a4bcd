//! Messages as the broker stores and delivers them, and their header rules.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::limits::{MAX_HEADER_NAME_BYTES, MAX_HEADER_VALUE_BYTES, MAX_HEADERS};
use super::{MessageId, TopicName, ValidationError};

/// A message's position in its topic: strictly increasing from 1.
pub type Sequence = u64;

/// Headers in a stable order, so every replica encodes them identically.
pub type Headers = BTreeMap<String, String>;

/// Delivery priority; a higher one is delivered first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub enum Priority {
    Low = 0,
    #[default]
    Normal = 1,
    High = 2,
    Critical = 3,
}

impl Priority {
    /// All priorities, highest first (the strict delivery order).
    pub const DESCENDING: [Priority; 4] = [Self::Critical, Self::High, Self::Normal, Self::Low];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Normal => "normal",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

/// The delivery guarantee of a message or a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub enum DeliveryGuarantee {
    AtMostOnce = 0,
    #[default]
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl DeliveryGuarantee {
    /// A consumer gets the weaker of the message's and the subscription's guarantee.
    pub fn weaker(self, other: Self) -> Self {
        self.min(other)
    }

    pub fn is_durable(self) -> bool {
        self != Self::AtMostOnce
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AtMostOnce => "at-most-once",
            Self::AtLeastOnce => "at-least-once",
            Self::ExactlyOnce => "exactly-once",
        }
    }
}

/// Identifies a stored message: its topic and sequence.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageKey {
    pub topic: TopicName,
    pub sequence: Sequence,
}

/// A validated publish, before the broker assigns it a sequence. Times are
/// relative: the state machine turns them into absolute times with the
/// command's timestamp, so every replica computes the same ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewMessage {
    pub id: MessageId,
    pub topic: TopicName,
    pub payload: Bytes,
    pub headers: Headers,
    pub priority: Priority,
    /// `None`: the topic's default TTL applies.
    pub ttl_ms: Option<u64>,
    pub delay_ms: u64,
    pub delivery: DeliveryGuarantee,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: MessageId,
    pub topic: TopicName,
    pub sequence: Sequence,
    pub payload: Bytes,
    pub headers: Headers,
    pub priority: Priority,
    pub publish_time_ms: u64,
    /// `None`: never expires.
    pub expires_at_ms: Option<u64>,
    /// Not delivered before this time (publish time + delay).
    pub not_before_ms: u64,
    pub delivery: DeliveryGuarantee,
}

impl Message {
    pub fn key(&self) -> MessageKey {
        MessageKey {
            topic: self.topic.clone(),
            sequence: self.sequence,
        }
    }

    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }

    /// Bytes this message counts against a topic's `max_bytes`.
    pub fn size_bytes(&self) -> u64 {
        let headers: usize = self.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        (self.payload.len() + headers + self.id.as_str().len()) as u64
    }
}

/// Checks the header rules; `field` is the headers field's name in the request.
pub fn validate_headers(field: &str, headers: &Headers) -> Result<(), ValidationError> {
    if headers.len() > MAX_HEADERS {
        return Err(ValidationError::new(
            field,
            format!("{} headers, at most {MAX_HEADERS} allowed", headers.len()),
        ));
    }
    for (name, value) in headers {
        if name.is_empty() || name.len() > MAX_HEADER_NAME_BYTES {
            return Err(ValidationError::new(
                format!("{field}[{name:?}]"),
                format!("header name must be 1 to {MAX_HEADER_NAME_BYTES} bytes"),
            ));
        }
        if name
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == ':')
        {
            return Err(ValidationError::new(
                format!("{field}[{name:?}]"),
                "header name must not contain whitespace, control characters or ':'",
            ));
        }
        if value.len() > MAX_HEADER_VALUE_BYTES {
            return Err(ValidationError::new(
                format!("{field}[{name:?}]"),
                format!(
                    "header value is {} bytes, at most {MAX_HEADER_VALUE_BYTES} allowed",
                    value.len()
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_weaker_guarantee_wins() {
        use DeliveryGuarantee::*;
        assert_eq!(ExactlyOnce.weaker(AtLeastOnce), AtLeastOnce);
        assert_eq!(AtMostOnce.weaker(ExactlyOnce), AtMostOnce);
        assert_eq!(ExactlyOnce.weaker(ExactlyOnce), ExactlyOnce);
    }

    #[test]
    fn priorities_order_low_to_critical() {
        assert!(Priority::Critical > Priority::High);
        assert!(Priority::High > Priority::Normal);
        assert!(Priority::Normal > Priority::Low);
        assert_eq!(Priority::DESCENDING[0], Priority::Critical);
    }

    #[test]
    fn header_rules_name_the_header() {
        let mut headers = Headers::new();
        headers.insert("ok".into(), "v".into());
        assert!(validate_headers("headers", &headers).is_ok());
        headers.insert("bad name".into(), "v".into());
        let err = validate_headers("messages[0].headers", &headers).unwrap_err();
        assert!(err.field.contains("bad name"), "{err}");
        let mut big = Headers::new();
        big.insert("k".into(), "v".repeat(MAX_HEADER_VALUE_BYTES + 1));
        assert!(validate_headers("headers", &big).is_err());
        let many: Headers = (0..=MAX_HEADERS)
            .map(|i| (format!("h{i}"), String::new()))
            .collect();
        assert!(validate_headers("headers", &many).is_err());
    }
}

/// A settlement a consumer asks for, by ack token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Settle {
    Ack,
    /// Redeliver, after this delay or the subscription's backoff.
    Nack(Option<u64>),
    /// Keep the lease, for this long or one more ack deadline.
    Extend(Option<u64>),
    /// Dead-letter now.
    Reject,
}

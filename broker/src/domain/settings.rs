//! Topic and subscription settings, with their defaults and the rules they must obey.

use serde::{Deserialize, Serialize};

use super::limits::*;
use super::{DeliveryGuarantee, Pattern, Sequence, TopicName, ValidationError};

/// How a topic decides when a message may be deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum RetentionPolicy {
    /// Keep messages until they pass max age, max messages or max bytes.
    #[default]
    Limits,
    /// Delete a message once every subscription has acknowledged it
    /// (the limits still apply as a ceiling).
    Interest,
}

/// A topic's effective settings (defaults already filled in).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSettings {
    pub retention: RetentionPolicy,
    pub max_age_ms: u64,
    /// 0: no limit.
    pub max_messages: u64,
    /// 0: no limit.
    pub max_bytes: u64,
    /// `None`: messages without their own TTL never expire.
    pub default_ttl_ms: Option<u64>,
    pub dedup_window_ms: u64,
    pub max_message_bytes: u64,
}

impl Default for TopicSettings {
    fn default() -> Self {
        Self {
            retention: RetentionPolicy::Limits,
            max_age_ms: DEFAULT_MAX_AGE_MS,
            max_messages: 0,
            max_bytes: 0,
            default_ttl_ms: None,
            dedup_window_ms: DEFAULT_DEDUP_WINDOW_MS,
            max_message_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
        }
    }
}

/// Checks a duration field against its allowed range.
pub fn check_range(field: &str, value: u64, min: u64, max: u64) -> Result<u64, ValidationError> {
    if value < min || value > max {
        return Err(ValidationError::new(
            field,
            format!("{value} ms is out of range: allowed {min} to {max} ms"),
        ));
    }
    Ok(value)
}

impl TopicSettings {
    /// Checks every setting; `prefix` is the settings field's name in the request.
    pub fn validate(&self, prefix: &str) -> Result<(), ValidationError> {
        let field = |name: &str| format!("{prefix}.{name}");
        check_range(&field("max_age_ms"), self.max_age_ms, 1, MAX_MAX_AGE_MS)?;
        check_range(
            &field("dedup_window_ms"),
            self.dedup_window_ms,
            1,
            MAX_DEDUP_WINDOW_MS,
        )?;
        check_range(
            &field("max_message_bytes"),
            self.max_message_bytes,
            1,
            MAX_PAYLOAD_BYTES,
        )?;
        if let Some(ttl) = self.default_ttl_ms {
            check_range(&field("default_ttl_ms"), ttl, 1, MAX_TTL_MS)?;
        }
        Ok(())
    }
}

/// Where a new durable subscription starts reading each matching topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum StartPosition {
    /// Only messages published after the subscription was created.
    #[default]
    New,
    /// Every message still retained.
    Earliest,
    /// Messages from this sequence on.
    Sequence(Sequence),
    /// Messages published at or after this time (ms since the epoch).
    Time(u64),
}

/// How a subscription orders priorities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum PriorityPolicy {
    /// A higher priority is always delivered first.
    #[default]
    Strict,
    /// Priorities share deliveries by weight, so none is starved.
    Weighted,
}

/// A durable subscription's effective settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionSettings {
    pub pattern: Pattern,
    pub delivery: DeliveryGuarantee,
    pub ack_deadline_ms: u64,
    pub max_deliveries: u32,
    pub dead_letter_topic: Option<TopicName>,
    pub start: StartPosition,
    pub priority_policy: PriorityPolicy,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
}

impl SubscriptionSettings {
    /// Settings with every default, for `pattern`.
    pub fn new(pattern: Pattern) -> Self {
        Self {
            pattern,
            delivery: DeliveryGuarantee::AtLeastOnce,
            ack_deadline_ms: DEFAULT_ACK_DEADLINE_MS,
            max_deliveries: DEFAULT_MAX_DELIVERIES,
            dead_letter_topic: None,
            start: StartPosition::New,
            priority_policy: PriorityPolicy::Strict,
            backoff_initial_ms: DEFAULT_BACKOFF_INITIAL_MS,
            backoff_max_ms: DEFAULT_BACKOFF_MAX_MS,
        }
    }

    /// Checks every setting; `prefix` is the settings field's name in the request.
    pub fn validate(&self, prefix: &str) -> Result<(), ValidationError> {
        let field = |name: &str| format!("{prefix}.{name}");
        check_range(
            &field("ack_deadline_ms"),
            self.ack_deadline_ms,
            MIN_ACK_DEADLINE_MS,
            MAX_ACK_DEADLINE_MS,
        )?;
        if self.max_deliveries == 0 || self.max_deliveries > MAX_MAX_DELIVERIES {
            return Err(ValidationError::new(
                field("max_deliveries"),
                format!(
                    "{} is out of range: allowed 1 to {MAX_MAX_DELIVERIES}",
                    self.max_deliveries
                ),
            ));
        }
        check_range(
            &field("backoff_initial_ms"),
            self.backoff_initial_ms,
            1,
            MAX_BACKOFF_MS,
        )?;
        check_range(&field("backoff_max_ms"), self.backoff_max_ms, 1, MAX_BACKOFF_MS)?;
        if self.backoff_max_ms < self.backoff_initial_ms {
            return Err(ValidationError::new(
                field("backoff_max_ms"),
                "must not be smaller than backoff_initial_ms",
            ));
        }
        if let Some(dlq) = &self.dead_letter_topic
            && self.pattern.matches(dlq)
        {
            return Err(ValidationError::new(
                field("dead_letter_topic"),
                format!("{dlq} matches the subscription's own pattern: dead letters would loop"),
            ));
        }
        if self.delivery == DeliveryGuarantee::AtMostOnce {
            return Err(ValidationError::new(
                field("delivery"),
                "a durable subscription is at-least-once or exactly-once; use an ephemeral subscription for at-most-once",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pattern: &str) -> SubscriptionSettings {
        SubscriptionSettings::new(Pattern::parse("p", pattern).unwrap())
    }

    #[test]
    fn defaults_are_valid() {
        assert!(TopicSettings::default().validate("settings").is_ok());
        assert!(settings("a.>").validate("settings").is_ok());
    }

    #[test]
    fn absurd_settings_name_their_field() {
        let mut topic = TopicSettings {
            dedup_window_ms: MAX_DEDUP_WINDOW_MS + 1,
            ..Default::default()
        };
        assert_eq!(
            topic.validate("settings").unwrap_err().field,
            "settings.dedup_window_ms"
        );
        topic = TopicSettings {
            max_message_bytes: MAX_PAYLOAD_BYTES + 1,
            ..Default::default()
        };
        assert_eq!(
            topic.validate("settings").unwrap_err().field,
            "settings.max_message_bytes"
        );
        topic = TopicSettings {
            default_ttl_ms: Some(0),
            ..Default::default()
        };
        assert_eq!(
            topic.validate("settings").unwrap_err().field,
            "settings.default_ttl_ms"
        );

        let mut sub = settings("a.>");
        sub.ack_deadline_ms = 1;
        assert_eq!(
            sub.validate("settings").unwrap_err().field,
            "settings.ack_deadline_ms"
        );
        sub = settings("a.>");
        sub.max_deliveries = 0;
        assert_eq!(
            sub.validate("settings").unwrap_err().field,
            "settings.max_deliveries"
        );
        sub = settings("a.>");
        sub.backoff_max_ms = 10;
        sub.backoff_initial_ms = 20;
        assert_eq!(
            sub.validate("settings").unwrap_err().field,
            "settings.backoff_max_ms"
        );
    }

    #[test]
    fn a_dead_letter_topic_inside_the_pattern_is_refused() {
        let mut sub = settings("orders.>");
        sub.dead_letter_topic = Some(TopicName::parse("t", "orders.dead").unwrap());
        assert_eq!(
            sub.validate("settings").unwrap_err().field,
            "settings.dead_letter_topic"
        );
        sub.dead_letter_topic = Some(TopicName::parse("t", "dead.orders").unwrap());
        assert!(sub.validate("settings").is_ok());
    }
}

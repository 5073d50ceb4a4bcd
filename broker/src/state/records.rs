//! What the state machine persists about topics and subscriptions.

use serde::{Deserialize, Serialize};

use crate::domain::{Sequence, SubscriptionName, SubscriptionSettings, TopicName, TopicSettings};

/// A topic and its running totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub name: TopicName,
    pub settings: TopicSettings,
    pub created_at_ms: u64,
    /// The lowest sequence still stored (== `next_sequence` when empty).
    pub first_sequence: Sequence,
    /// The sequence the next publish gets.
    pub next_sequence: Sequence,
    pub messages: u64,
    pub bytes: u64,
}

impl TopicRecord {
    pub fn new(name: TopicName, settings: TopicSettings, now_ms: u64) -> Self {
        Self {
            name,
            settings,
            created_at_ms: now_ms,
            first_sequence: 1,
            next_sequence: 1,
            messages: 0,
            bytes: 0,
        }
    }

    pub fn last_sequence(&self) -> Sequence {
        self.next_sequence - 1
    }
}

/// A durable subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    pub name: SubscriptionName,
    pub settings: SubscriptionSettings,
    pub created_at_ms: u64,
}

/// A dedup index entry: the first publish of an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupRecord {
    pub sequence: Sequence,
    pub publish_time_ms: u64,
}

/// A priority index entry: when its message may be delivered and when it
/// expires, so a page of the backlog is read without reading the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriorityRecord {
    pub not_before_ms: u64,
    pub expires_at_ms: Option<u64>,
}

impl PriorityRecord {
    pub fn of(message: &crate::domain::Message) -> Self {
        Self {
            not_before_ms: message.not_before_ms,
            expires_at_ms: message.expires_at_ms,
        }
    }
}

/// Where a message's priority index entry lives.
pub fn priority_key(message: &crate::domain::Message) -> Vec<u8> {
    crate::storage::keys::priority_entry(message.topic.as_str(), rank(message.priority), message.sequence)
}

/// The byte that orders a priority inside the index.
pub fn rank(priority: crate::domain::Priority) -> u8 {
    priority.index() as u8
}

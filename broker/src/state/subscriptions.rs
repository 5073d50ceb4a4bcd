//! Applying subscription commands: create with a start position, delete,
//! acknowledge, and dead-letter.

use crate::domain::{
    DeliveryGuarantee, Message, MessageKey, NewMessage, Sequence, StartPosition, SubscriptionName,
    SubscriptionSettings, TopicName, TopicSettings,
};
use crate::semantics::DeadReason;
use crate::storage::{Cf, StorageError, keys};

use super::catalog::{cursor_key, cursor_prefix, subscription_key};
use super::command::{Applied, CommandError, Refusal};
use super::events::Event;
use super::machine::Applier;
use super::records::{SubscriptionRecord, TopicRecord};

/// Header names on dead-lettered messages.
pub const HEADER_ORIGINAL_TOPIC: &str = "hermod-original-topic";
pub const HEADER_ORIGINAL_ID: &str = "hermod-original-id";
pub const HEADER_ORIGINAL_SEQUENCE: &str = "hermod-original-sequence";
pub const HEADER_SUBSCRIPTION: &str = "hermod-subscription";
pub const HEADER_REASON: &str = "hermod-dead-letter-reason";
pub const HEADER_ATTEMPTS: &str = "hermod-attempts";

impl Applier<'_, '_> {
    pub(super) fn create_subscription(
        &mut self,
        name: &SubscriptionName,
        settings: &SubscriptionSettings,
        now_ms: u64,
    ) -> Result<Result<SubscriptionRecord, CommandError>, StorageError> {
        if let Some(existing) = self.catalog.subscriptions.get(name) {
            if existing.settings == *settings {
                return Ok(Ok(existing.clone()));
            }
            return Ok(Err(CommandError::new(
                Refusal::AlreadyExists,
                "name",
                format!("subscription {name} exists with other settings"),
            )));
        }
        let record = SubscriptionRecord {
            name: name.clone(),
            settings: settings.clone(),
            created_at_ms: now_ms,
        };
        let topics: Vec<TopicRecord> = self.catalog.topics_of(&record).cloned().collect();
        for topic in topics {
            let cursor = self.start_sequence(&topic, settings.start)?;
            self.txn.put(Cf::Meta, cursor_key(name, &topic.name), &cursor);
        }
        self.txn.put(Cf::Meta, subscription_key(name), &record);
        self.catalog.subscriptions.insert(name.clone(), record.clone());
        self.out.push(Applied::SubscriptionCreated(name.clone()));
        if self.records_subscription_events() {
            let event = Event::SubscriptionCreated {
                subscription: name.as_str(),
                pattern: settings.pattern.as_str(),
            };
            self.append_event(event, now_ms)?;
        }
        Ok(Ok(record))
    }

    /// The first sequence of an existing topic a new subscription reads.
    fn start_sequence(&self, topic: &TopicRecord, start: StartPosition) -> Result<Sequence, StorageError> {
        Ok(match start {
            StartPosition::New => topic.next_sequence,
            StartPosition::Earliest => topic.first_sequence,
            StartPosition::Sequence(sequence) => sequence.max(topic.first_sequence),
            StartPosition::Time(time_ms) => self.first_at_or_after(topic, time_ms)?,
        })
    }

    /// Binary search by publish time; publish times never decrease within a
    /// topic because the proposer's clock is made monotonic.
    fn first_at_or_after(&self, topic: &TopicRecord, time_ms: u64) -> Result<Sequence, StorageError> {
        let (mut low, mut high) = (topic.first_sequence, topic.next_sequence);
        while low < high {
            let middle = low + (high - low) / 2;
            let message: Option<Message> = self
                .txn
                .get(Cf::Messages, &keys::message(topic.name.as_str(), middle))?;
            match message {
                Some(m) if m.publish_time_ms >= time_ms => high = middle,
                _ => low = middle + 1,
            }
        }
        Ok(low)
    }

    pub(super) fn delete_subscription(
        &mut self,
        name: &SubscriptionName,
        now_ms: u64,
    ) -> Result<Result<(), CommandError>, StorageError> {
        if self.catalog.subscriptions.remove(name).is_none() {
            return Ok(Err(CommandError::new(
                Refusal::NotFound,
                "name",
                format!("subscription {name} does not exist"),
            )));
        }
        self.txn.delete(Cf::Meta, subscription_key(name));
        let cursors = cursor_prefix(name);
        self.txn
            .delete_range(Cf::Meta, cursors.clone(), keys::prefix_end(&cursors));
        let acks = keys::named(b"", name.as_str());
        self.txn
            .delete_range(Cf::Acks, acks.clone(), keys::prefix_end(&acks));
        self.out.push(Applied::SubscriptionDeleted(name.clone()));
        if self.records_subscription_events() {
            let event = Event::SubscriptionDeleted {
                subscription: name.as_str(),
            };
            self.append_event(event, now_ms)?;
        }
        Ok(Ok(()))
    }

    pub(super) fn ack(
        &mut self,
        subscription: &SubscriptionName,
        keys_to_ack: &[MessageKey],
    ) -> Result<Result<(), CommandError>, StorageError> {
        if !self.catalog.subscriptions.contains_key(subscription) {
            return Ok(Err(CommandError::new(
                Refusal::NotFound,
                "subscription",
                format!("subscription {subscription} does not exist"),
            )));
        }
        for key in keys_to_ack {
            self.mark_acked(subscription, key);
        }
        Ok(Ok(()))
    }

    /// Records that `subscription` is done with `key`; returns false when it
    /// already was, or when no such message was ever published (a stale
    /// token must not hide a message that gets that sequence later).
    fn mark_acked(&mut self, subscription: &SubscriptionName, key: &MessageKey) -> bool {
        let published = self
            .catalog
            .topics
            .get(&key.topic)
            .is_some_and(|t| key.sequence < t.next_sequence);
        if !published {
            return false;
        }
        let marker = keys::ack(subscription.as_str(), key.topic.as_str(), key.sequence);
        if self.txn.contains(Cf::Acks, &marker).unwrap_or(false) {
            return false;
        }
        self.txn.put(Cf::Acks, marker, &());
        self.out.push(Applied::Acked(subscription.clone(), key.clone()));
        true
    }

    pub(super) fn dead_letter(
        &mut self,
        subscription: &SubscriptionName,
        key: &MessageKey,
        reason: DeadReason,
        attempts: u32,
        now_ms: u64,
    ) -> Result<bool, StorageError> {
        let Some(record) = self.catalog.subscriptions.get(subscription).cloned() else {
            return Ok(false);
        };
        let marker = keys::ack(subscription.as_str(), key.topic.as_str(), key.sequence);
        if self.txn.contains(Cf::Acks, &marker)? {
            return Ok(false);
        }
        if !self.mark_acked(subscription, key) {
            return Ok(false);
        }
        let original: Option<Message> = self
            .txn
            .get(Cf::Messages, &keys::message(key.topic.as_str(), key.sequence))?;
        let Some(original) = original else {
            return Ok(true);
        };
        match &record.settings.dead_letter_topic {
            Some(topic) => {
                self.publish_dead_letter(topic, &original, subscription, reason, attempts, now_ms)?
            }
            None => {
                let event = Event::MessageDropped {
                    subscription: subscription.as_str(),
                    topic: key.topic.as_str(),
                    sequence: key.sequence,
                    reason: reason.as_str(),
                };
                self.append_event(event, now_ms)?;
            }
        }
        Ok(true)
    }

    fn publish_dead_letter(
        &mut self,
        topic: &TopicName,
        original: &Message,
        subscription: &SubscriptionName,
        reason: DeadReason,
        attempts: u32,
        now_ms: u64,
    ) -> Result<(), StorageError> {
        if !self.catalog.topics.contains_key(topic) {
            self.insert_topic(topic, TopicSettings::default(), now_ms)?;
        }
        let mut headers = original.headers.clone();
        headers.insert(HEADER_ORIGINAL_TOPIC.into(), original.topic.to_string());
        headers.insert(HEADER_ORIGINAL_ID.into(), original.id.to_string());
        headers.insert(HEADER_ORIGINAL_SEQUENCE.into(), original.sequence.to_string());
        headers.insert(HEADER_SUBSCRIPTION.into(), subscription.to_string());
        headers.insert(HEADER_REASON.into(), reason.as_str().into());
        headers.insert(HEADER_ATTEMPTS.into(), attempts.to_string());
        let copy = NewMessage {
            id: original.id.clone(),
            topic: topic.clone(),
            payload: original.payload.clone(),
            headers,
            priority: original.priority,
            // A dead letter must not expire again before someone looks at it.
            ttl_ms: None,
            delay_ms: 0,
            delivery: DeliveryGuarantee::AtLeastOnce,
        };
        // Dead letters skip the dedup index: the same message may be
        // dead-lettered by several subscriptions, and none may be dropped.
        self.store_message(&copy, now_ms, false)?;
        Ok(())
    }
}

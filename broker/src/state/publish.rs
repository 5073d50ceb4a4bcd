//! Applying publishes: dedup by id within the topic's window, sequence
//! assignment, storage, and the limits that apply on the way in.

use crate::domain::{Message, NewMessage, TopicSettings};
use crate::storage::{Cf, StorageError, keys};

use super::catalog::topic_key;
use super::command::{Applied, CommandError, Published, Refusal, StoredRef};
use super::machine::Applier;
use super::records::{DedupRecord, PriorityRecord, priority_key};

impl Applier<'_, '_> {
    pub(super) fn publish(
        &mut self,
        messages: &[NewMessage],
        auto_create: bool,
        now_ms: u64,
    ) -> Result<Vec<Result<Published, CommandError>>, StorageError> {
        let mut results = Vec::with_capacity(messages.len());
        for (index, message) in messages.iter().enumerate() {
            results.push(self.publish_one(index, message, auto_create, now_ms)?);
        }
        Ok(results)
    }

    fn publish_one(
        &mut self,
        index: usize,
        message: &NewMessage,
        auto_create: bool,
        now_ms: u64,
    ) -> Result<Result<Published, CommandError>, StorageError> {
        let field = |name: &str| format!("messages[{index}].{name}");
        let exists = self.catalog.topics.contains_key(&message.topic);
        if !exists && !auto_create {
            return Ok(Err(CommandError::new(
                Refusal::NotFound,
                field("topic"),
                format!(
                    "topic {} does not exist and auto_create_topics is off",
                    message.topic
                ),
            )));
        }
        // Checked before any auto-create, so a refused message changes nothing.
        let default_settings = TopicSettings::default();
        let settings = self
            .catalog
            .topics
            .get(&message.topic)
            .map(|t| &t.settings)
            .unwrap_or(&default_settings);
        if message.payload.len() as u64 > settings.max_message_bytes {
            return Ok(Err(CommandError::new(
                Refusal::ResourceExhausted,
                field("payload"),
                format!(
                    "{} bytes exceed the topic's limit of {} bytes",
                    message.payload.len(),
                    settings.max_message_bytes
                ),
            )));
        }
        if !exists {
            self.insert_topic(&message.topic, default_settings, now_ms)?;
        }
        let window_ms = self.catalog.topics[&message.topic].settings.dedup_window_ms;
        let dedup_key = keys::dedup(message.topic.as_str(), message.id.as_str());
        if let Some(first) = self.txn.get::<DedupRecord>(Cf::Dedup, &dedup_key)? {
            // The window counts from the first publish and is not refreshed by duplicates.
            if now_ms < first.publish_time_ms.saturating_add(window_ms) {
                return Ok(Ok(Published {
                    id: message.id.clone(),
                    topic: message.topic.clone(),
                    sequence: first.sequence,
                    duplicate: true,
                    publish_time_ms: first.publish_time_ms,
                }));
            }
        }
        let published = self.store_message(message, now_ms, true)?;
        Ok(Ok(published))
    }

    /// Stores a message whose topic exists, optionally indexing its id.
    pub(super) fn store_message(
        &mut self,
        message: &NewMessage,
        now_ms: u64,
        index_dedup: bool,
    ) -> Result<Published, StorageError> {
        let record = self
            .catalog
            .topics
            .get_mut(&message.topic)
            .expect("caller ensured the topic exists");
        let sequence = record.next_sequence;
        let ttl_ms = message.ttl_ms.or(record.settings.default_ttl_ms);
        let stored = Message {
            id: message.id.clone(),
            topic: message.topic.clone(),
            sequence,
            payload: message.payload.clone(),
            headers: message.headers.clone(),
            priority: message.priority,
            publish_time_ms: now_ms,
            expires_at_ms: ttl_ms.map(|ttl| now_ms.saturating_add(ttl)),
            not_before_ms: now_ms.saturating_add(message.delay_ms),
            delivery: message.delivery,
        };
        record.next_sequence += 1;
        record.messages += 1;
        record.bytes += stored.size_bytes();
        let window_ms = record.settings.dedup_window_ms;
        self.txn.put(
            Cf::Messages,
            keys::message(message.topic.as_str(), sequence),
            &stored,
        );
        self.txn.put(
            Cf::Priorities,
            priority_key(&stored),
            &PriorityRecord::of(&stored),
        );
        if index_dedup {
            let dedup = DedupRecord {
                sequence,
                publish_time_ms: now_ms,
            };
            let expires = now_ms.saturating_add(window_ms);
            self.txn.put(
                Cf::Dedup,
                keys::dedup(message.topic.as_str(), message.id.as_str()),
                &dedup,
            );
            self.txn.put(
                Cf::DedupExpiry,
                keys::dedup_expiry(expires, message.topic.as_str(), message.id.as_str()),
                &(),
            );
        }
        self.out.push(Applied::Stored(StoredRef {
            key: stored.key(),
            priority: stored.priority,
            not_before_ms: stored.not_before_ms,
            expires_at_ms: stored.expires_at_ms,
            delivery: stored.delivery,
        }));
        self.enforce_size_limits(&message.topic)?;
        Ok(Published {
            id: message.id.clone(),
            topic: message.topic.clone(),
            sequence,
            duplicate: false,
            publish_time_ms: now_ms,
        })
    }

    /// Deletes the oldest messages while the topic is over max messages or max bytes.
    fn enforce_size_limits(&mut self, topic: &crate::domain::TopicName) -> Result<(), StorageError> {
        let old_first = self.catalog.topics[topic].first_sequence;
        loop {
            let over = |r: &super::records::TopicRecord| {
                (r.settings.max_messages > 0 && r.messages > r.settings.max_messages)
                    || (r.settings.max_bytes > 0 && r.bytes > r.settings.max_bytes)
            };
            if !over(&self.catalog.topics[topic]) || !self.pop_front_if(topic, |_, _| false)? {
                break;
            }
        }
        let record = self.catalog.topics[topic].clone();
        self.txn.put(Cf::Meta, topic_key(topic), &record);
        self.finish_truncation(topic, old_first);
        Ok(())
    }
}

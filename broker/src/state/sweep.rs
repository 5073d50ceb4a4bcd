//! Periodic housekeeping, applied as a command so every replica deletes the
//! same messages: the dedup window, age retention and interest retention.

use crate::domain::{Message, RetentionPolicy, SubscriptionName, TopicName};
use crate::storage::{Cf, StorageError, keys};

use super::catalog::cursor_key;
use super::machine::Applier;
use super::records::DedupRecord;

/// Most dedup entries expired by one sweep, so one command stays short.
pub const SWEEP_DEDUP_BATCH: usize = 10_000;
/// Most messages deleted from one topic by one sweep.
pub const SWEEP_MESSAGES_PER_TOPIC: usize = 10_000;

impl Applier<'_, '_> {
    pub(super) fn sweep(&mut self, now_ms: u64) -> Result<(), StorageError> {
        self.expire_dedup(now_ms)?;
        let topics: Vec<TopicName> = self.catalog.topics.keys().cloned().collect();
        for topic in topics {
            self.retain(&topic, now_ms)?;
        }
        Ok(())
    }

    fn expire_dedup(&mut self, now_ms: u64) -> Result<(), StorageError> {
        let due = self.txn.scan(
            Cf::DedupExpiry,
            &[],
            &(now_ms + 1).to_be_bytes(),
            SWEEP_DEDUP_BATCH,
        )?;
        for (expiry_key, _) in due {
            let expires_at =
                u64::from_be_bytes(expiry_key[..8].try_into().expect("expiry keys start with a time"));
            let dedup_key = expiry_key[8..].to_vec();
            // The id may have been published again after its window; only the
            // entry this expiry belongs to may go.
            let record: Option<DedupRecord> = self.txn.get(Cf::Dedup, &dedup_key)?;
            let topic_window = self.window_of(&dedup_key);
            if let (Some(record), Some(window)) = (record, topic_window)
                && record.publish_time_ms.saturating_add(window) == expires_at
            {
                self.txn.delete(Cf::Dedup, dedup_key);
            }
            self.txn.delete(Cf::DedupExpiry, expiry_key);
        }
        Ok(())
    }

    /// The dedup window of the topic a dedup key belongs to.
    fn window_of(&self, dedup_key: &[u8]) -> Option<u64> {
        let end = dedup_key.iter().position(|b| *b == keys::SEPARATOR)?;
        let name = std::str::from_utf8(&dedup_key[..end]).ok()?;
        let topic = TopicName::parse_any("topic", name).ok()?;
        self.catalog
            .topics
            .get(&topic)
            .map(|t| t.settings.dedup_window_ms)
    }

    fn retain(&mut self, topic: &TopicName, now_ms: u64) -> Result<(), StorageError> {
        let Some(record) = self.catalog.topics.get(topic) else {
            return Ok(());
        };
        let old_first = record.first_sequence;
        let max_age_ms = record.settings.max_age_ms;
        let interest = record.settings.retention == RetentionPolicy::Interest;
        let subscriptions = if interest {
            self.cursors_of(topic)?
        } else {
            Vec::new()
        };
        for _ in 0..SWEEP_MESSAGES_PER_TOPIC {
            let record = &self.catalog.topics[topic];
            if record.first_sequence >= record.next_sequence {
                break;
            }
            let key = keys::message(topic.as_str(), record.first_sequence);
            // A hole (no message at the first sequence) is simply skipped.
            if let Some(message) = self.txn.get::<Message>(Cf::Messages, &key)? {
                let too_old = message.publish_time_ms.saturating_add(max_age_ms) <= now_ms;
                let done = interest && self.settled_by_all(&subscriptions, &message)?;
                if !too_old && !done {
                    break;
                }
            }
            self.pop_front_if(topic, |_, _| false)?;
        }
        self.finish_truncation(topic, old_first);
        Ok(())
    }

    /// Each subscription reading `topic`, with the first sequence it reads.
    fn cursors_of(&self, topic: &TopicName) -> Result<Vec<(SubscriptionName, u64)>, StorageError> {
        let names: Vec<_> = self
            .catalog
            .subscriptions_of(topic)
            .map(|s| s.name.clone())
            .collect();
        let mut cursors = Vec::with_capacity(names.len());
        for name in names {
            let cursor: u64 = self.txn.get(Cf::Meta, &cursor_key(&name, topic))?.unwrap_or(1);
            cursors.push((name, cursor));
        }
        Ok(cursors)
    }

    /// A subscription is done with a message it has acked or that lies
    /// before its cursor (published before it started reading the topic).
    fn settled_by_all(
        &self,
        cursors: &[(SubscriptionName, u64)],
        message: &Message,
    ) -> Result<bool, StorageError> {
        for (subscription, cursor) in cursors {
            let marker = keys::ack(subscription.as_str(), message.topic.as_str(), message.sequence);
            if message.sequence >= *cursor && !self.txn.contains(Cf::Acks, &marker)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

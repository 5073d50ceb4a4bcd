//! Periodic housekeeping, applied as a command so every replica deletes the
//! same messages: the dedup window, age retention and interest retention.

use crate::domain::{RetentionPolicy, TopicName};
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
            if let (Some(record), Some(window)) = (record, topic_window) {
                if record.publish_time_ms.saturating_add(window) == expires_at {
                    self.txn.delete(Cf::Dedup, dedup_key);
                }
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
        let interest = record.settings.retention == RetentionPolicy::Interest;
        // A subscription is done with a message it has acked or that lies
        // before its cursor (published before it started reading the topic).
        let mut subscriptions = Vec::new();
        for name in self
            .catalog
            .subscriptions_of(topic)
            .map(|s| s.name.clone())
            .collect::<Vec<_>>()
        {
            let cursor: u64 = self.txn.get(Cf::Meta, &cursor_key(&name, topic))?.unwrap_or(1);
            subscriptions.push((name, cursor));
        }
        for _ in 0..SWEEP_MESSAGES_PER_TOPIC {
            let too_old = |r: &super::records::TopicRecord, m: &crate::domain::Message| {
                m.publish_time_ms.saturating_add(r.settings.max_age_ms) <= now_ms
            };
            let acked_by_all = |m: &crate::domain::Message| {
                subscriptions.iter().all(|(s, cursor)| {
                    let marker = keys::ack(s.as_str(), m.topic.as_str(), m.sequence);
                    m.sequence < *cursor || self.txn.contains(Cf::Acks, &marker).unwrap_or(false)
                })
            };
            let keep = |r: &super::records::TopicRecord, m: &crate::domain::Message| {
                !too_old(r, m) && !(interest && acked_by_all(m))
            };
            // `keep` borrows the transaction immutably, so decide first, then delete.
            let first = self.catalog.topics[topic].first_sequence;
            let message = self
                .txn
                .get(Cf::Messages, &keys::message(topic.as_str(), first))?;
            let record = &self.catalog.topics[topic];
            if record.first_sequence >= record.next_sequence {
                break;
            }
            if let Some(message) = message {
                if keep(record, &message) {
                    break;
                }
            }
            self.pop_front_if(topic, |_, _| false)?;
        }
        self.finish_truncation(topic, old_first);
        Ok(())
    }
}

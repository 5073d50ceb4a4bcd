//! Reads for the delivery side and the admin API: messages, and the pending
//! messages of a subscription, rebuilt from storage after a start or a
//! leader change.

use std::sync::Arc;

use crate::domain::{Message, MessageKey, Priority, RetentionPolicy, Sequence, SubscriptionName, TopicName};
use crate::storage::{Cf, StorageError, Store, decode, keys};

use super::catalog::cursor_key;
use super::machine::StateMachine;

/// Messages read per storage scan while rebuilding a subscription.
const RECOVERY_CHUNK: usize = 4096;

/// A message a subscription has not settled yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingMessage {
    pub key: MessageKey,
    pub priority: Priority,
    pub not_before_ms: u64,
    pub expires_at_ms: Option<u64>,
}

/// Read access to applied state.
#[derive(Clone)]
pub struct Reader {
    machine: StateMachine,
}

impl Reader {
    pub fn new(machine: StateMachine) -> Self {
        Self { machine }
    }

    pub fn machine(&self) -> &StateMachine {
        &self.machine
    }

    fn store(&self) -> &Arc<dyn Store> {
        self.machine.store()
    }

    pub fn message(&self, key: &MessageKey) -> Result<Option<Message>, StorageError> {
        let bytes = self
            .store()
            .get(Cf::Messages, &keys::message(key.topic.as_str(), key.sequence))?;
        bytes.map(|b| decode(Cf::Messages, &b)).transpose()
    }

    /// Whether a sweep at `now_ms` would find work: a dedup entry past its
    /// window, a topic whose oldest message is past its age, or an interest
    /// topic holding messages. The leader skips a sweep that would change
    /// nothing, so an idle cluster writes nothing.
    pub fn sweep_due(&self, now_ms: u64) -> Result<bool, StorageError> {
        let window_ended = (now_ms + 1).to_be_bytes();
        if !self
            .store()
            .scan(Cf::DedupExpiry, &[], &window_ended, 1)?
            .is_empty()
        {
            return Ok(true);
        }
        // Copied out, so applying is not held up by these reads.
        let heads: Vec<(MessageKey, u64, bool)> = self
            .machine
            .catalog()
            .topics
            .values()
            .filter(|t| t.first_sequence < t.next_sequence)
            .map(|t| {
                let key = MessageKey {
                    topic: t.name.clone(),
                    sequence: t.first_sequence,
                };
                let interest = t.settings.retention == RetentionPolicy::Interest;
                (key, t.settings.max_age_ms, interest)
            })
            .collect();
        for (key, max_age_ms, interest) in heads {
            if interest {
                return Ok(true);
            }
            match self.message(&key)? {
                Some(oldest) if oldest.publish_time_ms.saturating_add(max_age_ms) > now_ms => {}
                // Too old, or a hole the sweep steps over.
                _ => return Ok(true),
            }
        }
        Ok(false)
    }

    pub fn is_acked(&self, subscription: &SubscriptionName, key: &MessageKey) -> Result<bool, StorageError> {
        let marker = keys::ack(subscription.as_str(), key.topic.as_str(), key.sequence);
        Ok(self.store().get(Cf::Acks, &marker)?.is_some())
    }

    /// Whether `subscription` can never receive `key` again: it acked it,
    /// or the message was published and is no longer stored (retention
    /// removed it, and with it the ack marker). A repeated ack of such a
    /// key is confirmed: the client learns that nothing will come again.
    pub fn is_settled(
        &self,
        subscription: &SubscriptionName,
        key: &MessageKey,
    ) -> Result<bool, StorageError> {
        if self.is_acked(subscription, key)? {
            return Ok(true);
        }
        let published = self
            .machine
            .catalog()
            .topics
            .get(&key.topic)
            .is_some_and(|record| key.sequence < record.next_sequence);
        Ok(published && self.message(key)?.is_none())
    }

    /// Where `subscription` starts reading `topic` (1 when it was created after the subscription).
    pub fn cursor(
        &self,
        subscription: &SubscriptionName,
        topic: &TopicName,
    ) -> Result<Sequence, StorageError> {
        let bytes = self.store().get(Cf::Meta, &cursor_key(subscription, topic))?;
        Ok(bytes
            .map(|b| decode::<u64>(Cf::Meta, &b))
            .transpose()?
            .unwrap_or(1))
    }

    /// Every stored message of `topic` that `subscription` has not settled,
    /// calling `visit` in sequence order.
    pub fn pending_in_topic(
        &self,
        subscription: &SubscriptionName,
        topic: &TopicName,
        mut visit: impl FnMut(PendingMessage),
    ) -> Result<(), StorageError> {
        let start = self.cursor(subscription, topic)?;
        let mut from = keys::message(topic.as_str(), start);
        let end = keys::prefix_end(&keys::named(b"", topic.as_str()));
        loop {
            let chunk = self.store().scan(Cf::Messages, &from, &end, RECOVERY_CHUNK)?;
            let Some((last_key, _)) = chunk.last() else {
                return Ok(());
            };
            let first_seq = keys::trailing_u64(&chunk[0].0).unwrap_or(0);
            let last_seq = keys::trailing_u64(last_key).unwrap_or(0);
            let acked = self.acked_between(subscription, topic, first_seq, last_seq + 1)?;
            let done = chunk.len() < RECOVERY_CHUNK;
            from = last_key.clone();
            from.push(0);
            for (_, value) in chunk {
                let message: Message = decode(Cf::Messages, &value)?;
                if acked.binary_search(&message.sequence).is_err() {
                    visit(PendingMessage {
                        key: message.key(),
                        priority: message.priority,
                        not_before_ms: message.not_before_ms,
                        expires_at_ms: message.expires_at_ms,
                    });
                }
            }
            if done {
                return Ok(());
            }
        }
    }

    /// Acked sequences of `topic` in `[from, to)`, sorted.
    fn acked_between(
        &self,
        subscription: &SubscriptionName,
        topic: &TopicName,
        from: Sequence,
        to: Sequence,
    ) -> Result<Vec<Sequence>, StorageError> {
        let start = keys::ack(subscription.as_str(), topic.as_str(), from);
        let end = keys::ack(subscription.as_str(), topic.as_str(), to);
        let entries = self.store().scan(Cf::Acks, &start, &end, usize::MAX)?;
        Ok(entries
            .iter()
            .filter_map(|(k, _)| keys::trailing_u64(k))
            .collect())
    }
}

//! Reads for the delivery side and the admin API: messages, and the pending
//! messages of a subscription, rebuilt from storage after a start or a
//! leader change.

use std::sync::Arc;

use crate::domain::{Message, MessageKey, Priority, RetentionPolicy, Sequence, SubscriptionName, TopicName};
use crate::storage::{Cf, StorageError, Store, decode, keys};

use super::catalog::cursor_key;
use super::machine::StateMachine;
use super::records::{PriorityRecord, rank};

/// Index entries read per page while counting a backlog.
const COUNT_CHUNK_ENTRIES: usize = 16_384;
/// A page's ack markers are read as one range while the range is at most
/// this many times the page's length; a sparser page looks each one up.
const DENSE_SPAN_FACTOR: u64 = 4;

/// A message a subscription has not settled yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingMessage {
    pub key: MessageKey,
    pub priority: Priority,
    pub not_before_ms: u64,
    pub expires_at_ms: Option<u64>,
}

/// A page of one priority of a subscription's backlog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingPage {
    /// The unsettled messages found, in sequence order.
    pub messages: Vec<PendingMessage>,
    /// Where the next page starts; None once the index holds no more.
    pub next: Option<Sequence>,
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

    /// Up to `limit` index entries of `topic`'s messages of `priority` from
    /// sequence `from` on (never before the subscription's cursor), less
    /// those the subscription has settled. Pages are how a subscription's
    /// backlog reaches memory: a priority at a time, in sequence order.
    pub fn pending_page(
        &self,
        subscription: &SubscriptionName,
        topic: &TopicName,
        priority: Priority,
        from: Sequence,
        limit: usize,
    ) -> Result<PendingPage, StorageError> {
        let limit = limit.max(1);
        let from = from.max(self.cursor(subscription, topic)?);
        let rank = rank(priority);
        let lane_end = keys::prefix_end(&keys::priority_lane(topic.as_str(), rank));
        let start = keys::priority_entry(topic.as_str(), rank, from);
        let chunk = self.store().scan(Cf::Priorities, &start, &lane_end, limit)?;
        let sequences = chunk
            .iter()
            .map(|(key, _)| keys::trailing_u64(key).ok_or_else(|| corrupt_index(key)))
            .collect::<Result<Vec<Sequence>, _>>()?;
        let next = match sequences.last() {
            Some(last) if chunk.len() == limit => Some(last + 1),
            _ => None,
        };
        let acked = self.acked_among(subscription, topic, &sequences)?;
        let mut messages = Vec::with_capacity(chunk.len());
        for ((_, value), sequence) in chunk.iter().zip(sequences) {
            if acked.binary_search(&sequence).is_ok() {
                continue;
            }
            let record: PriorityRecord = decode(Cf::Priorities, value)?;
            messages.push(PendingMessage {
                key: MessageKey {
                    topic: topic.clone(),
                    sequence,
                },
                priority,
                not_before_ms: record.not_before_ms,
                expires_at_ms: record.expires_at_ms,
            });
        }
        Ok(PendingPage { messages, next })
    }

    /// How many messages of `topic` and `priority` from `from` on the
    /// subscription has not settled. Reads the index page by page: the cost
    /// grows with the backlog, so it is for starts and admin answers.
    pub fn count_pending(
        &self,
        subscription: &SubscriptionName,
        topic: &TopicName,
        priority: Priority,
        from: Sequence,
    ) -> Result<u64, StorageError> {
        let mut count = 0;
        let mut next = Some(from);
        while let Some(from) = next {
            let page = self.pending_page(subscription, topic, priority, from, COUNT_CHUNK_ENTRIES)?;
            count += page.messages.len() as u64;
            next = page.next;
        }
        Ok(count)
    }

    /// Which of `sequences` (sorted) of `topic` the subscription settled.
    fn acked_among(
        &self,
        subscription: &SubscriptionName,
        topic: &TopicName,
        sequences: &[Sequence],
    ) -> Result<Vec<Sequence>, StorageError> {
        let (Some(first), Some(last)) = (sequences.first(), sequences.last()) else {
            return Ok(Vec::new());
        };
        let span = last - first + 1;
        if span <= DENSE_SPAN_FACTOR.saturating_mul(sequences.len() as u64) {
            return self.acked_between(subscription, topic, *first, last + 1);
        }
        // The range is mostly other priorities' messages: one look-up each
        // reads less than every ack marker in between.
        let mut acked = Vec::new();
        for sequence in sequences {
            let marker = keys::ack(subscription.as_str(), topic.as_str(), *sequence);
            if self.store().get(Cf::Acks, &marker)?.is_some() {
                acked.push(*sequence);
            }
        }
        Ok(acked)
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

fn corrupt_index(key: &[u8]) -> StorageError {
    StorageError::Corruption {
        cf: Cf::Priorities.name(),
        reason: format!("index key {key:?} ends in no sequence"),
    }
}

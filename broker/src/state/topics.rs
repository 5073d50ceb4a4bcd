//! Applying topic commands: create, delete, and deleting from a topic's front.

use crate::domain::{Sequence, TopicName, TopicSettings};
use crate::storage::{Cf, StorageError, keys};

use super::catalog::{cursor_key, topic_key};
use super::command::{Applied, CommandError, Refusal};
use super::events::Event;
use super::machine::Applier;
use super::records::{TopicRecord, priority_key};
use crate::domain::Message;

impl Applier<'_, '_> {
    pub(super) fn create_topic(
        &mut self,
        name: &TopicName,
        settings: &TopicSettings,
        now_ms: u64,
    ) -> Result<Result<TopicRecord, CommandError>, StorageError> {
        if let Some(existing) = self.catalog.topics.get(name) {
            // Creating again with the same settings is harmless; other settings are a conflict.
            if existing.settings == *settings {
                return Ok(Ok(existing.clone()));
            }
            return Ok(Err(CommandError::new(
                Refusal::AlreadyExists,
                "name",
                format!("topic {name} exists with other settings"),
            )));
        }
        Ok(Ok(self.insert_topic(name, settings.clone(), now_ms)?))
    }

    /// Creates a topic known not to exist, with its cursors and its event.
    pub(super) fn insert_topic(
        &mut self,
        name: &TopicName,
        settings: TopicSettings,
        now_ms: u64,
    ) -> Result<TopicRecord, StorageError> {
        let record = TopicRecord::new(name.clone(), settings, now_ms);
        self.txn.put(Cf::Meta, topic_key(name), &record);
        self.catalog.topics.insert(name.clone(), record.clone());
        // A subscription reads a topic created after it from the start; that
        // is the default when no cursor exists, so nothing is written here.
        self.out.push(Applied::TopicCreated(name.clone()));
        if !name.is_reserved() {
            self.append_event(Event::TopicCreated { topic: name.as_str() }, now_ms)?;
        }
        Ok(record)
    }

    pub(super) fn delete_topic(
        &mut self,
        name: &TopicName,
        now_ms: u64,
    ) -> Result<Result<(), CommandError>, StorageError> {
        if self.catalog.topics.remove(name).is_none() {
            return Ok(Err(CommandError::new(
                Refusal::NotFound,
                "name",
                format!("topic {name} does not exist"),
            )));
        }
        self.txn.delete(Cf::Meta, topic_key(name));
        let messages = keys::named(b"", name.as_str());
        self.txn
            .delete_range(Cf::Messages, messages.clone(), keys::prefix_end(&messages));
        self.txn
            .delete_range(Cf::Dedup, messages.clone(), keys::prefix_end(&messages));
        self.txn
            .delete_range(Cf::Priorities, messages.clone(), keys::prefix_end(&messages));
        let subscriptions: Vec<_> = self.catalog.subscriptions.keys().cloned().collect();
        for subscription in subscriptions {
            let mut acks = keys::named(b"", subscription.as_str());
            acks.extend_from_slice(&messages);
            self.txn
                .delete_range(Cf::Acks, acks.clone(), keys::prefix_end(&acks));
            self.txn.delete(Cf::Meta, cursor_key(&subscription, name));
        }
        // Dedup expiry entries of the topic are left to the sweep, which
        // skips entries whose dedup record is gone.
        self.out.push(Applied::TopicDeleted(name.clone()));
        if !name.is_reserved() {
            self.append_event(Event::TopicDeleted { topic: name.as_str() }, now_ms)?;
        }
        Ok(Ok(()))
    }

    /// Deletes the topic's first message if `keep` says it must go. Returns
    /// whether one was deleted.
    pub(super) fn pop_front_if(
        &mut self,
        name: &TopicName,
        keep: impl Fn(&TopicRecord, &Message) -> bool,
    ) -> Result<bool, StorageError> {
        let Some(record) = self.catalog.topics.get(name) else {
            return Ok(false);
        };
        if record.first_sequence >= record.next_sequence {
            return Ok(false);
        }
        let key = keys::message(name.as_str(), record.first_sequence);
        let message: Option<Message> = self.txn.get(Cf::Messages, &key)?;
        if let Some(message) = &message
            && keep(record, message)
        {
            return Ok(false);
        }
        let size = message.as_ref().map(Message::size_bytes).unwrap_or(0);
        let record = self.catalog.topics.get_mut(name).expect("looked up above");
        self.txn.delete(Cf::Messages, key);
        if let Some(message) = &message {
            self.txn.delete(Cf::Priorities, priority_key(message));
        }
        record.first_sequence += 1;
        record.messages = record.messages.saturating_sub(u64::from(message.is_some()));
        record.bytes = record.bytes.saturating_sub(size);
        Ok(true)
    }

    /// Writes a topic's record and drops ack markers below its first sequence.
    pub(super) fn finish_truncation(&mut self, name: &TopicName, old_first: Sequence) {
        let Some(record) = self.catalog.topics.get(name).cloned() else {
            return;
        };
        if record.first_sequence == old_first {
            return;
        }
        self.txn.put(Cf::Meta, topic_key(name), &record);
        let subscriptions: Vec<_> = self
            .catalog
            .subscriptions_of(name)
            .map(|s| s.name.clone())
            .collect();
        for subscription in subscriptions {
            let from = keys::ack(subscription.as_str(), name.as_str(), 0);
            let to = keys::ack(subscription.as_str(), name.as_str(), record.first_sequence);
            self.txn.delete_range(Cf::Acks, from, to);
        }
        self.out.push(Applied::Truncated {
            topic: name.clone(),
            first_sequence: record.first_sequence,
        });
    }
}

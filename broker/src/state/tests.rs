//! Tests of the replicated state machine: every command applied to a store,
//! checked through the answers, `Applied` notes, `Reader` and raw storage.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use super::catalog::topic_key;
use super::*;
use crate::domain::{
    DeliveryGuarantee, Headers, Message, MessageId, MessageKey, NewMessage, Pattern, Priority, Sequence,
    StartPosition, SubscriptionName, SubscriptionSettings, TopicName, TopicSettings,
};
use crate::semantics::DeadReason;
use crate::storage::{Cf, Entry, MemoryStore, RocksStore, Store, decode, keys};

// ---------------------------------------------------------------- helpers

fn topic(name: &str) -> TopicName {
    TopicName::parse_any("topic", name).unwrap()
}

fn sub(name: &str) -> SubscriptionName {
    SubscriptionName::parse("name", name).unwrap()
}

fn key(topic_name: &str, sequence: Sequence) -> MessageKey {
    MessageKey {
        topic: topic(topic_name),
        sequence,
    }
}

fn msg(topic_name: &str, id: &str, payload: &str) -> NewMessage {
    NewMessage {
        id: MessageId::parse("id", id).unwrap(),
        topic: topic(topic_name),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        headers: Headers::new(),
        priority: Priority::Normal,
        ttl_ms: None,
        delay_ms: 0,
        delivery: DeliveryGuarantee::AtLeastOnce,
    }
}

fn sub_settings(pattern: &str, start: StartPosition) -> SubscriptionSettings {
    let mut settings = SubscriptionSettings::new(Pattern::parse("pattern", pattern).unwrap());
    settings.start = start;
    settings
}

fn with_window(dedup_window_ms: u64) -> TopicSettings {
    TopicSettings {
        dedup_window_ms,
        ..TopicSettings::default()
    }
}

/// Every key and value of every column family.
fn dump(store: &dyn Store) -> Vec<(Cf, Vec<Entry>)> {
    Cf::ALL
        .iter()
        .map(|cf| (*cf, store.scan(*cf, &[], &keys::KEY_CEILING, usize::MAX).unwrap()))
        .collect()
}

/// A state machine with a reader, and shorthands for commands.
struct Harness {
    machine: StateMachine,
    reader: Reader,
}

impl Harness {
    fn memory() -> Self {
        Self::on(Arc::new(MemoryStore::new()))
    }

    /// The state machine of shard group `group`, in memory.
    fn shard(group: u32) -> Self {
        Self::of(StateMachine::open_group(Arc::new(MemoryStore::new()), group).unwrap())
    }

    fn on(store: Arc<dyn Store>) -> Self {
        Self::of(StateMachine::open(store).unwrap())
    }

    fn of(machine: StateMachine) -> Self {
        let reader = Reader::new(machine.clone());
        Self { machine, reader }
    }

    fn store(&self) -> &dyn Store {
        self.machine.store().as_ref()
    }

    fn apply(&self, command: Command) -> (Response, Vec<Applied>) {
        self.machine.apply_one(&command, true).unwrap()
    }

    fn publish_at(
        &self,
        messages: Vec<NewMessage>,
        auto_create: bool,
        now_ms: u64,
    ) -> Vec<Result<Published, CommandError>> {
        match self
            .apply(Command::Publish {
                messages,
                auto_create,
                now_ms,
            })
            .0
        {
            Response::Published(results) => results,
            other => panic!("publish answered {other:?}"),
        }
    }

    /// Publishes one message (auto-creating its topic) that must be accepted.
    fn publish_one(&self, message: NewMessage, now_ms: u64) -> Published {
        self.publish_at(vec![message], true, now_ms)
            .pop()
            .unwrap()
            .unwrap()
    }

    fn create_topic(
        &self,
        name: &str,
        settings: TopicSettings,
        now_ms: u64,
    ) -> Result<TopicRecord, CommandError> {
        match self
            .apply(Command::CreateTopic {
                name: topic(name),
                settings,
                now_ms,
            })
            .0
        {
            Response::Topic(result) => result,
            other => panic!("create topic answered {other:?}"),
        }
    }

    fn delete_topic(&self, name: &str, now_ms: u64) -> Result<(), CommandError> {
        match self
            .apply(Command::DeleteTopic {
                name: topic(name),
                now_ms,
            })
            .0
        {
            Response::Deleted(result) => result,
            other => panic!("delete topic answered {other:?}"),
        }
    }

    fn create_sub(
        &self,
        name: &str,
        settings: SubscriptionSettings,
        now_ms: u64,
    ) -> Result<SubscriptionRecord, CommandError> {
        match self
            .apply(Command::CreateSubscription {
                name: sub(name),
                settings,
                now_ms,
            })
            .0
        {
            Response::Subscription(result) => result,
            other => panic!("create subscription answered {other:?}"),
        }
    }

    fn delete_sub(&self, name: &str, now_ms: u64) -> Result<(), CommandError> {
        match self
            .apply(Command::DeleteSubscription {
                name: sub(name),
                now_ms,
            })
            .0
        {
            Response::Deleted(result) => result,
            other => panic!("delete subscription answered {other:?}"),
        }
    }

    fn ack(&self, subscription: &str, keys: Vec<MessageKey>) -> (Result<(), CommandError>, Vec<Applied>) {
        match self.apply(Command::Ack {
            subscription: sub(subscription),
            keys,
        }) {
            (Response::Acked(result), applied) => (result, applied),
            other => panic!("ack answered {other:?}"),
        }
    }

    fn dead_letter(
        &self,
        subscription: &str,
        key: MessageKey,
        reason: DeadReason,
        attempts: u32,
        now_ms: u64,
    ) -> bool {
        let command = Command::DeadLetter {
            subscription: sub(subscription),
            key,
            reason,
            attempts,
            now_ms,
        };
        match self.apply(command).0 {
            Response::DeadLettered(done) => done,
            other => panic!("dead letter answered {other:?}"),
        }
    }

    fn sweep(&self, now_ms: u64) -> Vec<Applied> {
        let (response, applied) = self.apply(Command::Sweep { now_ms });
        assert_eq!(response, Response::Swept);
        applied
    }

    fn topic_record(&self, name: &str) -> Option<TopicRecord> {
        self.machine.catalog().topics.get(&topic(name)).cloned()
    }

    /// The topic record as stored (not the in-memory catalog).
    fn stored_topic_record(&self, name: &str) -> Option<TopicRecord> {
        self.store()
            .get(Cf::Meta, &topic_key(&topic(name)))
            .unwrap()
            .map(|bytes| decode(Cf::Meta, &bytes).unwrap())
    }

    fn message(&self, topic_name: &str, sequence: Sequence) -> Option<Message> {
        self.reader.message(&key(topic_name, sequence)).unwrap()
    }

    /// Every unsettled sequence of the topic, read page by page from the
    /// priority index (pages of 3, to cross page ends), in sequence order.
    fn pending(&self, subscription: &str, topic_name: &str) -> Vec<Sequence> {
        let mut out = Vec::new();
        for priority in Priority::DESCENDING {
            let mut next = Some(1);
            let mut count = 0;
            while let Some(from) = next {
                let page = self
                    .reader
                    .pending_page(&sub(subscription), &topic(topic_name), priority, from, 3)
                    .unwrap();
                for p in &page.messages {
                    assert_eq!(p.key.topic, topic(topic_name));
                    assert_eq!(p.priority, priority);
                    out.push(p.key.sequence);
                }
                count += page.messages.len() as u64;
                next = page.next;
            }
            let counted = self
                .reader
                .count_pending(&sub(subscription), &topic(topic_name), priority, 1)
                .unwrap();
            assert_eq!(counted, count, "count_pending agrees with the pages");
        }
        out.sort_unstable();
        out
    }

    /// Sequences of the messages of a topic present in storage.
    fn stored_sequences(&self, topic_name: &str) -> Vec<Sequence> {
        let prefix = keys::named(b"", topic_name);
        self.store()
            .scan(Cf::Messages, &prefix, &keys::prefix_end(&prefix), usize::MAX)
            .unwrap()
            .iter()
            .map(|(k, _)| keys::trailing_u64(k).unwrap())
            .collect()
    }

    fn dedup_entry(&self, topic_name: &str, id: &str) -> Option<DedupRecord> {
        self.store()
            .get(Cf::Dedup, &keys::dedup(topic_name, id))
            .unwrap()
            .map(|bytes| decode(Cf::Dedup, &bytes).unwrap())
    }

    fn count(&self, cf: Cf) -> usize {
        self.store()
            .scan(cf, &[], &keys::KEY_CEILING, usize::MAX)
            .unwrap()
            .len()
    }

    /// Every event in `$cluster.events`, as JSON, oldest first.
    fn events(&self) -> Vec<Value> {
        let Some(record) = self.topic_record("$cluster.events") else {
            return Vec::new();
        };
        (record.first_sequence..record.next_sequence)
            .filter_map(|sequence| self.message("$cluster.events", sequence))
            .map(|message| {
                let kind = message.headers.get("hermod-event").cloned();
                let value: Value = serde_json::from_slice(&message.payload).unwrap();
                assert_eq!(kind.as_deref(), value["type"].as_str(), "hermod-event header");
                value
            })
            .collect()
    }
}

fn acked_notes(applied: &[Applied]) -> Vec<(SubscriptionName, MessageKey)> {
    applied
        .iter()
        .filter_map(|a| match a {
            Applied::Acked(s, k) => Some((s.clone(), k.clone())),
            _ => None,
        })
        .collect()
}

fn refusal(result: &Result<Published, CommandError>) -> (Refusal, &str) {
    let error = result.as_ref().unwrap_err();
    (error.refusal, error.field.as_str())
}

mod acks;
mod cluster_events;
mod dead_letters;
mod dedup;
mod determinism;
mod placement;
mod priority_index;
mod publish;
mod reopen;
mod retention;
mod subscriptions;
mod topics;

//! Tests of the replicated state machine: every command applied to a store,
//! checked through the answers, `Applied` notes, `Reader` and raw storage.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};

use super::catalog::{subscription_key, topic_key};
use super::subscriptions::{
    HEADER_ATTEMPTS, HEADER_ORIGINAL_ID, HEADER_ORIGINAL_SEQUENCE, HEADER_ORIGINAL_TOPIC, HEADER_REASON,
    HEADER_SUBSCRIPTION,
};
use super::*;
use crate::domain::{
    DeliveryGuarantee, Headers, Message, MessageId, MessageKey, NewMessage, Pattern, Priority,
    RetentionPolicy, Sequence, StartPosition, SubscriptionName, SubscriptionSettings, TopicName,
    TopicSettings,
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

    fn on(store: Arc<dyn Store>) -> Self {
        let machine = StateMachine::open(store).unwrap();
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

// ---------------------------------------------------------------- publish

#[test]
fn publish_numbers_messages_from_one_independently_per_topic() {
    let h = Harness::memory();
    let results = h.publish_at(
        vec![
            msg("orders", "o1", "a"),
            msg("orders", "o2", "b"),
            msg("audit", "a1", "c"),
            msg("orders", "o3", "d"),
            msg("audit", "a2", "e"),
        ],
        true,
        1_000,
    );
    let got: Vec<(String, Sequence, bool, u64)> = results
        .into_iter()
        .map(|r| {
            let p = r.unwrap();
            (p.topic.to_string(), p.sequence, p.duplicate, p.publish_time_ms)
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("orders".into(), 1, false, 1_000),
            ("orders".into(), 2, false, 1_000),
            ("audit".into(), 1, false, 1_000),
            ("orders".into(), 3, false, 1_000),
            ("audit".into(), 2, false, 1_000),
        ]
    );
    // A later command continues each topic's numbering.
    assert_eq!(h.publish_one(msg("audit", "a3", "f"), 2_000).sequence, 3);
    assert_eq!(h.publish_one(msg("orders", "o4", "g"), 2_000).sequence, 4);

    let stored = h.message("orders", 3).unwrap();
    assert_eq!(stored.payload, Bytes::from_static(b"d"));
    assert_eq!(stored.id.as_str(), "o3");
    assert_eq!(stored.sequence, 3);
    assert_eq!(stored.publish_time_ms, 1_000);
    let orders = h.topic_record("orders").unwrap();
    assert_eq!(
        (orders.first_sequence, orders.next_sequence, orders.messages),
        (1, 5, 4)
    );
    assert_eq!(h.stored_topic_record("orders").unwrap(), orders);
    assert_eq!(h.stored_sequences("audit"), vec![1, 2, 3]);
}

#[test]
fn publish_stores_times_relative_to_the_command() {
    let h = Harness::memory();
    let mut message = msg("t", "m", "x");
    message.ttl_ms = Some(500);
    message.delay_ms = 200;
    message.priority = Priority::High;
    message.headers.insert("k".into(), "v".into());
    let (_, applied) = h.apply(Command::Publish {
        messages: vec![message],
        auto_create: true,
        now_ms: 10_000,
    });
    let stored = h.message("t", 1).unwrap();
    assert_eq!(stored.expires_at_ms, Some(10_500));
    assert_eq!(stored.not_before_ms, 10_200);
    assert_eq!(stored.priority, Priority::High);
    assert_eq!(stored.headers.get("k").map(String::as_str), Some("v"));
    let stored_ref = applied
        .iter()
        .find_map(|a| match a {
            Applied::Stored(r) if r.key == key("t", 1) => Some(r.clone()),
            _ => None,
        })
        .expect("Applied::Stored for the message");
    assert_eq!(stored_ref.expires_at_ms, Some(10_500));
    assert_eq!(stored_ref.not_before_ms, 10_200);
    assert_eq!(stored_ref.priority, Priority::High);

    // The topic's default TTL applies when the message has none.
    let settings = TopicSettings {
        default_ttl_ms: Some(1_000),
        ..TopicSettings::default()
    };
    h.create_topic("ttl", settings, 0).unwrap();
    h.publish_one(msg("ttl", "m", "x"), 5_000);
    assert_eq!(h.message("ttl", 1).unwrap().expires_at_ms, Some(6_000));
}

#[test]
fn publish_auto_creates_a_missing_topic_with_default_settings() {
    let h = Harness::memory();
    let (response, applied) = h.apply(Command::Publish {
        messages: vec![msg("fresh.topic", "m1", "x")],
        auto_create: true,
        now_ms: 42,
    });
    let Response::Published(results) = response else {
        panic!("{response:?}")
    };
    assert_eq!(results[0].as_ref().unwrap().sequence, 1);
    assert!(applied.contains(&Applied::TopicCreated(topic("fresh.topic"))));
    let record = h.topic_record("fresh.topic").unwrap();
    assert_eq!(record.settings, TopicSettings::default());
    assert_eq!(record.created_at_ms, 42);
    assert_eq!(h.stored_topic_record("fresh.topic").unwrap(), record);
}

#[test]
fn publish_to_a_missing_topic_without_auto_create_is_refused_and_stores_nothing() {
    let h = Harness::memory();
    h.create_topic("known", TopicSettings::default(), 0).unwrap();
    let before_events = h.events();
    let results = h.publish_at(
        vec![
            msg("known", "k1", "a"),
            msg("unknown", "u1", "b"),
            msg("known", "k2", "c"),
        ],
        false,
        1_000,
    );
    assert_eq!(results[0].as_ref().unwrap().sequence, 1);
    assert_eq!(refusal(&results[1]), (Refusal::NotFound, "messages[1].topic"));
    assert_eq!(results[2].as_ref().unwrap().sequence, 2);

    assert!(h.topic_record("unknown").is_none());
    assert!(h.stored_topic_record("unknown").is_none());
    assert!(h.stored_sequences("unknown").is_empty());
    assert!(h.dedup_entry("unknown", "u1").is_none());
    assert_eq!(
        h.events(),
        before_events,
        "no topic_created event for a refused publish"
    );
}

#[test]
fn an_oversized_payload_is_refused_and_the_rest_of_the_batch_is_stored() {
    let h = Harness::memory();
    let settings = TopicSettings {
        max_message_bytes: 10,
        ..TopicSettings::default()
    };
    h.create_topic("small", settings, 0).unwrap();
    let results = h.publish_at(
        vec![
            msg("small", "m1", "12345"),
            msg("small", "m2", "12345678901"),
            msg("small", "m3", "1234567890"),
        ],
        false,
        1_000,
    );
    assert_eq!(results[0].as_ref().unwrap().sequence, 1);
    let (kind, field) = refusal(&results[1]);
    assert_eq!((kind, field), (Refusal::ResourceExhausted, "messages[1].payload"));
    assert_eq!(
        results[2].as_ref().unwrap().sequence,
        2,
        "a refused message uses no sequence"
    );
    assert_eq!(h.stored_sequences("small"), vec![1, 2]);
    assert_eq!(h.message("small", 2).unwrap().id.as_str(), "m3");
    assert_eq!(h.topic_record("small").unwrap().messages, 2);
    // The refused id was not indexed: a fixed retry is stored, not a duplicate.
    assert!(h.dedup_entry("small", "m2").is_none());
    let retry = h
        .publish_at(vec![msg("small", "m2", "fixed")], false, 1_001)
        .pop()
        .unwrap();
    let retry = retry.unwrap();
    assert_eq!((retry.sequence, retry.duplicate), (3, false));
}

#[test]
fn a_refused_publish_does_not_auto_create_its_topic() {
    let h = Harness::memory();
    // Above the default 1 MiB limit of an auto-created topic, below the 16 MiB ceiling.
    let mut big = msg("never.created", "m1", "");
    big.payload = Bytes::from(vec![0u8; 2 * 1024 * 1024]);
    let results = h.publish_at(vec![big], true, 1_000);
    assert_eq!(
        refusal(&results[0]),
        (Refusal::ResourceExhausted, "messages[0].payload")
    );
    assert!(
        h.topic_record("never.created").is_none(),
        "a refused request changes nothing"
    );
    assert!(h.stored_topic_record("never.created").is_none());
    assert!(h.events().iter().all(|e| e["topic"] != json!("never.created")));
}

// ---------------------------------------------------------------- dedup

#[test]
fn a_duplicate_within_the_window_returns_the_first_publish_and_stores_nothing() {
    let h = Harness::memory();
    h.create_topic("t", with_window(60_000), 0).unwrap();
    let first = h.publish_one(msg("t", "order-1", "first"), 1_000);
    assert_eq!(
        (first.sequence, first.duplicate, first.publish_time_ms),
        (1, false, 1_000)
    );

    let again = h.publish_at(vec![msg("t", "order-1", "second")], false, 5_000);
    let again = again[0].as_ref().unwrap();
    assert!(again.duplicate);
    assert_eq!(again.sequence, 1);
    assert_eq!(again.publish_time_ms, 1_000);
    assert_eq!(again.id.as_str(), "order-1");

    let record = h.topic_record("t").unwrap();
    assert_eq!((record.messages, record.next_sequence), (1, 2));
    assert_eq!(h.stored_sequences("t"), vec![1]);
    assert_eq!(h.message("t", 1).unwrap().payload, Bytes::from_static(b"first"));
    // The same id in another topic is another message.
    let other = h.publish_one(msg("u", "order-1", "x"), 5_000);
    assert_eq!((other.sequence, other.duplicate), (1, false));
}

#[test]
fn a_duplicate_inside_one_batch_is_detected() {
    let h = Harness::memory();
    let (response, applied) = h.apply(Command::Publish {
        messages: vec![msg("t", "x", "one"), msg("t", "y", "two"), msg("t", "x", "three")],
        auto_create: true,
        now_ms: 7,
    });
    let Response::Published(results) = response else {
        panic!("{response:?}")
    };
    let results: Vec<Published> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!((results[0].sequence, results[0].duplicate), (1, false));
    assert_eq!((results[1].sequence, results[1].duplicate), (2, false));
    assert_eq!((results[2].sequence, results[2].duplicate), (1, true));
    assert_eq!(results[2].publish_time_ms, 7);
    assert_eq!(h.topic_record("t").unwrap().messages, 2);
    let stored: Vec<_> = applied
        .iter()
        .filter(|a| matches!(a, Applied::Stored(r) if r.key.topic == topic("t")))
        .collect();
    assert_eq!(stored.len(), 2, "the duplicate is not announced as stored");
}

#[test]
fn the_dedup_window_counts_from_the_first_publish_and_duplicates_do_not_refresh_it() {
    let h = Harness::memory();
    let window = 10_000;
    h.create_topic("t", with_window(window), 0).unwrap();
    let t0 = 100_000;
    assert_eq!(h.publish_one(msg("t", "id", "a"), t0).sequence, 1);
    // Duplicates inside the window, the last one at its final millisecond.
    for now in [t0 + 1, t0 + window / 2, t0 + window - 1] {
        let p = h.publish_one(msg("t", "id", "b"), now);
        assert_eq!(
            (p.sequence, p.duplicate, p.publish_time_ms),
            (1, true, t0),
            "at {now}"
        );
    }
    // The window is over at t0 + window even though a duplicate came 1 ms ago.
    let fresh = h.publish_one(msg("t", "id", "c"), t0 + window);
    assert_eq!(
        (fresh.sequence, fresh.duplicate, fresh.publish_time_ms),
        (2, false, t0 + window)
    );
    // The new publish opens a new window.
    let p = h.publish_one(msg("t", "id", "d"), t0 + window + 1);
    assert_eq!(
        (p.sequence, p.duplicate, p.publish_time_ms),
        (2, true, t0 + window)
    );
    assert_eq!(h.stored_sequences("t"), vec![1, 2]);
}

#[test]
fn a_sweep_past_the_window_forgets_the_id() {
    let h = Harness::memory();
    h.create_topic("t", with_window(1_000), 0).unwrap();
    h.publish_one(msg("t", "id", "a"), 5_000);
    assert!(h.dedup_entry("t", "id").is_some());

    // A sweep inside the window keeps the entry, and is not even due.
    assert!(!h.reader.sweep_due(5_500).unwrap());
    assert!(h.reader.sweep_due(6_000).unwrap(), "the window ends at 6 000");
    h.sweep(5_500);
    assert_eq!(
        h.dedup_entry("t", "id"),
        Some(DedupRecord {
            sequence: 1,
            publish_time_ms: 5_000
        })
    );
    assert!(h.publish_one(msg("t", "id", "dup"), 5_600).duplicate);

    // A sweep past the window removes the entry and its expiry.
    h.sweep(6_001);
    assert!(h.dedup_entry("t", "id").is_none());
    assert_eq!(h.count(Cf::DedupExpiry), 0);
    let again = h.publish_one(msg("t", "id", "new"), 6_002);
    assert_eq!((again.sequence, again.duplicate), (2, false));
    assert_eq!(h.topic_record("t").unwrap().messages, 2);
    assert_eq!(
        h.dedup_entry("t", "id"),
        Some(DedupRecord {
            sequence: 2,
            publish_time_ms: 6_002
        })
    );
}

#[test]
fn sweeping_an_old_expiry_keeps_the_entry_of_a_later_republish() {
    let h = Harness::memory();
    h.create_topic("t", with_window(1_000), 0).unwrap();
    h.publish_one(msg("t", "id", "a"), 5_000); // expires at 6_000
    // Republished once the window is over but before any sweep ran.
    let second = h.publish_one(msg("t", "id", "b"), 6_000); // expires at 7_000
    assert_eq!((second.sequence, second.duplicate), (2, false));
    // This sweep handles the old expiry (6_000) only.
    h.sweep(6_500);
    assert_eq!(
        h.dedup_entry("t", "id"),
        Some(DedupRecord {
            sequence: 2,
            publish_time_ms: 6_000
        })
    );
    let dup = h.publish_one(msg("t", "id", "c"), 6_600);
    assert_eq!(
        (dup.sequence, dup.duplicate, dup.publish_time_ms),
        (2, true, 6_000)
    );
    // And the new expiry still removes it in its turn.
    h.sweep(7_001);
    assert!(h.dedup_entry("t", "id").is_none());
    assert_eq!(h.count(Cf::DedupExpiry), 0);
}

// ---------------------------------------------------------------- topics

#[test]
fn creating_a_topic_again_with_the_same_settings_returns_the_same_record() {
    let h = Harness::memory();
    let settings = TopicSettings {
        max_messages: 10,
        ..TopicSettings::default()
    };
    let first = h.create_topic("t", settings.clone(), 100).unwrap();
    assert_eq!(
        (
            first.first_sequence,
            first.next_sequence,
            first.messages,
            first.bytes
        ),
        (1, 1, 0, 0)
    );
    assert_eq!(first.created_at_ms, 100);
    h.publish_one(msg("t", "m", "x"), 150);
    let existing = h.topic_record("t").unwrap();
    let again = h.create_topic("t", settings, 200).unwrap();
    assert_eq!(again, existing);
    assert_eq!(again.created_at_ms, 100);
    assert_eq!(h.stored_sequences("t"), vec![1], "re-creating keeps the messages");
}

#[test]
fn creating_a_topic_again_with_other_settings_is_refused_and_changes_nothing() {
    let h = Harness::memory();
    let original = h.create_topic("t", TopicSettings::default(), 100).unwrap();
    let before = dump(h.store());
    let other = TopicSettings {
        max_messages: 5,
        ..TopicSettings::default()
    };
    let error = h.create_topic("t", other, 200).unwrap_err();
    assert_eq!(error.refusal, Refusal::AlreadyExists);
    assert_eq!(error.field, "name");
    assert_eq!(h.topic_record("t").unwrap(), original);
    assert_eq!(dump(h.store()), before);
}

#[test]
fn deleting_a_topic_removes_its_messages_dedup_entries_and_acks() {
    let h = Harness::memory();
    h.create_sub("s", sub_settings("t", StartPosition::Earliest), 0)
        .unwrap();
    for (i, id) in ["a", "b", "c"].iter().enumerate() {
        h.publish_one(msg("t", id, "x"), 10 + i as u64);
    }
    h.publish_one(msg("keep", "a", "x"), 20);
    h.ack("s", vec![key("t", 1)]).0.unwrap();

    let (response, applied) = h.apply(Command::DeleteTopic {
        name: topic("t"),
        now_ms: 30,
    });
    assert_eq!(response, Response::Deleted(Ok(())));
    assert!(applied.contains(&Applied::TopicDeleted(topic("t"))));
    assert!(h.topic_record("t").is_none());
    assert!(h.stored_topic_record("t").is_none());
    assert!(h.stored_sequences("t").is_empty());
    assert!((1..=3).all(|s| h.message("t", s).is_none()));
    assert!(h.dedup_entry("t", "a").is_none());
    assert!(!h.reader.is_acked(&sub("s"), &key("t", 1)).unwrap());
    // Other topics are untouched.
    assert_eq!(h.stored_sequences("keep"), vec![1]);
    assert!(h.dedup_entry("keep", "a").is_some());

    // Publishing again creates a new topic from sequence 1; old ids are forgotten.
    let again = h.publish_one(msg("t", "a", "y"), 40);
    assert_eq!((again.sequence, again.duplicate), (1, false));
    assert_eq!(
        h.pending("s", "t"),
        vec![1],
        "the old ack does not hide the new message"
    );
}

#[test]
fn deleting_an_unknown_topic_is_not_found() {
    let h = Harness::memory();
    let before = dump(h.store());
    let error = h.delete_topic("nope", 1).unwrap_err();
    assert_eq!((error.refusal, error.field.as_str()), (Refusal::NotFound, "name"));
    assert_eq!(dump(h.store()), before);
}

// ---------------------------------------------------------------- $cluster.events

#[test]
fn topic_and_subscription_changes_are_published_to_cluster_events() {
    let h = Harness::memory();
    let (_, applied) = h.apply(Command::CreateTopic {
        name: topic("orders"),
        settings: TopicSettings::default(),
        now_ms: 1,
    });
    assert!(applied.contains(&Applied::TopicCreated(topic("orders"))));
    assert!(applied.contains(&Applied::TopicCreated(topic("$cluster.events"))));
    h.create_sub("billing", sub_settings("orders.>", StartPosition::New), 2)
        .unwrap();
    h.publish_one(msg("auto", "m", "x"), 3);
    h.delete_sub("billing", 4).unwrap();
    h.delete_topic("orders", 5).unwrap();

    assert_eq!(
        h.events(),
        vec![
            json!({"type": "topic_created", "topic": "orders"}),
            json!({"type": "subscription_created", "subscription": "billing", "pattern": "orders.>"}),
            json!({"type": "topic_created", "topic": "auto"}),
            json!({"type": "subscription_deleted", "subscription": "billing"}),
            json!({"type": "topic_deleted", "topic": "orders"}),
        ]
    );
    // Events are ordinary messages: numbered from 1, stamped with the command's time.
    let third = h.message("$cluster.events", 3).unwrap();
    assert_eq!(third.publish_time_ms, 3);
    assert_eq!(third.topic, topic("$cluster.events"));
    let record = h.topic_record("$cluster.events").unwrap();
    assert_eq!((record.first_sequence, record.next_sequence), (1, 6));
    assert_eq!(record.settings, super::events::events_topic_settings());
}

#[test]
fn the_events_topic_does_not_announce_itself() {
    let h = Harness::memory();
    h.create_topic("a", TopicSettings::default(), 1).unwrap();
    assert!(h.topic_record("$cluster.events").is_some());
    let events = h.events();
    assert_eq!(events, vec![json!({"type": "topic_created", "topic": "a"})]);
    assert!(events.iter().all(|e| e["topic"] != json!("$cluster.events")));
    // Refused commands announce nothing.
    h.create_topic("a", with_window(5), 2).unwrap_err();
    h.delete_topic("zzz", 3).unwrap_err();
    h.delete_sub("zzz", 4).unwrap_err();
    assert_eq!(h.events().len(), 1);
}

#[test]
fn identical_events_get_distinct_ids() {
    let h = Harness::memory();
    h.create_topic("a", TopicSettings::default(), 1).unwrap();
    h.create_topic("b", TopicSettings::default(), 1).unwrap();
    let first = h.message("$cluster.events", 1).unwrap();
    let second = h.message("$cluster.events", 2).unwrap();
    assert_ne!(first.id, second.id);
}

// ---------------------------------------------------------------- subscriptions

#[test]
fn subscriptions_start_where_they_are_told() {
    let h = Harness::memory();
    for (i, time) in [100, 200, 300].iter().enumerate() {
        h.publish_one(msg("t", &format!("m{i}"), "x"), *time);
    }
    let starts = [
        ("new", StartPosition::New),
        ("earliest", StartPosition::Earliest),
        ("seq2", StartPosition::Sequence(2)),
        ("seq0", StartPosition::Sequence(0)),
        ("time200", StartPosition::Time(200)),
        ("time250", StartPosition::Time(250)),
        ("time0", StartPosition::Time(0)),
        ("future", StartPosition::Time(10_000)),
    ];
    for (name, start) in starts {
        h.create_sub(name, sub_settings("t", start), 400).unwrap();
    }
    let pending = |name| h.pending(name, "t");
    assert_eq!(pending("new"), Vec::<Sequence>::new());
    assert_eq!(pending("earliest"), vec![1, 2, 3]);
    assert_eq!(pending("seq2"), vec![2, 3]);
    assert_eq!(pending("seq0"), vec![1, 2, 3]);
    assert_eq!(pending("time200"), vec![2, 3]);
    assert_eq!(pending("time250"), vec![3]);
    assert_eq!(pending("time0"), vec![1, 2, 3]);
    assert_eq!(pending("future"), Vec::<Sequence>::new());
    assert_eq!(h.reader.cursor(&sub("new"), &topic("t")).unwrap(), 4);

    // Everyone sees what comes next.
    h.publish_one(msg("t", "m4", "x"), 500);
    assert_eq!(pending("new"), vec![4]);
    assert_eq!(pending("future"), vec![4]);
    assert_eq!(pending("earliest"), vec![1, 2, 3, 4]);
}

#[test]
fn a_start_before_the_retained_messages_begins_at_the_first_retained_one() {
    let h = Harness::memory();
    let settings = TopicSettings {
        max_messages: 2,
        ..TopicSettings::default()
    };
    h.create_topic("t", settings, 0).unwrap();
    for i in 1..=4 {
        h.publish_one(msg("t", &format!("m{i}"), "x"), 100 * i);
    }
    h.create_sub("seq", sub_settings("t", StartPosition::Sequence(1)), 500)
        .unwrap();
    h.create_sub("earliest", sub_settings("t", StartPosition::Earliest), 500)
        .unwrap();
    h.create_sub("time", sub_settings("t", StartPosition::Time(0)), 500)
        .unwrap();
    for name in ["seq", "earliest", "time"] {
        assert_eq!(h.reader.cursor(&sub(name), &topic("t")).unwrap(), 3, "{name}");
        assert_eq!(h.pending(name, "t"), vec![3, 4], "{name}");
    }
}

#[test]
fn a_topic_created_after_the_subscription_is_read_from_its_first_message() {
    let h = Harness::memory();
    h.publish_one(msg("orders.old", "m", "x"), 1);
    h.create_sub("s", sub_settings("orders.>", StartPosition::New), 2)
        .unwrap();
    h.publish_one(msg("orders.eu", "m1", "x"), 3);
    h.publish_one(msg("orders.eu", "m2", "x"), 4);
    h.publish_one(msg("orders.old", "m2", "x"), 5);
    assert_eq!(h.reader.cursor(&sub("s"), &topic("orders.eu")).unwrap(), 1);
    assert_eq!(h.pending("s", "orders.eu"), vec![1, 2]);
    assert_eq!(h.pending("s", "orders.old"), vec![2]);
}

#[test]
fn creating_a_subscription_again_is_idempotent_unless_the_settings_differ() {
    let h = Harness::memory();
    h.publish_one(msg("t", "m1", "x"), 1);
    let settings = sub_settings("t", StartPosition::New);
    let first = h.create_sub("s", settings.clone(), 10).unwrap();
    assert_eq!(first.created_at_ms, 10);
    h.publish_one(msg("t", "m2", "x"), 11);
    let events_before = h.events().len();

    let again = h.create_sub("s", settings, 20).unwrap();
    assert_eq!(again, first);
    assert_eq!(
        h.pending("s", "t"),
        vec![2],
        "the cursor is not moved by a repeat"
    );
    assert_eq!(h.events().len(), events_before);

    let before = dump(h.store());
    let error = h
        .create_sub("s", sub_settings("t", StartPosition::Earliest), 30)
        .unwrap_err();
    assert_eq!(
        (error.refusal, error.field.as_str()),
        (Refusal::AlreadyExists, "name")
    );
    assert_eq!(dump(h.store()), before);
    assert_eq!(h.machine.catalog().subscriptions[&sub("s")], first);
}

#[test]
fn deleting_a_subscription_removes_its_record_cursors_and_acks() {
    let h = Harness::memory();
    h.publish_one(msg("t", "m1", "x"), 1);
    h.create_sub("s", sub_settings("t", StartPosition::Earliest), 2)
        .unwrap();
    h.ack("s", vec![key("t", 1)]).0.unwrap();
    let (response, applied) = h.apply(Command::DeleteSubscription {
        name: sub("s"),
        now_ms: 3,
    });
    assert_eq!(response, Response::Deleted(Ok(())));
    assert!(applied.contains(&Applied::SubscriptionDeleted(sub("s"))));
    assert!(!h.machine.catalog().subscriptions.contains_key(&sub("s")));
    assert!(
        h.store()
            .get(Cf::Meta, &subscription_key(&sub("s")))
            .unwrap()
            .is_none()
    );
    assert_eq!(h.count(Cf::Acks), 0);
    let cursors = super::catalog::cursor_prefix(&sub("s"));
    assert!(
        h.store()
            .scan(Cf::Meta, &cursors, &keys::prefix_end(&cursors), 10)
            .unwrap()
            .is_empty()
    );

    let error = h.delete_sub("s", 4).unwrap_err();
    assert_eq!((error.refusal, error.field.as_str()), (Refusal::NotFound, "name"));
}

// ---------------------------------------------------------------- ack

#[test]
fn acked_messages_are_no_longer_pending() {
    let h = Harness::memory();
    h.create_sub("s", sub_settings("t", StartPosition::Earliest), 0)
        .unwrap();
    h.create_sub("other", sub_settings("t", StartPosition::Earliest), 0)
        .unwrap();
    for i in 1..=4 {
        h.publish_one(msg("t", &format!("m{i}"), "x"), i);
    }
    let (result, applied) = h.ack("s", vec![key("t", 1), key("t", 3)]);
    result.unwrap();
    assert_eq!(
        acked_notes(&applied),
        vec![(sub("s"), key("t", 1)), (sub("s"), key("t", 3))]
    );
    assert_eq!(h.pending("s", "t"), vec![2, 4]);
    assert_eq!(
        h.pending("other", "t"),
        vec![1, 2, 3, 4],
        "acks are per subscription"
    );
    assert!(h.reader.is_acked(&sub("s"), &key("t", 3)).unwrap());
    assert!(!h.reader.is_acked(&sub("other"), &key("t", 3)).unwrap());
    // The messages themselves stay (limits retention).
    assert_eq!(h.stored_sequences("t"), vec![1, 2, 3, 4]);
}

#[test]
fn each_ack_is_announced_once() {
    let h = Harness::memory();
    h.create_sub("s", sub_settings("t", StartPosition::Earliest), 0)
        .unwrap();
    h.publish_one(msg("t", "m1", "x"), 1);
    h.publish_one(msg("t", "m2", "x"), 2);
    let (result, applied) = h.ack("s", vec![key("t", 1), key("t", 1)]);
    result.unwrap();
    assert_eq!(acked_notes(&applied), vec![(sub("s"), key("t", 1))]);
    let (result, applied) = h.ack("s", vec![key("t", 1), key("t", 2)]);
    result.unwrap();
    assert_eq!(
        acked_notes(&applied),
        vec![(sub("s"), key("t", 2))],
        "a re-ack is silent"
    );
    let (result, applied) = h.ack("s", vec![key("t", 2)]);
    assert_eq!(result, Ok(()));
    assert!(applied.is_empty());
    assert_eq!(h.pending("s", "t"), Vec::<Sequence>::new());
}

#[test]
fn an_ack_on_an_unknown_subscription_is_not_found_and_stores_nothing() {
    let h = Harness::memory();
    h.publish_one(msg("t", "m1", "x"), 1);
    let (result, applied) = h.ack("ghost", vec![key("t", 1)]);
    let error = result.unwrap_err();
    assert_eq!(
        (error.refusal, error.field.as_str()),
        (Refusal::NotFound, "subscription")
    );
    assert!(acked_notes(&applied).is_empty());
    assert_eq!(h.count(Cf::Acks), 0);
}

#[test]
fn an_ack_for_a_message_not_yet_published_does_not_hide_it() {
    let h = Harness::memory();
    h.create_sub("s", sub_settings("t", StartPosition::Earliest), 0)
        .unwrap();
    h.publish_one(msg("t", "m1", "x"), 1);
    // E.g. a stale token from before the topic was deleted and re-created.
    let _ = h.ack("s", vec![key("t", 2)]);
    let p = h.publish_one(msg("t", "m2", "x"), 2);
    assert_eq!(p.sequence, 2);
    assert_eq!(
        h.pending("s", "t"),
        vec![1, 2],
        "message 2 was never delivered, so never acked"
    );
}

// ---------------------------------------------------------------- dead letters

#[test]
fn dead_letters_go_to_the_dead_letter_topic_with_their_story() {
    let h = Harness::memory();
    let mut settings = sub_settings("orders", StartPosition::Earliest);
    settings.dead_letter_topic = Some(topic("orders-dlq"));
    h.create_sub("s", settings, 0).unwrap();
    let reasons = [
        (DeadReason::MaxDeliveries, "max_deliveries", 20),
        (DeadReason::Rejected, "rejected", 1),
        (DeadReason::Expired, "expired", 3),
    ];
    for i in 1..=reasons.len() as u64 {
        let mut m = msg("orders", &format!("order-{i}"), &format!("payload {i}"));
        m.headers.insert("tenant".into(), "acme".into());
        m.priority = Priority::High;
        m.ttl_ms = Some(50_000);
        h.publish_one(m, 100 + i);
    }
    for (i, (reason, _, attempts)) in reasons.iter().enumerate() {
        let sequence = i as u64 + 1;
        assert!(h.dead_letter("s", key("orders", sequence), *reason, *attempts, 1_000 + sequence));
    }

    let dlq = h
        .topic_record("orders-dlq")
        .expect("the dead-letter topic is created on demand");
    assert_eq!((dlq.first_sequence, dlq.next_sequence, dlq.messages), (1, 4, 3));
    for (i, (_, reason, attempts)) in reasons.iter().enumerate() {
        let sequence = i as u64 + 1;
        let original = h.message("orders", sequence).unwrap();
        let copy = h.message("orders-dlq", sequence).unwrap();
        assert_eq!(copy.payload, original.payload);
        assert_eq!(copy.priority, Priority::High);
        assert_eq!(copy.expires_at_ms, None, "a dead letter does not expire");
        assert_eq!(copy.publish_time_ms, 1_000 + sequence);
        let header = |name: &str| copy.headers.get(name).map(String::as_str);
        assert_eq!(header(HEADER_ORIGINAL_TOPIC), Some("orders"));
        assert_eq!(header("hermod-original-topic"), Some("orders"));
        assert_eq!(header("hermod-original-id"), Some(original.id.as_str()));
        assert_eq!(
            header(HEADER_ORIGINAL_ID),
            Some(format!("order-{sequence}").as_str())
        );
        assert_eq!(
            header(HEADER_ORIGINAL_SEQUENCE),
            Some(sequence.to_string().as_str())
        );
        assert_eq!(
            header("hermod-original-sequence"),
            Some(sequence.to_string().as_str())
        );
        assert_eq!(header(HEADER_SUBSCRIPTION), Some("s"));
        assert_eq!(header("hermod-subscription"), Some("s"));
        assert_eq!(header(HEADER_REASON), Some(*reason));
        assert_eq!(header("hermod-dead-letter-reason"), Some(*reason));
        assert_eq!(header(HEADER_ATTEMPTS), Some(attempts.to_string().as_str()));
        assert_eq!(header("hermod-attempts"), Some(attempts.to_string().as_str()));
        assert_eq!(header("tenant"), Some("acme"), "the original headers are kept");
    }
    assert_eq!(h.pending("s", "orders"), Vec::<Sequence>::new());
    // The original stays in its topic for other subscriptions.
    assert_eq!(h.stored_sequences("orders"), vec![1, 2, 3]);
}

#[test]
fn a_message_is_dead_lettered_only_once() {
    let h = Harness::memory();
    let mut settings = sub_settings("t", StartPosition::Earliest);
    settings.dead_letter_topic = Some(topic("dlq"));
    h.create_sub("s", settings, 0).unwrap();
    h.publish_one(msg("t", "m1", "x"), 1);
    h.publish_one(msg("t", "m2", "y"), 2);

    let (response, applied) = h.apply(Command::DeadLetter {
        subscription: sub("s"),
        key: key("t", 1),
        reason: DeadReason::Rejected,
        attempts: 1,
        now_ms: 10,
    });
    assert_eq!(response, Response::DeadLettered(true));
    assert_eq!(acked_notes(&applied), vec![(sub("s"), key("t", 1))]);
    assert!(h.reader.is_acked(&sub("s"), &key("t", 1)).unwrap());
    assert_eq!(h.pending("s", "t"), vec![2]);

    let before = dump(h.store());
    let (response, applied) = h.apply(Command::DeadLetter {
        subscription: sub("s"),
        key: key("t", 1),
        reason: DeadReason::MaxDeliveries,
        attempts: 5,
        now_ms: 20,
    });
    assert_eq!(response, Response::DeadLettered(false));
    assert!(applied.is_empty());
    assert_eq!(dump(h.store()), before);
    assert_eq!(h.topic_record("dlq").unwrap().messages, 1);

    // An acked message is settled too: nothing to dead-letter.
    h.ack("s", vec![key("t", 2)]).0.unwrap();
    assert!(!h.dead_letter("s", key("t", 2), DeadReason::Expired, 1, 30));
    assert_eq!(h.topic_record("dlq").unwrap().messages, 1);
}

#[test]
fn several_subscriptions_dead_letter_the_same_message_without_losing_one() {
    let h = Harness::memory();
    for name in ["a", "b"] {
        let mut settings = sub_settings("t", StartPosition::Earliest);
        settings.dead_letter_topic = Some(topic("dlq"));
        h.create_sub(name, settings, 0).unwrap();
    }
    h.publish_one(msg("t", "m1", "x"), 1);
    assert!(h.dead_letter("a", key("t", 1), DeadReason::Rejected, 1, 10));
    assert!(h.dead_letter("b", key("t", 1), DeadReason::Rejected, 1, 11));
    assert_eq!(h.stored_sequences("dlq"), vec![1, 2]);
    let subs: Vec<_> = (1..=2)
        .map(|s| h.message("dlq", s).unwrap().headers[HEADER_SUBSCRIPTION].clone())
        .collect();
    assert_eq!(subs, vec!["a".to_string(), "b".to_string()]);
}

#[test]
fn without_a_dead_letter_topic_the_message_is_dropped_with_an_event() {
    let h = Harness::memory();
    h.create_sub("s", sub_settings("t", StartPosition::Earliest), 0)
        .unwrap();
    h.publish_one(msg("t", "m1", "x"), 1);
    h.publish_one(msg("t", "m2", "x"), 2);
    let topics_before: Vec<_> = h.machine.catalog().topics.keys().cloned().collect();
    assert!(h.dead_letter("s", key("t", 2), DeadReason::MaxDeliveries, 20, 10));
    assert_eq!(h.pending("s", "t"), vec![1]);
    assert_eq!(
        h.events().last().unwrap(),
        &json!({
            "type": "message_dropped",
            "subscription": "s",
            "topic": "t",
            "sequence": 2,
            "reason": "max_deliveries",
        })
    );
    let topics_after: Vec<_> = h.machine.catalog().topics.keys().cloned().collect();
    assert_eq!(topics_before, topics_after, "no topic is created for a drop");
}

#[test]
fn dead_lettering_for_an_unknown_subscription_does_nothing() {
    let h = Harness::memory();
    h.publish_one(msg("t", "m1", "x"), 1);
    let before = dump(h.store());
    assert!(!h.dead_letter("ghost", key("t", 1), DeadReason::Rejected, 1, 10));
    assert_eq!(dump(h.store()), before);
}

// ---------------------------------------------------------------- retention

#[test]
fn max_messages_evicts_the_oldest_on_publish() {
    let h = Harness::memory();
    let settings = TopicSettings {
        max_messages: 3,
        ..TopicSettings::default()
    };
    h.create_topic("t", settings, 0).unwrap();
    let mut truncations = Vec::new();
    for i in 1..=5u64 {
        let (response, applied) = h.apply(Command::Publish {
            messages: vec![msg("t", &format!("m{i}"), "x")],
            auto_create: false,
            now_ms: i,
        });
        let Response::Published(results) = response else {
            panic!()
        };
        assert_eq!(results[0].as_ref().unwrap().sequence, i);
        truncations.extend(applied.into_iter().filter_map(|a| match a {
            Applied::Truncated {
                topic,
                first_sequence,
            } => Some((topic, first_sequence)),
            _ => None,
        }));
    }
    assert_eq!(truncations, vec![(topic("t"), 2), (topic("t"), 3)]);
    let record = h.topic_record("t").unwrap();
    assert_eq!(
        (record.first_sequence, record.next_sequence, record.messages),
        (3, 6, 3)
    );
    assert_eq!(h.stored_topic_record("t").unwrap(), record);
    assert_eq!(h.stored_sequences("t"), vec![3, 4, 5]);
    assert!(h.message("t", 1).is_none());
    // Sequences keep increasing after eviction.
    assert_eq!(h.publish_one(msg("t", "m6", "x"), 6).sequence, 6);
    assert_eq!(h.stored_sequences("t"), vec![4, 5, 6]);
}

#[test]
fn max_bytes_evicts_the_oldest_on_publish() {
    let h = Harness::memory();
    // Each message: 10 payload bytes + 2 id bytes = 12 bytes.
    let settings = TopicSettings {
        max_bytes: 30,
        ..TopicSettings::default()
    };
    h.create_topic("t", settings, 0).unwrap();
    for i in 1..=4u64 {
        assert_eq!(
            h.publish_one(msg("t", &format!("m{i}"), "0123456789"), i)
                .sequence,
            i
        );
    }
    let record = h.topic_record("t").unwrap();
    assert_eq!((record.first_sequence, record.next_sequence), (3, 5));
    assert_eq!((record.messages, record.bytes), (2, 24));
    assert_eq!(h.stored_sequences("t"), vec![3, 4]);
    // One batch over the limit evicts several at once.
    let results = h.publish_at(
        vec![msg("t", "n1", "0123456789"), msg("t", "n2", "0123456789")],
        false,
        10,
    );
    let sequences: Vec<_> = results.iter().map(|r| r.as_ref().unwrap().sequence).collect();
    assert_eq!(sequences, vec![5, 6]);
    assert_eq!(h.stored_sequences("t"), vec![5, 6]);
    assert_eq!(h.topic_record("t").unwrap().bytes, 24);
}

#[test]
fn eviction_drops_the_ack_markers_of_evicted_messages() {
    let h = Harness::memory();
    let settings = TopicSettings {
        max_messages: 1,
        ..TopicSettings::default()
    };
    h.create_topic("t", settings, 0).unwrap();
    h.create_sub("s", sub_settings("t", StartPosition::Earliest), 0)
        .unwrap();
    h.publish_one(msg("t", "m1", "x"), 1);
    h.ack("s", vec![key("t", 1)]).0.unwrap();
    h.publish_one(msg("t", "m2", "x"), 2);
    assert_eq!(h.count(Cf::Acks), 0);
    assert_eq!(h.pending("s", "t"), vec![2]);
}

#[test]
fn max_age_evicts_on_sweep() {
    let h = Harness::memory();
    let settings = TopicSettings {
        max_age_ms: 1_000,
        ..TopicSettings::default()
    };
    h.create_topic("t", settings, 0).unwrap();
    h.publish_one(msg("t", "m1", "x"), 1_000);
    h.publish_one(msg("t", "m2", "x"), 1_500);
    h.publish_one(msg("t", "m3", "x"), 1_800);

    // The dedup window (2 minutes) is far; only age can make a sweep due.
    let window_ended = 1_000 + crate::domain::limits::DEFAULT_DEDUP_WINDOW_MS;
    assert!(!h.reader.sweep_due(1_999).unwrap());
    assert!(h.reader.sweep_due(2_000).unwrap(), "m1 is a second old at 2 000");
    let applied = h.sweep(1_999);
    assert!(
        !applied.iter().any(|a| matches!(a, Applied::Truncated { .. })),
        "{applied:?}"
    );
    assert_eq!(h.stored_sequences("t"), vec![1, 2, 3]);
    let applied = h.sweep(2_000);
    assert!(applied.contains(&Applied::Truncated {
        topic: topic("t"),
        first_sequence: 2
    }));
    assert_eq!(h.stored_sequences("t"), vec![2, 3]);
    h.sweep(2_900);
    assert_eq!(h.stored_sequences("t"), Vec::<Sequence>::new());
    // Nothing left to age out; m1's id is remembered until its window ends.
    assert!(!h.reader.sweep_due(2_950).unwrap());
    assert!(h.reader.sweep_due(window_ended).unwrap());
    let record = h.topic_record("t").unwrap();
    assert_eq!(
        (
            record.first_sequence,
            record.next_sequence,
            record.messages,
            record.bytes
        ),
        (4, 4, 0, 0)
    );
    assert_eq!(h.stored_topic_record("t").unwrap(), record);
    assert_eq!(h.publish_one(msg("t", "m4", "x"), 3_000).sequence, 4);
}

#[test]
fn interest_retention_deletes_a_message_once_every_subscription_acked_it() {
    let h = Harness::memory();
    let settings = TopicSettings {
        retention: RetentionPolicy::Interest,
        ..TopicSettings::default()
    };
    h.create_topic("t", settings, 0).unwrap();
    h.create_sub("a", sub_settings("t", StartPosition::New), 1)
        .unwrap();
    h.create_sub("b", sub_settings(">", StartPosition::New), 1)
        .unwrap();
    h.create_sub("unrelated", sub_settings("other", StartPosition::New), 1)
        .unwrap();
    h.publish_one(msg("t", "m1", "x"), 10);
    h.publish_one(msg("t", "m2", "x"), 11);

    h.sweep(20);
    assert_eq!(h.stored_sequences("t"), vec![1, 2], "nobody acked yet");
    h.ack("a", vec![key("t", 1), key("t", 2)]).0.unwrap();
    h.sweep(21);
    assert_eq!(h.stored_sequences("t"), vec![1, 2], "b has not acked");
    h.ack("b", vec![key("t", 1)]).0.unwrap();
    let applied = h.sweep(22);
    assert!(applied.contains(&Applied::Truncated {
        topic: topic("t"),
        first_sequence: 2
    }));
    assert_eq!(h.stored_sequences("t"), vec![2]);
    assert_eq!(h.topic_record("t").unwrap().first_sequence, 2);
    // The ack markers went with the message; a repeated ack is still settled.
    assert!(!h.reader.is_acked(&sub("a"), &key("t", 1)).unwrap());
    assert!(h.reader.is_settled(&sub("a"), &key("t", 1)).unwrap());
    assert!(
        !h.reader.is_settled(&sub("b"), &key("t", 2)).unwrap(),
        "b still wants 2"
    );
    assert!(
        !h.reader.is_settled(&sub("a"), &key("t", 3)).unwrap(),
        "3 was never published"
    );
    // Dead-lettering settles a message too.
    assert!(h.dead_letter("b", key("t", 2), DeadReason::Rejected, 1, 23));
    h.sweep(24);
    assert_eq!(h.stored_sequences("t"), Vec::<Sequence>::new());
    assert_eq!(h.topic_record("t").unwrap().messages, 0);
}

#[test]
fn a_subscription_created_after_a_message_does_not_hold_it_back() {
    let h = Harness::memory();
    let settings = TopicSettings {
        retention: RetentionPolicy::Interest,
        ..TopicSettings::default()
    };
    h.create_topic("t", settings, 0).unwrap();
    h.create_sub("early", sub_settings("t", StartPosition::New), 1)
        .unwrap();
    h.publish_one(msg("t", "m1", "x"), 10);
    h.create_sub("late", sub_settings("t", StartPosition::New), 11)
        .unwrap();
    h.publish_one(msg("t", "m2", "x"), 12);
    h.ack("early", vec![key("t", 1), key("t", 2)]).0.unwrap();
    h.sweep(20);
    assert_eq!(
        h.stored_sequences("t"),
        vec![2],
        "late never wanted 1, but still wants 2"
    );
    assert_eq!(h.pending("late", "t"), vec![2]);
}

#[test]
fn an_earliest_subscription_created_later_holds_back_what_it_will_read() {
    let h = Harness::memory();
    let settings = TopicSettings {
        retention: RetentionPolicy::Interest,
        ..TopicSettings::default()
    };
    h.create_topic("t", settings, 0).unwrap();
    h.create_sub("early", sub_settings("t", StartPosition::New), 1)
        .unwrap();
    h.publish_one(msg("t", "m1", "x"), 10);
    h.create_sub("replay", sub_settings("t", StartPosition::Earliest), 11)
        .unwrap();
    h.ack("early", vec![key("t", 1)]).0.unwrap();
    h.sweep(20);
    assert_eq!(h.stored_sequences("t"), vec![1]);
    assert_eq!(h.pending("replay", "t"), vec![1]);
}

// ---------------------------------------------------------------- reopen

#[test]
fn everything_survives_a_reopen_on_rocksdb() {
    let dir = tempfile::tempdir().unwrap();
    let topic_settings = TopicSettings {
        max_messages: 100,
        dedup_window_ms: 60_000,
        ..TopicSettings::default()
    };
    let mut dlq_settings = sub_settings("orders", StartPosition::Earliest);
    dlq_settings.dead_letter_topic = Some(topic("dead"));
    let (catalog_topics, catalog_subs, cursor_late, before) = {
        let h = Harness::on(Arc::new(RocksStore::open(dir.path()).unwrap()));
        h.create_topic("orders", topic_settings.clone(), 1).unwrap();
        h.create_sub("s", dlq_settings.clone(), 2).unwrap();
        for i in 1..=3u64 {
            h.publish_one(msg("orders", &format!("o{i}"), &format!("p{i}")), 10 + i);
        }
        h.create_sub("late", sub_settings("orders", StartPosition::New), 20)
            .unwrap();
        h.ack("s", vec![key("orders", 1)]).0.unwrap();
        assert!(h.dead_letter("s", key("orders", 2), DeadReason::Rejected, 1, 21));
        let catalog = h.machine.catalog().clone();
        let cursor = h.reader.cursor(&sub("late"), &topic("orders")).unwrap();
        (catalog.topics, catalog.subscriptions, cursor, dump(h.store()))
    };

    let h = Harness::on(Arc::new(RocksStore::open(dir.path()).unwrap()));
    assert_eq!(dump(h.store()), before);
    {
        let catalog = h.machine.catalog();
        assert_eq!(catalog.topics, catalog_topics);
        assert_eq!(catalog.subscriptions, catalog_subs);
        assert_eq!(catalog.topics[&topic("orders")].settings, topic_settings);
        assert_eq!(catalog.subscriptions[&sub("s")].settings, dlq_settings);
        assert!(catalog.topics.contains_key(&topic("dead")));
        assert!(catalog.topics.contains_key(&topic("$cluster.events")));
    }
    assert_eq!(h.message("orders", 3).unwrap().payload, Bytes::from_static(b"p3"));
    assert_eq!(h.message("dead", 1).unwrap().headers[HEADER_REASON], "rejected");
    assert_eq!(h.pending("s", "orders"), vec![3]);
    assert_eq!(
        h.reader.cursor(&sub("late"), &topic("orders")).unwrap(),
        cursor_late
    );
    assert_eq!(h.pending("late", "orders"), Vec::<Sequence>::new());
    assert!(h.reader.is_acked(&sub("s"), &key("orders", 1)).unwrap());
    assert!(!h.events().is_empty());

    // Dedup still answers with the first publish; numbering carries on.
    let dup = h.publish_one(msg("orders", "o2", "again"), 30);
    assert_eq!((dup.sequence, dup.duplicate, dup.publish_time_ms), (2, true, 12));
    let next = h.publish_one(msg("orders", "o4", "p4"), 31);
    assert_eq!((next.sequence, next.duplicate), (4, false));
    assert_eq!(h.pending("late", "orders"), vec![4]);
    // A re-ack after the reopen is still a no-op.
    let (_, applied) = h.ack("s", vec![key("orders", 1)]);
    assert!(acked_notes(&applied).is_empty());
}

// ---------------------------------------------------------------- determinism

/// A history touching every command.
fn history() -> Vec<Command> {
    let mut dlq = sub_settings("orders.>", StartPosition::Earliest);
    dlq.dead_letter_topic = Some(topic("dead"));
    let interest = TopicSettings {
        retention: RetentionPolicy::Interest,
        dedup_window_ms: 1_000,
        ..TopicSettings::default()
    };
    let limited = TopicSettings {
        max_messages: 3,
        max_age_ms: 5_000,
        ..TopicSettings::default()
    };
    let mut priority = msg("orders.eu", "p", "urgent");
    priority.priority = Priority::Critical;
    priority.headers.insert("b".into(), "2".into());
    priority.headers.insert("a".into(), "1".into());
    priority.ttl_ms = Some(100);
    priority.delay_ms = 10;
    vec![
        Command::CreateTopic {
            name: topic("orders.eu"),
            settings: interest,
            now_ms: 1,
        },
        Command::CreateTopic {
            name: topic("logs"),
            settings: limited,
            now_ms: 2,
        },
        Command::CreateSubscription {
            name: sub("billing"),
            settings: dlq,
            now_ms: 3,
        },
        Command::CreateSubscription {
            name: sub("all"),
            settings: sub_settings(">", StartPosition::Time(0)),
            now_ms: 4,
        },
        Command::Publish {
            messages: vec![
                msg("orders.eu", "o1", "a"),
                msg("orders.eu", "o2", "b"),
                msg("orders.us", "o1", "c"),
                msg("orders.eu", "o1", "dup"),
                priority,
            ],
            auto_create: true,
            now_ms: 10,
        },
        Command::Publish {
            messages: (0..6).map(|i| msg("logs", &format!("l{i}"), "line")).collect(),
            auto_create: false,
            now_ms: 11,
        },
        Command::Publish {
            messages: vec![msg("nowhere", "x", "y")],
            auto_create: false,
            now_ms: 12,
        },
        Command::Ack {
            subscription: sub("billing"),
            keys: vec![key("orders.eu", 1), key("orders.us", 1)],
        },
        Command::Ack {
            subscription: sub("all"),
            keys: vec![key("orders.eu", 1), key("logs", 5)],
        },
        Command::DeadLetter {
            subscription: sub("billing"),
            key: key("orders.eu", 2),
            reason: DeadReason::MaxDeliveries,
            attempts: 20,
            now_ms: 13,
        },
        Command::DeadLetter {
            subscription: sub("all"),
            key: key("orders.eu", 2),
            reason: DeadReason::Expired,
            attempts: 2,
            now_ms: 14,
        },
        Command::Sweep { now_ms: 1_500 },
        Command::Publish {
            messages: vec![msg("orders.eu", "o1", "again")],
            auto_create: true,
            now_ms: 1_600,
        },
        Command::DeleteSubscription {
            name: sub("all"),
            now_ms: 1_700,
        },
        Command::Sweep { now_ms: 6_000 },
        Command::DeleteTopic {
            name: topic("orders.us"),
            now_ms: 6_100,
        },
        Command::CreateTopic {
            name: topic("logs"),
            settings: TopicSettings::default(),
            now_ms: 6_200,
        },
        Command::Ack {
            subscription: sub("billing"),
            keys: vec![key("orders.eu", 4)],
        },
        Command::Sweep { now_ms: 10_000 },
    ]
}

#[test]
fn the_same_commands_give_the_same_answers_and_the_same_bytes() {
    let run = || {
        let h = Harness::memory();
        let answers: Vec<(Response, Vec<Applied>)> = history().into_iter().map(|c| h.apply(c)).collect();
        (answers, dump(h.store()))
    };
    let (answers_a, bytes_a) = run();
    let (answers_b, bytes_b) = run();
    assert_eq!(answers_a, answers_b);
    assert_eq!(bytes_a, bytes_b);
    // The history really did something in every family the state machine owns.
    for cf in FAMILIES {
        let entries = &bytes_a.iter().find(|(c, _)| *c == cf).unwrap().1;
        assert!(!entries.is_empty(), "{cf:?} is empty");
    }
    // And the same bytes on RocksDB.
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::on(Arc::new(RocksStore::open(dir.path()).unwrap()));
    let answers: Vec<_> = history().into_iter().map(|c| h.apply(c)).collect();
    assert_eq!(answers, answers_a);
    assert_eq!(dump(h.store()), bytes_a);
}

#[test]
fn a_command_encodes_and_decodes_unchanged() {
    for command in history() {
        let bytes = crate::storage::encode(&command);
        let back: Command = decode(Cf::RaftLog, &bytes).unwrap();
        assert_eq!(back, command);
    }
}

/// Applies `commands` in one transaction, as the Raft state machine does
/// with a batch of log entries.
fn apply_batched(h: &Harness, commands: &[Command]) -> Vec<Response> {
    let mut txn = Txn::new(h.store());
    let mut out = Vec::new();
    let responses = h
        .machine
        .apply_all(&mut txn, commands.iter().map(Some), &mut out)
        .unwrap();
    h.store().write(txn.into_batch(), true).unwrap();
    responses
}

#[test]
fn batching_unrelated_commands_into_one_transaction_changes_nothing() {
    // Commands that neither range-delete nor sweep: batched == one by one.
    let commands: Vec<Command> = history()
        .into_iter()
        .filter(|c| {
            !matches!(
                c,
                Command::Sweep { .. } | Command::DeleteTopic { .. } | Command::DeleteSubscription { .. }
            )
        })
        .collect();
    let one_by_one = Harness::memory();
    let answers: Vec<Response> = commands.iter().map(|c| one_by_one.apply(c.clone()).0).collect();
    let batched = Harness::memory();
    assert_eq!(apply_batched(&batched, &commands), answers);
    assert_eq!(dump(batched.store()), dump(one_by_one.store()));
}

#[test]
fn a_republish_after_deleting_the_topic_in_the_same_batch_is_stored() {
    let h = Harness::memory();
    h.publish_one(msg("t", "id", "old"), 1);
    h.publish_one(msg("t", "other", "old"), 2);
    let responses = apply_batched(
        &h,
        &[
            Command::DeleteTopic {
                name: topic("t"),
                now_ms: 10,
            },
            Command::Publish {
                messages: vec![msg("t", "id", "new")],
                auto_create: true,
                now_ms: 11,
            },
        ],
    );
    let Response::Published(results) = &responses[1] else {
        panic!("{responses:?}")
    };
    let published = results[0].as_ref().unwrap();
    assert_eq!(
        (published.sequence, published.duplicate),
        (1, false),
        "{published:?}"
    );
    assert_eq!(h.message("t", 1).unwrap().payload, Bytes::from_static(b"new"));
}

#[test]
fn an_ack_after_recreating_the_subscription_in_the_same_batch_is_kept() {
    let h = Harness::memory();
    h.publish_one(msg("t", "m1", "x"), 1);
    let settings = sub_settings("t", StartPosition::Earliest);
    h.create_sub("s", settings.clone(), 2).unwrap();
    h.ack("s", vec![key("t", 1)]).0.unwrap();
    apply_batched(
        &h,
        &[
            Command::DeleteSubscription {
                name: sub("s"),
                now_ms: 10,
            },
            Command::CreateSubscription {
                name: sub("s"),
                settings,
                now_ms: 11,
            },
            Command::Ack {
                subscription: sub("s"),
                keys: vec![key("t", 1)],
            },
        ],
    );
    assert!(
        h.reader.is_acked(&sub("s"), &key("t", 1)).unwrap(),
        "a confirmed ack was lost"
    );
    assert_eq!(h.pending("s", "t"), Vec::<Sequence>::new());
}

#[test]
fn a_sweep_batched_after_a_publish_gives_the_same_state_as_applied_alone() {
    let commands = [
        Command::CreateTopic {
            name: topic("t"),
            settings: with_window(100),
            now_ms: 0,
        },
        Command::Publish {
            messages: vec![msg("t", "id", "x")],
            auto_create: false,
            now_ms: 1,
        },
        Command::Sweep { now_ms: 500 },
    ];
    let one_by_one = Harness::memory();
    for command in &commands {
        one_by_one.apply(command.clone());
    }
    let batched = Harness::memory();
    apply_batched(&batched, &commands);
    assert_eq!(one_by_one.count(Cf::Dedup), 0);
    assert_eq!(
        dump(batched.store()),
        dump(one_by_one.store()),
        "replicas diverge with batching"
    );
}

mod placement;
mod priority_index;

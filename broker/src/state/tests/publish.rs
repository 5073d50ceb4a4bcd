//! Publishing: per-topic numbering, stored times, topic auto-creation and refused messages.

use serde_json::json;

use super::*;

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

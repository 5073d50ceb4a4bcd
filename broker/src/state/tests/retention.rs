//! Retention: eviction by count, bytes and age, and interest retention held back by subscriptions.

use super::*;
use crate::domain::RetentionPolicy;

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

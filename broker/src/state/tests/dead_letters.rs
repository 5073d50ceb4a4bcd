//! Dead letters: copied once to the dead-letter topic with their story, or dropped with an event.

use serde_json::json;

use super::*;
use crate::state::subscriptions::{
    HEADER_ATTEMPTS, HEADER_ORIGINAL_ID, HEADER_ORIGINAL_SEQUENCE, HEADER_ORIGINAL_TOPIC, HEADER_REASON,
    HEADER_SUBSCRIPTION,
};

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

//! Acks: acked messages stop being pending, each ack is announced once, bad targets change nothing.

use super::*;

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

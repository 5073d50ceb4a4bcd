//! Subscription lifecycle: start positions, idempotent creation, deletion of cursors and acks.

use super::*;
use crate::state::catalog::subscription_key;

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

//! `$cluster.events`: topic and subscription changes announced as ordinary messages.

use serde_json::json;

use super::*;

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

#[test]
fn groups_that_write_events_at_the_same_moment_give_them_distinct_ids() {
    // Each group numbers its copy of `$cluster.events` on its own, so two
    // of them can store an event under the same sequence in the same
    // millisecond; a consumer reading both must still tell them apart.
    let main = Harness::memory();
    let shard = Harness::shard(3);
    for h in [&main, &shard] {
        h.create_topic("a", TopicSettings::default(), 7).unwrap();
    }
    let in_main = main.message("$cluster.events", 1).unwrap();
    let in_shard = shard.message("$cluster.events", 1).unwrap();
    assert_eq!(in_main.payload, in_shard.payload);
    assert_eq!(in_main.publish_time_ms, in_shard.publish_time_ms);
    assert_ne!(in_main.id, in_shard.id);
}

#[test]
fn a_shard_does_not_repeat_group_zeros_subscription_events() {
    let shard = Harness::shard(2);
    shard
        .create_sub("billing", sub_settings("orders.>", StartPosition::New), 1)
        .unwrap();
    shard
        .create_topic("orders.eu", TopicSettings::default(), 2)
        .unwrap();
    assert_eq!(
        shard.events(),
        vec![json!({"type": "topic_created", "topic": "orders.eu"})]
    );
}

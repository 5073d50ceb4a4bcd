//! Durability: the whole state, catalog and numbering survive reopening a RocksDB store.

use super::*;
use crate::state::subscriptions::HEADER_REASON;

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

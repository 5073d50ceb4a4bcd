//! The priority index: kept in step with the messages, paged by subscriptions, rebuilt for old data.

use super::*;
use crate::state::reindex::{PRIORITY_INDEX_KEY, ensure_priority_index};

fn with_priority(topic_name: &str, id: &str, priority: Priority) -> NewMessage {
    NewMessage {
        priority,
        ..msg(topic_name, id, "x")
    }
}

/// Every index entry of a topic as (rank, sequence).
fn index_of(h: &Harness, topic_name: &str) -> Vec<(u8, Sequence)> {
    let prefix = keys::named(b"", topic_name);
    h.store()
        .scan(Cf::Priorities, &prefix, &keys::prefix_end(&prefix), usize::MAX)
        .unwrap()
        .iter()
        .map(|(k, _)| (k[prefix.len()], keys::trailing_u64(k).unwrap()))
        .collect()
}

fn page(h: &Harness, subscription: &str, priority: Priority, from: Sequence, limit: usize) -> PendingPage {
    h.reader
        .pending_page(&sub(subscription), &topic("t"), priority, from, limit)
        .unwrap()
}

fn sequences(page: &PendingPage) -> Vec<Sequence> {
    page.messages.iter().map(|m| m.key.sequence).collect()
}

#[test]
fn every_stored_message_has_one_index_entry_until_it_goes() {
    let h = Harness::memory();
    let settings = TopicSettings {
        max_messages: 3,
        ..TopicSettings::default()
    };
    h.create_topic("t", settings, 0).unwrap();
    let priorities = [
        Priority::Low,
        Priority::Critical,
        Priority::Normal,
        Priority::Critical,
    ];
    for (i, priority) in priorities.into_iter().enumerate() {
        h.publish_one(with_priority("t", &format!("m{i}"), priority), 10);
    }
    // Sequence 1 went to max_messages, and its entry with it.
    assert_eq!(index_of(&h, "t"), vec![(1, 3), (3, 2), (3, 4)]);
    h.delete_topic("t", 20).unwrap();
    assert_eq!(index_of(&h, "t"), vec![]);
}

#[test]
fn a_page_holds_one_priority_in_sequence_order_without_settled_messages() {
    let h = Harness::memory();
    h.create_sub("s", sub_settings("t", StartPosition::Earliest), 0)
        .unwrap();
    for i in 1..=10u64 {
        let priority = if i % 2 == 0 { Priority::High } else { Priority::Low };
        let mut message = with_priority("t", &format!("m{i}"), priority);
        message.delay_ms = i;
        message.ttl_ms = Some(1_000);
        h.publish_one(message, 100);
    }
    h.ack("s", vec![key("t", 4)]).0.unwrap();
    let first = page(&h, "s", Priority::High, 1, 2);
    assert_eq!(sequences(&first), vec![2], "4 is acked");
    assert_eq!(first.next, Some(5));
    assert_eq!(first.messages[0].not_before_ms, 102);
    assert_eq!(first.messages[0].expires_at_ms, Some(1_100));
    let second = page(&h, "s", Priority::High, 5, 2);
    assert_eq!((sequences(&second), second.next), (vec![6, 8], Some(9)));
    let last = page(&h, "s", Priority::High, 9, 2);
    assert_eq!((sequences(&last), last.next), (vec![10], None));
    assert_eq!(
        sequences(&page(&h, "s", Priority::Critical, 1, 10)),
        Vec::<Sequence>::new()
    );
    let count = h
        .reader
        .count_pending(&sub("s"), &topic("t"), Priority::Low, 1)
        .unwrap();
    assert_eq!(count, 5);
}

#[test]
fn a_page_never_starts_before_the_cursor() {
    let h = Harness::memory();
    h.publish_one(with_priority("t", "old", Priority::High), 1);
    h.create_sub("s", sub_settings("t", StartPosition::New), 2)
        .unwrap();
    h.publish_one(with_priority("t", "new", Priority::High), 3);
    assert_eq!(sequences(&page(&h, "s", Priority::High, 1, 10)), vec![2]);
}

#[test]
fn a_sparse_page_finds_its_acks_one_by_one() {
    let h = Harness::memory();
    h.create_sub("s", sub_settings("t", StartPosition::Earliest), 0)
        .unwrap();
    // Two critical messages far apart, many low ones between them, all acked
    // but the last critical one.
    h.publish_one(with_priority("t", "c1", Priority::Critical), 1);
    let mut acks = vec![key("t", 1)];
    for i in 0..50 {
        let published = h.publish_one(with_priority("t", &format!("l{i}"), Priority::Low), 1);
        acks.push(key("t", published.sequence));
    }
    h.publish_one(with_priority("t", "c2", Priority::Critical), 1);
    h.ack("s", acks).0.unwrap();
    assert_eq!(sequences(&page(&h, "s", Priority::Critical, 1, 10)), vec![52]);
    assert_eq!(
        sequences(&page(&h, "s", Priority::Low, 1, 100)),
        Vec::<Sequence>::new()
    );
}

#[test]
fn a_data_directory_without_the_index_is_indexed_once_at_open() {
    let h = Harness::memory();
    h.create_sub("s", sub_settings("t", StartPosition::Earliest), 0)
        .unwrap();
    for i in 0..5000u64 {
        let priority = Priority::DESCENDING[(i % 4) as usize];
        h.publish_one(with_priority("t", &format!("m{i}"), priority), 1);
    }
    let before = index_of(&h, "t");
    assert_eq!(before.len(), 5000);
    // What a data directory from before the index looks like.
    let mut strip = crate::storage::Batch::default();
    strip.delete_range(Cf::Priorities, vec![], keys::KEY_CEILING.to_vec());
    strip.delete(Cf::Meta, PRIORITY_INDEX_KEY.to_vec());
    h.store().write(strip, true).unwrap();
    assert_eq!(index_of(&h, "t"), vec![]);

    let reopened = Harness::on(h.machine.store().clone());
    assert_eq!(index_of(&reopened, "t"), before);
    assert!(h.store().get(Cf::Meta, PRIORITY_INDEX_KEY).unwrap().is_some());
    assert_eq!(reopened.pending("s", "t").len(), 5000);
    // Once marked, opening does not index again: an entry removed by hand stays removed.
    let mut one = crate::storage::Batch::default();
    one.delete(Cf::Priorities, keys::priority_entry("t", 3, 1));
    h.store().write(one, true).unwrap();
    ensure_priority_index(h.store()).unwrap();
    assert_eq!(index_of(&h, "t").len(), 4999);
}

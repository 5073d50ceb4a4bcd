//! Deduplication: a repeated id inside the window answers with the first publish; sweeps forget it.

use super::*;

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

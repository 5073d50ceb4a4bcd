//! Which ready message goes next: strict and weighted priorities, FIFO, redeliveries first.

use super::*;
use crate::domain::Priority::{Critical, High, Low, Normal};

#[test]
fn strict_delivers_higher_priorities_first() {
    let mut q = queue();
    for (sequence, priority) in [
        (1, Low),
        (2, Normal),
        (3, High),
        (4, Critical),
        (5, Normal),
        (6, Critical),
    ] {
        q.push(entry(sequence, priority), 0);
    }
    assert_eq!(drain(&mut q, 0), [4, 6, 3, 2, 5, 1]);
}

#[test]
fn new_messages_of_one_priority_go_in_push_order() {
    let mut q = queue();
    for sequence in [5, 3, 9, 1] {
        q.push(entry(sequence, Normal), 0);
    }
    q.push(
        Entry {
            key: key_in("other", 2),
            ..entry(0, Normal)
        },
        0,
    );
    q.push(entry(4, Normal), 0);
    let mut order = Vec::new();
    while let Some(lease) = q.next(0, 1) {
        order.push((lease.key.topic.to_string(), lease.key.sequence));
    }
    let expected = [
        ("orders", 5),
        ("orders", 3),
        ("orders", 9),
        ("orders", 1),
        ("other", 2),
        ("orders", 4),
    ];
    assert_eq!(order, expected.map(|(t, s)| (t.to_string(), s)));
}

#[test]
fn redeliveries_go_before_new_messages_in_their_original_order() {
    let mut q = queue();
    for sequence in 1..=4 {
        q.push(entry(sequence, Normal), 0);
    }
    let first = q.next(0, 1).expect("1 is ready");
    let second = q.next(0, 1).expect("2 is ready");
    let third = q.next(0, 1).expect("3 is ready");
    // Failed in the reverse order, they still come back in push order.
    q.nack(&third.key, third.lease_id, Some(0), 0).expect("leased");
    q.nack(&second.key, second.lease_id, Some(0), 0).expect("leased");
    q.nack(&first.key, first.lease_id, Some(0), 0).expect("leased");
    q.push(entry(5, Normal), 0);
    let lease = q.next(0, 1).expect("a redelivery is ready");
    assert_eq!((lease.key.sequence, lease.attempt), (1, 2));
    q.ack(&lease.key, lease.lease_id).expect("fresh lease");
    assert_eq!(drain(&mut q, 0), [2, 3, 4, 5]);
}

#[test]
fn a_redelivery_does_not_jump_a_higher_priority() {
    let mut q = queue();
    q.push(entry(1, Low), 0);
    let lease = q.next(0, 1).expect("ready");
    q.nack(&lease.key, lease.lease_id, Some(0), 0).expect("leased");
    q.push(entry(2, High), 0);
    assert_eq!(drain(&mut q, 0), [2, 1]);
}

#[test]
fn a_recovered_message_counts_as_a_redelivery() {
    let mut q = queue();
    q.push(entry(1, Normal), 0);
    q.push(entry(2, Normal), 3);
    let lease = q.next(0, 1).expect("ready");
    assert_eq!((lease.key.sequence, lease.attempt), (2, 4));
    let lease = q.next(0, 1).expect("ready");
    assert_eq!((lease.key.sequence, lease.attempt), (1, 1));
}

#[test]
fn strict_starves_lower_priorities_while_higher_ones_are_ready() {
    let mut q = queue();
    q.push(entry(0, Low), 0);
    for sequence in 1..=1_000 {
        q.push(entry(sequence, Critical), 0);
        let lease = q.next(sequence, 1).expect("critical is ready");
        assert_eq!(lease.priority, Critical);
        q.ack(&lease.key, lease.lease_id).expect("fresh lease");
    }
    assert_eq!(q.backlog(), 1);
    assert_eq!(q.next(2_000, 1).map(|l| l.priority), Some(Low));
}

#[test]
fn a_delayed_high_priority_does_not_block_ready_lower_ones() {
    let mut q = queue();
    q.push(
        Entry {
            not_before_ms: 100,
            ..entry(1, Critical)
        },
        0,
    );
    q.push(entry(2, Low), 0);
    assert_eq!(drain(&mut q, 50), [2]);
    assert_eq!(drain(&mut q, 100), [1]);
}

fn weighted() -> SubscriptionQueue {
    SubscriptionQueue::new(QueueConfig {
        policy: PriorityPolicy::Weighted,
        ..config()
    })
}

#[test]
fn weighted_shares_follow_8_4_2_1() {
    let mut q = weighted();
    let mut sequence = 0;
    for priority in Priority::DESCENDING {
        for _ in 0..1_500 {
            sequence += 1;
            q.push(entry(sequence, priority), 0);
        }
    }
    let mut counts = [0i64; 4];
    for _ in 0..1_500 {
        let lease = q.next(0, 1).expect("every priority has plenty");
        counts[lease.priority.index()] += 1;
        q.ack(&lease.key, lease.lease_id).expect("fresh lease");
    }
    let expected = [100, 200, 400, 800];
    for (count, want) in counts.iter().zip(expected) {
        assert!(
            (count - want).abs() <= want / 50,
            "counts {counts:?}, expected about {expected:?}"
        );
    }
}

#[test]
fn weighted_serves_low_regularly_under_constant_critical_load() {
    let mut q = weighted();
    for sequence in 0..10 {
        q.push(entry(sequence, Low), 0);
    }
    let mut since_low = 0;
    let mut lows = 0;
    for sequence in 100..400 {
        q.push(entry(sequence, Critical), 0);
        let lease = q.next(0, 1).expect("ready");
        if lease.priority == Low {
            lows += 1;
            since_low = 0;
        } else {
            since_low += 1;
            assert!(since_low <= 9 || lows == 10, "low waited {since_low} deliveries");
        }
        q.ack(&lease.key, lease.lease_id).expect("fresh lease");
    }
    assert_eq!(lows, 10, "all low messages were served");
}

#[test]
fn weighted_only_shares_among_ready_priorities() {
    let mut q = weighted();
    for sequence in 0..300 {
        q.push(entry(sequence, if sequence % 2 == 0 { Low } else { Normal }), 0);
    }
    let mut counts = [0; 4];
    for _ in 0..150 {
        let lease = q.next(0, 1).expect("ready");
        counts[lease.priority.index()] += 1;
    }
    assert_eq!(counts, [50, 100, 0, 0]);
}

#[test]
fn weighted_keeps_fifo_and_redeliveries_first_within_a_priority() {
    let mut q = weighted();
    for sequence in 1..=3 {
        q.push(entry(sequence, Normal), 0);
    }
    let first = q.next(0, 1).expect("ready");
    let second = q.next(0, 1).expect("ready");
    q.nack(&second.key, second.lease_id, Some(0), 0).expect("leased");
    q.nack(&first.key, first.lease_id, Some(0), 0).expect("leased");
    assert_eq!(drain(&mut q, 0), [1, 2, 3]);
}

#[test]
fn the_policy_can_change_on_a_live_queue() {
    let mut q = queue();
    for sequence in 0..30 {
        q.push(entry(sequence, if sequence < 15 { Critical } else { Low }), 0);
    }
    assert_eq!(q.next(0, 1).map(|l| l.priority), Some(Critical));
    q.set_config(QueueConfig {
        policy: PriorityPolicy::Weighted,
        ..config()
    });
    let lows = (0..9)
        .filter_map(|_| q.next(0, 1))
        .filter(|l| l.priority == Low)
        .count();
    assert_eq!(lows, 1, "weighted serves low once in 9 picks of 8:1");
    q.set_config(config());
    assert_eq!(q.next(0, 1).map(|l| l.priority), Some(Critical));
}

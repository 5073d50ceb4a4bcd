//! Tests of the subscription queue: one file per group of rules, plus a seeded randomized test against a reference model.

mod leases;
mod model;
mod ordering;
mod random;
mod scale;
mod timing;

use super::{Entry, QueueConfig, SubscriptionQueue};
use crate::domain::{MessageKey, Priority, PriorityPolicy, TopicName};

/// A key in the test topic `orders`.
fn key(sequence: u64) -> MessageKey {
    key_in("orders", sequence)
}

fn key_in(topic: &str, sequence: u64) -> MessageKey {
    MessageKey {
        topic: TopicName::parse("topic", topic).expect("valid test topic"),
        sequence,
    }
}

/// A ready entry without expiry.
fn entry(sequence: u64, priority: Priority) -> Entry {
    Entry {
        key: key(sequence),
        priority,
        not_before_ms: 0,
        expires_at_ms: None,
    }
}

/// Round numbers that make the expected times easy to read.
fn config() -> QueueConfig {
    QueueConfig {
        policy: PriorityPolicy::Strict,
        ack_deadline_ms: 1_000,
        max_deliveries: 5,
        backoff_initial_ms: 100,
        backoff_max_ms: 1_000,
    }
}

fn queue() -> SubscriptionQueue {
    SubscriptionQueue::new(config())
}

/// Delivers and acks everything ready at `now`; returns the sequences in delivery order.
fn drain(queue: &mut SubscriptionQueue, now: u64) -> Vec<u64> {
    let mut delivered = Vec::new();
    while let Some(lease) = queue.next(now, 1) {
        delivered.push(lease.key.sequence);
        queue.ack(&lease.key, lease.lease_id).expect("fresh lease acks");
    }
    queue.check_consistency();
    delivered
}

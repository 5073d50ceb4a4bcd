//! Scale: a large queue stays fast because every step touches only what changes.

use super::*;
use crate::domain::Priority::{Critical, Low, Normal};

#[test]
fn a_hundred_thousand_messages_flow_through_in_order() {
    const COUNT: u64 = 100_000;
    let mut q = queue();
    for sequence in 0..COUNT {
        let priority = [Low, Normal, Critical][(sequence % 3) as usize];
        // Every tenth message expires at 500 and every seventh waits until 1000,
        // spread through the whole queue rather than bunched at its head.
        let expires_at_ms = (sequence % 10 == 0).then_some(500);
        let not_before_ms = if sequence % 7 == 0 { 1_000 } else { 0 };
        q.push(
            Entry {
                key: key(sequence),
                priority,
                not_before_ms,
                expires_at_ms,
            },
            0,
        );
    }
    assert_eq!(q.backlog(), COUNT as usize);
    q.tick(500);
    let expired = q.take_dead().len() as u64;
    assert_eq!(expired, COUNT / 10);
    let mut previous = Critical;
    let mut delivered = 0;
    while let Some(lease) = q.next(600, 1) {
        assert!(lease.priority <= previous, "strict order across a large queue");
        previous = lease.priority;
        q.ack(&lease.key, lease.lease_id).expect("fresh lease");
        delivered += 1;
    }
    assert_eq!(q.next_wakeup_ms(), Some(1_000));
    delivered += drain(&mut q, 1_000).len() as u64;
    assert_eq!(delivered + expired, COUNT);
    assert!(q.is_empty());
}

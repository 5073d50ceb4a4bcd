//! Time: delays, TTL, ack deadlines, backoff, extend, wake-ups, and boundaries exactly at `now`.

use super::*;
use crate::domain::Priority::{High, Normal};
use crate::domain::limits::{MAX_ACK_DEADLINE_MS, MAX_DELAY_MS};
use crate::semantics::{DeadLetter, DeadReason, SettleError};

fn dead(sequence: u64, reason: DeadReason, attempts: u32) -> DeadLetter {
    DeadLetter {
        key: key(sequence),
        reason,
        attempts,
    }
}

#[test]
fn a_delayed_message_is_ready_exactly_at_not_before() {
    let mut q = queue();
    q.push(
        Entry {
            not_before_ms: 100,
            ..entry(1, Normal)
        },
        0,
    );
    assert_eq!(q.next_wakeup_ms(), Some(100));
    assert!(q.next(99, 1).is_none());
    assert_eq!(q.backlog(), 1);
    let lease = q.next(100, 1).expect("ready at not_before");
    assert_eq!((lease.attempt, lease.deadline_ms), (1, 1_100));
}

#[test]
fn a_message_expires_exactly_at_expires_at() {
    let mut q = queue();
    q.push(
        Entry {
            expires_at_ms: Some(100),
            ..entry(1, Normal)
        },
        0,
    );
    q.push(
        Entry {
            expires_at_ms: Some(100),
            ..entry(2, Normal)
        },
        0,
    );
    assert_eq!(
        q.next(99, 1).map(|l| l.key.sequence),
        Some(1),
        "still valid 1 ms before"
    );
    assert!(q.next(100, 1).is_none(), "expired at expires_at");
    assert_eq!(q.take_dead(), [dead(2, DeadReason::Expired, 0)]);
    assert_eq!(q.backlog(), 0);
    assert!(q.take_dead().is_empty(), "take_dead drains the output");
}

#[test]
fn expiry_is_enforced_anywhere_in_the_queue_not_only_at_the_head() {
    let mut q = queue();
    q.push(entry(1, Normal), 0);
    q.push(
        Entry {
            expires_at_ms: Some(50),
            ..entry(2, Normal)
        },
        0,
    );
    q.push(
        Entry {
            expires_at_ms: Some(50),
            not_before_ms: 80,
            ..entry(3, High)
        },
        0,
    );
    q.push(entry(4, Normal), 0);
    assert_eq!(q.next_wakeup_ms(), Some(50));
    q.tick(50);
    let mut dead_letters = q.take_dead();
    dead_letters.sort();
    assert_eq!(
        dead_letters,
        [dead(2, DeadReason::Expired, 0), dead(3, DeadReason::Expired, 0)]
    );
    assert_eq!(q.backlog(), 2);
    assert_eq!(drain(&mut q, 100), [1, 4]);
}

#[test]
fn next_skips_and_dead_letters_expired_messages_without_a_tick() {
    let mut q = queue();
    q.push(
        Entry {
            expires_at_ms: Some(10),
            ..entry(1, High)
        },
        0,
    );
    q.push(entry(2, Normal), 0);
    assert_eq!(q.next(10, 1).map(|l| l.key.sequence), Some(2));
    assert_eq!(q.take_dead(), [dead(1, DeadReason::Expired, 0)]);
}

#[test]
fn pushing_an_expired_message_asks_for_an_immediate_tick() {
    let mut q = queue();
    q.tick(1_000);
    q.push(
        Entry {
            expires_at_ms: Some(500),
            ..entry(1, Normal)
        },
        0,
    );
    assert!(q.next_wakeup_ms().is_some_and(|at| at <= 1_000));
    q.tick(1_000);
    assert_eq!(q.take_dead(), [dead(1, DeadReason::Expired, 0)]);
    assert_eq!(q.next_wakeup_ms(), None);
}

#[test]
fn an_unacked_lease_times_out_and_is_redelivered_after_the_backoff() {
    let mut q = queue();
    q.push(entry(1, Normal), 0);
    let lease = q.next(0, 1).expect("ready");
    assert_eq!(q.next_wakeup_ms(), Some(1_000));
    q.tick(999);
    assert_eq!((q.in_flight(), q.backlog()), (1, 0), "valid until the deadline");
    q.tick(1_000);
    assert_eq!((q.in_flight(), q.backlog()), (0, 1));
    assert_eq!(
        q.next_wakeup_ms(),
        Some(1_100),
        "first backoff is the initial one"
    );
    assert_eq!(q.ack(&lease.key, lease.lease_id), Err(SettleError::NotInFlight));
    assert!(q.next(1_099, 1).is_none());
    let again = q.next(1_100, 2).expect("redelivered");
    assert_eq!((again.attempt, again.consumer, again.deadline_ms), (2, 2, 2_100));
    assert_ne!(again.lease_id, lease.lease_id);
}

#[test]
fn the_backoff_doubles_per_failure_up_to_the_cap() {
    let mut q = SubscriptionQueue::new(QueueConfig {
        max_deliveries: 100,
        ..config()
    });
    q.push(entry(1, Normal), 0);
    let mut now = 0;
    let mut waits = Vec::new();
    for _ in 0..6 {
        let lease = q.next(now, 1).expect("ready again");
        now = lease.deadline_ms;
        q.tick(now);
        let ready_at = q.next_wakeup_ms().expect("waiting for its backoff");
        waits.push(ready_at - now);
        now = ready_at;
    }
    assert_eq!(waits, [100, 200, 400, 800, 1_000, 1_000]);
}

#[test]
fn a_lease_timing_out_after_expiry_is_dead_lettered_as_expired() {
    let mut q = queue();
    q.push(
        Entry {
            expires_at_ms: Some(500),
            ..entry(1, Normal)
        },
        0,
    );
    let lease = q.next(0, 1).expect("ready");
    q.tick(600);
    assert_eq!(
        q.in_flight(),
        1,
        "a held message is not taken away when it expires"
    );
    assert_eq!(q.lease(&lease.key), Some(lease.clone()));
    q.tick(1_000);
    assert_eq!(q.take_dead(), [dead(1, DeadReason::Expired, 1)]);
    assert!(q.is_empty());
}

#[test]
fn a_nack_after_expiry_dead_letters_as_expired() {
    let mut q = queue();
    q.push(
        Entry {
            expires_at_ms: Some(500),
            ..entry(1, Normal)
        },
        0,
    );
    let lease = q.next(0, 1).expect("ready");
    assert_eq!(q.nack(&lease.key, lease.lease_id, Some(0), 500), Ok(()));
    assert_eq!(q.take_dead(), [dead(1, DeadReason::Expired, 1)]);
    assert!(q.is_empty());
}

#[test]
fn an_expired_message_in_flight_can_still_be_acked() {
    let mut q = queue();
    q.push(
        Entry {
            expires_at_ms: Some(500),
            ..entry(1, Normal)
        },
        0,
    );
    let lease = q.next(0, 1).expect("ready");
    q.tick(700);
    assert_eq!(q.ack(&lease.key, lease.lease_id).map(|l| l.attempt), Ok(1));
    assert!(q.take_dead().is_empty());
}

#[test]
fn a_nack_delay_replaces_the_backoff_and_is_capped() {
    let mut q = queue();
    q.push(entry(1, Normal), 0);
    let lease = q.next(0, 1).expect("ready");
    q.nack(&lease.key, lease.lease_id, Some(250), 10).expect("leased");
    assert_eq!(q.next_wakeup_ms(), Some(260));
    assert!(q.next(259, 1).is_none());
    let lease = q.next(260, 1).expect("ready after the delay");
    q.nack(&lease.key, lease.lease_id, None, 300).expect("leased");
    assert_eq!(q.next_wakeup_ms(), Some(500), "second failure backs off 200 ms");
    let lease = q.next(500, 1).expect("ready after the backoff");
    q.nack(&lease.key, lease.lease_id, Some(u64::MAX), 500)
        .expect("leased");
    assert_eq!(q.next_wakeup_ms(), Some(500 + MAX_DELAY_MS));
}

#[test]
fn a_zero_delay_nack_is_ready_at_once() {
    let mut q = queue();
    q.push(entry(1, Normal), 0);
    let lease = q.next(0, 1).expect("ready");
    q.nack(&lease.key, lease.lease_id, Some(0), 5).expect("leased");
    assert_eq!(q.next_wakeup_ms(), None, "nothing to wait for");
    assert_eq!(q.next(5, 1).map(|l| l.attempt), Some(2));
}

#[test]
fn extend_moves_the_deadline() {
    let mut q = queue();
    q.push(entry(1, Normal), 0);
    let lease = q.next(0, 1).expect("ready");
    assert_eq!(q.extend(&lease.key, lease.lease_id, None, 800), Ok(1_800));
    q.tick(1_000);
    assert_eq!(q.in_flight(), 1, "the old deadline no longer applies");
    assert_eq!(q.next_wakeup_ms(), Some(1_800));
    assert_eq!(
        q.extend(&lease.key, lease.lease_id, Some(5_000), 1_500),
        Ok(6_500)
    );
    q.tick(6_499);
    assert_eq!(q.in_flight(), 1);
    q.tick(6_500);
    assert_eq!(
        (q.in_flight(), q.backlog()),
        (0, 1),
        "times out at the extended deadline"
    );
    assert_eq!(
        q.extend(&lease.key, lease.lease_id, None, 6_500),
        Err(SettleError::NotInFlight)
    );
}

#[test]
fn extend_is_capped_and_fails_once_the_deadline_has_passed() {
    let mut q = queue();
    q.push(entry(1, Normal), 0);
    let lease = q.next(0, 1).expect("ready");
    assert_eq!(
        q.extend(&lease.key, lease.lease_id, Some(u64::MAX), 10),
        Ok(10 + MAX_ACK_DEADLINE_MS)
    );
    assert_eq!(
        q.lease(&lease.key).map(|l| l.deadline_ms),
        Some(10 + MAX_ACK_DEADLINE_MS)
    );
    let deadline = 10 + MAX_ACK_DEADLINE_MS;
    assert_eq!(
        q.extend(&lease.key, lease.lease_id, None, deadline),
        Err(SettleError::NotInFlight)
    );
    assert_eq!(q.backlog(), 1);
}

#[test]
fn an_extend_to_zero_times_out_at_once() {
    let mut q = queue();
    q.push(entry(1, Normal), 0);
    let lease = q.next(0, 1).expect("ready");
    assert_eq!(q.extend(&lease.key, lease.lease_id, Some(0), 40), Ok(40));
    assert_eq!(q.next_wakeup_ms(), Some(40));
    q.tick(40);
    assert_eq!(q.backlog(), 1);
}

#[test]
fn next_wakeup_is_the_earliest_timer() {
    let mut q = queue();
    assert_eq!(q.next_wakeup_ms(), None);
    q.push(entry(1, Normal), 0);
    assert_eq!(q.next_wakeup_ms(), None, "a ready message needs no tick");
    q.push(
        Entry {
            not_before_ms: 700,
            ..entry(2, Normal)
        },
        0,
    );
    q.push(
        Entry {
            expires_at_ms: Some(900),
            ..entry(3, Normal)
        },
        0,
    );
    assert_eq!(q.next_wakeup_ms(), Some(700));
    let _lease = q.next(0, 1).expect("ready");
    assert_eq!(q.next_wakeup_ms(), Some(700));
    q.tick(700);
    assert_eq!(q.next_wakeup_ms(), Some(900));
    q.tick(900);
    assert_eq!(q.next_wakeup_ms(), Some(1_000), "the lease deadline");
}

#[test]
fn time_running_backwards_is_treated_as_standing_still() {
    let mut q = queue();
    q.push(
        Entry {
            expires_at_ms: Some(500),
            ..entry(1, Normal)
        },
        0,
    );
    q.tick(1_000);
    assert_eq!(q.take_dead().len(), 1);
    q.push(
        Entry {
            expires_at_ms: Some(900),
            ..entry(2, Normal)
        },
        0,
    );
    assert!(
        q.next(10, 1).is_none(),
        "expired relative to the latest time seen"
    );
    q.push(
        Entry {
            not_before_ms: 1_200,
            ..entry(3, Normal)
        },
        0,
    );
    assert!(q.next(0, 1).is_none(), "not ready before 1200");
    let lease = q.next(1_200, 1).expect("ready");
    assert_eq!(lease.deadline_ms, 2_200);
    assert_eq!(q.extend(&lease.key, lease.lease_id, Some(100), 5), Ok(1_300));
}

#[test]
fn tick_is_idempotent() {
    let mut q = queue();
    q.push(
        Entry {
            not_before_ms: 50,
            ..entry(1, Normal)
        },
        0,
    );
    q.push(
        Entry {
            expires_at_ms: Some(50),
            ..entry(2, Normal)
        },
        0,
    );
    q.tick(50);
    q.tick(50);
    assert_eq!(q.take_dead().len(), 1);
    assert_eq!((q.backlog(), q.next_wakeup_ms()), (1, None));
    q.check_consistency();
}

//! Leases and settling: ack, nack, reject, extend, stale ids, max deliveries, consumers, removal.

use super::*;
use crate::domain::Priority::{High, Normal};
use crate::domain::{Message, Pattern, SubscriptionSettings};
use crate::semantics::{DeadLetter, DeadReason, Lease, SettleError};

fn dead(sequence: u64, reason: DeadReason, attempts: u32) -> DeadLetter {
    DeadLetter {
        key: key(sequence),
        reason,
        attempts,
    }
}

fn leased(q: &mut SubscriptionQueue, now: u64, consumer: u64) -> Lease {
    q.next(now, consumer).expect("a message is ready")
}

#[test]
fn ack_settles_once() {
    let mut q = queue();
    q.push(entry(1, Normal), 0);
    let lease = leased(&mut q, 0, 7);
    assert_eq!((lease.attempt, lease.consumer, lease.priority), (1, 7, Normal));
    assert_eq!(q.ack(&lease.key, lease.lease_id), Ok(lease.clone()));
    assert_eq!(
        q.ack(&lease.key, lease.lease_id),
        Err(SettleError::NotInFlight),
        "double ack"
    );
    assert!(q.is_empty());
    assert_eq!((q.backlog(), q.in_flight(), q.leases_of(7)), (0, 0, 0));
}

#[test]
fn unknown_keys_and_forged_ids_settle_nothing() {
    let mut q = queue();
    q.push(entry(1, Normal), 0);
    q.push(entry(2, Normal), 0);
    let lease = leased(&mut q, 0, 1);
    let forged = lease.lease_id + 1_000;
    assert_eq!(q.ack(&key(99), lease.lease_id), Err(SettleError::NotInFlight));
    assert_eq!(q.ack(&lease.key, forged), Err(SettleError::NotInFlight));
    assert_eq!(q.nack(&lease.key, forged, None, 0), Err(SettleError::NotInFlight));
    assert_eq!(
        q.extend(&lease.key, forged, None, 0),
        Err(SettleError::NotInFlight)
    );
    assert_eq!(q.reject(&lease.key, forged), Err(SettleError::NotInFlight));
    // Message 2 is pending, not in flight: no lease id can settle it.
    assert_eq!(q.ack(&key(2), lease.lease_id), Err(SettleError::NotInFlight));
    assert_eq!(q.reject(&key(2), 0), Err(SettleError::NotInFlight));
    assert_eq!((q.backlog(), q.in_flight()), (1, 1));
    assert_eq!(q.ack(&lease.key, lease.lease_id).map(|l| l.key), Ok(key(1)));
    q.check_consistency();
}

#[test]
fn a_stale_lease_cannot_settle_the_redelivery() {
    let mut q = queue();
    q.push(entry(1, Normal), 0);
    let old = leased(&mut q, 0, 1);
    q.tick(old.deadline_ms);
    let new = leased(&mut q, 5_000, 2);
    assert_ne!(old.lease_id, new.lease_id);
    assert_eq!(q.ack(&old.key, old.lease_id), Err(SettleError::NotInFlight));
    assert_eq!(
        q.nack(&old.key, old.lease_id, None, 5_000),
        Err(SettleError::NotInFlight)
    );
    assert_eq!(
        q.extend(&old.key, old.lease_id, None, 5_000),
        Err(SettleError::NotInFlight)
    );
    assert_eq!(q.reject(&old.key, old.lease_id), Err(SettleError::NotInFlight));
    assert_eq!(
        q.lease(&new.key),
        Some(new.clone()),
        "the redelivery is untouched"
    );
    assert_eq!(q.ack(&new.key, new.lease_id).map(|l| l.attempt), Ok(2));
}

#[test]
fn reject_dead_letters_at_once_and_returns_the_letter() {
    let mut q = queue();
    q.push(entry(1, Normal), 2);
    let lease = leased(&mut q, 0, 1);
    assert_eq!(
        q.reject(&lease.key, lease.lease_id),
        Ok(dead(1, DeadReason::Rejected, 3))
    );
    assert!(q.take_dead().is_empty(), "a rejection is returned, not buffered");
    assert!(q.is_empty());
    assert_eq!(
        q.nack(&lease.key, lease.lease_id, None, 0),
        Err(SettleError::NotInFlight),
        "nack after reject"
    );
    assert_eq!(
        q.ack(&lease.key, lease.lease_id),
        Err(SettleError::NotInFlight),
        "ack after reject"
    );
}

#[test]
fn a_valid_lease_is_exclusive() {
    let mut q = queue();
    q.push(entry(1, Normal), 0);
    let lease = leased(&mut q, 0, 1);
    assert!(q.next(500, 2).is_none());
    assert!(q.next(999, 1).is_none());
    q.push(entry(1, Normal), 0);
    assert_eq!(
        (q.backlog(), q.in_flight()),
        (0, 1),
        "re-pushing an in-flight key changes nothing"
    );
    assert!(q.next(999, 2).is_none());
    assert_eq!(q.lease(&lease.key).map(|l| l.consumer), Some(1));
}

#[test]
fn push_is_idempotent_for_pending_messages() {
    let mut q = queue();
    q.push(entry(1, Normal), 0);
    q.push(
        Entry {
            not_before_ms: 1_000,
            ..entry(1, Normal)
        },
        4,
    );
    assert_eq!(q.backlog(), 1);
    assert_eq!(q.next(0, 1).map(|l| l.attempt), Some(1), "the first push wins");
    assert!(q.next(0, 1).is_none());
}

#[test]
fn max_deliveries_of_one_dead_letters_the_first_failure() {
    let mut q = SubscriptionQueue::new(QueueConfig {
        max_deliveries: 1,
        ..config()
    });
    for sequence in 1..=3 {
        q.push(entry(sequence, Normal), 0);
    }
    let timed_out = leased(&mut q, 0, 1);
    let nacked = leased(&mut q, 0, 1);
    let _released = leased(&mut q, 0, 2);
    q.nack(&nacked.key, nacked.lease_id, Some(0), 10).expect("leased");
    q.release_consumer(2, 20);
    q.tick(timed_out.deadline_ms);
    assert_eq!(
        q.take_dead(),
        [
            dead(2, DeadReason::MaxDeliveries, 1),
            dead(3, DeadReason::MaxDeliveries, 1),
            dead(1, DeadReason::MaxDeliveries, 1),
        ]
    );
    assert!(q.is_empty());
}

#[test]
fn the_last_allowed_attempt_is_still_delivered() {
    let mut q = SubscriptionQueue::new(QueueConfig {
        max_deliveries: 3,
        ..config()
    });
    q.push(entry(1, Normal), 0);
    let mut now = 0;
    for attempt in 1..=3 {
        let lease = leased(&mut q, now, 1);
        assert_eq!(lease.attempt, attempt);
        q.nack(&lease.key, lease.lease_id, Some(0), now).expect("leased");
        now += 1;
    }
    assert_eq!(q.take_dead(), [dead(1, DeadReason::MaxDeliveries, 3)]);
    assert!(q.next(now, 1).is_none());
}

#[test]
fn earlier_deliveries_count_towards_max_deliveries() {
    let mut q = queue();
    q.push(entry(1, Normal), 4);
    let lease = leased(&mut q, 0, 1);
    assert_eq!(lease.attempt, 5);
    q.nack(&lease.key, lease.lease_id, None, 0).expect("leased");
    assert_eq!(q.take_dead(), [dead(1, DeadReason::MaxDeliveries, 5)]);
}

#[test]
fn releasing_a_consumer_fails_each_of_its_leases() {
    let mut q = queue();
    for sequence in 1..=4 {
        q.push(entry(sequence, Normal), 0);
    }
    let a = leased(&mut q, 0, 1);
    let b = leased(&mut q, 0, 2);
    let c = leased(&mut q, 0, 1);
    assert_eq!((q.leases_of(1), q.leases_of(2), q.leases_of(3)), (2, 1, 0));
    q.release_consumer(1, 50);
    assert_eq!((q.leases_of(1), q.backlog(), q.in_flight()), (0, 3, 1));
    assert_eq!(q.ack(&a.key, a.lease_id), Err(SettleError::NotInFlight));
    assert_eq!(q.ack(&c.key, c.lease_id), Err(SettleError::NotInFlight));
    assert_eq!(
        q.next_wakeup_ms(),
        Some(150),
        "released leases back off like timeouts"
    );
    assert_eq!(drain(&mut q, 149), [4]);
    assert_eq!(drain(&mut q, 150), [1, 3]);
    assert_eq!(
        q.ack(&b.key, b.lease_id).map(|l| l.consumer),
        Ok(2),
        "other consumers keep theirs"
    );
    q.release_consumer(1, 200);
    q.release_consumer(42, 200);
    assert!(q.is_empty());
}

#[test]
fn remove_forgets_a_message_wherever_it_is() {
    let mut q = queue();
    q.push(entry(1, Normal), 0);
    q.push(
        Entry {
            not_before_ms: 500,
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
    q.push(entry(4, Normal), 0);
    let lease = leased(&mut q, 0, 1);
    assert!(q.remove(&key(1)), "in flight");
    assert!(q.remove(&key(2)), "waiting");
    assert!(q.remove(&key(3)), "ready with expiry");
    assert!(!q.remove(&key(3)), "already gone");
    assert!(!q.remove(&key(99)), "never there");
    assert_eq!(q.ack(&lease.key, lease.lease_id), Err(SettleError::NotInFlight));
    assert_eq!((q.backlog(), q.in_flight(), q.leases_of(1)), (1, 0, 0));
    assert_eq!(q.next_wakeup_ms(), None, "no timers left behind");
    q.check_consistency();
    q.tick(10_000);
    assert!(q.take_dead().is_empty());
    q.push(entry(1, Normal), 0);
    assert_eq!(drain(&mut q, 10_000), [4, 1], "a removed key may be pushed again");
}

#[test]
fn lease_ids_are_never_reused_and_can_resume_after_a_restart() {
    let mut q = queue();
    q.push(entry(1, Normal), 0);
    let mut ids = Vec::new();
    let mut now = 0;
    for _ in 0..4 {
        let lease = leased(&mut q, now, 1);
        ids.push(lease.lease_id);
        q.nack(&lease.key, lease.lease_id, Some(0), now).expect("leased");
        now += 1;
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let mut restarted = queue();
    restarted.resume_lease_ids_after(q.next_lease_id() - 1);
    restarted.resume_lease_ids_after(1);
    restarted.push(entry(1, Normal), 4);
    let lease = leased(&mut restarted, now, 1);
    assert!(ids.iter().all(|old| *old < lease.lease_id));
    assert_eq!(restarted.ack(&lease.key, ids[3]), Err(SettleError::NotInFlight));
}

#[test]
fn new_settings_apply_to_later_deliveries_only() {
    let mut q = queue();
    q.push(entry(1, Normal), 0);
    q.push(entry(2, Normal), 0);
    let old = leased(&mut q, 0, 1);
    q.set_config(QueueConfig {
        ack_deadline_ms: 5_000,
        max_deliveries: 1,
        ..config()
    });
    let new = leased(&mut q, 0, 1);
    assert_eq!((old.deadline_ms, new.deadline_ms), (1_000, 5_000));
    q.tick(1_000);
    assert_eq!(q.take_dead(), [dead(1, DeadReason::MaxDeliveries, 1)]);
    assert_eq!(q.config().ack_deadline_ms, 5_000);
}

#[test]
fn settings_messages_and_reasons_convert() {
    let settings = SubscriptionSettings::new(Pattern::parse("p", "orders.>").expect("valid"));
    let config = QueueConfig::from(&settings);
    assert_eq!(config, QueueConfig::default());
    assert_eq!(config.max_deliveries, settings.max_deliveries);
    let reasons = [
        DeadReason::MaxDeliveries,
        DeadReason::Rejected,
        DeadReason::Expired,
    ];
    assert_eq!(
        reasons.map(DeadReason::as_str),
        ["max_deliveries", "rejected", "expired"]
    );
    assert!(SettleError::NotInFlight.to_string().contains("not in flight"));
    let message = Message {
        id: crate::domain::MessageId::parse("id", "m-1").expect("valid"),
        topic: key(0).topic,
        sequence: 42,
        payload: bytes::Bytes::from_static(b"payload"),
        headers: Default::default(),
        priority: High,
        publish_time_ms: 10,
        expires_at_ms: Some(99),
        not_before_ms: 20,
        delivery: Default::default(),
    };
    let entry = Entry::from(&message);
    assert_eq!(
        (
            entry.key,
            entry.priority,
            entry.not_before_ms,
            entry.expires_at_ms
        ),
        (key(42), High, 20, Some(99))
    );
}

#[test]
fn an_ack_from_before_a_leader_change_claims_a_waiting_message_once() {
    use crate::semantics::{Claimed, Entry};
    let mut q = queue();
    // After a leader change an exactly-once message waits out one deadline.
    let waiting = Entry {
        not_before_ms: 1_000,
        expires_at_ms: Some(9_000),
        ..entry(1, High)
    };
    q.push(waiting.clone(), 1);
    q.push(entry(2, Normal), 0);
    let claimed = q.claim(&key(1)).expect("a waiting message can be claimed");
    assert_eq!(
        claimed,
        Some(Claimed {
            entry: waiting,
            attempts: 1
        }),
        "the claim keeps what a restore needs: due time, expiry, attempts"
    );
    assert_eq!(q.claim(&key(1)), Ok(None), "claimed already");
    assert_eq!(
        q.next(2_000, 1).map(|l| l.key),
        Some(key(2)),
        "1 is never delivered"
    );
    assert!(q.next(2_000, 1).is_none());
    // A failed commit pushes the claim back as it was.
    let claimed = claimed.unwrap();
    q.push(claimed.entry, claimed.attempts);
    let lease = leased(&mut q, 2_000, 1);
    assert_eq!((lease.key.sequence, lease.attempt), (1, 2));
    q.check_consistency();
}

#[test]
fn an_ack_from_before_a_leader_change_cannot_settle_a_redelivery() {
    let mut q = queue();
    q.push(entry(1, Normal), 0);
    let lease = leased(&mut q, 0, 1);
    assert_eq!(
        q.claim(&key(1)),
        Err(SettleError::NotInFlight),
        "redelivered since"
    );
    assert_eq!(q.in_flight(), 1, "the new lease is untouched");
    assert_eq!(q.ack(&lease.key, lease.lease_id).map(|l| l.key), Ok(key(1)));
    assert_eq!(q.claim(&key(1)), Ok(None), "not here at all");
    q.check_consistency();
}

#[test]
fn pending_counts_per_priority_leave_out_what_is_in_flight() {
    let mut q = SubscriptionQueue::new(config());
    q.push(entry(1, Priority::High), 0);
    q.push(entry(2, Priority::High), 0);
    let mut delayed = entry(3, Priority::Low);
    delayed.not_before_ms = 500;
    q.push(delayed, 0);
    assert_eq!(
        (q.pending_of(Priority::High), q.pending_of(Priority::Low)),
        (2, 1)
    );
    let lease = leased(&mut q, 0, 7);
    assert_eq!(q.pending_of(Priority::High), 1, "in flight is not pending");
    q.nack(&lease.key, lease.lease_id, Some(10), 0).unwrap();
    assert_eq!(
        q.pending_of(Priority::High),
        2,
        "waiting out a backoff is pending"
    );
    q.check_consistency();
}

#[test]
fn forgetting_a_topic_drops_its_pending_messages_and_keeps_leases() {
    let mut q = SubscriptionQueue::new(config());
    q.push(entry(1, Priority::Normal), 0);
    q.push(entry(2, Priority::Normal), 0);
    let other = Entry {
        key: key_in("other", 1),
        ..entry(1, Priority::Normal)
    };
    q.push(other, 0);
    let lease = leased(&mut q, 0, 7);
    assert_eq!(lease.key, key(1));
    let topic = key(1).topic;
    assert_eq!(q.remove_pending_of(&topic), 1);
    assert!(q.contains(&key(1)), "the lease stays until it ends");
    assert!(!q.contains(&key(2)));
    assert!(q.contains(&key_in("other", 1)));
    assert_eq!(q.ack(&lease.key, lease.lease_id).unwrap().key, key(1));
    q.check_consistency();
}

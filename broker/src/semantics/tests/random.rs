//! Seeded randomized test: thousands of random calls, each checked against the reference model.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::model::{Model, ModelState};
use super::*;
use crate::semantics::{DeadReason, Lease};

/// Tallies for the conservation check: everything pushed is still here or
/// left by exactly one door.
#[derive(Default)]
struct Tally {
    pushed: usize,
    acked: usize,
    dead: usize,
    removed: usize,
}

fn random_config(rng: &mut StdRng, policy: PriorityPolicy) -> QueueConfig {
    let backoff_initial_ms = rng.random_range(0..=40);
    QueueConfig {
        policy,
        ack_deadline_ms: rng.random_range(20..=300),
        max_deliveries: rng.random_range(1..=5),
        backoff_initial_ms,
        backoff_max_ms: backoff_initial_ms + rng.random_range(0..=200),
    }
}

fn random_entry(rng: &mut StdRng, now: u64) -> Entry {
    let topic = if rng.random_bool(0.5) { "a" } else { "b" };
    let not_before_ms = match rng.random_range(0..4) {
        0 | 1 => 0,
        2 => now.saturating_sub(rng.random_range(0..20)),
        _ => now + rng.random_range(0..200),
    };
    let expires_at_ms = match rng.random_range(0..8) {
        0..=4 => None,
        5 => Some(now.saturating_sub(rng.random_range(0..5))),
        _ => Some(now + rng.random_range(1..400)),
    };
    let priority = Priority::DESCENDING[rng.random_range(0..4)];
    Entry {
        key: key_in(topic, rng.random_range(0..60)),
        priority,
        not_before_ms,
        expires_at_ms,
    }
}

fn random_delay(rng: &mut StdRng) -> Option<u64> {
    match rng.random_range(0..10) {
        0..=3 => None,
        4 => Some(u64::MAX),
        _ => Some(rng.random_range(0..150)),
    }
}

/// Checks the queue against the model and the stated invariants after one call.
fn check(q: &mut SubscriptionQueue, model: &mut Model, tally: &mut Tally, step: usize) {
    q.check_consistency();
    let mut dead = q.take_dead();
    let mut expected = std::mem::take(&mut model.dead);
    assert!(
        dead.iter().all(|d| d.reason != DeadReason::Rejected),
        "step {step}: rejections are returned, not buffered"
    );
    dead.sort();
    expected.sort();
    assert_eq!(dead, expected, "step {step}: dead letters");
    tally.dead += dead.len();
    assert_eq!(q.backlog(), model.count(false), "step {step}: backlog");
    assert_eq!(q.in_flight(), model.count(true), "step {step}: in flight");
    assert_eq!(
        q.backlog() + q.in_flight(),
        tally.pushed - tally.acked - tally.dead - tally.removed,
        "step {step}: conservation"
    );
    for consumer in 0..4 {
        let held = model
            .entries
            .values()
            .filter(|e| matches!(e.state, ModelState::InFlight { consumer: c, .. } if c == consumer));
        assert_eq!(
            q.leases_of(consumer),
            held.count(),
            "step {step}: leases of {consumer}"
        );
    }
    assert_eq!(q.next_wakeup_ms(), model.wakeup(), "step {step}: next wakeup");
    // Ticking just before the wake-up time must change nothing at all.
    let quiet_until = q
        .next_wakeup_ms()
        .map_or(model.clock + 1_000_000, |at| at.saturating_sub(1));
    if quiet_until >= model.clock {
        let mut probe = q.clone();
        probe.tick(quiet_until);
        assert!(
            probe.take_dead().is_empty(),
            "step {step}: tick before the wake-up dead-lettered"
        );
        let same = (
            probe.backlog(),
            probe.in_flight(),
            probe.ready_len(),
            probe.next_wakeup_ms(),
        );
        assert_eq!(
            same,
            (q.backlog(), q.in_flight(), q.ready_len(), q.next_wakeup_ms()),
            "step {step}: tick before the wake-up changed the queue"
        );
    }
}

fn run(seed: u64, policy: PriorityPolicy, steps: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let config = random_config(&mut rng, policy);
    let mut q = SubscriptionQueue::new(config);
    let mut model = Model::new(config);
    let mut tally = Tally::default();
    let mut leases: Vec<Lease> = Vec::new();
    let mut now = 0u64;
    for step in 0..steps {
        if rng.random_bool(0.5) {
            now += rng.random_range(0..40);
        }
        // Mostly a lease that is still valid, sometimes any earlier one (stale or settled).
        let pick = |rng: &mut StdRng, leases: &[Lease], q: &SubscriptionQueue| {
            let valid: Vec<&Lease> = leases
                .iter()
                .filter(|l| q.lease(&l.key).as_ref() == Some(*l))
                .collect();
            if !valid.is_empty() && rng.random_bool(0.75) {
                return Some(valid[rng.random_range(0..valid.len())].clone());
            }
            (!leases.is_empty()).then(|| leases[rng.random_range(0..leases.len())].clone())
        };
        match rng.random_range(0..100) {
            0..=24 => {
                let entry = random_entry(&mut rng, now);
                let attempts = if rng.random_bool(0.8) {
                    0
                } else {
                    rng.random_range(1..4)
                };
                tally.pushed += usize::from(model.push(entry.clone(), attempts));
                q.push(entry, attempts);
            }
            25..=49 => {
                let consumer = rng.random_range(0..4);
                // What was ready at this instant, before the call changes it.
                let mut before = model.clone();
                before.advance(now);
                let top = before.ready().map(|(_, e)| e.priority).max();
                let got = q.next(now, consumer);
                assert_eq!(got, model.next(now, consumer), "step {step}: next");
                if let Some(lease) = got {
                    let entry = before
                        .entries
                        .values()
                        .find(|e| e.key == lease.key)
                        .expect("delivered from the queue");
                    assert!(
                        !entry.expired(model.clock),
                        "step {step}: an expired message was delivered"
                    );
                    if policy == PriorityPolicy::Strict {
                        assert_eq!(Some(lease.priority), top, "step {step}: strict priority order");
                    }
                    leases.push(lease);
                }
            }
            50..=59 => {
                if let Some(l) = pick(&mut rng, &leases, &q) {
                    let got = q.ack(&l.key, l.lease_id);
                    assert_eq!(got, model.ack(&l.key, l.lease_id), "step {step}: ack");
                    tally.acked += usize::from(got.is_ok());
                }
            }
            60..=67 => {
                if let Some(l) = pick(&mut rng, &leases, &q) {
                    let delay = random_delay(&mut rng);
                    let got = q.nack(&l.key, l.lease_id, delay, now);
                    assert_eq!(
                        got,
                        model.nack(&l.key, l.lease_id, delay, now),
                        "step {step}: nack"
                    );
                }
            }
            68..=72 => {
                if let Some(l) = pick(&mut rng, &leases, &q) {
                    let ext = random_delay(&mut rng).map(|d| d.saturating_mul(3));
                    let got = q.extend(&l.key, l.lease_id, ext, now);
                    assert_eq!(
                        got,
                        model.extend(&l.key, l.lease_id, ext, now),
                        "step {step}: extend"
                    );
                }
            }
            73..=76 => {
                if let Some(l) = pick(&mut rng, &leases, &q) {
                    let got = q.reject(&l.key, l.lease_id);
                    assert_eq!(got, model.reject(&l.key, l.lease_id), "step {step}: reject");
                    tally.dead += usize::from(got.is_ok());
                }
            }
            77..=79 => {
                let consumer = rng.random_range(0..5);
                q.release_consumer(consumer, now);
                model.release(consumer, now);
            }
            80..=83 => {
                let key = random_entry(&mut rng, now).key;
                let got = q.remove(&key);
                assert_eq!(got, model.remove(&key), "step {step}: remove");
                tally.removed += usize::from(got);
            }
            84..=86 => {
                // A forged or mistyped token.
                let key = random_entry(&mut rng, now).key;
                let id = rng.random_range(0..model.next_lease_id + 5);
                let got = q.ack(&key, id);
                assert_eq!(got, model.ack(&key, id), "step {step}: forged ack");
                tally.acked += usize::from(got.is_ok());
            }
            87 => {
                let config = random_config(&mut rng, policy);
                q.set_config(config);
                model.config = config;
            }
            _ => {
                q.tick(now);
                model.advance(now);
            }
        }
        if leases.len() > 200 {
            leases.drain(..100);
        }
        check(&mut q, &mut model, &mut tally, step);
    }
    // Drain to the end: everything left is delivered, dead-lettered or acked.
    for round in 0..1_000 {
        while let Some(lease) = q.next(now, 9) {
            assert_eq!(Some(&lease), model.next(now, 9).as_ref(), "seed {seed}: drain");
            q.ack(&lease.key, lease.lease_id).expect("fresh lease");
            model.ack(&lease.key, lease.lease_id).expect("fresh lease");
            tally.acked += 1;
        }
        assert_eq!(model.next(now, 9), None, "seed {seed}: drain");
        check(&mut q, &mut model, &mut tally, steps + round);
        match q.next_wakeup_ms() {
            Some(at) => now = now.max(at),
            None => break,
        }
    }
    assert!(q.is_empty(), "seed {seed}: queue drained");
}

#[test]
fn random_operations_match_the_model_under_strict_priorities() {
    for seed in 1..=6 {
        run(seed, PriorityPolicy::Strict, 4_000);
    }
}

#[test]
fn random_operations_match_the_model_under_weighted_priorities() {
    for seed in 101..=106 {
        run(seed, PriorityPolicy::Weighted, 4_000);
    }
}

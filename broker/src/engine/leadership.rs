//! Following this node's leadership of one group: the leader runs every
//! durable subscription's dispatcher (leases live in its memory); a node
//! that stops leading ends them, and consumer sessions find the new leader.

use std::sync::atomic::Ordering;

use super::{Group, Input};

/// Runs until the consensus layer stops.
pub async fn follow(broker: Group) {
    let mut leading = broker.inner.consensus.leadership();
    loop {
        if *leading.borrow_and_update() {
            lead(&broker);
        } else {
            step_down(&broker);
        }
        if leading.changed().await.is_err() {
            step_down(&broker);
            return;
        }
    }
}

fn lead(broker: &Group) {
    tracing::info!(
        "node {} leads; starting the subscriptions' dispatchers",
        broker.inner.consensus.node_id()
    );
    metrics::counter!(crate::metrics::LEADER_CHANGES).increment(1);
    let names: Vec<_> = broker
        .inner
        .reader
        .machine()
        .catalog()
        .subscriptions
        .keys()
        .cloned()
        .collect();
    for name in names {
        broker.spawn_dispatcher(&name);
    }
}

fn step_down(broker: &Group) {
    // Leases granted while this node led are gone with its dispatchers:
    // their tokens must not be checked against the leases of a later term.
    broker.inner.epoch.store(rand::random(), Ordering::Relaxed);
    broker.inner.remotes.clear();
    let stopped: Vec<_> = broker
        .inner
        .dispatchers
        .lock()
        .expect("dispatchers lock")
        .drain()
        .collect();
    if stopped.is_empty() {
        return;
    }
    tracing::info!(
        "node {} no longer leads; stopping {} dispatchers",
        broker.inner.consensus.node_id(),
        stopped.len()
    );
    for (_, (_, inbox)) in stopped {
        tokio::spawn(async move {
            let _ = inbox.send(Input::Shutdown).await;
        });
    }
}

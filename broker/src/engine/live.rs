//! Ephemeral subscriptions: live messages to whoever listens now, at most
//! once, with no state to keep.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::mpsc;

use crate::domain::Pattern;

use super::delivery::Delivery;

/// A listener's handle.
pub type ListenerId = u64;

struct Listener {
    pattern: Pattern,
    /// One delivery per slot: the capacity is the listener's credit in
    /// messages, and its stream task sends what piled up as one batch.
    deliveries: mpsc::Sender<Delivery>,
}

/// Every open ephemeral subscription.
#[derive(Default)]
pub struct LiveBus {
    listeners: Mutex<HashMap<ListenerId, Listener>>,
}

impl LiveBus {
    pub fn add(&self, id: ListenerId, pattern: Pattern, deliveries: mpsc::Sender<Delivery>) {
        self.listeners
            .lock()
            .expect("live bus lock")
            .insert(id, Listener { pattern, deliveries });
    }

    pub fn remove(&self, id: ListenerId) {
        self.listeners.lock().expect("live bus lock").remove(&id);
    }

    /// True when some listener wants messages of `topic`.
    pub fn wants(&self, topic: &crate::domain::TopicName) -> bool {
        self.listeners
            .lock()
            .expect("live bus lock")
            .values()
            .any(|l| l.pattern.matches(topic))
    }

    /// Offers a delivery to every matching listener; a listener that is not
    /// keeping up misses it (at most once), one that is gone is removed.
    pub fn offer(&self, delivery: &Delivery) {
        let mut listeners = self.listeners.lock().expect("live bus lock");
        listeners.retain(|_, listener| {
            if !listener.pattern.matches(&delivery.message.topic) {
                return true;
            }
            match listener.deliveries.try_send(delivery.clone()) {
                Ok(()) => {
                    metrics::counter!(crate::metrics::DELIVERED).increment(1);
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    metrics::counter!(crate::metrics::DROPPED, "reason" => "slow_listener").increment(1);
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }
}

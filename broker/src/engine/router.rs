//! Routes what the state machine applied to the subscriptions it concerns:
//! new messages, acks, and subscriptions that come and go.

use tokio::sync::mpsc;

use crate::domain::TopicName;
use crate::state::{Applied, StoredRef};

use super::{Delivery, Group, Input};

/// Runs until the state machine's channel closes.
pub async fn run(broker: Group, mut applied: mpsc::Receiver<Vec<Applied>>) {
    while let Some(changes) = applied.recv().await {
        for change in changes {
            route(&broker, change).await;
        }
    }
}

async fn route(broker: &Group, change: Applied) {
    match change {
        Applied::Stored(stored) => {
            offer_live(broker, &stored);
            for inbox in inboxes_for(broker, &stored.key.topic) {
                // Awaiting here slows the state machine down rather than drop a message.
                let _ = inbox.send(Input::Stored(stored.clone())).await;
            }
        }
        Applied::Acked(subscription, key) => {
            if let Some(inbox) = broker.inbox(&subscription) {
                let _ = inbox.send(Input::Acked(key)).await;
            }
        }
        Applied::SubscriptionCreated(name) => broker.spawn_dispatcher(&name),
        Applied::SubscriptionDeleted(name) => {
            // Dropping the last sender of the inbox that the engine holds
            // stops the dispatcher once its consumers are gone too.
            let removed = broker
                .inner
                .dispatchers
                .lock()
                .expect("dispatchers lock")
                .remove(&name);
            if let Some((_, inbox)) = removed {
                let _ = inbox.send(Input::Shutdown).await;
            }
        }
        Applied::TopicDeleted(topic) => {
            for inbox in inboxes_for(broker, &topic) {
                let _ = inbox.send(Input::TopicDeleted(topic.clone())).await;
            }
        }
        Applied::TopicCreated(_) | Applied::Truncated { .. } => {}
    }
}

/// The inboxes of the dispatchers whose pattern selects `topic`.
fn inboxes_for(broker: &Group, topic: &TopicName) -> Vec<mpsc::Sender<Input>> {
    let dispatchers = broker.inner.dispatchers.lock().expect("dispatchers lock");
    dispatchers
        .values()
        .filter(|(pattern, _)| pattern.matches(topic))
        .map(|(_, inbox)| inbox.clone())
        .collect()
}

/// Ephemeral listeners see durable messages live too, at most once.
fn offer_live(broker: &Group, stored: &StoredRef) {
    // Live listeners see messages as they happen; a delayed message is not
    // happening yet, and they are not kept around to see it later.
    if stored.not_before_ms > super::now_ms() || !broker.inner.live.wants(&stored.key.topic) {
        return;
    }
    match broker.inner.reader.message(&stored.key) {
        Ok(Some(message)) => {
            broker.inner.live.offer(&Delivery::live(message));
        }
        Ok(None) => {}
        Err(e) => tracing::warn!("cannot read {:?} for live listeners: {e}", stored.key),
    }
}

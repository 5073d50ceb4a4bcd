//! The publish path: at-most-once messages go straight to listeners here
//! and on the peers; durable ones are ordered through consensus and stored.

use std::sync::Arc;

use crate::domain::{DeliveryGuarantee, Message, NewMessage, TopicSettings};
use crate::error::BrokerError;
use crate::state::Published;

use super::{Delivery, Group, Input, now_ms};

impl Group {
    /// Publishes a batch: at-most-once messages go straight to live
    /// consumers; the others are ordered, stored and fsynced first.
    pub async fn publish(&self, messages: Vec<NewMessage>) -> Vec<Result<Published, BrokerError>> {
        let started = std::time::Instant::now();
        let now = now_ms();
        let mut results: Vec<Option<Result<Published, BrokerError>>> = vec![None; messages.len()];
        let mut durable = Vec::new();
        let mut positions = Vec::new();
        let mut live = Vec::new();
        for (index, message) in messages.into_iter().enumerate() {
            if message.delivery == DeliveryGuarantee::AtMostOnce {
                results[index] = Some(self.publish_live(index, message, now, &mut live));
            } else {
                positions.push(index);
                durable.push(message);
            }
        }
        // Listeners on the other nodes hear at-most-once messages too: all
        // of them, the members of group 0, not only this group's replicas.
        let everyone = self.inner.consensus.group(0);
        everyone
            .as_ref()
            .unwrap_or(&self.inner.consensus)
            .broadcast_live(live);
        if !durable.is_empty() {
            match self.inner.batcher.publish(durable, now).await {
                Ok(outcomes) => {
                    for (position, outcome) in positions.iter().zip(outcomes) {
                        results[*position] = Some(outcome.map_err(|e| reindex(e, *position)));
                    }
                }
                Err(e) => positions.iter().for_each(|p| results[*p] = Some(Err(e.clone()))),
            }
            metrics::histogram!(crate::metrics::PUBLISH_LATENCY).record(started.elapsed().as_secs_f64());
        }
        let results: Vec<_> = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(BrokerError::Internal("lost result".into()))))
            .collect();
        for result in &results {
            match result {
                Ok(p) if p.duplicate => metrics::counter!(crate::metrics::DUPLICATES).increment(1),
                Ok(_) => metrics::counter!(crate::metrics::PUBLISHED).increment(1),
                Err(_) => {}
            }
        }
        results
    }

    fn publish_live(
        &self,
        index: usize,
        message: NewMessage,
        now: u64,
        live: &mut Vec<Message>,
    ) -> Result<Published, BrokerError> {
        if message.delay_ms > 0 {
            return Err(BrokerError::Invalid(crate::domain::ValidationError::new(
                format!("messages[{index}].delay_ms"),
                "an at-most-once message is delivered now or never; a delay needs at-least-once",
            )));
        }
        let limit = {
            let catalog = self.inner.reader.machine().catalog();
            match catalog.topics.get(&message.topic) {
                Some(topic) => topic.settings.max_message_bytes,
                None if self.inner.auto_create_topics => TopicSettings::default().max_message_bytes,
                None => {
                    return Err(BrokerError::NotFound(format!(
                        "messages[{index}].topic: topic {} does not exist and auto_create_topics is off",
                        message.topic
                    )));
                }
            }
        };
        if message.payload.len() as u64 > limit {
            return Err(BrokerError::ResourceExhausted(format!(
                "messages[{index}].payload: {} bytes exceed the topic's limit of {limit} bytes",
                message.payload.len()
            )));
        }
        let stored = Message {
            id: message.id.clone(),
            topic: message.topic.clone(),
            sequence: 0,
            payload: message.payload,
            headers: message.headers,
            priority: message.priority,
            publish_time_ms: now,
            expires_at_ms: message.ttl_ms.map(|ttl| now.saturating_add(ttl)),
            not_before_ms: now,
            delivery: DeliveryGuarantee::AtMostOnce,
        };
        live.push(stored.clone());
        self.offer_live(stored);
        Ok(Published {
            id: message.id,
            topic: message.topic,
            sequence: 0,
            duplicate: false,
            publish_time_ms: now,
        })
    }

    /// Offers an at-most-once message, published here or on a peer, to
    /// live listeners and to the durable subscriptions this node runs.
    pub(super) fn offer_live(&self, message: Message) {
        let delivery = Delivery::live(message);
        self.inner.live.offer(&delivery);
        let shared = Arc::new(delivery);
        let topic = &shared.message.topic;
        for (_, (pattern, inbox)) in self.inner.dispatchers.lock().expect("dispatchers lock").iter() {
            if pattern.matches(topic) {
                let _ = inbox.try_send(Input::Live(shared.clone()));
            }
        }
    }
}

/// Batch results name the message by its place in the caller's request.
fn reindex(mut error: crate::state::CommandError, position: usize) -> BrokerError {
    if let Some(rest) = error.field.strip_prefix("messages[")
        && let Some(end) = rest.find(']')
    {
        error.field = format!("messages[{position}]{}", &rest[end + 1..]);
    }
    error.into()
}

//! The broker's own events, published to `$cluster.events` as JSON messages
//! by the state machine itself, so every replica stores the same ones.

use bytes::Bytes;
use serde::Serialize;

use crate::domain::{DeliveryGuarantee, Headers, MessageId, NewMessage, Priority, TopicName, TopicSettings};
use crate::storage::StorageError;

use super::command::ClusterEvent;
use super::machine::Applier;

/// How long `$cluster.events` keeps events, in milliseconds.
pub const EVENTS_MAX_AGE_MS: u64 = 24 * 3600 * 1000;

/// One event; serialised as `{"type": "...", ...fields}`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event<'a> {
    TopicCreated {
        topic: &'a str,
    },
    TopicDeleted {
        topic: &'a str,
    },
    SubscriptionCreated {
        subscription: &'a str,
        pattern: &'a str,
    },
    SubscriptionDeleted {
        subscription: &'a str,
    },
    MessageDropped {
        subscription: &'a str,
        topic: &'a str,
        sequence: u64,
        reason: &'a str,
    },
    NodeJoined {
        node: u64,
        address: &'a str,
    },
    NodeLeft {
        node: u64,
    },
    NodeDown {
        node: u64,
    },
    NodeUp {
        node: u64,
    },
    LeaderChanged {
        node: u64,
        term: u64,
    },
}

impl<'a> From<&'a ClusterEvent> for Event<'a> {
    fn from(event: &'a ClusterEvent) -> Self {
        match event {
            ClusterEvent::NodeJoined { node, address } => Event::NodeJoined { node: *node, address },
            ClusterEvent::NodeLeft { node } => Event::NodeLeft { node: *node },
            ClusterEvent::NodeDown { node } => Event::NodeDown { node: *node },
            ClusterEvent::NodeUp { node } => Event::NodeUp { node: *node },
            ClusterEvent::LeaderChanged { node, term } => Event::LeaderChanged {
                node: *node,
                term: *term,
            },
        }
    }
}

impl Event<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Event::TopicCreated { .. } => "topic_created",
            Event::TopicDeleted { .. } => "topic_deleted",
            Event::SubscriptionCreated { .. } => "subscription_created",
            Event::SubscriptionDeleted { .. } => "subscription_deleted",
            Event::MessageDropped { .. } => "message_dropped",
            Event::NodeJoined { .. } => "node_joined",
            Event::NodeLeft { .. } => "node_left",
            Event::NodeDown { .. } => "node_down",
            Event::NodeUp { .. } => "node_up",
            Event::LeaderChanged { .. } => "leader_changed",
        }
    }
}

/// The id of the event that `group` appends at `now_ms` as its copy's
/// sequence `sequence`.
fn event_id(group: u32, now_ms: u64, sequence: u64) -> String {
    format!("event-{group}-{now_ms}-{sequence}")
}

/// Settings of `$cluster.events` when the broker creates it.
pub fn events_topic_settings() -> TopicSettings {
    TopicSettings {
        max_age_ms: EVENTS_MAX_AGE_MS,
        ..TopicSettings::default()
    }
}

impl Applier<'_, '_> {
    /// Appends an event. Its id is derived from the group, the command's
    /// clock and the topic's next sequence: the same on every replica, and
    /// unique in the cluster, since each group numbers its copy of the
    /// topic on its own and two groups may apply an event in the same
    /// millisecond.
    pub(super) fn append_event(&mut self, event: Event<'_>, now_ms: u64) -> Result<(), StorageError> {
        let topic = TopicName::cluster_events();
        if !self.catalog.topics.contains_key(&topic) {
            self.insert_topic(&topic, events_topic_settings(), now_ms)?;
        }
        let next = self
            .catalog
            .topics
            .get(&topic)
            .map(|t| t.next_sequence)
            .unwrap_or(1);
        let payload = serde_json::to_vec(&event).expect("events serialise");
        let mut headers = Headers::new();
        headers.insert("hermod-event".into(), event.kind().into());
        let id = MessageId::parse("id", &event_id(self.group, now_ms, next)).expect("event ids are valid");
        let message = NewMessage {
            id,
            topic,
            payload: Bytes::from(payload),
            headers,
            priority: Priority::Normal,
            ttl_ms: None,
            delay_ms: 0,
            delivery: DeliveryGuarantee::AtLeastOnce,
        };
        self.store_message(&message, now_ms, false)?;
        Ok(())
    }
}

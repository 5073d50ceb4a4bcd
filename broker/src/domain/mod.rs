//! The broker's nouns: validated names, messages, settings and limits. Pure data, no I/O.

pub mod limits;
mod message;
mod names;
mod settings;
mod shards;

pub use message::{
    DeliveryGuarantee, Headers, Message, MessageKey, NewMessage, Priority, Sequence, Settle, validate_headers,
};
pub use names::{CLUSTER_EVENTS_TOPIC, MessageId, Pattern, SubscriptionName, TopicName};
pub use settings::{PriorityPolicy, RetentionPolicy, StartPosition, SubscriptionSettings, TopicSettings};
pub use shards::{MAX_SHARDS, META_GROUP, Shards};

/// A request field that breaks a rule. `field` names it the way the client
/// sent it (e.g. `messages[2].topic`), so the error tells the user what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

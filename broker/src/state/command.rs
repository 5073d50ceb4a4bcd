//! The replicated commands, their answers, and what applying them changed.
//! Every durable change is one of these, applied in log order on every replica.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::{
    DeliveryGuarantee, MessageId, MessageKey, NewMessage, Priority, Sequence, SubscriptionName,
    SubscriptionSettings, TopicName, TopicSettings,
};
use crate::semantics::DeadReason;

use super::placement::{PlacementRecord, ShardTarget};
use super::records::{SubscriptionRecord, TopicRecord};

/// A change to the broker's durable state. Times come from the proposer, so
/// every replica computes the same result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    CreateTopic {
        name: TopicName,
        settings: TopicSettings,
        now_ms: u64,
    },
    DeleteTopic {
        name: TopicName,
        now_ms: u64,
    },
    CreateSubscription {
        name: SubscriptionName,
        settings: SubscriptionSettings,
        now_ms: u64,
    },
    DeleteSubscription {
        name: SubscriptionName,
        now_ms: u64,
    },
    Publish {
        messages: Vec<NewMessage>,
        auto_create: bool,
        now_ms: u64,
    },
    Ack {
        subscription: SubscriptionName,
        keys: Vec<MessageKey>,
    },
    DeadLetter {
        subscription: SubscriptionName,
        key: MessageKey,
        reason: DeadReason,
        attempts: u32,
        now_ms: u64,
    },
    /// Periodic housekeeping: retention and the dedup window.
    Sweep {
        now_ms: u64,
    },
    /// Something happened to the cluster; recorded in `$cluster.events`.
    Cluster {
        event: ClusterEvent,
        now_ms: u64,
    },
    /// New targets for the shards (group 0 only). The first one fixes the
    /// number of shards and the replication factor.
    Place {
        shards: u32,
        factor: u32,
        targets: BTreeMap<u32, ShardTarget>,
    },
    /// A founder claims the founding of `shard` (group 0 only), for its
    /// database `incarnation`.
    ClaimFounding {
        shard: u32,
        incarnation: u64,
    },
}

/// A change in the cluster that users can watch on `$cluster.events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterEvent {
    NodeJoined { node: u64, address: String },
    NodeLeft { node: u64 },
    NodeDown { node: u64 },
    NodeUp { node: u64 },
    LeaderChanged { node: u64, term: u64 },
}

/// Why a command (or one item of it) was refused. Deterministic: every
/// replica refuses the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    ResourceExhausted,
}

/// A refusal with the field it concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandError {
    pub refusal: Refusal,
    pub field: String,
    pub message: String,
}

impl CommandError {
    pub fn new(refusal: Refusal, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            refusal,
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<CommandError> for crate::error::BrokerError {
    fn from(e: CommandError) -> Self {
        use crate::error::BrokerError as B;
        let text = format!("{}: {}", e.field, e.message);
        match e.refusal {
            Refusal::InvalidArgument => B::Invalid(crate::domain::ValidationError::new(e.field, e.message)),
            Refusal::NotFound => B::NotFound(text),
            Refusal::AlreadyExists => B::AlreadyExists(text),
            Refusal::FailedPrecondition => B::FailedPrecondition(text),
            Refusal::ResourceExhausted => B::ResourceExhausted(text),
        }
    }
}

/// The result of one published message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub id: MessageId,
    pub topic: TopicName,
    pub sequence: Sequence,
    pub duplicate: bool,
    pub publish_time_ms: u64,
}

/// The answer to a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Topic(Result<TopicRecord, CommandError>),
    Subscription(Result<SubscriptionRecord, CommandError>),
    Deleted(Result<(), CommandError>),
    Published(Vec<Result<Published, CommandError>>),
    Acked(Result<(), CommandError>),
    /// Whether this call dead-lettered the message (false: it was already settled).
    DeadLettered(bool),
    Swept,
    /// A cluster event was recorded.
    Recorded,
    /// Raft's own entries (blank, membership) answer nothing.
    Empty,
    /// The placement record after a `Place`.
    Placed(PlacementRecord),
    /// Whether a founding claim holds.
    Claimed(bool),
}

/// A message stored by a command, as the delivery side needs to queue it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRef {
    pub key: MessageKey,
    pub priority: Priority,
    pub not_before_ms: u64,
    pub expires_at_ms: Option<u64>,
    pub delivery: DeliveryGuarantee,
}

/// What applying a command changed, for the node-local delivery side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Stored(StoredRef),
    TopicCreated(TopicName),
    TopicDeleted(TopicName),
    SubscriptionCreated(SubscriptionName),
    SubscriptionDeleted(SubscriptionName),
    Acked(SubscriptionName, MessageKey),
    /// Messages of `topic` below `first_sequence` were deleted by retention.
    Truncated {
        topic: TopicName,
        first_sequence: Sequence,
    },
}

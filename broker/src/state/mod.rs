//! The replicated state machine: commands applied deterministically to
//! topics, messages, the dedup index, subscriptions and acks in storage.
//! It knows nothing of Raft or gRPC: the log that orders commands lives in
//! `cluster/`.

mod catalog;
mod command;
mod events;
mod machine;
mod placement;
mod publish;
mod reads;
mod records;
mod reindex;
mod subscriptions;
mod sweep;
mod topics;
mod txn;

pub use catalog::Catalog;
pub use command::{Applied, ClusterEvent, Command, CommandError, Published, Refusal, Response, StoredRef};
pub use machine::StateMachine;
pub use placement::{PlacementRecord, ShardRecord, ShardTarget};
pub use reads::{PendingMessage, PendingPage, Reader};
pub use records::{DedupRecord, SubscriptionRecord, TopicRecord};
pub use txn::Txn;

use crate::storage::Cf;

/// The column families the state machine owns: what a snapshot carries. A
/// snapshot file names a family by its place in this list, so new ones go
/// at the end.
pub const FAMILIES: [Cf; 6] = [
    Cf::Meta,
    Cf::Messages,
    Cf::Dedup,
    Cf::DedupExpiry,
    Cf::Acks,
    Cf::Priorities,
];

#[cfg(test)]
mod tests;

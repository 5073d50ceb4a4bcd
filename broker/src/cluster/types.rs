//! openraft's type configuration for Hermod: commands in, responses out.

use crate::state::{Command, Response};

openraft::declare_raft_types!(
    /// Hermod's Raft types.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        // Snapshots are files: a state of millions of messages never sits in memory whole.
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type StorageError = openraft::StorageError<NodeId>;

/// Wraps a storage failure as openraft's error.
pub fn read_error(e: impl std::error::Error + 'static) -> StorageError {
    openraft::StorageIOError::read_logs(&e).into()
}

pub fn write_error(e: impl std::error::Error + 'static) -> StorageError {
    openraft::StorageIOError::write_logs(&e).into()
}

//! Consensus: orders every durable command through openraft before it is
//! applied. Only this folder knows openraft.
//!
//! A node with no peers is a one-voter cluster: the same write path as a
//! multi-node cluster, with a quorum of one.

// openraft's traits fix `StorageError` (a large type) as the error of every
// storage call; boxing it would only add conversions at each boundary.
#![allow(clippy::result_large_err)]

mod log_store;
mod network;
mod state_machine;
#[cfg(test)]
mod suite;
mod types;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ServerState};
use tokio::sync::mpsc;

use crate::error::BrokerError;
use crate::state::{Applied, Command, Response, StateMachine};
use crate::storage::Store;

pub use log_store::LogStore;
pub use state_machine::StateMachineStore;
pub use types::{NodeId, TypeConfig};

/// How long a proposal may wait for its commit before the caller is told to retry.
pub const PROPOSE_TIMEOUT_MS: u64 = 10_000;
/// How long a starting node waits to become leader of its one-node cluster.
pub const ELECTION_WAIT_MS: u64 = 30_000;
/// Heartbeat interval; generous, since a loaded 2-core machine stalls.
pub const HEARTBEAT_INTERVAL_MS: u64 = 250;
/// Election timeout range.
pub const ELECTION_TIMEOUT_MIN_MS: u64 = 1_000;
pub const ELECTION_TIMEOUT_MAX_MS: u64 = 2_000;
/// Log entries between snapshots; the log is purged up to a snapshot.
pub const SNAPSHOT_EVERY_ENTRIES: u64 = 50_000;
/// Entries proposed at once per append, and per replication message.
pub const MAX_PAYLOAD_ENTRIES: u64 = 512;

/// The consensus layer of one node.
#[derive(Clone)]
pub struct Consensus {
    raft: types::Raft,
    node_id: NodeId,
}

fn raft_config() -> Result<Arc<openraft::Config>, BrokerError> {
    let config = openraft::Config {
        cluster_name: "hermod".into(),
        heartbeat_interval: HEARTBEAT_INTERVAL_MS,
        election_timeout_min: ELECTION_TIMEOUT_MIN_MS,
        election_timeout_max: ELECTION_TIMEOUT_MAX_MS,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY_ENTRIES),
        max_in_snapshot_log_to_keep: 1_000,
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        ..Default::default()
    };
    config
        .validate()
        .map(Arc::new)
        .map_err(|e| BrokerError::Config(format!("raft: {e}")))
}

impl Consensus {
    /// Starts this node as the single voter of its own cluster, initialising
    /// the cluster on first start, and waits until it leads.
    pub async fn start_single(
        node_id: NodeId,
        address: String,
        store: Arc<dyn Store>,
        machine: StateMachine,
        fsync: bool,
        events: mpsc::Sender<Vec<Applied>>,
    ) -> Result<Self, BrokerError> {
        let log = LogStore::new(store, fsync);
        let sm = StateMachineStore::new(machine, events).map_err(internal)?;
        let raft = types::Raft::new(node_id, raft_config()?, network::NoPeers, log, sm)
            .await
            .map_err(internal)?;
        if !raft.is_initialized().await.map_err(internal)? {
            let members = BTreeMap::from([(node_id, BasicNode { addr: address })]);
            raft.initialize(members).await.map_err(internal)?;
        }
        raft.wait(Some(Duration::from_millis(ELECTION_WAIT_MS)))
            .state(ServerState::Leader, "one-node cluster elects itself")
            .await
            .map_err(|e| BrokerError::Unavailable(format!("this node did not become leader: {e}")))?;
        Ok(Self { raft, node_id })
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// True while this node leads.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.node_id)
    }

    /// The current leader, if one is known.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// The voters of the current membership.
    pub fn voters(&self) -> Vec<NodeId> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    /// Orders `command`, waits for it to be durable on a quorum and applied,
    /// and returns the state machine's answer.
    pub async fn propose(&self, command: Command) -> Result<Response, BrokerError> {
        let write = self.raft.client_write(command);
        let outcome = tokio::time::timeout(Duration::from_millis(PROPOSE_TIMEOUT_MS), write).await;
        match outcome {
            Err(_) => Err(BrokerError::Unavailable(format!(
                "the write was not committed within {PROPOSE_TIMEOUT_MS} ms; retry with the same message id"
            ))),
            Ok(Ok(response)) => Ok(response.data),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
                let hint = forward
                    .leader_node
                    .map(|n| n.addr)
                    .unwrap_or_else(|| "unknown".into());
                Err(BrokerError::Unavailable(format!(
                    "this node does not lead; leader: {hint}"
                )))
            }
            Ok(Err(e)) => Err(BrokerError::Unavailable(format!("consensus: {e}"))),
        }
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
    }
}

fn internal(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Internal(format!("consensus: {e}"))
}

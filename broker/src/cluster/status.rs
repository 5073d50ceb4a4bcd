//! A node's view of the cluster: members, roles, liveness, and each Raft
//! group's leader, term and replication lag.

use serde::{Deserialize, Serialize};

use super::types::NodeId;

/// The role a node plays in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Leader,
    Follower,
    Learner,
    Candidate,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Learner => "learner",
            Role::Candidate => "candidate",
        }
    }
}

/// One member as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub id: NodeId,
    pub address: String,
    pub up: bool,
    pub role: Role,
    /// Since this node (or the leader it asked) last heard from it.
    pub heard_ago_ms: Option<u64>,
}

/// One Raft group as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupView {
    pub name: String,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub replicas: Vec<NodeId>,
    /// Entries the slowest replica is behind; known on the leader only.
    pub lag: u64,
    pub last_log_index: u64,
    pub applied_index: u64,
}

/// This node's view of the whole cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    pub node_id: NodeId,
    /// Whether this node reaches a quorum of the cluster.
    pub quorum: bool,
    pub nodes: Vec<NodeView>,
    pub groups: Vec<GroupView>,
}

impl ClusterView {
    /// Takes the node table of the leader's view, which has heard from
    /// every member, and keeps this node's own quorum and groups.
    pub fn with_leader_nodes(mut self, leader: ClusterView) -> Self {
        self.nodes = leader.nodes;
        self
    }
}

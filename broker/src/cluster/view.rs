//! Reading openraft's metrics: whether this node leads, and the cluster
//! view that `Status` answers with.

use std::time::Duration;

use openraft::ServerState;
use tokio::sync::watch;

use super::Consensus;
use super::status::{ClusterView, GroupView, NodeView, Role};
use super::transport::{PEER_CALL_TIMEOUT_MS, PeerReply, PeerRequest};
use super::types::{NodeId, Raft};

/// The name operators (and routing clients) see for a group.
pub use hermod_proto::routing::group_name;

/// A watch that is true while `me` leads and has applied every entry of
/// the terms before its own; it follows openraft's metrics until the Raft
/// node shuts down.
///
/// A new leader commits a first entry of its term, and applies everything
/// before it on the way. Until then its state may lack committed entries
/// (a crash lost unlogged writes that are still being applied again, or a
/// follower was behind), so what runs on leadership — dispatchers loading
/// their pending messages — waits for it.
pub fn watch_leadership(raft: &Raft, me: NodeId) -> watch::Receiver<bool> {
    let mut metrics = raft.metrics();
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        loop {
            let leading = {
                let m = metrics.borrow_and_update();
                let caught_up = m
                    .last_applied
                    .is_some_and(|applied| applied.leader_id.term == m.current_term);
                m.state == ServerState::Leader && m.current_leader == Some(me) && caught_up
            };
            tx.send_if_modified(|current| std::mem::replace(current, leading) != leading);
            if metrics.changed().await.is_err() {
                tx.send_replace(false);
                return;
            }
        }
    });
    rx
}

impl Consensus {
    /// How long a member may stay silent before it counts as down.
    pub(super) fn silence_limit(&self) -> Duration {
        Duration::from_millis(self.options().election_timeout_ms * 2)
    }

    /// This node's own view, without asking the leader.
    pub fn local_status(&self) -> ClusterView {
        let metrics = self.raft().metrics().borrow().clone();
        let me = self.node_id();
        let limit = self.silence_limit();
        let membership = metrics.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let leading = metrics.state == ServerState::Leader;
        let quorum = if leading {
            metrics
                .millis_since_quorum_ack
                .is_some_and(|ms| ms <= limit.as_millis() as u64)
        } else {
            metrics
                .current_leader
                .and_then(|leader| self.mesh().heard_ago(leader))
                .is_some_and(|ago| ago <= limit)
        };
        let nodes = membership
            .nodes()
            .map(|(id, node)| {
                let heard = if *id == me {
                    Some(Duration::ZERO)
                } else {
                    self.mesh().heard_ago(*id)
                };
                let role = if metrics.current_leader == Some(*id) {
                    Role::Leader
                } else if !voters.contains(id) {
                    Role::Learner
                } else if *id == me && metrics.state == ServerState::Candidate {
                    Role::Candidate
                } else {
                    Role::Follower
                };
                NodeView {
                    id: *id,
                    address: node.addr.clone(),
                    up: heard.is_some_and(|ago| ago <= limit),
                    role,
                    heard_ago_ms: heard.map(|ago| ago.as_millis() as u64),
                }
            })
            .collect();
        ClusterView {
            node_id: me,
            quorum,
            nodes,
            groups: self.open_groups().iter().map(Consensus::group_view).collect(),
        }
    }

    /// Every group open on this node, by id.
    fn open_groups(&self) -> Vec<Consensus> {
        let groups = self.inner.node.groups.read().expect("groups lock");
        groups
            .values()
            .filter_map(std::sync::Weak::upgrade)
            .map(|inner| Consensus { inner })
            .collect()
    }

    /// This group's leader, term, replicas and progress, as this node sees them.
    fn group_view(&self) -> GroupView {
        let metrics = self.raft().metrics().borrow().clone();
        let last_log_index = metrics.last_log_index.unwrap_or(0);
        let lag = metrics
            .replication
            .as_ref()
            .map(|replication| {
                replication
                    .values()
                    .map(|matched| last_log_index.saturating_sub(matched.map_or(0, |m| m.index)))
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        GroupView {
            name: group_name(self.group_id()),
            leader: metrics.current_leader,
            term: metrics.current_term,
            replicas: metrics.membership_config.membership().voter_ids().collect(),
            lag,
            last_log_index,
            applied_index: metrics.last_applied.map_or(0, |l| l.index),
        }
    }

    /// The cluster as this node sees it; a follower takes the node table
    /// from the leader, which hears from every member.
    pub async fn status(&self) -> ClusterView {
        let local = self.local_status();
        let Some(leader) = self.leader_info().filter(|l| l.id != self.node_id()) else {
            return local;
        };
        let timeout = Duration::from_millis(PEER_CALL_TIMEOUT_MS);
        match self
            .mesh()
            .call(&leader.address, PeerRequest::Status, timeout)
            .await
        {
            Ok(PeerReply::Status(view)) => local.with_leader_nodes(*view),
            _ => local,
        }
    }
}

//! A node removed from the cluster stops taking part. Removal rarely
//! reaches the removed node's own log (the leader stops replicating to it),
//! so a node that has lost its leader asks its peers, and shuts its Raft
//! node down once a leader with a quorum no longer lists it.

use std::sync::Weak;
use std::time::Duration;

use super::status::ClusterView;
use super::transport::{PEER_CALL_TIMEOUT_MS, PeerReply, PeerRequest};
use super::types::NodeId;
use super::{Consensus, Inner};

/// How often a node without a leader asks its peers whether it still belongs.
pub const REMOVAL_CHECK_MS: u64 = 2_000;

/// Runs until the consensus layer is dropped or this node learns it was removed.
pub async fn watch(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(Duration::from_millis(REMOVAL_CHECK_MS)).await;
        let Some(inner) = inner.upgrade() else { return };
        let consensus = Consensus { inner };
        let local = consensus.local_status();
        if local.quorum || local.nodes.is_empty() {
            continue;
        }
        let peers: Vec<String> = local
            .nodes
            .iter()
            .filter(|n| n.id != local.node_id)
            .map(|n| n.address.clone())
            .collect();
        if consensus.removed_according_to(&peers).await {
            tracing::warn!(
                "node {} is no longer a member of the cluster (it was removed); it stops taking part",
                local.node_id
            );
            consensus.mark_removed();
            consensus.shutdown().await;
            return;
        }
    }
}

impl Consensus {
    /// Whether a leader among `peers` says this node is not a member.
    async fn removed_according_to(&self, peers: &[String]) -> bool {
        let timeout = Duration::from_millis(PEER_CALL_TIMEOUT_MS);
        for address in peers {
            let reply = self.mesh().call(address, PeerRequest::Status, timeout).await;
            if let Ok(PeerReply::Status(view)) = reply
                && leaves_out(&view, self.node_id())
            {
                return true;
            }
        }
        false
    }
}

/// Whether `view` comes from a leader that reaches its quorum and whose
/// membership does not hold `me`. A follower's word is not taken: its
/// latest membership may not be committed.
fn leaves_out(view: &ClusterView, me: NodeId) -> bool {
    let leads = view
        .groups
        .first()
        .is_some_and(|g| g.leader == Some(view.node_id));
    leads && view.quorum && !view.nodes.iter().any(|n| n.id == me)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::status::{GroupView, NodeView, Role};

    fn view(from: NodeId, leader: Option<NodeId>, quorum: bool, members: &[NodeId]) -> ClusterView {
        let nodes = members
            .iter()
            .map(|id| NodeView {
                id: *id,
                address: format!("n{id}:7400"),
                up: true,
                role: Role::Follower,
                heard_ago_ms: Some(0),
            })
            .collect();
        let group = GroupView {
            name: "main-0".into(),
            leader,
            term: 3,
            replicas: members.to_vec(),
            lag: 0,
            last_log_index: 10,
            applied_index: 10,
        };
        ClusterView {
            node_id: from,
            quorum,
            nodes,
            groups: vec![group],
        }
    }

    #[test]
    fn only_a_leader_with_a_quorum_that_lists_no_such_member_removes_a_node() {
        assert!(leaves_out(&view(1, Some(1), true, &[1, 2]), 3));
        assert!(
            !leaves_out(&view(1, Some(1), true, &[1, 2, 3]), 3),
            "still a member"
        );
        assert!(!leaves_out(&view(1, Some(1), false, &[1, 2]), 3), "no quorum");
        assert!(
            !leaves_out(&view(2, Some(1), true, &[1, 2]), 3),
            "a follower's view"
        );
        assert!(!leaves_out(&view(1, None, true, &[1, 2]), 3), "no leader");
    }
}

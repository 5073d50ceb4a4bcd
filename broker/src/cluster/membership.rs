//! Membership changes: a node joins as a learner, catches up, then becomes
//! a voter; a node leaves by being removed from the voters. Only the leader
//! changes membership; other nodes pass the request on.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};

use crate::error::BrokerError;
use crate::state::ClusterEvent;

use super::Consensus;
use super::transport::{MembershipChange, NodeInfo, PeerReply, PeerRequest};
use super::types::NodeId;

/// How long a membership change may take; a joining node catches up first.
pub const MEMBERSHIP_TIMEOUT_MS: u64 = 120_000;

impl Consensus {
    /// Applies `change` on the leader, forwarding it there if needed.
    pub async fn change_membership(&self, change: MembershipChange) -> Result<(), BrokerError> {
        match self.leader_info() {
            None => Err(BrokerError::NotLeader { leader: None }),
            Some(leader) if leader.id != self.node_id() => {
                let timeout = Duration::from_millis(MEMBERSHIP_TIMEOUT_MS);
                match self
                    .mesh()
                    .call(&leader.address, PeerRequest::Membership(change), timeout)
                    .await
                {
                    Ok(PeerReply::Membership(result)) => result,
                    Ok(other) => Err(BrokerError::Internal(format!("unexpected answer: {other:?}"))),
                    Err(e) => Err(BrokerError::Unavailable(format!(
                        "the leader could not be reached: {e}"
                    ))),
                }
            }
            Some(_) => match change {
                MembershipChange::Join(node) => self.add_voter(node).await,
                MembershipChange::Leave(id) => self.remove_voter(id).await,
            },
        }
    }

    /// Adds the node listening at `address`, which must not belong to a
    /// cluster yet, and returns its id.
    pub async fn add_node_at(&self, address: &str) -> Result<NodeId, BrokerError> {
        if address
            .rsplit_once(':')
            .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
        {
            return Err(BrokerError::Invalid(crate::domain::ValidationError::new(
                "address",
                format!("{address:?} is not host:port"),
            )));
        }
        let timeout = Duration::from_millis(super::formation::HELLO_TIMEOUT_MS);
        let hello = match self
            .mesh()
            .call(address, PeerRequest::Hello(self.me().clone()), timeout)
            .await
        {
            Ok(PeerReply::Hello(hello)) => hello,
            Ok(other) => {
                return Err(BrokerError::Internal(format!(
                    "unexpected answer to hello: {other:?}"
                )));
            }
            Err(e) => return Err(BrokerError::Unavailable(format!("address: {e}"))),
        };
        let member = self.voters().contains(&hello.node.id);
        if hello.initialized && !member {
            return Err(BrokerError::FailedPrecondition(format!(
                "address: node {} at {address} already belongs to a cluster; start it with --join to add it",
                hello.node.id
            )));
        }
        self.change_membership(MembershipChange::Join(hello.node.clone()))
            .await?;
        Ok(hello.node.id)
    }

    async fn add_voter(&self, node: NodeInfo) -> Result<(), BrokerError> {
        if self.voters().contains(&node.id) {
            return Ok(());
        }
        tracing::info!("node {} at {} is joining", node.id, node.address);
        let learner = BasicNode {
            addr: node.address.clone(),
        };
        self.raft()
            .add_learner(node.id, learner, true)
            .await
            .map_err(membership_error)?;
        let voters = BTreeSet::from([node.id]);
        self.raft()
            .change_membership(ChangeMembers::AddVoterIds(voters), false)
            .await
            .map_err(membership_error)?;
        tracing::info!("node {} at {} joined", node.id, node.address);
        self.record(ClusterEvent::NodeJoined {
            node: node.id,
            address: node.address,
        });
        Ok(())
    }

    async fn remove_voter(&self, id: NodeId) -> Result<(), BrokerError> {
        let voters = self.voters();
        if !voters.contains(&id) {
            return Ok(());
        }
        if voters.len() == 1 {
            return Err(BrokerError::FailedPrecondition(format!(
                "node_id: node {id} is the last voter; a cluster cannot lose its last node"
            )));
        }
        tracing::info!("node {id} is leaving");
        let removed = self.drain_then_remove(id).await;
        // Whether it left or the leave failed, it is no longer leaving:
        // a failed leave puts its shards back where placement wants them.
        self.inner.node.leaving.lock().expect("leaving lock").remove(&id);
        removed?;
        tracing::info!("node {id} left");
        self.record(ClusterEvent::NodeLeft { node: id });
        Ok(())
    }

    async fn drain_then_remove(&self, id: NodeId) -> Result<(), BrokerError> {
        self.drain(id).await?;
        self.raft()
            .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
            .await
            .map_err(membership_error)?;
        Ok(())
    }
}

fn membership_error(error: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> BrokerError {
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => BrokerError::NotLeader {
            leader: forward.leader_node.map(|n| n.addr),
        },
        other => BrokerError::Unavailable(format!("membership change failed: {other}; retry")),
    }
}

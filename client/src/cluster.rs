//! The cluster API: this node's view of the cluster, and membership changes.

use hermod_proto::v1 as pb;
use hermod_proto::v1::cluster_client::ClusterClient;

use crate::client::Client;
use crate::error::Result;
use crate::retry::Idempotence::Idempotent;
use crate::retry::retry;

/// One member of the cluster, as the answering node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    pub id: u64,
    /// The node's advertised gRPC address, `host:port`.
    pub address: String,
    pub up: bool,
    /// `leader`, `follower`, `learner` or `candidate`.
    pub role: String,
    /// Milliseconds since it was last heard from, when it ever was.
    pub last_heartbeat_age_ms: Option<u64>,
}

/// One Raft group: its leader, term, replicas and replication lag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftGroupInfo {
    pub name: String,
    pub leader: Option<u64>,
    pub term: u64,
    pub replicas: Vec<u64>,
    /// Entries the slowest replica is behind the leader (0 on a follower's view).
    pub lag: u64,
    pub last_log_index: u64,
    pub applied_index: u64,
}

/// A node's view of its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    /// The node that answered.
    pub node_id: u64,
    /// Whether that node reaches a quorum.
    pub quorum: bool,
    pub nodes: Vec<ClusterNode>,
    pub groups: Vec<RaftGroupInfo>,
    /// The number of shard groups (`shard-1` .. `shard-N`); 0 when every
    /// topic lives in the metadata group `main-0`.
    pub shards: u32,
}

impl ClusterStatus {
    /// The node that leads the group holding `topic`, as this view has it:
    /// the node a publish to `topic` is best sent to.
    pub fn leader_of(&self, topic: &str) -> Option<&ClusterNode> {
        self.group_leader(hermod_proto::routing::group_of(topic, self.shards))
    }

    /// The node that leads group `group` (0 the metadata group, then the
    /// shards), as this view has it.
    pub(crate) fn group_leader(&self, group: u32) -> Option<&ClusterNode> {
        let name = hermod_proto::routing::group_name(group);
        let leader = self.groups.iter().find(|g| g.name == name)?.leader?;
        self.nodes.iter().find(|node| node.id == leader)
    }
}

fn status_from_pb(status: pb::ClusterStatus) -> ClusterStatus {
    ClusterStatus {
        shards: status.shards,
        node_id: status.node_id,
        quorum: status.quorum,
        nodes: status
            .nodes
            .into_iter()
            .map(|n| ClusterNode {
                id: n.id,
                address: n.address,
                up: n.up,
                role: n.role,
                last_heartbeat_age_ms: n.last_heartbeat_age_ms,
            })
            .collect(),
        groups: status
            .groups
            .into_iter()
            .map(|g| RaftGroupInfo {
                name: g.name,
                leader: (g.leader != 0).then_some(g.leader),
                term: g.term,
                replicas: g.replicas,
                lag: g.lag,
                last_log_index: g.last_log_index,
                applied_index: g.applied_index,
            })
            .collect(),
    }
}

fn cluster_stub(lease: crate::connection::Lease) -> ClusterClient<tonic::transport::Channel> {
    ClusterClient::new(lease.channel)
}

impl Client {
    /// Starts learning the routing table in the background, when it is due.
    pub(crate) fn refresh_routes(&self) {
        if self.inner.router.begin_refresh() {
            let client = self.clone();
            tokio::spawn(async move { client.learn_routes().await });
        }
    }

    /// Reads the routing table from the seed connection's node, in one
    /// attempt: a failure leaves the old table, and the next use asks again.
    pub(crate) async fn learn_routes(&self) {
        let status = self
            .attempt_on(
                cluster_stub,
                pb::ClusterStatusRequest {},
                |mut stub, r| async move { stub.status(r).await },
            )
            .await;
        match status {
            Ok(status) => self.inner.router.install(&status_from_pb(status)),
            Err(error) => {
                tracing::debug!(%error, "routing table not learnt");
                self.inner.router.refresh_failed();
            }
        }
    }

    /// The cluster as the node this client is connected to sees it.
    pub async fn cluster_status(&self) -> Result<ClusterStatus> {
        let status = retry(self.retry_policy(), Idempotent, |_| {
            self.attempt_on(
                cluster_stub,
                pb::ClusterStatusRequest {},
                |mut stub, r| async move { stub.status(r).await },
            )
        })
        .await?;
        Ok(status_from_pb(status))
    }

    /// Adds the node whose gRPC address is `address` (`host:port`) to the
    /// cluster; returns its node id. Retried: adding a member twice is a no-op.
    pub async fn join_cluster(&self, address: impl Into<String>) -> Result<u64> {
        let request = pb::JoinClusterRequest {
            address: address.into(),
        };
        let response = retry(self.retry_policy(), Idempotent, |_| {
            self.attempt_on(cluster_stub, request.clone(), |mut stub, r| async move {
                stub.join(r).await
            })
        })
        .await?;
        Ok(response.node_id)
    }

    /// Removes node `node_id` from the cluster, or the connected node when
    /// `None`. Retried: removing a node that already left is a no-op.
    pub async fn leave_cluster(&self, node_id: Option<u64>) -> Result<()> {
        let request = pb::LeaveClusterRequest {
            node_id: node_id.unwrap_or(0),
        };
        retry(self.retry_policy(), Idempotent, |_| {
            self.attempt_on(
                cluster_stub,
                request,
                |mut stub, r| async move { stub.leave(r).await },
            )
        })
        .await?;
        Ok(())
    }
}

//! The `hermod.v1.Cluster` gRPC service: status, join and leave.

use hermod_proto::v1 as pb;
use hermod_proto::v1::cluster_server::Cluster as ClusterApi;
use tonic::{Request, Response, Status};

use crate::cluster::{ClusterView, MembershipChange};
use crate::engine::Broker;

/// The gRPC front of the node's cluster membership.
#[derive(Clone)]
pub struct ClusterService {
    broker: Broker,
}

impl ClusterService {
    pub fn new(broker: Broker) -> Self {
        Self { broker }
    }
}

/// The prost form of a cluster view of a cluster of `shards` shard groups.
pub fn status_message(view: ClusterView, shards: u32) -> pb::ClusterStatus {
    pb::ClusterStatus {
        shards,
        node_id: view.node_id,
        quorum: view.quorum,
        nodes: view
            .nodes
            .into_iter()
            .map(|n| pb::ClusterNode {
                id: n.id,
                address: n.address,
                up: n.up,
                role: n.role.as_str().into(),
                last_heartbeat_age_ms: n.heard_ago_ms,
            })
            .collect(),
        groups: view
            .groups
            .into_iter()
            .map(|g| pb::RaftGroup {
                name: g.name,
                leader: g.leader.unwrap_or(0),
                term: g.term,
                replicas: g.replicas,
                lag: g.lag,
                last_log_index: g.last_log_index,
                applied_index: g.applied_index,
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl ClusterApi for ClusterService {
    async fn status(
        &self,
        _request: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        let view = self.broker.consensus().status().await;
        // Before placement a sharded node names no shards: clients then
        // send everything to it, and it forwards.
        let shards = self.broker.shard_count().map_or(0, |shards| shards.count());
        Ok(Response::new(status_message(view, shards)))
    }

    async fn join(
        &self,
        request: Request<pb::JoinClusterRequest>,
    ) -> Result<Response<pb::JoinClusterResponse>, Status> {
        let address = request.into_inner().address;
        let node_id = self.broker.consensus().add_node_at(&address).await?;
        Ok(Response::new(pb::JoinClusterResponse { node_id }))
    }

    async fn leave(
        &self,
        request: Request<pb::LeaveClusterRequest>,
    ) -> Result<Response<pb::LeaveClusterResponse>, Status> {
        let consensus = self.broker.consensus();
        let node = match request.into_inner().node_id {
            0 => consensus.node_id(),
            id => id,
        };
        consensus.change_membership(MembershipChange::Leave(node)).await?;
        Ok(Response::new(pb::LeaveClusterResponse {}))
    }
}

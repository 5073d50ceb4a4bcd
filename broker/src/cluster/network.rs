//! openraft's network for one Raft group: each RPC is encoded and sent over
//! the node's `Mesh`, with batches too large for one message split up.

use std::sync::Arc;

use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use super::transport::{
    MAX_PEER_MESSAGE_BYTES, Mesh, PeerReply, PeerRequest, RaftReply, RaftRpc, TransportError,
};
use super::types::{NodeId, TypeConfig};

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

/// Makes connections to the peers of one group.
#[derive(Clone)]
pub struct Network {
    mesh: Arc<Mesh>,
    group: u32,
}

impl Network {
    pub fn new(mesh: Arc<Mesh>, group: u32) -> Self {
        Self { mesh, group }
    }
}

/// A connection to one peer of the group.
pub struct PeerLink {
    mesh: Arc<Mesh>,
    group: u32,
    target: NodeId,
    address: String,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerLink;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerLink {
        PeerLink {
            mesh: self.mesh.clone(),
            group: self.group,
            target,
            address: node.addr.clone(),
        }
    }
}

fn transport_error<E: std::error::Error>(error: TransportError) -> RPCError<NodeId, BasicNode, E> {
    match error {
        TransportError::Codec(_) => RPCError::Network(NetworkError::new(&error)),
        _ => RPCError::Unreachable(Unreachable::new(&error)),
    }
}

fn protocol_error<E: std::error::Error>(reply: &PeerReply) -> RPCError<NodeId, BasicNode, E> {
    let error = std::io::Error::other(format!("unexpected reply to a Raft RPC: {reply:?}"));
    RPCError::Network(NetworkError::new(&error))
}

impl PeerLink {
    async fn send(&self, rpc: RaftRpc, option: &RPCOption) -> Result<RaftReply, TransportError> {
        let request = PeerRequest::Raft {
            group: self.group,
            rpc,
        };
        match self.mesh.call(&self.address, request, option.hard_ttl()).await? {
            PeerReply::Raft(reply) => {
                self.mesh.heard_from(self.target);
                Ok(reply)
            }
            // The node is there but has not opened the group yet: as good
            // as unreachable for this group, so openraft backs off and retries.
            PeerReply::NoSuchGroup(group) => Err(TransportError::Unreachable(
                self.address.clone(),
                format!("group {group} is not open there yet"),
            )),
            other => Err(TransportError::Codec(format!(
                "expected a Raft reply, got {other:?}"
            ))),
        }
    }

    fn remote<E: std::error::Error>(
        &self,
        error: RaftError<NodeId, E>,
    ) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
        RPCError::RemoteError(RemoteError::new(self.target, error))
    }
}

/// Bytes an append would take on the wire, to split batches before gRPC refuses them.
fn encoded_len(rpc: &AppendEntriesRequest<TypeConfig>) -> usize {
    postcard::experimental::serialized_size(rpc).unwrap_or(usize::MAX)
}

impl RaftNetwork<TypeConfig> for PeerLink {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let entries = rpc.entries.len() as u64;
        if entries > 1 && encoded_len(&rpc) > MAX_PEER_MESSAGE_BYTES / 2 {
            return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(
                entries / 2,
            )));
        }
        match self
            .send(RaftRpc::Append(rpc), &option)
            .await
            .map_err(transport_error)?
        {
            RaftReply::Append(Ok(response)) => Ok(response),
            RaftReply::Append(Err(e)) => Err(self.remote(e)),
            other => Err(protocol_error(&PeerReply::Raft(other))),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        match self
            .send(RaftRpc::Snapshot(rpc), &option)
            .await
            .map_err(transport_error)?
        {
            RaftReply::Snapshot(Ok(response)) => Ok(response),
            RaftReply::Snapshot(Err(e)) => Err(self.remote(e)),
            other => Err(protocol_error(&PeerReply::Raft(other))),
        }
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
        match self
            .send(RaftRpc::Vote(rpc), &option)
            .await
            .map_err(transport_error)?
        {
            RaftReply::Vote(Ok(response)) => Ok(response),
            RaftReply::Vote(Err(e)) => Err(self.remote(e)),
            other => Err(protocol_error(&PeerReply::Raft(other))),
        }
    }
}

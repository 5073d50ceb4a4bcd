//! The gRPC transport between nodes (`hermod.internal.v1.Peer`): the client
//! side as a `Transport`, and the service that hands inbound requests to this
//! node's `PeerHandler`. The only place that sees the internal prost types.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hermod_proto::internal as pb;
use hermod_proto::internal::peer_client::PeerClient;
use hermod_proto::internal::peer_server::{Peer, PeerServer};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use super::inbound::PeerHandler;
use super::transport::{
    MAX_PEER_MESSAGE_BYTES, PeerFuture, PeerReply, PeerRequest, Transport, TransportError,
};

/// How long opening a connection to a peer may take.
const CONNECT_TIMEOUT_MS: u64 = 2_000;

/// gRPC clients to peers, one lazily connected channel per address.
#[derive(Clone, Default)]
pub struct GrpcTransport {
    clients: Arc<Mutex<HashMap<String, PeerClient<Channel>>>>,
}

impl GrpcTransport {
    fn client(&self, address: &str) -> Result<PeerClient<Channel>, TransportError> {
        let mut clients = self.clients.lock().expect("peer clients lock");
        if let Some(client) = clients.get(address) {
            return Ok(client.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| TransportError::Unreachable(address.into(), format!("bad address: {e}")))?
            .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
            .tcp_nodelay(true);
        let client = PeerClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES);
        clients.insert(address.into(), client.clone());
        Ok(client)
    }
}

impl Transport for GrpcTransport {
    fn call(&self, address: &str, request: PeerRequest) -> PeerFuture {
        let client = self.client(address);
        let address = address.to_string();
        Box::pin(async move {
            let mut client = client?;
            let body = request.encode()?.into();
            let unreachable =
                |status: Status| TransportError::Unreachable(address.clone(), status.to_string());
            let reply = match request {
                PeerRequest::Raft { group, .. }
                | PeerRequest::HoldElections { group, .. }
                | PeerRequest::Campaign { group, .. } => client.raft(pb::RaftRequest { group, body }).await,
                PeerRequest::Forward { group, .. } => {
                    client.forward(pb::ForwardRequest { group, command: body }).await
                }
                PeerRequest::Live(_) => client.live(pb::LiveRequest { messages: body }).await,
                PeerRequest::Hello(_) => client.hello(pb::HelloRequest { body }).await,
                PeerRequest::Membership(_) => client.join(pb::JoinRequest { body }).await,
                PeerRequest::Status => client.status(pb::StatusRequest { body }).await,
                PeerRequest::Relay(_) | PeerRequest::RelayIn { .. } => {
                    client.relay(pb::RelayRequest { body }).await
                }
            }
            .map_err(unreachable)?;
            PeerReply::decode(&reply.into_inner().body)
        })
    }
}

/// The `Peer` service of this node.
pub struct PeerService {
    handler: Arc<PeerHandler>,
}

impl PeerService {
    pub fn server(handler: Arc<PeerHandler>) -> PeerServer<PeerService> {
        PeerServer::new(PeerService { handler })
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES)
    }

    async fn answer(&self, body: &[u8]) -> Result<Response<pb::PeerReply>, Status> {
        let request = PeerRequest::decode(body).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let reply = self.handler.handle(request).await;
        let body = reply.encode().map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::PeerReply { body: body.into() }))
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn raft(&self, request: Request<pb::RaftRequest>) -> Result<Response<pb::PeerReply>, Status> {
        self.answer(&request.into_inner().body).await
    }

    async fn forward(&self, request: Request<pb::ForwardRequest>) -> Result<Response<pb::PeerReply>, Status> {
        self.answer(&request.into_inner().command).await
    }

    async fn live(&self, request: Request<pb::LiveRequest>) -> Result<Response<pb::PeerReply>, Status> {
        self.answer(&request.into_inner().messages).await
    }

    async fn hello(&self, request: Request<pb::HelloRequest>) -> Result<Response<pb::PeerReply>, Status> {
        self.answer(&request.into_inner().body).await
    }

    async fn join(&self, request: Request<pb::JoinRequest>) -> Result<Response<pb::PeerReply>, Status> {
        self.answer(&request.into_inner().body).await
    }

    async fn status(&self, request: Request<pb::StatusRequest>) -> Result<Response<pb::PeerReply>, Status> {
        self.answer(&request.into_inner().body).await
    }

    async fn relay(&self, request: Request<pb::RelayRequest>) -> Result<Response<pb::PeerReply>, Status> {
        self.answer(&request.into_inner().body).await
    }
}

//! What nodes say to each other, and the `Transport` trait that carries it:
//! gRPC between processes (`grpc.rs`) or direct calls inside one process
//! (`local.rs`). Both are used through `Mesh`, which adds timeouts, injected
//! faults and the record of when each peer was last heard from.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::domain::Message;
use crate::error::BrokerError;
use crate::state::{Command, Response};

use super::relay::{RelayReply, RelayRequest};
use super::status::ClusterView;
use super::types::{NodeId, TypeConfig};

/// Largest encoded node-to-node message; Raft batches are split below it.
pub const MAX_PEER_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// How long a peer may take to answer anything but a Raft RPC.
pub const PEER_CALL_TIMEOUT_MS: u64 = 5_000;

/// A node as its peers know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    /// The advertised gRPC address, `host:port`.
    pub address: String,
}

/// One Raft RPC.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRpc {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
}

/// The answer to one Raft RPC.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftReply {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
}

/// A change of the cluster's membership, carried to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MembershipChange {
    Join(NodeInfo),
    Leave(NodeId),
}

/// Everything one node asks another.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    Raft {
        group: u32,
        rpc: RaftRpc,
    },
    /// A command for the leader of `group` to order and apply.
    Forward {
        group: u32,
        command: Command,
    },
    /// At-most-once messages published on the sender, for local listeners.
    Live(Vec<Message>),
    Hello(NodeInfo),
    Membership(MembershipChange),
    /// The leader's view of the cluster.
    Status,
    /// Deliveries and settlements for a consumer connected to the sender.
    Relay(RelayRequest),
    // Variants are encoded by position: new ones go at the end, so nodes
    // of different versions understand each other during a rolling upgrade.
    /// Hold off elections of `group` for `ms`: its leadership is being
    /// handed to another replica.
    HoldElections {
        group: u32,
        ms: u64,
    },
    /// Campaign for the leadership of `group` after `after_ms`, once the
    /// quiet leader's lease has run out.
    Campaign {
        group: u32,
        after_ms: u64,
    },
    /// A relay request for the engine of shard `group` (`Relay` is group 0's).
    RelayIn {
        group: u32,
        request: RelayRequest,
    },
}

/// What a node answers to `Hello`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HelloReply {
    pub node: NodeInfo,
    /// Whether the node already belongs to a cluster.
    pub initialized: bool,
    pub leader: Option<NodeInfo>,
}

/// Everything one node answers another.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerReply {
    Raft(RaftReply),
    Forward(Result<Response, BrokerError>),
    Live,
    Hello(HelloReply),
    Membership(Result<(), BrokerError>),
    Status(Box<ClusterView>),
    Relay(RelayReply),
    // New variants go at the end (see `PeerRequest`).
    /// The group a Raft RPC named is not open on this node (yet).
    NoSuchGroup(u32),
    /// Done as asked.
    Done,
}

impl PeerRequest {
    pub fn encode(&self) -> Result<Vec<u8>, TransportError> {
        postcard::to_stdvec(self).map_err(|e| TransportError::Codec(e.to_string()))
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, TransportError> {
        postcard::from_bytes(bytes).map_err(|e| TransportError::Codec(e.to_string()))
    }
}

impl PeerReply {
    pub fn encode(&self) -> Result<Vec<u8>, TransportError> {
        postcard::to_stdvec(self).map_err(|e| TransportError::Codec(e.to_string()))
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, TransportError> {
        postcard::from_bytes(bytes).map_err(|e| TransportError::Codec(e.to_string()))
    }
}

/// Why a peer could not be asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    #[error("node {0} is unreachable: {1}")]
    Unreachable(String, String),
    #[error("node {0} did not answer within {1} ms")]
    Timeout(String, u64),
    #[error("node-to-node message could not be encoded or decoded: {0}")]
    Codec(String),
}

pub type PeerFuture = Pin<Box<dyn Future<Output = Result<PeerReply, TransportError>> + Send>>;

/// Carries a request to the node at an address and brings back its answer.
pub trait Transport: Send + Sync + 'static {
    fn call(&self, address: &str, request: PeerRequest) -> PeerFuture;
}

/// Links to cut or slow down, shared by the nodes of a test cluster.
/// Keys are (from, to) advertised addresses; a cut is one direction, and
/// drops calls silently (they time out) like a real partition.
#[derive(Clone, Default)]
pub struct Faults {
    table: Arc<Mutex<FaultTable>>,
}

#[derive(Default)]
struct FaultTable {
    cut: HashSet<(String, String)>,
    delay: HashMap<(String, String), Duration>,
}

impl Faults {
    /// Cuts both directions between `a` and `b`.
    pub fn partition(&self, a: &str, b: &str) {
        let mut table = self.table.lock().expect("faults lock");
        table.cut.insert((a.into(), b.into()));
        table.cut.insert((b.into(), a.into()));
    }

    /// Delays every request from `from` to `to` by `delay`.
    pub fn delay(&self, from: &str, to: &str, delay: Duration) {
        let mut table = self.table.lock().expect("faults lock");
        table.delay.insert((from.into(), to.into()), delay);
    }

    /// Restores every link.
    pub fn heal(&self) {
        let mut table = self.table.lock().expect("faults lock");
        table.cut.clear();
        table.delay.clear();
    }

    /// What happens to a call on the link: `None` when it is cut, else the
    /// delay to add (if any).
    fn check(&self, from: &str, to: &str) -> Option<Option<Duration>> {
        let table = self.table.lock().expect("faults lock");
        let link = (from.to_string(), to.to_string());
        if table.cut.contains(&link) {
            return None;
        }
        Some(table.delay.get(&link).copied())
    }
}

/// A node's links to its peers.
pub struct Mesh {
    me: String,
    transport: Arc<dyn Transport>,
    faults: Faults,
    heard: Mutex<HashMap<NodeId, Instant>>,
}

impl Mesh {
    pub fn new(me: String, transport: Arc<dyn Transport>, faults: Faults) -> Self {
        Self {
            me,
            transport,
            faults,
            heard: Mutex::default(),
        }
    }

    /// Asks the node at `address`, giving up after `timeout`.
    pub async fn call(
        &self,
        address: &str,
        request: PeerRequest,
        timeout: Duration,
    ) -> Result<PeerReply, TransportError> {
        let millis = timeout.as_millis() as u64;
        let Some(delay) = self.faults.check(&self.me, address) else {
            // A cut link drops what is sent, as a real partition does: no
            // answer and no error, until the caller gives up.
            tokio::time::sleep(timeout).await;
            return Err(TransportError::Timeout(address.into(), millis));
        };
        let call = async {
            // An injected delay counts against the caller's timeout, as a slow link would.
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            self.transport.call(address, request).await
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(reply) => reply,
            Err(_) => Err(TransportError::Timeout(address.into(), millis)),
        }
    }

    /// Notes that `node` answered or spoke just now.
    pub fn heard_from(&self, node: NodeId) {
        self.heard
            .lock()
            .expect("heard lock")
            .insert(node, Instant::now());
    }

    /// How long ago `node` was last heard from.
    pub fn heard_ago(&self, node: NodeId) -> Option<Duration> {
        self.heard
            .lock()
            .expect("heard lock")
            .get(&node)
            .map(Instant::elapsed)
    }
}

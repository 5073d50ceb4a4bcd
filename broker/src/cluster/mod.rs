//! Consensus: orders every durable command through openraft before it is
//! applied, across the nodes of a cluster. Only this folder knows openraft.
//!
//! A node with no peers is a one-voter cluster: the same write path as a
//! multi-node cluster, with a quorum of one. Nodes talk through a `Mesh`
//! over a `Transport` (gRPC, or in-process for tests).

// openraft's traits fix `StorageError` (a large type) as the error of every
// storage call; boxing it would only add conversions at each boundary.
#![allow(clippy::result_large_err)]

mod formation;
#[cfg(test)]
mod group_tests;
mod grpc;
mod handover;
mod inbound;
mod local;
mod log_store;
mod membership;
mod monitor;
mod network;
mod placement;
mod propose;
mod relay;
mod removal;
#[cfg(test)]
mod shard_tests;
mod shards;
mod snapshot_file;
mod snapshots;
mod state_machine;
mod status;
#[cfg(test)]
mod suite;
#[cfg(test)]
mod test_groups;
mod transport;
#[cfg(test)]
mod transport_tests;
mod types;
mod view;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use openraft::ServerState;
use tokio::sync::{mpsc, watch};

use crate::domain::Message;
use crate::error::BrokerError;
use crate::state::{Applied, StateMachine};
use crate::storage::{Cf, Store};

pub use grpc::{GrpcTransport, PeerService};
pub use inbound::{LIVE_INBOX_BATCHES, PeerHandler};
pub use local::LocalNetwork;
pub use log_store::LogStore;
pub use relay::{
    RELAY_INBOX, RelayCall, RelayReply, RelayRequest, RelayedDelivery, RelayedStats, RemoteConsumer,
};
pub use shards::{DEFAULT_SHARDS, GroupParts, GroupSource, ShardOptions, Shards};
pub use state_machine::StateMachineStore;
pub use status::{ClusterView, GroupView, NodeView, Role};
pub use transport::{Faults, MembershipChange, NodeInfo, PEER_CALL_TIMEOUT_MS, Transport};
pub use types::{NodeId, TypeConfig};

use transport::{Mesh, PeerRequest};

/// How long a proposal may wait for its commit before the caller is told to retry.
pub const PROPOSE_TIMEOUT_MS: u64 = 10_000;
/// How long a starting one-node cluster waits to lead itself.
pub const ELECTION_WAIT_MS: u64 = 30_000;
/// Default heartbeat interval; generous, since a loaded 2-core machine stalls.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 250;
/// Default lower bound of the election timeout; the upper bound is twice it.
pub const DEFAULT_ELECTION_TIMEOUT_MS: u64 = 1_000;
/// Log entries between snapshots; the log is purged up to a snapshot.
pub const DEFAULT_SNAPSHOT_EVERY_ENTRIES: u64 = 50_000;
/// Entries proposed at once per append, and per replication message.
pub const MAX_PAYLOAD_ENTRIES: u64 = 512;
/// The node's first Raft group, opened with it: it holds the membership.
pub const MAIN_GROUP: u32 = hermod_proto::routing::META_GROUP;

/// How a node takes part in its cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub node_id: NodeId,
    /// The gRPC address peers and clients reach this node at.
    pub advertise: String,
    /// Addresses of nodes to join or form a cluster with.
    pub seeds: Vec<String>,
    /// A DNS name and port whose addresses are seeds too, re-resolved on
    /// every round of formation.
    pub discovery: Option<(String, u16)>,
    /// Nodes that must see each other before a fresh cluster forms.
    pub expect_nodes: u32,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    pub fsync: bool,
    /// Where snapshot files are kept.
    pub snapshot_dir: PathBuf,
    pub snapshot_every_entries: u64,
}

/// One Raft group of this node; cheap to clone. The node's first group
/// (group 0) is opened with the node and carries its membership; other
/// groups are opened beside it and share its links and options.
#[derive(Clone)]
pub struct Consensus {
    inner: Arc<Inner>,
}

struct Inner {
    group: u32,
    raft: types::Raft,
    /// The group's state machine, for what consensus reads of it (group
    /// 0's placement record).
    machine: StateMachine,
    /// The replica this node, as leader, is handing the group over to.
    handing: handover::Handing,
    leading: watch::Receiver<bool>,
    node: Arc<Node>,
}

/// What the groups of one node share.
struct Node {
    me: NodeInfo,
    mesh: Arc<Mesh>,
    options: ClusterOptions,
    /// Set once this node learned it was removed from the cluster.
    removed: std::sync::atomic::AtomicBool,
    /// A random number drawn when this node's database was created: tells
    /// this database from an earlier one of the same node id.
    incarnation: u64,
    /// Nodes leaving the cluster, whose shards are being moved elsewhere;
    /// kept by group 0's leader.
    leaving: std::sync::Mutex<std::collections::BTreeSet<NodeId>>,
    /// Every group open on this node, for the RPCs peers address to them.
    /// Weak: a group lives as long as its owner holds it.
    groups: RwLock<BTreeMap<u32, Weak<Inner>>>,
}

fn raft_config(options: &ClusterOptions) -> Result<Arc<openraft::Config>, BrokerError> {
    let config = openraft::Config {
        cluster_name: "hermod".into(),
        heartbeat_interval: options.heartbeat_interval_ms,
        election_timeout_min: options.election_timeout_ms,
        election_timeout_max: options.election_timeout_ms * 2,
        // Replication and snapshot RPCs get several heartbeats' time before
        // they count as failed.
        install_snapshot_timeout: options.election_timeout_ms * 4,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(options.snapshot_every_entries),
        // What a follower a little behind needs is kept; one further behind
        // gets the snapshot.
        max_in_snapshot_log_to_keep: options.snapshot_every_entries / 50,
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        ..Default::default()
    };
    config
        .validate()
        .map(Arc::new)
        .map_err(|e| BrokerError::Config(format!("raft: {e}")))
}

impl Consensus {
    /// Opens this node's group 0 on `store`. The node serves Raft RPCs
    /// from now on; [`Consensus::form`] makes it part of a cluster.
    pub async fn open(
        options: ClusterOptions,
        store: Arc<dyn Store>,
        machine: StateMachine,
        events: mpsc::Sender<Vec<Applied>>,
        transport: Arc<dyn Transport>,
        faults: Faults,
    ) -> Result<Self, BrokerError> {
        let me = NodeInfo {
            id: options.node_id,
            address: options.advertise.clone(),
        };
        let incarnation = incarnation(store.as_ref()).map_err(internal)?;
        let node = Arc::new(Node {
            incarnation,
            mesh: Arc::new(Mesh::new(me.address.clone(), transport, faults)),
            me,
            options,
            removed: std::sync::atomic::AtomicBool::new(false),
            leaving: std::sync::Mutex::default(),
            groups: RwLock::default(),
        });
        let consensus = Self::open_on(node, MAIN_GROUP, store, machine, events).await?;
        let tick = Duration::from_millis(consensus.options().election_timeout_ms / 2);
        tokio::spawn(monitor::run(Arc::downgrade(&consensus.inner), tick));
        tokio::spawn(removal::watch(Arc::downgrade(&consensus.inner)));
        Ok(consensus)
    }

    /// Opens another Raft group on this node, its log and state machine on
    /// `store` (the group's keyspace). It takes part once the group's
    /// members replicate to it, or once it initialises the group.
    pub async fn open_group(
        &self,
        group: u32,
        store: Arc<dyn Store>,
        machine: StateMachine,
        events: mpsc::Sender<Vec<Applied>>,
    ) -> Result<Self, BrokerError> {
        if self.group(group).is_some() {
            return Err(BrokerError::Internal(format!(
                "group {group} is already open on this node"
            )));
        }
        Self::open_on(self.inner.node.clone(), group, store, machine, events).await
    }

    async fn open_on(
        node: Arc<Node>,
        group: u32,
        store: Arc<dyn Store>,
        machine: StateMachine,
        events: mpsc::Sender<Vec<Applied>>,
    ) -> Result<Self, BrokerError> {
        let log = LogStore::new(store, node.options.fsync);
        let sm = StateMachineStore::new(machine.clone(), events, &snapshot_dir(&node.options, group))
            .map_err(internal)?;
        let network = network::Network::new(node.mesh.clone(), group);
        let raft = types::Raft::new(node.me.id, raft_config(&node.options)?, network, log, sm)
            .await
            .map_err(internal)?;
        let leading = view::watch_leadership(&raft, node.me.id);
        let inner = Arc::new(Inner {
            group,
            raft,
            machine,
            handing: handover::Handing::default(),
            leading,
            node: node.clone(),
        });
        node.groups
            .write()
            .expect("groups lock")
            .insert(group, Arc::downgrade(&inner));
        Ok(Self { inner })
    }

    /// This node's group `group`, while it is open.
    pub fn group(&self, group: u32) -> Option<Consensus> {
        let groups = self.inner.node.groups.read().expect("groups lock");
        let inner = groups.get(&group)?.upgrade()?;
        Some(Consensus { inner })
    }

    /// This node's database incarnation.
    pub fn incarnation(&self) -> u64 {
        self.inner.node.incarnation
    }

    /// The id of this handle's group.
    pub fn group_id(&self) -> u32 {
        self.inner.group
    }

    /// Makes this node part of a cluster: a restarted member rejoins with
    /// its data; a fresh node forms or joins one as its options say. A
    /// one-node cluster returns once it leads; otherwise formation goes on
    /// until it succeeds or `stop` is set.
    pub async fn form(&self, stop: watch::Receiver<bool>) -> Result<(), BrokerError> {
        formation::form(self, stop).await
    }

    /// The handler of requests from peers, delivering their live messages
    /// to `live` and relay requests to `relay`.
    pub fn handler(
        &self,
        live: mpsc::Sender<Vec<Message>>,
        relay: mpsc::Sender<RelayCall>,
    ) -> Arc<PeerHandler> {
        PeerHandler::new(self.clone(), live, relay)
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.node.me.id
    }

    pub fn me(&self) -> &NodeInfo {
        &self.inner.node.me
    }

    fn raft(&self) -> &types::Raft {
        &self.inner.raft
    }

    fn mesh(&self) -> &Mesh {
        &self.inner.node.mesh
    }

    fn options(&self) -> &ClusterOptions {
        &self.inner.node.options
    }

    /// True while this node leads.
    pub fn is_leader(&self) -> bool {
        *self.inner.leading.borrow()
    }

    /// True while this node leads and a quorum acknowledged it within one
    /// election timeout. Followers refuse to vote for that long after they
    /// last heard from a leader, so no later leader can exist yet: leases
    /// granted now cannot overlap those of a newer term. A leader cut off
    /// in a minority stops handing out messages once this turns false.
    pub fn leads_with_quorum(&self) -> bool {
        if !self.is_leader() {
            return false;
        }
        let limit = self.options().election_timeout_ms;
        self.raft()
            .metrics()
            .borrow()
            .millis_since_quorum_ack
            .is_some_and(|ms| ms < limit)
    }

    /// Waits until everything committed before now is applied here; this
    /// node must lead. A read of the state machine after it sees every write
    /// that was answered before it began.
    pub async fn read_barrier(&self) -> Result<(), BrokerError> {
        self.raft().ensure_linearizable().await.map(|_| ()).map_err(|e| {
            BrokerError::Unavailable(format!(
                "group {} cannot confirm its leadership: {e}; retry",
                self.group_id()
            ))
        })
    }

    /// Changes to true when this node becomes leader, to false when it stops leading.
    pub fn leadership(&self) -> watch::Receiver<bool> {
        self.inner.leading.clone()
    }

    /// The current leader, if one is known.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft().metrics().borrow().current_leader
    }

    /// The current leader and its address, if known.
    pub fn leader_info(&self) -> Option<NodeInfo> {
        let watch = self.raft().metrics();
        let metrics = watch.borrow();
        let id = metrics.current_leader?;
        let node = metrics.membership_config.membership().get_node(&id)?.clone();
        Some(NodeInfo {
            id,
            address: node.addr,
        })
    }

    /// Where to send this group's writes: its leader when known, else, on
    /// a node that holds no replica of a shard (and so never hears from
    /// its leader), the leader its placement names.
    pub fn leader_or_placed(&self) -> Option<NodeInfo> {
        if let Some(leader) = self.leader_info() {
            return Some(leader);
        }
        let main = self.group(MAIN_GROUP).filter(|_| self.group_id() != MAIN_GROUP)?;
        let id = main.placement()?.placed.get(&self.group_id())?.target.leader;
        let watch = main.raft().metrics();
        let node = watch
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)?
            .clone();
        Some(NodeInfo {
            id,
            address: node.addr,
        })
    }

    /// Every member of the cluster (voters and learners) but this node.
    pub fn peers(&self) -> Vec<NodeInfo> {
        let watch = self.raft().metrics();
        let metrics = watch.borrow();
        metrics
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != self.node_id())
            .map(|(id, node)| NodeInfo {
                id: *id,
                address: node.addr.clone(),
            })
            .collect()
    }

    /// The voters of the current membership.
    pub fn voters(&self) -> Vec<NodeId> {
        self.raft()
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    async fn is_initialized(&self) -> bool {
        self.raft().is_initialized().await.unwrap_or(false)
    }

    /// Sends at-most-once messages to every other member, for their live
    /// listeners and (on the leader) durable subscriptions. Best effort.
    pub fn broadcast_live(&self, messages: Vec<Message>) {
        if messages.is_empty() {
            return;
        }
        let peers = self.peers();
        if peers.is_empty() {
            return;
        }
        let messages = Arc::new(messages);
        for peer in peers {
            let this = self.clone();
            let messages = messages.clone();
            tokio::spawn(async move {
                let request = PeerRequest::Live(messages.as_ref().clone());
                let timeout = Duration::from_millis(transport::PEER_CALL_TIMEOUT_MS);
                if let Err(e) = this.mesh().call(&peer.address, request, timeout).await {
                    tracing::debug!("live messages to node {} lost: {e}", peer.id);
                }
            });
        }
    }

    /// Waits until this node leads, or `timeout` passes.
    async fn wait_leading(&self, timeout: Duration) -> Result<(), BrokerError> {
        self.raft()
            .wait(Some(timeout))
            .state(ServerState::Leader, "this node leads")
            .await
            .map(|_| ())
            .map_err(|e| BrokerError::Unavailable(format!("this node did not become leader: {e}")))
    }

    /// Whether this node learned that the cluster removed it; it takes no
    /// part in consensus any more.
    pub fn was_removed(&self) -> bool {
        self.inner.node.removed.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn mark_removed(&self) {
        self.inner
            .node
            .removed
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Shuts down every group open on this node.
    pub async fn shutdown(&self) {
        let groups: Vec<Arc<Inner>> = {
            let groups = self.inner.node.groups.read().expect("groups lock");
            groups.values().filter_map(Weak::upgrade).collect()
        };
        for inner in groups {
            if let Err(e) = inner.raft.shutdown().await {
                tracing::warn!("raft shutdown of group {}: {e}", inner.group);
            }
        }
    }
}

/// Where group 0 keeps this database's incarnation, beside its vote.
const INCARNATION_KEY: &[u8] = b"incarnation";

/// This database's incarnation, drawn and stored (fsynced) at its first open.
fn incarnation(store: &dyn Store) -> Result<u64, crate::storage::StorageError> {
    if let Some(bytes) = store.get(Cf::RaftMeta, INCARNATION_KEY)? {
        return crate::storage::decode(Cf::RaftMeta, &bytes);
    }
    let drawn: u64 = rand::random::<u64>().max(1);
    let mut batch = crate::storage::Batch::default();
    batch.put(
        Cf::RaftMeta,
        INCARNATION_KEY.to_vec(),
        crate::storage::encode(&drawn),
    );
    store.write(batch, true)?;
    Ok(drawn)
}

/// Where a group keeps its snapshot files: group 0 where a node of one
/// group always kept them, every other group in a folder of its own.
fn snapshot_dir(options: &ClusterOptions, group: u32) -> PathBuf {
    if group == MAIN_GROUP {
        options.snapshot_dir.clone()
    } else {
        options.snapshot_dir.join(format!("group-{group}"))
    }
}

fn internal(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Internal(format!("consensus: {e}"))
}

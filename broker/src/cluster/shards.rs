//! The shard groups of this node, driven by group 0's placement record.
//! The leader of group 0 places the shards over the members (a pure
//! function, `placement.rs`) and records the targets; every node opens the
//! shards of the record; a shard's founder initialises it once; and each
//! shard's leader moves the group's replicas toward its target — a new
//! replica joins as a learner, catches up, then votes; one no longer
//! wanted is removed — and hands the leadership to the target's leader.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use openraft::{BasicNode, ChangeMembers};
use tokio::sync::mpsc;

use crate::error::BrokerError;
use crate::state::{Applied, Command, PlacementRecord, Response, ShardTarget, StateMachine};
use crate::storage::Store;

use super::Consensus;
use super::placement;
use super::transport::{PeerReply, PeerRequest};
use super::types::NodeId;

/// Shard groups of a cluster whose first node does not choose.
pub const DEFAULT_SHARDS: u32 = 8;
/// How often each node looks at the placement record and acts on it.
pub const PLACEMENT_TICK_MS: u64 = 500;
/// Pause between two attempts of one node to hand a shard's leadership over.
pub const HANDOVER_RETRY_MS: u64 = 10_000;
/// How long a new replica may take to catch up before its leader tries again.
pub const CATCH_UP_TIMEOUT_MS: u64 = 120_000;

/// The shape of the cluster's shards, used when the cluster first places
/// them; afterwards the record's own values hold.
#[derive(Debug, Clone, Copy)]
pub struct ShardOptions {
    pub shards: u32,
    /// Replicas per shard; `None` is three, or every node of a smaller cluster.
    pub replication_factor: Option<usize>,
}

/// What a node needs to open one of its shard groups.
pub struct GroupParts {
    /// The group's keyspace of the node's store.
    pub store: Arc<dyn Store>,
    pub machine: StateMachine,
    /// Where what applying its entries changed goes.
    pub events: mpsc::Sender<Vec<Applied>>,
    /// Called once the group is open, to start what serves it.
    pub started: Box<dyn FnOnce(Consensus) + Send>,
}

/// Opens the parts of a shard group on demand.
pub type GroupSource = Arc<dyn Fn(u32) -> Result<GroupParts, BrokerError> + Send + Sync>;

/// This node's shard groups; cheap to clone. They stay open while it lives.
#[derive(Clone)]
pub struct Shards {
    inner: Arc<ShardsInner>,
}

struct ShardsInner {
    main: Consensus,
    options: ShardOptions,
    source: GroupSource,
    open: Mutex<BTreeMap<u32, Consensus>>,
    /// Shards whose membership or leadership is being changed: one change
    /// at a time each.
    changing: Mutex<BTreeSet<u32>>,
    /// When each shard's leadership was last handed over from this node.
    handovers: Mutex<BTreeMap<u32, std::time::Instant>>,
}

impl Shards {
    /// Starts driving this node's shards from group 0 (`main`).
    pub fn start(main: Consensus, options: ShardOptions, source: GroupSource) -> Self {
        let shards = Self {
            inner: Arc::new(ShardsInner {
                main,
                options,
                source,
                open: Mutex::default(),
                changing: Mutex::default(),
                handovers: Mutex::default(),
            }),
        };
        tokio::spawn(drive(Arc::downgrade(&shards.inner)));
        shards
    }

    /// The placement record as this node's replica of group 0 has it.
    pub fn record(&self) -> Option<PlacementRecord> {
        self.inner.main.placement()
    }

    /// This node's replica of `shard`, once open.
    pub fn group(&self, shard: u32) -> Option<Consensus> {
        self.inner.open.lock().expect("shards lock").get(&shard).cloned()
    }
}

/// Acts on the placement record every tick, until the node is dropped or removed.
async fn drive(inner: Weak<ShardsInner>) {
    loop {
        tokio::time::sleep(Duration::from_millis(PLACEMENT_TICK_MS)).await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.main.was_removed() {
            return;
        }
        let shards = Shards { inner };
        if shards.inner.main.leads_with_quorum()
            && let Err(e) = shards.place().await
        {
            tracing::debug!("placing shards: {e}");
        }
        if let Some(record) = shards.record() {
            shards.follow(&record).await;
        }
    }
}

impl Shards {
    /// On group 0's leader: records new targets when the members changed.
    async fn place(&self) -> Result<(), BrokerError> {
        let record = self.record();
        let voters: BTreeSet<NodeId> = self.inner.main.voters().into_iter().collect();
        // Leaving nodes hand their replicas over before they go.
        let leaving = self
            .inner
            .main
            .inner
            .node
            .leaving
            .lock()
            .expect("leaving lock")
            .clone();
        let members: BTreeSet<NodeId> = match voters.difference(&leaving).copied().collect::<BTreeSet<_>>() {
            staying if staying.is_empty() => voters,
            staying => staying,
        };
        let (shards, factor) = match &record {
            Some(record) => (record.shards, record.factor as usize),
            None => {
                let factor = placement::replication_factor(self.inner.options.replication_factor, usize::MAX);
                // A data directory from before shards keeps its topics in
                // group 0, where they are: such a cluster gets no shards.
                let shards = match self.inner.main.holds_topics() {
                    true => 0,
                    false => self.inner.options.shards,
                };
                (shards, factor)
            }
        };
        let current = match &record {
            Some(record) => record.targets(),
            None => (1..=shards).map(|shard| (shard, BTreeSet::new())).collect(),
        };
        let leading: BTreeMap<u32, NodeId> = record
            .iter()
            .flat_map(|record| record.placed.iter().map(|(shard, p)| (*shard, p.target.leader)))
            .collect();
        let wanted: BTreeMap<u32, ShardTarget> = placement::place(
            &members,
            placement::replication_factor(Some(factor), members.len()),
            &current,
            &leading,
        );
        let unchanged = record.as_ref().is_some_and(|record| {
            wanted
                .iter()
                .all(|(shard, target)| record.placed.get(shard).is_some_and(|p| p.target == *target))
        });
        if unchanged {
            return Ok(());
        }
        let command = Command::Place {
            shards,
            factor: factor as u32,
            targets: wanted,
        };
        match self.inner.main.propose(command).await? {
            Response::Placed(record) => {
                tracing::info!(
                    "shards placed (version {}) over nodes {members:?}",
                    record.version
                );
                Ok(())
            }
            other => Err(BrokerError::Internal(format!(
                "unexpected answer to a placement: {other:?}"
            ))),
        }
    }

    /// On every node: opens the record's shards, founds those this node
    /// founds, and moves the replicas of those it leads.
    async fn follow(&self, record: &PlacementRecord) {
        let me = self.inner.main.node_id();
        for (shard, placed) in &record.placed {
            let group = match self.group(*shard) {
                Some(group) => group,
                None => match self.open(*shard).await {
                    Ok(group) => group,
                    Err(e) => {
                        tracing::warn!("shard {shard} cannot be opened on this node: {e}");
                        continue;
                    }
                },
            };
            if placed.founder == me && !group.is_initialized().await {
                self.found(&group, &placed.founders).await;
            }
            if !group.is_leader() {
                continue;
            }
            let successor = placed.target.leader;
            if successor != me && group.can_take_over(successor) && self.may_hand_over(*shard) {
                self.move_leadership(group, successor);
            } else {
                self.reconcile(group, placed.target.replicas.clone());
            }
        }
    }

    async fn open(&self, shard: u32) -> Result<Consensus, BrokerError> {
        let parts = (self.inner.source)(shard)?;
        let group = self
            .inner
            .main
            .open_group(shard, parts.store, parts.machine, parts.events)
            .await?;
        (parts.started)(group.clone());
        self.inner
            .open
            .lock()
            .expect("shards lock")
            .insert(shard, group.clone());
        Ok(group)
    }

    /// Initialises `group` with `founders`: done once, by its founder only,
    /// so a shard is never formed twice.
    async fn found(&self, group: &Consensus, founders: &BTreeSet<NodeId>) {
        let addresses = self.addresses();
        let Some(members) = founders
            .iter()
            .map(|id| {
                Some((
                    *id,
                    BasicNode {
                        addr: addresses.get(id)?.clone(),
                    },
                ))
            })
            .collect::<Option<BTreeMap<NodeId, BasicNode>>>()
        else {
            tracing::warn!(
                "shard {} cannot be founded: a founder is no longer a member",
                group.group_id()
            );
            return;
        };
        let claim = Command::ClaimFounding {
            shard: group.group_id(),
            incarnation: self.inner.main.incarnation(),
        };
        match self.inner.main.propose(claim).await {
            Ok(Response::Claimed(true)) => {}
            Ok(_) => {
                tracing::warn!(
                    "shard {} was founded from another database of this node id; it is not founded again",
                    group.group_id()
                );
                return;
            }
            Err(e) => {
                tracing::debug!("shard {}: the founding claim failed: {e}", group.group_id());
                return;
            }
        }
        match group.raft().initialize(members).await {
            Ok(()) => tracing::info!("shard {} founded with nodes {founders:?}", group.group_id()),
            Err(e) => tracing::debug!("shard {} was founded already: {e}", group.group_id()),
        }
    }

    /// Every member of the cluster and its address, from group 0.
    fn addresses(&self) -> BTreeMap<NodeId, String> {
        let main = &self.inner.main;
        let mut addresses: BTreeMap<NodeId, String> =
            main.peers().into_iter().map(|n| (n.id, n.address)).collect();
        addresses.insert(main.node_id(), main.me().address.clone());
        addresses
    }

    /// Whether this node's last handover of `shard` is long enough ago.
    fn may_hand_over(&self, shard: u32) -> bool {
        let tried = self.inner.handovers.lock().expect("handovers lock");
        tried
            .get(&shard)
            .is_none_or(|at| at.elapsed() >= Duration::from_millis(HANDOVER_RETRY_MS))
    }

    /// On a shard's leader that should not lead it: hands the leadership
    /// to `successor` in the background, at most once per
    /// [`HANDOVER_RETRY_MS`].
    fn move_leadership(&self, group: Consensus, successor: NodeId) {
        let shard = group.group_id();
        if !self.inner.changing.lock().expect("changing lock").insert(shard) {
            return;
        }
        let now = std::time::Instant::now();
        self.inner
            .handovers
            .lock()
            .expect("handovers lock")
            .insert(shard, now);
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = group.hand_over(successor).await {
                tracing::info!("shard {shard}: handing the leadership to node {successor}: {e}");
            }
            this.inner.changing.lock().expect("changing lock").remove(&shard);
        });
    }

    /// On a shard's leader: moves its replicas one membership change
    /// toward `target`, in the background, one change per shard at a time.
    fn reconcile(&self, group: Consensus, target: BTreeSet<NodeId>) {
        let shard = group.group_id();
        if !self.inner.changing.lock().expect("changing lock").insert(shard) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.change(&group, &target).await {
                tracing::info!("shard {shard}: moving replicas toward {target:?}: {e}; retrying");
            }
            this.inner.changing.lock().expect("changing lock").remove(&shard);
        });
    }

    async fn change(&self, group: &Consensus, target: &BTreeSet<NodeId>) -> Result<(), BrokerError> {
        let shard = group.group_id();
        let members = group
            .raft()
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .clone();
        let voters: BTreeSet<NodeId> = members.voter_ids().collect();
        let missing: BTreeSet<NodeId> = target.difference(&voters).copied().collect();
        if !missing.is_empty() {
            let addresses = self.addresses();
            for id in &missing {
                let Some(address) = addresses.get(id) else {
                    continue;
                };
                // A learner already added is waited for again: it votes only once caught up.
                let node = BasicNode {
                    addr: address.clone(),
                };
                let add = group.raft().add_learner(*id, node, true);
                match tokio::time::timeout(Duration::from_millis(CATCH_UP_TIMEOUT_MS), add).await {
                    Ok(result) => result.map_err(change_error)?,
                    Err(_) => return Err(BrokerError::Unavailable(format!("node {id} did not catch up"))),
                };
            }
            let ready: BTreeSet<NodeId> = missing
                .into_iter()
                .filter(|id| addresses.contains_key(id))
                .collect();
            group
                .raft()
                .change_membership(ChangeMembers::AddVoterIds(ready.clone()), false)
                .await
                .map_err(change_error)?;
            tracing::info!("shard {shard}: nodes {ready:?} are replicas now");
            return Ok(());
        }
        let extra: BTreeSet<NodeId> = voters.difference(target).copied().collect();
        if !extra.is_empty() {
            group
                .raft()
                .change_membership(ChangeMembers::RemoveVoters(extra.clone()), false)
                .await
                .map_err(change_error)?;
            tracing::info!("shard {shard}: nodes {extra:?} are no longer replicas");
        }
        Ok(())
    }
}

fn change_error(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(format!("membership change failed: {e}"))
}

impl Consensus {
    /// Group 0's placement record, as this node's replica has it.
    pub fn placement(&self) -> Option<PlacementRecord> {
        self.inner.machine.catalog().placement.clone()
    }

    /// Whether this group holds topics of users (not the broker's own).
    fn holds_topics(&self) -> bool {
        self.inner
            .machine
            .catalog()
            .topics
            .keys()
            .any(|topic| !topic.is_reserved())
    }

    /// On group 0's leader, before node `id` is removed: has the shards
    /// placed without it and waits until no shard keeps it as a replica,
    /// so its leaving costs no shard a replica. Fails, retryably, when
    /// that takes longer than a membership change may.
    pub(super) async fn drain(&self, id: NodeId) -> Result<(), BrokerError> {
        if self.placement().is_none() {
            return Ok(());
        }
        self.inner.node.leaving.lock().expect("leaving lock").insert(id);
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(super::membership::MEMBERSHIP_TIMEOUT_MS);
        loop {
            if let Some(record) = self.placement()
                && record.placed.values().all(|p| !p.target.replicas.contains(&id))
                && self.shards_left_by(id, &record).await
            {
                tracing::info!("node {id} holds no shard replica any more");
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(BrokerError::Unavailable(format!(
                    "node_id: the shards of node {id} are still moving to other nodes; retry the leave"
                )));
            }
            tokio::time::sleep(Duration::from_millis(PLACEMENT_TICK_MS)).await;
        }
    }

    /// Whether the leader of every shard of `record`, as it reports itself,
    /// no longer counts `id` among the shard's replicas.
    async fn shards_left_by(&self, id: NodeId, record: &PlacementRecord) -> bool {
        let timeout = Duration::from_millis(super::PEER_CALL_TIMEOUT_MS);
        let mut views = vec![self.local_status()];
        for peer in self.peers() {
            if let Ok(PeerReply::Status(view)) = self
                .mesh()
                .call(&peer.address, PeerRequest::Status, timeout)
                .await
            {
                views.push(*view);
            }
        }
        // A shard never founded has no replica to move.
        let founded = record.placed.iter().filter(|(_, p)| p.founded.is_some());
        founded.map(|(shard, _)| shard).all(|shard| {
            let name = super::view::group_name(*shard);
            views.iter().any(|view| {
                view.groups
                    .iter()
                    .any(|g| g.name == name && leads_without(view.node_id, g, id))
            })
        })
    }
}

/// Whether `node` reports leading `group` and `id` has no part in it: a
/// leader that removed itself leads on for a moment, so it does not count.
fn leads_without(node: NodeId, group: &super::GroupView, id: NodeId) -> bool {
    node != id && group.leader == Some(node) && !group.replicas.contains(&id)
}

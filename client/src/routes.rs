//! The routing table: which node leads each shard group, learnt from the
//! cluster's status, so a publish goes straight to its topic's leader.
//!
//! Routing is an optimisation, never a condition for correctness: any node
//! serves any request by forwarding it. So a topic without a known leader,
//! or whose leader's address failed, goes to the seed connection, and the
//! table is refreshed in the background when it is old, when a node says
//! it forwarded a routed request, or when a routed request failed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hermod_proto::routing::{META_GROUP, group_of};
use tonic::transport::Channel;

use crate::cluster::ClusterStatus;
use crate::connection::make_endpoint;
use crate::error::Result;
use crate::options::ClientOptions;

/// A table older than this is refreshed on its next use.
pub(crate) const ROUTES_MAX_AGE_MS: u64 = 10_000;
/// The shortest time between two refreshes, however often they are asked for.
pub(crate) const ROUTES_MIN_REFRESH_MS: u64 = 500;
/// How long connecting waits for the first table.
pub(crate) const ROUTES_LEARN_TIMEOUT_MS: u64 = 2_000;
/// How long an address that failed is not routed to.
pub(crate) const UNREACHABLE_COOLDOWN_MS: u64 = 30_000;
/// Most direct channels kept; a cluster has at most this many leaders that matter.
const MAX_ROUTED_CHANNELS: usize = 64;

/// Where each group's leader is, as one node saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RouteTable {
    shards: u32,
    /// Group id → the leader's gRPC address.
    leaders: HashMap<u32, String>,
}

impl RouteTable {
    /// The table in a status: each group's leader, by its address in the
    /// node list. Groups the answering node leads get no route: the seed
    /// connection already goes there.
    pub(crate) fn from_status(status: &ClusterStatus) -> Self {
        let leaders = (META_GROUP..=status.shards)
            .filter_map(|group| {
                let leader = status.group_leader(group)?;
                (leader.id != status.node_id).then(|| (group, leader.address.clone()))
            })
            .collect();
        Self {
            shards: status.shards,
            leaders,
        }
    }

    /// The address of the leader of `topic`'s group, if known.
    pub(crate) fn leader_of(&self, topic: &str) -> Option<&str> {
        self.leaders
            .get(&group_of(topic, self.shards))
            .map(String::as_str)
    }

    fn forget(&mut self, address: &str) {
        self.leaders.retain(|_, leader| leader != address);
    }
}

/// The client's routing state: the table, direct channels, and when to
/// refresh.
pub(crate) struct Router {
    options: ClientOptions,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    table: Option<RouteTable>,
    /// When the table in use was fetched.
    fetched_at: Option<Instant>,
    /// When a refresh last began; none is begun sooner than
    /// [`ROUTES_MIN_REFRESH_MS`] after it.
    refresh_began: Option<Instant>,
    /// Set when the table is known to be wrong somewhere.
    stale: bool,
    channels: HashMap<String, Channel>,
    /// Addresses that failed, and when they may be tried again.
    unreachable: HashMap<String, Instant>,
}

impl Router {
    pub(crate) fn new(options: ClientOptions) -> Self {
        Self {
            options,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("router state lock")
    }

    /// Where to send a message for `topic`: a leader's address, or `None`
    /// for the seed connection.
    pub(crate) fn destination(&self, topic: &str) -> Option<String> {
        if !self.options.route_to_leaders {
            return None;
        }
        let mut state = self.state();
        let address = state.table.as_ref()?.leader_of(topic)?.to_owned();
        match state.unreachable.get(&address) {
            Some(until) if Instant::now() < *until => None,
            Some(_) => {
                state.unreachable.remove(&address);
                Some(address)
            }
            None => Some(address),
        }
    }

    /// `items` grouped by where each one's topic goes, in first-seen order
    /// of destination and, within one, in the items' order.
    pub(crate) fn split<T>(
        &self,
        items: impl IntoIterator<Item = T>,
        topic: impl Fn(&T) -> &str,
    ) -> Vec<(Option<String>, Vec<T>)> {
        let mut parts: Vec<(Option<String>, Vec<T>)> = Vec::new();
        for item in items {
            let destination = self.destination(topic(&item));
            match parts.iter_mut().find(|(to, _)| *to == destination) {
                Some((_, part)) => part.push(item),
                None => parts.push((destination, vec![item])),
            }
        }
        parts
    }

    /// A channel to `address`, made on first use; it connects lazily, so a
    /// failure shows on the first call over it.
    pub(crate) fn channel(&self, address: &str) -> Result<Channel> {
        let mut state = self.state();
        if let Some(channel) = state.channels.get(address) {
            return Ok(channel.clone());
        }
        let channel = make_endpoint(&self.options, address, "leader address")?.connect_lazy();
        if state.channels.len() >= MAX_ROUTED_CHANNELS {
            state.channels.clear();
        }
        state.channels.insert(address.to_owned(), channel.clone());
        Ok(channel)
    }

    /// A request routed to `address` failed: stop routing there for a while
    /// and learn the table anew.
    pub(crate) fn forget(&self, address: &str) {
        let mut state = self.state();
        if let Some(table) = state.table.as_mut() {
            table.forget(address);
        }
        state.channels.remove(address);
        let until = Instant::now() + Duration::from_millis(UNREACHABLE_COOLDOWN_MS);
        state.unreachable.insert(address.to_owned(), until);
        state.stale = true;
    }

    /// A routed request reached a node that no longer leads its group.
    pub(crate) fn mark_stale(&self) {
        self.state().stale = true;
    }

    /// Whether a refresh should begin now; if so, it counts as begun.
    pub(crate) fn begin_refresh(&self) -> bool {
        if !self.options.route_to_leaders {
            return false;
        }
        let now = Instant::now();
        let mut state = self.state();
        let old =
            |at: Option<Instant>, ms| at.is_none_or(|at| now.duration_since(at) >= Duration::from_millis(ms));
        let wanted = state.stale || old(state.fetched_at, ROUTES_MAX_AGE_MS);
        if !wanted || !old(state.refresh_began, ROUTES_MIN_REFRESH_MS) {
            return false;
        }
        state.refresh_began = Some(now);
        true
    }

    /// A refresh failed (the seed's node is down, or too old to know the
    /// Cluster service): keep what is known, and ask again only once the
    /// table would be old, rather than on every publish.
    pub(crate) fn refresh_failed(&self) {
        let mut state = self.state();
        state.fetched_at = Some(Instant::now());
        state.stale = false;
    }

    /// Puts in the table read from `status`.
    pub(crate) fn install(&self, status: &ClusterStatus) {
        let table = RouteTable::from_status(status);
        let mut state = self.state();
        tracing::debug!(
            shards = table.shards,
            leaders = table.leaders.len(),
            "routing table learnt"
        );
        state.table = Some(table);
        state.fetched_at = Some(Instant::now());
        state.stale = false;
    }

    #[cfg(test)]
    fn table(&self) -> Option<RouteTable> {
        self.state().table.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{ClusterNode, RaftGroupInfo};

    fn node(id: u64) -> ClusterNode {
        ClusterNode {
            id,
            address: format!("10.0.0.{id}:7400"),
            up: true,
            role: "follower".into(),
            last_heartbeat_age_ms: None,
        }
    }

    fn group(name: &str, leader: Option<u64>) -> RaftGroupInfo {
        RaftGroupInfo {
            name: name.into(),
            leader,
            term: 1,
            replicas: vec![1, 2, 3],
            lag: 0,
            last_log_index: 0,
            applied_index: 0,
        }
    }

    fn status(shards: u32, groups: Vec<RaftGroupInfo>) -> ClusterStatus {
        ClusterStatus {
            node_id: 1,
            quorum: true,
            nodes: vec![node(1), node(2), node(3)],
            groups,
            shards,
        }
    }

    /// A topic name whose group, among `shards`, is `group`.
    fn topic_in(group: u32, shards: u32) -> String {
        (0..1000)
            .map(|n| format!("t.{n}"))
            .find(|t| group_of(t, shards) == group)
            .expect("some topic hashes to every group")
    }

    #[test]
    fn topics_route_to_their_groups_leader() {
        let table = RouteTable::from_status(&status(
            2,
            vec![
                group("main-0", Some(1)),
                group("shard-1", Some(2)),
                group("shard-2", Some(3)),
            ],
        ));
        assert_eq!(table.leader_of(&topic_in(1, 2)), Some("10.0.0.2:7400"));
        assert_eq!(table.leader_of(&topic_in(2, 2)), Some("10.0.0.3:7400"));
        assert_eq!(
            table.leader_of("$cluster.events"),
            None,
            "the answering node leads main-0"
        );
    }

    #[test]
    fn groups_without_a_known_leader_or_address_have_no_route() {
        let mut groups = vec![group("main-0", Some(1)), group("shard-1", None)];
        groups.push(group("shard-2", Some(9)));
        groups.push(group("nonsense", Some(1)));
        let table = RouteTable::from_status(&status(2, groups));
        assert_eq!(table.leader_of(&topic_in(1, 2)), None);
        assert_eq!(
            table.leader_of(&topic_in(2, 2)),
            None,
            "node 9 is not in the node list"
        );
        // No shards: every topic is in main-0.
        let table = RouteTable::from_status(&status(0, vec![group("main-0", Some(3))]));
        assert_eq!(table.leader_of("orders.eu"), Some("10.0.0.3:7400"));
        // A one-node cluster: the seed is the leader of everything.
        let table = RouteTable::from_status(&status(0, vec![group("main-0", Some(1))]));
        assert_eq!(table.leader_of("orders.eu"), None);
    }

    #[test]
    fn a_failed_address_is_not_routed_to_and_makes_the_table_stale() {
        let router = Router::new(ClientOptions::new());
        assert!(router.begin_refresh(), "no table yet");
        assert!(!router.begin_refresh(), "refreshes are spaced out");
        router.refresh_failed();
        assert!(
            !router.begin_refresh(),
            "a failed refresh is not repeated at once"
        );
        router.install(&status(1, vec![group("shard-1", Some(2))]));
        let topic = topic_in(1, 1);
        assert_eq!(router.destination(&topic).as_deref(), Some("10.0.0.2:7400"));
        router.forget("10.0.0.2:7400");
        assert_eq!(router.destination(&topic), None);
        // Even a fresh table naming it again does not route there yet.
        router.install(&status(1, vec![group("shard-1", Some(2))]));
        assert_eq!(router.destination(&topic), None);
        assert_eq!(router.table().unwrap().leader_of(&topic), Some("10.0.0.2:7400"));
    }

    #[test]
    fn items_are_split_by_destination_keeping_their_order() {
        let router = Router::new(ClientOptions::new());
        router.install(&status(
            2,
            vec![group("shard-1", Some(2)), group("shard-2", Some(1))],
        ));
        let (a, b) = (topic_in(1, 2), topic_in(2, 2));
        let parts = router.split([&a, &b, &a], |topic| topic.as_str());
        assert_eq!(
            parts,
            [(Some("10.0.0.2:7400".to_owned()), vec![&a, &a]), (None, vec![&b]),]
        );
    }

    #[test]
    fn routing_can_be_turned_off() {
        let router = Router::new(ClientOptions::new().route_to_leaders(false));
        assert!(!router.begin_refresh());
        router.install(&status(1, vec![group("shard-1", Some(2))]));
        assert_eq!(router.destination(&topic_in(1, 1)), None);
    }

    #[test]
    fn malformed_addresses_are_refused() {
        let router = Router::new(ClientOptions::new());
        assert!(router.channel("http://bad host").is_err());
    }
}

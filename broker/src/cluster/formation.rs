//! Forming a cluster. A restarted member rejoins with its data; a fresh node
//! with no seeds initialises a one-node cluster; a fresh node with seeds
//! joins the cluster a seed belongs to, or, with `expect_nodes`, forms a new
//! one once that many fresh nodes see each other (the smallest node id
//! initialises it).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::BasicNode;
use tokio::sync::watch;

use crate::error::BrokerError;

use super::transport::{HelloReply, MembershipChange, NodeInfo, PeerReply, PeerRequest};
use super::{Consensus, ELECTION_WAIT_MS};

/// Pause between rounds of asking the seeds.
pub const FORMATION_RETRY_MS: u64 = 500;
/// How long one seed may take to say hello.
pub const HELLO_TIMEOUT_MS: u64 = 2_000;
/// Rounds between two progress lines in the log.
const ROUNDS_PER_LOG_LINE: u64 = 20;

pub async fn form(consensus: &Consensus, mut stop: watch::Receiver<bool>) -> Result<(), BrokerError> {
    if consensus.is_initialized().await {
        tracing::info!("rejoining the cluster with the data in this directory");
        if consensus.voters() == [consensus.node_id()] {
            return lead_alone(consensus).await;
        }
        return Ok(());
    }
    let options = consensus.options().clone();
    if options.seeds.is_empty() && options.discovery.is_none() {
        if options.expect_nodes > 1 {
            return Err(BrokerError::Config(format!(
                "expect_nodes: {} nodes are expected but no seeds (--join) name them",
                options.expect_nodes
            )));
        }
        return initialize(consensus, vec![consensus.me().clone()]).await;
    }
    for round in 0u64.. {
        if let Some(outcome) = try_round(consensus, round).await {
            return outcome;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(FORMATION_RETRY_MS)) => {}
            _ = stop.wait_for(|stop| *stop) => {
                return Err(BrokerError::Unavailable("stopped before the cluster formed".into()));
            }
        }
    }
    unreachable!("the formation loop only ends by returning")
}

/// One round: ask every seed; join an existing cluster, or form a new one
/// when enough fresh nodes answered. `None` means "try again".
async fn try_round(consensus: &Consensus, round: u64) -> Option<Result<(), BrokerError>> {
    let hellos = hello_all(consensus).await;
    // Joined means a voter: a node added as a learner whose promotion
    // failed (another membership change was in progress) asks again.
    if consensus.is_initialized().await && consensus.voters().contains(&consensus.node_id()) {
        tracing::info!("this node is a voter of the cluster");
        return Some(Ok(()));
    }
    if let Some(member) = hellos.iter().find(|h| h.initialized) {
        let target = member.leader.as_ref().unwrap_or(&member.node);
        match join(consensus, &target.address).await {
            Ok(()) => return Some(Ok(())),
            Err(e) => tracing::info!("joining through {} failed: {e}; retrying", target.address),
        }
        return None;
    }
    let expect = consensus.options().expect_nodes.max(1) as usize;
    let mut fresh: BTreeMap<u64, NodeInfo> = BTreeMap::new();
    fresh.insert(consensus.node_id(), consensus.me().clone());
    for hello in &hellos {
        fresh.insert(hello.node.id, hello.node.clone());
    }
    if expect > 1 && fresh.len() >= expect {
        let smallest = *fresh.keys().next().expect("this node is in the set");
        if smallest == consensus.node_id() {
            return Some(initialize(consensus, fresh.into_values().collect()).await);
        }
    }
    if round.is_multiple_of(ROUNDS_PER_LOG_LINE) {
        tracing::info!(
            "waiting for the cluster to form: {} of {expect} expected nodes seen",
            fresh.len()
        );
    }
    None
}

/// The static seeds and what the discovery name resolves to now, without
/// this node's own address.
async fn seeds(consensus: &Consensus) -> Vec<String> {
    let mut seeds: BTreeSet<String> = consensus.options().seeds.iter().cloned().collect();
    if let Some((name, port)) = &consensus.options().discovery {
        match tokio::net::lookup_host((name.as_str(), *port)).await {
            Ok(addresses) => seeds.extend(addresses.map(|a| a.to_string())),
            Err(e) => tracing::debug!("discovery: {name} does not resolve yet: {e}"),
        }
    }
    seeds.remove(&consensus.me().address);
    seeds.into_iter().collect()
}

async fn hello_all(consensus: &Consensus) -> Vec<HelloReply> {
    let timeout = Duration::from_millis(HELLO_TIMEOUT_MS);
    let seeds = seeds(consensus).await;
    let asks = seeds.iter().map(|seed| {
        let request = PeerRequest::Hello(consensus.me().clone());
        consensus.mesh().call(seed, request, timeout)
    });
    futures::future::join_all(asks)
        .await
        .into_iter()
        .filter_map(|reply| match reply {
            Ok(PeerReply::Hello(hello)) => Some(hello),
            _ => None,
        })
        .collect()
}

/// Asks the cluster of the node at `address` to add this node.
async fn join(consensus: &Consensus, address: &str) -> Result<(), BrokerError> {
    let request = PeerRequest::Membership(MembershipChange::Join(consensus.me().clone()));
    let timeout = Duration::from_millis(super::membership::MEMBERSHIP_TIMEOUT_MS);
    match consensus.mesh().call(address, request, timeout).await {
        Ok(PeerReply::Membership(result)) => result,
        Ok(other) => Err(BrokerError::Internal(format!(
            "unexpected answer to a join: {other:?}"
        ))),
        Err(e) => Err(BrokerError::Unavailable(e.to_string())),
    }
}

/// Initialises a new cluster of `members`, then waits for a leader when
/// this node is the only one.
pub(super) async fn initialize(consensus: &Consensus, members: Vec<NodeInfo>) -> Result<(), BrokerError> {
    let ids: BTreeSet<u64> = members.iter().map(|m| m.id).collect();
    tracing::info!("forming a new cluster of nodes {ids:?}");
    let nodes: BTreeMap<u64, BasicNode> = members
        .into_iter()
        .map(|m| (m.id, BasicNode { addr: m.address }))
        .collect();
    let single = nodes.len() == 1;
    if let Err(e) = consensus.raft().initialize(nodes).await {
        // Another path (a join, a restart) initialised it first: that is fine.
        if !consensus.is_initialized().await {
            return Err(BrokerError::Internal(format!(
                "cannot initialise the cluster: {e}"
            )));
        }
    }
    if single {
        return lead_alone(consensus).await;
    }
    Ok(())
}

/// Waits until the only voter, this node, leads, and until the leadership
/// watch that the engine follows says so too.
async fn lead_alone(consensus: &Consensus) -> Result<(), BrokerError> {
    let limit = Duration::from_millis(ELECTION_WAIT_MS);
    consensus.wait_leading(limit).await?;
    let mut leading = consensus.leadership();
    match tokio::time::timeout(limit, leading.wait_for(|l| *l)).await {
        Ok(Ok(_)) => Ok(()),
        _ => Err(BrokerError::Unavailable("this node did not become leader".into())),
    }
}

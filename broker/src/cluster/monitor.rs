//! The leader's watch over the cluster: it notices leadership changes and
//! members going silent or coming back, logs them, records them in
//! `$cluster.events`, and keeps the cluster gauges current.

use std::collections::HashMap;
use std::sync::Weak;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::state::{ClusterEvent, Command};

use super::types::NodeId;
use super::{Consensus, Inner};

/// Runs until the consensus layer is dropped.
pub async fn run(inner: Weak<Inner>, tick: Duration) {
    let mut leading_since: Option<Instant> = None;
    let mut up: HashMap<NodeId, bool> = HashMap::new();
    loop {
        tokio::time::sleep(tick).await;
        let Some(inner) = inner.upgrade() else { return };
        let consensus = Consensus { inner };
        let view = consensus.local_status();
        metrics::gauge!(crate::metrics::CLUSTER_SIZE).set(view.nodes.len() as f64);
        if let Some(group) = view.groups.first() {
            metrics::gauge!(crate::metrics::REPLICATION_LAG).set(group.lag as f64);
        }
        if !consensus.is_leader() {
            leading_since = None;
            up.clear();
            continue;
        }
        let since = *leading_since.get_or_insert_with(|| {
            let term = view.groups.first().map_or(0, |g| g.term);
            tracing::info!("node {} is the leader (term {term})", consensus.node_id());
            consensus.record(ClusterEvent::LeaderChanged {
                node: consensus.node_id(),
                term,
            });
            Instant::now()
        });
        // Members get one silence limit to be heard from after an election.
        if since.elapsed() < consensus.silence_limit() {
            continue;
        }
        for node in view.nodes.iter().filter(|n| n.id != view.node_id) {
            let before = up.insert(node.id, node.up).unwrap_or(true);
            if before == node.up {
                continue;
            }
            if node.up {
                tracing::info!("node {} at {} is up", node.id, node.address);
                consensus.record(ClusterEvent::NodeUp { node: node.id });
            } else {
                tracing::warn!("node {} at {} is down", node.id, node.address);
                consensus.record(ClusterEvent::NodeDown { node: node.id });
            }
        }
    }
}

impl Consensus {
    /// Records `event` in `$cluster.events`, in the background; an event
    /// that cannot be committed (no quorum) is logged and dropped.
    pub(super) fn record(&self, event: ClusterEvent) {
        let this = self.clone();
        tokio::spawn(async move {
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            if let Err(e) = this.propose(Command::Cluster { event, now_ms }).await {
                tracing::debug!("a cluster event was not recorded: {e}");
            }
        });
    }
}

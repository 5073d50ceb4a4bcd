//! Moving a group's leadership to a chosen replica. openraft 0.9 has no
//! leadership transfer, and a follower refuses to vote while its leader's
//! lease holds, so the leader hands over by going quiet: it stops taking
//! writes once the successor has every entry, asks the other replicas to
//! hold their elections, stops its heartbeats, and asks the successor to
//! campaign once the lease has run out. Writes are refused (retryably)
//! for about one lease; when the successor fails to win, the old leader
//! takes its group back after three leases, and elections resume once the
//! holds expire.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::BrokerError;

use super::Consensus;
use super::transport::PeerRequest;
use super::types::NodeId;

/// No node is being handed the leadership.
const NOBODY: u64 = 0;
/// How often a leader checks that its successor has caught up.
const CATCH_UP_POLL_MS: u64 = 20;

/// Entries a successor may lag behind and still be asked to take over;
/// it catches up on the rest while writes wait.
const MAX_SUCCESSOR_LAG_ENTRIES: u64 = 1_024;

/// A group's handover state on this node.
#[derive(Default)]
pub struct Handing {
    /// The replica this leader is handing the group to, or [`NOBODY`].
    to: AtomicU64,
    /// Counts the holds this replica was asked for, so only the latest
    /// one's timer turns its elections back on.
    holds: AtomicU64,
}

impl Handing {
    fn to(&self) -> Option<NodeId> {
        Some(self.to.load(Ordering::Relaxed)).filter(|n| *n != NOBODY)
    }
}

impl Consensus {
    /// How long a follower's lease on its leader lasts (openraft's: the
    /// longest election timeout).
    fn lease(&self) -> Duration {
        Duration::from_millis(self.options().election_timeout_ms * 2)
    }

    /// Refuses a write while this leader hands its leadership over.
    pub(super) fn check_not_handing_over(&self) -> Result<(), BrokerError> {
        match self.inner.handing.to() {
            Some(successor) => Err(BrokerError::Unavailable(format!(
                "the leadership of this group is moving to node {successor}; retry"
            ))),
            None => Ok(()),
        }
    }

    /// Whether `successor` is worth handing this group to now: a voter
    /// heard from lately and not far behind. Writes pause during a
    /// handover, so none is tried toward a node that is down or lagging.
    pub(super) fn can_take_over(&self, successor: NodeId) -> bool {
        let heard = self
            .mesh()
            .heard_ago(successor)
            .is_some_and(|ago| ago <= self.silence_limit());
        let close = self
            .lag_of(successor)
            .is_some_and(|lag| lag <= MAX_SUCCESSOR_LAG_ENTRIES);
        heard && close && self.voters().contains(&successor)
    }

    /// Entries of this leader's log that `replica` does not have yet, when
    /// this node leads and replicates to it.
    fn lag_of(&self, replica: NodeId) -> Option<u64> {
        let metrics = self.raft().metrics().borrow().clone();
        let matched = metrics
            .replication
            .as_ref()?
            .get(&replica)?
            .map_or(0, |m| m.index);
        Some(metrics.last_log_index.unwrap_or(0).saturating_sub(matched))
    }

    /// On this group's leader: hands the leadership to `successor`, a
    /// voter, and returns once it leads or the attempt is given up.
    pub(super) async fn hand_over(&self, successor: NodeId) -> Result<(), BrokerError> {
        let Some(address) = self
            .peers()
            .into_iter()
            .find(|p| p.id == successor)
            .map(|p| p.address)
        else {
            return Err(BrokerError::Unavailable(format!(
                "node {successor} is not a member of this group"
            )));
        };
        if !self.can_take_over(successor) {
            return Err(BrokerError::Unavailable(format!(
                "node {successor} is down or far behind"
            )));
        }
        let handing = &self.inner.handing.to;
        if handing
            .compare_exchange(NOBODY, successor, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return Ok(());
        }
        let outcome = self.go_quiet_for(successor, &address).await;
        let raft = self.raft();
        raft.runtime_config().heartbeat(true);
        raft.runtime_config().elect(true);
        handing.store(NOBODY, Ordering::Relaxed);
        outcome
    }

    async fn go_quiet_for(&self, successor: NodeId, address: &str) -> Result<(), BrokerError> {
        let lease = self.lease();
        self.wait_caught_up(successor, lease).await?;
        let hold = lease * 3;
        let group = self.group_id();
        // All at once, each bounded by an election timeout: a peer that is
        // down must not stretch the pause.
        let timeout = Duration::from_millis(self.options().election_timeout_ms);
        let holds = self
            .peers()
            .into_iter()
            .filter(|p| p.id != successor)
            .map(|peer| async move {
                let request = PeerRequest::HoldElections {
                    group,
                    ms: hold.as_millis() as u64,
                };
                if let Err(e) = self.mesh().call(&peer.address, request, timeout).await {
                    tracing::debug!(
                        "node {} did not hold its elections of group {group}: {e}",
                        peer.id
                    );
                }
            });
        futures::future::join_all(holds).await;
        let raft = self.raft();
        raft.runtime_config().elect(false);
        raft.runtime_config().heartbeat(false);
        let campaign = PeerRequest::Campaign {
            group,
            after_ms: lease.as_millis() as u64,
        };
        self.mesh().call(address, campaign, timeout).await.map_err(|e| {
            BrokerError::Unavailable(format!("node {successor} cannot be asked to lead: {e}"))
        })?;
        let mut metrics = raft.metrics();
        let won = metrics.wait_for(|m| m.current_leader == Some(successor));
        match tokio::time::timeout(hold, won).await {
            Ok(Ok(_)) => {
                tracing::info!("group {group}: leadership handed to node {successor}");
                Ok(())
            }
            _ => Err(BrokerError::Unavailable(format!(
                "node {successor} did not take over group {group}"
            ))),
        }
    }

    /// Waits until `successor` holds every entry of the log, refusing new
    /// writes meanwhile, so it can win the election.
    async fn wait_caught_up(&self, successor: NodeId, limit: Duration) -> Result<(), BrokerError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let caught_up = self.lag_of(successor) == Some(0);
            if caught_up {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(BrokerError::Unavailable(format!(
                    "node {successor} did not catch up"
                )));
            }
            tokio::time::sleep(Duration::from_millis(CATCH_UP_POLL_MS)).await;
        }
    }

    /// On a replica: holds its own elections for `hold` (capped at a few
    /// leases, whatever the request says), so the chosen successor is the
    /// one that campaigns. Only the latest hold's timer turns them back on.
    pub(super) fn hold_elections(&self, hold: Duration) {
        let hold = hold.min(self.lease() * 4);
        let this_hold = self.inner.handing.holds.fetch_add(1, Ordering::Relaxed) + 1;
        self.raft().runtime_config().elect(false);
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(hold).await;
            if this.inner.handing.holds.load(Ordering::Relaxed) == this_hold {
                this.raft().runtime_config().elect(true);
            }
        });
    }

    /// On the successor: campaigns once the old leader's lease has run out.
    pub(super) fn campaign_after(&self, wait: Duration) {
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            if let Err(e) = this.raft().trigger().elect().await {
                tracing::debug!("group {}: campaign failed: {e}", this.group_id());
            }
        });
    }
}

//! Proposing a command: on this node when it leads, else forwarded to the
//! leader; failing fast, retryably, when no quorum can commit it.

use std::time::Duration;

use openraft::ServerState;
use openraft::error::{ClientWriteError, RaftError};

use crate::error::BrokerError;
use crate::state::{Command, Response};

use super::transport::{PeerReply, PeerRequest};
use super::{Consensus, NodeInfo, PROPOSE_TIMEOUT_MS};

impl Consensus {
    /// Orders `command`, waits for it to be durable on a quorum and applied,
    /// and returns the state machine's answer. A node that does not lead
    /// forwards the command to the leader.
    pub async fn propose(&self, command: Command) -> Result<Response, BrokerError> {
        match self.leader_or_placed() {
            Some(leader) if leader.id != self.node_id() => self.forward(leader, command).await,
            _ => self.propose_here(command).await,
        }
    }

    /// Proposes on this node, which must lead; never forwards further.
    pub(super) async fn propose_here(&self, command: Command) -> Result<Response, BrokerError> {
        self.check_not_handing_over()?;
        // A leader cut off from its quorum could only time out: say so now.
        if let Some(silence) = self.quorum_silence() {
            return Err(no_quorum(silence));
        }
        let write = self.raft().client_write(command);
        tokio::pin!(write);
        // A leader that loses its quorum while the write waits says so as
        // soon as it knows, not at the end of the proposal timeout.
        let tick_ms = (self.options().election_timeout_ms / QUORUM_CHECKS_PER_ELECTION_TIMEOUT).max(1);
        let mut tick = tokio::time::interval(Duration::from_millis(tick_ms));
        // The ticks add up to the proposal timeout.
        for _ in 0..=PROPOSE_TIMEOUT_MS / tick_ms {
            tokio::select! {
                outcome = &mut write => return written(outcome),
                _ = tick.tick() => {
                    if let Some(silence) = self.quorum_silence() {
                        return Err(no_quorum(silence));
                    }
                }
            }
        }
        Err(BrokerError::Unavailable(format!(
            "the write was not committed within {PROPOSE_TIMEOUT_MS} ms (no quorum?); retry with the same message id"
        )))
    }

    /// On a leader of several voters, how long a majority has been silent,
    /// when that is longer than an election takes.
    fn quorum_silence(&self) -> Option<u64> {
        let watch = self.raft().metrics();
        let metrics = watch.borrow();
        if metrics.state != ServerState::Leader
            || metrics.membership_config.membership().voter_ids().count() < 2
        {
            return None;
        }
        let limit = self.options().election_timeout_ms * 2;
        // `None` right after an election: no heartbeat round has ended yet.
        metrics.millis_since_quorum_ack.filter(|ms| *ms > limit)
    }

    /// Fails at once when this node has not heard from `leader` for longer
    /// than a member may stay silent: it is likely cut off from it (or the
    /// leader is gone), and a request sent there would only time out. The
    /// leader may still be reachable from the caller, so it is named.
    pub(super) fn check_heard(&self, leader: &NodeInfo) -> Result<(), BrokerError> {
        let limit = self.silence_limit();
        match self.mesh().heard_ago(leader.id) {
            Some(ago) if ago <= limit => Ok(()),
            _ => Err(BrokerError::NotLeader {
                leader: Some(leader.address.clone()),
            }),
        }
    }

    async fn forward(&self, leader: NodeInfo, command: Command) -> Result<Response, BrokerError> {
        self.check_heard(&leader)?;
        let request = PeerRequest::Forward {
            group: self.group_id(),
            command,
        };
        let timeout = Duration::from_millis(PROPOSE_TIMEOUT_MS);
        let call = self.mesh().call(&leader.address, request, timeout);
        tokio::pin!(call);
        // A leader that falls silent while the write waits (this node was
        // cut off from it) is given up on as soon as that shows, not at the
        // end of the timeout; the client retries with the same message id.
        let tick_ms = (self.options().election_timeout_ms / QUORUM_CHECKS_PER_ELECTION_TIMEOUT).max(1);
        let mut tick = tokio::time::interval(Duration::from_millis(tick_ms));
        let answer = loop {
            tokio::select! {
                answer = &mut call => break answer,
                _ = tick.tick() => self.check_heard(&leader)?,
            }
        };
        match answer {
            Ok(PeerReply::Forward(result)) => {
                metrics::counter!(crate::metrics::FORWARDED).increment(1);
                result
            }
            Ok(other) => Err(BrokerError::Internal(format!(
                "unexpected answer to a forward: {other:?}"
            ))),
            Err(e) => Err(BrokerError::Unavailable(format!(
                "the leader (node {} at {}) could not be reached: {e}; retry",
                leader.id, leader.address
            ))),
        }
    }
}

/// How often a waiting write checks that its leader still has a quorum.
const QUORUM_CHECKS_PER_ELECTION_TIMEOUT: u64 = 4;

type WriteOutcome = Result<
    openraft::raft::ClientWriteResponse<super::TypeConfig>,
    RaftError<super::NodeId, ClientWriteError<super::NodeId, openraft::BasicNode>>,
>;

/// The answer to a write openraft finished with.
fn written(outcome: WriteOutcome) -> Result<Response, BrokerError> {
    match outcome {
        Ok(response) => Ok(response.data),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => Err(BrokerError::NotLeader {
            leader: forward.leader_node.map(|n| n.addr),
        }),
        Err(e) => Err(BrokerError::Unavailable(format!("consensus: {e}"))),
    }
}

/// A leader without a quorum: the write may still commit if the quorum
/// comes back, so a retry must keep the message id.
fn no_quorum(silence_ms: u64) -> BrokerError {
    BrokerError::Unavailable(format!(
        "no quorum: this leader has not heard from a majority for {silence_ms} ms; retry with the same message id"
    ))
}

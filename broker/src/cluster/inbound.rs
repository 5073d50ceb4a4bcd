//! Answers what peers ask this node: Raft RPCs for its groups, commands
//! forwarded to it as leader, live messages, relayed consumers, formation
//! and membership.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::domain::Message;
use crate::error::BrokerError;

use super::Consensus;
use super::relay::{RelayCall, RelayReply, RelayRequest};
use super::transport::{HelloReply, Mesh, PeerReply, PeerRequest, RaftReply, RaftRpc};
use super::types::Vote;

/// Live batches from peers waiting for the engine; when full, more are
/// dropped, as at-most-once allows.
pub const LIVE_INBOX_BATCHES: usize = 1024;

/// This node's side of every peer conversation.
pub struct PeerHandler {
    consensus: Consensus,
    live: mpsc::Sender<Vec<Message>>,
    relay: mpsc::Sender<RelayCall>,
}

impl PeerHandler {
    pub fn new(
        consensus: Consensus,
        live: mpsc::Sender<Vec<Message>>,
        relay: mpsc::Sender<RelayCall>,
    ) -> Arc<Self> {
        Arc::new(Self {
            consensus,
            live,
            relay,
        })
    }

    pub async fn handle(&self, request: PeerRequest) -> PeerReply {
        match request {
            PeerRequest::Raft { group, rpc } => match self.consensus.group(group) {
                Some(consensus) => PeerReply::Raft(raft(&consensus, rpc).await),
                None => PeerReply::NoSuchGroup(group),
            },
            // Group 0's leadership is never handed over, so it never holds.
            PeerRequest::HoldElections { group, ms } => {
                match self.consensus.group(group).filter(|_| group != 0) {
                    Some(consensus) => {
                        consensus.hold_elections(std::time::Duration::from_millis(ms));
                        PeerReply::Done
                    }
                    None => PeerReply::NoSuchGroup(group),
                }
            }
            PeerRequest::Campaign { group, after_ms } => match self.consensus.group(group) {
                Some(consensus) => {
                    consensus.campaign_after(std::time::Duration::from_millis(after_ms));
                    PeerReply::Done
                }
                None => PeerReply::NoSuchGroup(group),
            },
            PeerRequest::Forward { group, command } => {
                PeerReply::Forward(match self.consensus.group(group) {
                    Some(consensus) => consensus.propose_here(command).await,
                    None => Err(BrokerError::Unavailable(format!(
                        "group {group} is not open on node {}; retry",
                        self.consensus.node_id()
                    ))),
                })
            }
            PeerRequest::Live(messages) => {
                if self.live.try_send(messages).is_err() {
                    metrics::counter!(crate::metrics::LIVE_DROPPED).increment(1);
                }
                PeerReply::Live
            }
            PeerRequest::Hello(_) => PeerReply::Hello(HelloReply {
                node: self.consensus.me().clone(),
                initialized: self.consensus.is_initialized().await,
                leader: self.consensus.leader_info(),
            }),
            PeerRequest::Membership(change) => {
                PeerReply::Membership(self.consensus.change_membership(change).await)
            }
            PeerRequest::Status => PeerReply::Status(Box::new(self.consensus.local_status())),
            PeerRequest::Relay(request) => PeerReply::Relay(self.relay(0, request).await),
            PeerRequest::RelayIn { group, request } => PeerReply::Relay(self.relay(group, request).await),
        }
    }

    /// Hands a relay request to the engine and waits for its answer; the
    /// engine bounds how long a pull may wait.
    async fn relay(&self, group: u32, request: RelayRequest) -> RelayReply {
        let gone = RelayReply::refusal(
            &request,
            BrokerError::Unavailable("this node is shutting down; retry".into()),
        );
        let (reply, answer) = oneshot::channel();
        if let Err(e) = self.relay.try_send((group, request, reply)) {
            let (_, request, _) = e.into_inner();
            let busy =
                BrokerError::Unavailable("this node has too many relay requests waiting; retry".into());
            return RelayReply::refusal(&request, busy);
        }
        answer.await.unwrap_or(gone)
    }
}

/// Hands a Raft RPC to this node's replica of its group.
async fn raft(consensus: &Consensus, rpc: RaftRpc) -> RaftReply {
    let raft = consensus.raft();
    let mesh = consensus.mesh();
    match rpc {
        RaftRpc::Append(request) => {
            heard(mesh, &request.vote);
            RaftReply::Append(raft.append_entries(request).await)
        }
        RaftRpc::Vote(request) => {
            heard(mesh, &request.vote);
            RaftReply::Vote(raft.vote(request).await)
        }
        RaftRpc::Snapshot(request) => {
            heard(mesh, &request.vote);
            RaftReply::Snapshot(raft.install_snapshot(request).await)
        }
    }
}

/// A Raft RPC carries its sender's vote: the node it names just spoke.
fn heard(mesh: &Mesh, vote: &Vote) {
    if let Some(node) = vote.leader_id().voted_for() {
        mesh.heard_from(node);
    }
}

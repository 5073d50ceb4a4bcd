//! The relay protocol: how the node a consumer is connected to takes
//! deliveries from, and settles them on, the node that runs the
//! subscription's dispatcher (the leader). The engine serves it on the
//! leader; this module only carries it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::domain::{DeliveryGuarantee, Message, Settle, SubscriptionName, TopicName};
use crate::error::BrokerError;
use crate::state::TopicRecord;

use super::Consensus;
use super::transport::{PeerReply, PeerRequest};
use super::types::NodeId;

/// Relay requests waiting for the engine; when full, more are refused as
/// retryable.
pub const RELAY_INBOX: usize = 1024;

/// One consumer session on another node, as the leader knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RemoteConsumer {
    pub node: NodeId,
    pub session: u64,
}

/// What a relaying node asks the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RelayRequest {
    /// Grants `credit` more deliveries, then waits up to `wait_ms` for some.
    /// The first pull of a session attaches it.
    Pull {
        subscription: SubscriptionName,
        consumer: RemoteConsumer,
        credit: u32,
        wait_ms: u64,
    },
    /// Grants credit while a pull is waiting.
    Credit {
        subscription: SubscriptionName,
        consumer: RemoteConsumer,
        credit: u32,
    },
    /// The consumer is gone: its leases go back to the queue now.
    Release {
        subscription: SubscriptionName,
        consumer: RemoteConsumer,
    },
    /// Settles deliveries by their ack tokens, as `Broker::settle` does.
    Settle {
        tokens: Vec<String>,
        field: String,
        settle: Settle,
    },
    /// The subscription's counters in the leader's dispatcher.
    Stats { subscription: SubscriptionName },
    /// The group's record of a topic, for a node that holds no replica.
    Topic { name: TopicName },
}

/// A subscription's backlog, messages in flight and consumers, as one
/// group's leader counts them.
pub type RelayedStats = (u64, u64, u32);

/// One delivery as it crosses to the relaying node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RelayedDelivery {
    pub message: Message,
    pub attempt: u32,
    pub ack_token: Option<String>,
    pub delivery: DeliveryGuarantee,
}

/// The leader's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RelayReply {
    Pulled(Result<Vec<RelayedDelivery>, BrokerError>),
    Done(Result<(), BrokerError>),
    /// One result per token, in order.
    Settled(Vec<Result<(), BrokerError>>),
    Stats(Result<RelayedStats, BrokerError>),
    Topic(Result<TopicRecord, BrokerError>),
}

impl RelayReply {
    /// The answer to `request` when it could not be served at all.
    pub fn refusal(request: &RelayRequest, error: BrokerError) -> Self {
        match request {
            RelayRequest::Pull { .. } => RelayReply::Pulled(Err(error)),
            RelayRequest::Credit { .. } | RelayRequest::Release { .. } => RelayReply::Done(Err(error)),
            RelayRequest::Settle { tokens, .. } => RelayReply::Settled(vec![Err(error); tokens.len()]),
            RelayRequest::Stats { .. } => RelayReply::Stats(Err(error)),
            RelayRequest::Topic { .. } => RelayReply::Topic(Err(error)),
        }
    }
}

/// A relay request handed to the engine, with the group it concerns and
/// where its answer goes.
pub type RelayCall = (u32, RelayRequest, oneshot::Sender<RelayReply>);

impl Consensus {
    /// Sends `request` to the current leader. Fails, retryably, when no
    /// other node is known to lead or the leader cannot be reached.
    pub async fn relay(&self, request: RelayRequest, timeout: Duration) -> Result<RelayReply, BrokerError> {
        let leader = self
            .leader_or_placed()
            .filter(|leader| leader.id != self.node_id())
            .ok_or_else(|| BrokerError::Unavailable("no other node is known to lead; retry".into()))?;
        self.check_heard(&leader)?;
        let request = match self.group_id() {
            0 => PeerRequest::Relay(request),
            group => PeerRequest::RelayIn { group, request },
        };
        match self.mesh().call(&leader.address, request, timeout).await {
            Ok(PeerReply::Relay(reply)) => Ok(reply),
            Ok(other) => Err(BrokerError::Internal(format!(
                "unexpected answer to a relay request: {other:?}"
            ))),
            Err(e) => Err(BrokerError::Unavailable(format!(
                "the leader (node {} at {}) could not be reached: {e}; retry",
                leader.id, leader.address
            ))),
        }
    }
}

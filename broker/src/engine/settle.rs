//! Settling deliveries by ack token: ack (durable before it is confirmed),
//! nack, extend and reject, on the leader or relayed to it.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::cluster::{PEER_CALL_TIMEOUT_MS, PROPOSE_TIMEOUT_MS, RelayReply, RelayRequest};
use crate::domain::{MessageKey, SubscriptionName};
use crate::error::BrokerError;
use crate::semantics::Claimed;
use crate::state::{Command, Response};

use super::{AckToken, Group, Input, Settle};

impl Group {
    /// Settles each token; answers one result per token, in order. Acks are
    /// committed through consensus before they are answered, so an `Ok` ack
    /// is a confirmed ack: the message never comes again to that subscription.
    /// Leases live on the leader: a node that does not lead relays the
    /// request there. The node's engine has checked the batch's size.
    pub async fn settle(
        &self,
        tokens: &[String],
        field: &str,
        settle: Settle,
    ) -> Vec<Result<(), BrokerError>> {
        if self.inner.consensus.is_leader() {
            return self.settle_here(tokens, field, settle).await;
        }
        let request = RelayRequest::Settle {
            tokens: tokens.to_vec(),
            field: field.to_string(),
            settle,
        };
        let timeout = Duration::from_millis(PROPOSE_TIMEOUT_MS + PEER_CALL_TIMEOUT_MS);
        match self.inner.consensus.relay(request, timeout).await {
            Ok(RelayReply::Settled(results)) if results.len() == tokens.len() => results,
            Ok(other) => {
                let e = BrokerError::Internal(format!("unexpected answer to a relayed settle: {other:?}"));
                vec![Err(e); tokens.len()]
            }
            Err(e) => vec![Err(e); tokens.len()],
        }
    }

    /// Settles on this node, which leads.
    pub(super) async fn settle_here(
        &self,
        tokens: &[String],
        field: &str,
        settle: Settle,
    ) -> Vec<Result<(), BrokerError>> {
        let mut results: Vec<Result<(), BrokerError>> = Vec::with_capacity(tokens.len());
        // Acks validated against their lease, grouped per subscription for one commit each.
        let mut to_commit: BTreeMap<SubscriptionName, Vec<(usize, MessageKey, Option<Claimed>)>> =
            BTreeMap::new();
        for (index, text) in tokens.iter().enumerate() {
            let token = match AckToken::decode(&format!("{field}[{index}]"), text) {
                Ok(token) => token,
                Err(e) => {
                    results.push(Err(e.into()));
                    continue;
                }
            };
            let is_ack = matches!(settle, Settle::Ack);
            let named = |e: BrokerError| name_token(e, &format!("{field}[{index}]"));
            match self.settle_one(&token, settle).await.map_err(named) {
                Ok(claimed) if is_ack => {
                    to_commit.entry(token.subscription.clone()).or_default().push((
                        index,
                        token.key.clone(),
                        claimed,
                    ));
                    results.push(Ok(()));
                }
                Ok(_) => results.push(Ok(())),
                Err(e) => results.push(Err(e)),
            }
        }
        for (subscription, acks) in to_commit {
            // A task of its own: a client that hangs up mid-commit must not
            // leave its messages neither acked nor pending again.
            let indexes: Vec<usize> = acks.iter().map(|(index, _, _)| *index).collect();
            let broker = self.clone();
            let failure = tokio::spawn(async move { broker.commit_acks(subscription, acks).await })
                .await
                .unwrap_or_else(|e| Some(BrokerError::Internal(format!("the ack commit stopped: {e}"))));
            if let Some(failure) = failure {
                indexes
                    .into_iter()
                    .for_each(|index| results[index] = Err(failure.clone()));
            }
        }
        results
    }

    /// Checks a token against its lease. A token of an earlier incarnation
    /// (before a restart or a leader change) has no lease here: its ack
    /// holds while the message still waits, not once it was redelivered.
    async fn settle_one(&self, token: &AckToken, settle: Settle) -> Result<Option<Claimed>, BrokerError> {
        let inbox = self.inbox_or_redirect(&token.subscription, "ack_token")?;
        let (reply, answer) = oneshot::channel();
        let current = token.epoch == self.inner.epoch.load(std::sync::atomic::Ordering::Relaxed);
        let input = match settle {
            _ if current => Input::Settle {
                key: token.key.clone(),
                lease_id: token.lease_id,
                settle,
                reply,
            },
            Settle::Ack => Input::Claim {
                key: token.key.clone(),
                reply,
            },
            _ => {
                return Err(BrokerError::FailedPrecondition(
                    "ack_token: the lease was granted before a restart or a leader change; only ack is possible"
                        .into(),
                ));
            }
        };
        inbox
            .send(input)
            .await
            .map_err(|_| BrokerError::Unavailable("the subscription is shutting down".into()))?;
        let outcome = answer
            .await
            .map_err(|_| BrokerError::Unavailable("the subscription is shutting down".into()))?;
        match outcome {
            // A repeated ack of a message already acked (or since removed by
            // retention) is confirmed again: a client retrying a lost answer
            // must learn it succeeded.
            Err(BrokerError::FailedPrecondition(_))
                if matches!(settle, Settle::Ack)
                    && self
                        .inner
                        .reader
                        .is_settled(&token.subscription, &token.key)
                        .unwrap_or(false) =>
            {
                Ok(None)
            }
            other => other,
        }
    }

    /// Commits the acks; on failure their messages are pending again and
    /// the failure is returned.
    async fn commit_acks(
        &self,
        subscription: SubscriptionName,
        acks: Vec<(usize, MessageKey, Option<Claimed>)>,
    ) -> Option<BrokerError> {
        let keys = acks.iter().map(|(_, key, _)| key.clone()).collect();
        let outcome = self
            .inner
            .consensus
            .propose(Command::Ack {
                subscription: subscription.clone(),
                keys,
            })
            .await;
        let failure = match outcome {
            Ok(Response::Acked(Ok(()))) => {
                metrics::counter!(crate::metrics::ACKED).increment(acks.len() as u64);
                return None;
            }
            Ok(Response::Acked(Err(e))) => BrokerError::from(e),
            Ok(other) => BrokerError::Internal(format!("unexpected answer to ack: {other:?}")),
            Err(e) => e,
        };
        // Not committed: the messages are pending again and the caller is told.
        let inbox = self.inbox(&subscription);
        for (_, _, claimed) in acks {
            if let (Some(inbox), Some(claimed)) = (&inbox, claimed) {
                let _ = inbox.send(Input::Restore(claimed)).await;
            }
        }
        Some(failure)
    }
}

/// Errors about a token name it as the client sent it (`ack_tokens[3]`).
fn name_token(error: BrokerError, field: &str) -> BrokerError {
    let rename = |text: String| match text.strip_prefix("ack_token:") {
        Some(rest) => format!("{field}:{rest}"),
        None => text,
    };
    match error {
        BrokerError::NotFound(t) => BrokerError::NotFound(rename(t)),
        BrokerError::FailedPrecondition(t) => BrokerError::FailedPrecondition(rename(t)),
        other => other,
    }
}

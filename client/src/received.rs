//! A delivered message and the ways to settle it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hermod_proto::v1 as pb;

use crate::client::Client;
use crate::convert::{delivery_from_pb, millis, priority_from_pb, time_from_ms};
use crate::error::{Error, Result};
use crate::message::{Delivery, Priority};
use crate::retry::{Idempotence, retry};
use crate::subscriber::{Control, Settle};

/// What a message needs to settle itself: the way back to its subscriber's
/// stream, and the client for confirmed acks.
pub(crate) struct Settler {
    pub(crate) control: tokio::sync::mpsc::UnboundedSender<Control>,
    pub(crate) client: Client,
}

/// A message delivered to a [`Subscriber`](crate::Subscriber).
///
/// Settle it exactly once with [`ack`](Self::ack), [`nack`](Self::nack) or
/// [`reject`](Self::reject) (or [`ack_confirmed`](Self::ack_confirmed));
/// [`extend`](Self::extend) buys time first. Unsettled, it is redelivered
/// after the subscription's ack deadline. At-most-once deliveries carry no
/// ack token and settling them does nothing.
pub struct ReceivedMessage {
    pub id: String,
    pub topic: String,
    pub payload: Bytes,
    pub headers: BTreeMap<String, String>,
    pub priority: Priority,
    /// Position in the topic (0 for at-most-once messages, which are not stored).
    pub sequence: u64,
    pub publish_time: SystemTime,
    /// 1 for the first delivery, 2 for the first redelivery, ...
    pub attempt: u32,
    /// `None`: never expires.
    pub expires_at: Option<SystemTime>,
    /// The guarantee this delivery has: the weaker of the message's and the
    /// subscription's.
    pub delivery: Delivery,
    ack_token: String,
    settler: Arc<Settler>,
}

impl fmt::Debug for ReceivedMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceivedMessage")
            .field("id", &self.id)
            .field("topic", &self.topic)
            .field("sequence", &self.sequence)
            .field("priority", &self.priority)
            .field("attempt", &self.attempt)
            .field("delivery", &self.delivery)
            .field("headers", &self.headers)
            .field("payload_bytes", &self.payload.len())
            .finish_non_exhaustive()
    }
}

impl ReceivedMessage {
    pub(crate) fn from_pb(message: pb::DeliveredMessage, settler: Arc<Settler>) -> Self {
        Self {
            id: message.id,
            topic: message.topic,
            payload: message.payload,
            headers: message.headers.into_iter().collect(),
            priority: priority_from_pb(message.priority),
            sequence: message.sequence,
            publish_time: time_from_ms(message.publish_time_ms),
            attempt: message.attempt,
            expires_at: (message.expires_at_ms != 0).then(|| time_from_ms(message.expires_at_ms)),
            delivery: delivery_from_pb(message.delivery),
            ack_token: message.ack_token,
            settler,
        }
    }

    /// The opaque token that settles this delivery; empty for at-most-once.
    pub fn ack_token(&self) -> &str {
        &self.ack_token
    }

    /// The payload as text, if it is UTF-8.
    pub fn payload_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.payload).ok()
    }

    /// Acknowledges the delivery: it will not be redelivered to this
    /// subscription. Sent on the subscribe stream without waiting for the
    /// broker; the error is only for a stream that has ended. Use
    /// [`ack_confirmed`](Self::ack_confirmed) to know the ack is durable.
    pub async fn ack(&self) -> Result<()> {
        self.settle(Settle::Ack)
    }

    /// Gives the delivery back for redelivery, no sooner than `delay`
    /// (`None`: the subscription's backoff).
    pub async fn nack(&self, delay: Option<Duration>) -> Result<()> {
        let delay_ms = delay.map_or(0, millis);
        self.settle(|token| Settle::Nack(token, delay_ms))
    }

    /// Renews the lease: the ack deadline restarts now and lasts `extension`
    /// (`None`: the subscription's ack deadline).
    pub async fn extend(&self, extension: Option<Duration>) -> Result<()> {
        let extension_ms = extension.map_or(0, millis);
        self.settle(|token| Settle::Extend(token, extension_ms))
    }

    /// Dead-letters the message at once (or drops it, if the subscription
    /// has no dead-letter topic).
    pub async fn reject(&self) -> Result<()> {
        self.settle(Settle::Reject)
    }

    /// Acknowledges through the unary `Ack` call and returns only once the
    /// broker says the ack is committed on a quorum: from then on the message
    /// is never delivered to this subscription again.
    ///
    /// Retried under the client's retry policy on retryable errors, whether
    /// the call failed or the broker answered the token with one: an ack
    /// whose outcome is unknown (its commit raced a leader change) may have
    /// been committed, and only a repeated ack, which the broker confirms
    /// again, tells. Every attempt sends the same token.
    pub async fn ack_confirmed(&self) -> Result<()> {
        if self.ack_token.is_empty() {
            return Err(Error::FailedPrecondition {
                field: "ack_token".into(),
                message: "an at-most-once delivery cannot be acknowledged".into(),
            });
        }
        let client = &self.settler.client;
        retry(client.retry_policy(), Idempotence::Idempotent, |_| async {
            let request = pb::AckRequest {
                ack_tokens: vec![self.ack_token.clone()],
            };
            let response = client
                .attempt(request, |mut stub, r| async move { stub.ack(r).await })
                .await?;
            confirmed_outcome(&self.ack_token, response)
        })
        .await
    }

    fn settle(&self, make: impl FnOnce(String) -> Settle) -> Result<()> {
        if self.ack_token.is_empty() {
            return Ok(());
        }
        self.settler
            .control
            .send(Control::Settle(make(self.ack_token.clone())))
            .map_err(|_| Error::closed("the subscription stream has ended; the delivery will be redelivered"))
    }
}

/// The answer to a confirmed ack of `token`: Ok only if the broker confirmed it.
fn confirmed_outcome(token: &str, response: pb::AckResponse) -> Result<()> {
    let Some(result) = response
        .results
        .into_iter()
        .find(|r| r.ack_token == token || r.ack_token.is_empty())
    else {
        return Err(Error::protocol("the ack answer holds no result for the token"));
    };
    if let Some(error) = result.error.filter(|e| e.code != 0) {
        return Err(Error::from_item(&error));
    }
    if !result.confirmed {
        return Err(Error::protocol(
            "the broker answered the ack without confirming it",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(token: &str, confirmed: bool, error: Option<pb::ItemError>) -> pb::AckResponse {
        pb::AckResponse {
            results: vec![pb::AckResult {
                ack_token: token.into(),
                confirmed,
                error,
            }],
        }
    }

    #[test]
    fn a_confirmed_ack_needs_the_brokers_confirmation() {
        assert_eq!(confirmed_outcome("t", result("t", true, None)), Ok(()));
        let ok_code = pb::ItemError {
            code: 0,
            message: String::new(),
            field: String::new(),
        };
        assert_eq!(confirmed_outcome("t", result("t", true, Some(ok_code))), Ok(()));
        assert!(matches!(
            confirmed_outcome("t", result("t", false, None)),
            Err(Error::Protocol { .. })
        ));
        assert!(matches!(
            confirmed_outcome("t", result("other", true, None)),
            Err(Error::Protocol { .. })
        ));
        let expired = pb::ItemError {
            code: tonic::Code::FailedPrecondition as i32,
            message: "lease expired".into(),
            field: "ack_tokens[0]".into(),
        };
        let err = confirmed_outcome("t", result("t", false, Some(expired))).unwrap_err();
        assert_eq!(err.field(), Some("ack_tokens[0]"));
        assert!(matches!(err, Error::FailedPrecondition { .. }));
    }
}

//! Unary publishing: one message or a batch, retried without ever changing
//! a message's id, so the broker's dedup turns retries into no-ops.

use std::future::Future;

use hermod_proto::v1 as pb;

use crate::client::Client;
use crate::connection::broker_stub;
use crate::convert::{prepare_message, receipt_from_pb};
use crate::error::{Error, NOT_LEADER_METADATA, Result, status_error};
use crate::message::{OutgoingMessage, PublishReceipt};
use crate::options::RetryPolicy;
use crate::retry::Backoff;

impl Client {
    /// Publishes one message and waits until the broker has it (for durable
    /// deliveries: fsynced on a quorum).
    ///
    /// Retryable failures are retried under the retry policy with the same
    /// message id; with exactly-once delivery a retry that reaches a broker
    /// which already stored the message answers `duplicate = true`.
    pub async fn publish(&self, message: OutgoingMessage) -> Result<PublishReceipt> {
        let mut results = self.publish_batch(vec![message]).await?;
        match results.pop() {
            Some(result) if results.is_empty() => result,
            _ => Err(Error::protocol(
                "a batch of one message got a different number of answers",
            )),
        }
    }

    /// Publishes a batch (at most 1000 messages) in one request; every
    /// message gets its own result, so one bad message does not fail the
    /// others. The outer error is for the request as a whole (it could not
    /// be delivered, or the batch itself is invalid).
    ///
    /// Messages failing with a retryable error are resent (alone, with their
    /// ids) until the retry policy runs out. A message's error names its
    /// field by its index in `messages`, e.g. `messages[3].topic`.
    pub async fn publish_batch(&self, messages: Vec<OutgoingMessage>) -> Result<Vec<Result<PublishReceipt>>> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let prepared = messages.into_iter().map(prepare_message).collect();
        publish_with_retry(self.retry_policy(), prepared, |messages| {
            self.send_publish(messages)
        })
        .await
    }

    /// One round of a publish: the messages whose shard leader is known go
    /// to it directly, the rest through the seed connection, all at once.
    /// A part that fails as a whole fails only its own messages.
    async fn send_publish(&self, messages: Vec<pb::PublishMessage>) -> Result<Vec<Answer>> {
        self.refresh_routes();
        let count = messages.len();
        let numbered = messages.into_iter().enumerate();
        let mut parts = self.inner.router.split(numbered, |(_, message)| &message.topic);
        if parts.len() == 1 {
            let (destination, part) = parts.pop().expect("one part");
            let batch = part.into_iter().map(|(_, message)| message).collect();
            return self.publish_to(destination, batch).await;
        }
        let rounds = parts.into_iter().map(|(destination, part)| async move {
            let (indexes, batch): (Vec<usize>, Vec<_>) = part.into_iter().unzip();
            (indexes, self.publish_to(destination, batch).await)
        });
        let mut answers: Vec<Option<Answer>> = vec![None; count];
        for (indexes, outcome) in futures::future::join_all(rounds).await {
            match outcome {
                Ok(results) => {
                    for (index, answer) in indexes.into_iter().zip(results) {
                        answers[index] = Some(answer);
                    }
                }
                Err(error) => {
                    for index in indexes {
                        answers[index] = Some(Err(error.clone()));
                    }
                }
            }
        }
        Ok(answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err(Error::protocol("message left without an answer"))))
            .collect())
    }

    /// Publishes `batch` to the leader at `destination`, or through the seed
    /// connection. A routed request that fails retryably drops the route and
    /// goes through the seed at once: the seed's node forwards it.
    async fn publish_to(
        &self,
        destination: Option<String>,
        batch: Vec<pb::PublishMessage>,
    ) -> Result<Vec<Answer>> {
        let count = batch.len();
        let answers = match destination {
            Some(address) => match self.publish_routed(&address, batch.clone()).await {
                Err(error) if error.is_retryable() => {
                    tracing::debug!(%error, %address, "routed publish failed; going through the seed");
                    self.inner.router.forget(&address);
                    self.publish_via_seed(batch).await
                }
                answers => answers,
            },
            None => self.publish_via_seed(batch).await,
        }?;
        if answers.len() != count {
            return Err(Error::protocol(format!(
                "{count} messages published, {} results returned",
                answers.len()
            )));
        }
        Ok(answers.into_iter().map(Ok).collect())
    }

    async fn publish_via_seed(&self, messages: Vec<pb::PublishMessage>) -> Result<Vec<pb::PublishResult>> {
        let request = pb::PublishRequest { messages };
        let response = self
            .attempt(request, |mut stub, r| async move { stub.publish(r).await })
            .await?;
        Ok(response.results)
    }

    /// One attempt straight at the node at `address`. An answer saying that
    /// node forwarded (it no longer leads) makes the routing table stale.
    async fn publish_routed(
        &self,
        address: &str,
        messages: Vec<pb::PublishMessage>,
    ) -> Result<Vec<pb::PublishResult>> {
        let mut stub = broker_stub(self.inner.router.channel(address)?, self.options());
        let timeout = self.options().request_timeout;
        let mut request = tonic::Request::new(pb::PublishRequest { messages });
        request.set_timeout(timeout);
        match tokio::time::timeout(timeout, stub.publish(request)).await {
            Ok(Ok(response)) => {
                if response.metadata().contains_key(NOT_LEADER_METADATA) {
                    self.inner.router.mark_stale();
                    self.refresh_routes();
                }
                Ok(response.into_inner().results)
            }
            Ok(Err(status)) => Err(status_error(status)),
            Err(_) => Err(Error::timeout(format!("{address}: no answer within {timeout:?}"))),
        }
    }
}

/// One message's answer in a round: the broker's result for it, or the
/// failure of the request (or part of one) that carried it.
pub(crate) type Answer = Result<pb::PublishResult>;

/// The retry loop of a batch publish, with the sending injected.
///
/// Each round sends the messages still pending: all of them at first, then
/// those whose own answer was a retryable error (their own result, or the
/// failure of the part of the round that carried them). A retryable failure
/// of the whole round resends the same pending set. Ids never change: they were
/// fixed by [`prepare_message`] before the first round.
pub(crate) async fn publish_with_retry<F, Fut>(
    policy: RetryPolicy,
    messages: Vec<pb::PublishMessage>,
    mut send: F,
) -> Result<Vec<Result<PublishReceipt>>>
where
    F: FnMut(Vec<pb::PublishMessage>) -> Fut,
    Fut: Future<Output = Result<Vec<Answer>>>,
{
    let mut results: Vec<Option<Result<PublishReceipt>>> = vec![None; messages.len()];
    let mut pending: Vec<(usize, pb::PublishMessage)> = messages.into_iter().enumerate().collect();
    let mut backoff = Backoff::new(policy);
    let mut attempt = 1;
    loop {
        let last_attempt = attempt >= policy.max_attempts;
        let batch = pending.iter().map(|(_, message)| message.clone()).collect();
        match send(batch).await {
            Err(error) if !last_attempt && error.is_retryable() => {
                tracing::debug!(%error, attempt, "publish failed; retrying");
            }
            Err(error) => return Err(error),
            Ok(answers) if answers.len() != pending.len() => {
                return Err(Error::protocol(format!(
                    "{} messages published, {} results returned",
                    pending.len(),
                    answers.len()
                )));
            }
            Ok(answers) => {
                let mut still_pending = Vec::new();
                for ((index, message), answer) in pending.into_iter().zip(answers) {
                    match answer.and_then(|answer| item_outcome(answer, index)) {
                        Err(error) if !last_attempt && error.is_retryable() => {
                            still_pending.push((index, message));
                        }
                        outcome => results[index] = Some(outcome),
                    }
                }
                pending = still_pending;
            }
        }
        if pending.is_empty() {
            return Ok(results
                .into_iter()
                .map(|r| r.unwrap_or_else(|| Err(Error::protocol("message left without a result"))))
                .collect());
        }
        tokio::time::sleep(backoff.next_delay()).await;
        attempt += 1;
    }
}

/// One message's result; an error names the message by its index in the
/// caller's batch, not in the (smaller) retry round that sent it.
fn item_outcome(result: pb::PublishResult, index: usize) -> Result<PublishReceipt> {
    match result.outcome {
        Some(pb::publish_result::Outcome::Ack(ack)) => Ok(receipt_from_pb(ack)),
        Some(pb::publish_result::Outcome::Error(item)) => {
            let mut error = Error::from_item(&item);
            renumber_field(&mut error, index);
            Err(error)
        }
        None => Err(Error::protocol("publish result with neither ack nor error")),
    }
}

fn renumber_field(error: &mut Error, index: usize) {
    if let Error::InvalidArgument { field, .. }
    | Error::NotFound { field, .. }
    | Error::AlreadyExists { field, .. }
    | Error::FailedPrecondition { field, .. }
    | Error::ResourceExhausted { field, .. } = error
        && let Some(rest) = field.strip_prefix("messages[")
        && let Some(close) = rest.find(']')
    {
        *field = format!("messages[{index}]{}", &rest[close + 1..]);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use tonic::Code;

    use super::*;

    fn policy(attempts: u32) -> RetryPolicy {
        RetryPolicy::new(attempts, Duration::from_millis(1), Duration::from_millis(2))
    }

    fn ack(message: &pb::PublishMessage, sequence: u64) -> Answer {
        Ok(pb::PublishResult {
            outcome: Some(pb::publish_result::Outcome::Ack(pb::PublishAck {
                id: message.id.clone(),
                topic: message.topic.clone(),
                sequence,
                duplicate: false,
                publish_time_ms: 1,
            })),
        })
    }

    fn item_error(code: Code, field: &str) -> Answer {
        Ok(pb::PublishResult {
            outcome: Some(pb::publish_result::Outcome::Error(pb::ItemError {
                code: code as i32,
                message: "nope".into(),
                field: field.into(),
            })),
        })
    }

    fn unavailable() -> Error {
        Error::Unavailable {
            message: "no quorum".into(),
            leader_hint: None,
        }
    }

    fn prepared(messages: &[&str]) -> Vec<pb::PublishMessage> {
        messages
            .iter()
            .map(|topic| prepare_message(OutgoingMessage::new(*topic, "x")))
            .collect()
    }

    #[tokio::test]
    async fn a_generated_id_is_reused_on_every_retry() {
        let seen = Mutex::new(Vec::new());
        let results = publish_with_retry(policy(5), prepared(&["a"]), |batch| {
            let mut seen = seen.lock().unwrap();
            seen.push(batch[0].id.clone());
            let attempt = seen.len();
            async move {
                match attempt {
                    1 => Err(unavailable()),
                    2 => Err(Error::Transport {
                        message: "reset".into(),
                    }),
                    _ => Ok(vec![ack(&batch[0], 7)]),
                }
            }
        })
        .await
        .unwrap();
        let seen = seen.into_inner().unwrap();
        assert_eq!(seen.len(), 3);
        assert!(seen.iter().all(|id| id == &seen[0]), "{seen:?}");
        let receipt = results[0].as_ref().unwrap();
        assert_eq!(receipt.id, seen[0]);
        assert_eq!(receipt.sequence, 7);
    }

    #[tokio::test]
    async fn only_retryable_items_are_resent_and_fields_keep_the_callers_index() {
        let rounds = Mutex::new(Vec::new());
        let results = publish_with_retry(policy(5), prepared(&["a", "b", "c"]), |batch| {
            let mut rounds = rounds.lock().unwrap();
            rounds.push(
                batch
                    .iter()
                    .map(|m| (m.topic.clone(), m.id.clone()))
                    .collect::<Vec<_>>(),
            );
            let round = rounds.len();
            async move {
                Ok(match round {
                    // a stored, b unavailable, c invalid.
                    1 => vec![
                        ack(&batch[0], 1),
                        item_error(Code::Unavailable, ""),
                        item_error(Code::InvalidArgument, "messages[2].topic"),
                    ],
                    // b alone, now at index 0 of the request, hits a limit.
                    _ => vec![item_error(Code::ResourceExhausted, "messages[0].payload")],
                })
            }
        })
        .await
        .unwrap();
        let rounds = rounds.into_inner().unwrap();
        assert_eq!(rounds.len(), 2);
        assert_eq!(rounds[1].len(), 1);
        assert_eq!(rounds[1][0], rounds[0][1], "b is resent with its first id");
        assert_eq!(results[0].as_ref().unwrap().sequence, 1);
        assert_eq!(
            results[1].as_ref().unwrap_err().field(),
            Some("messages[1].payload")
        );
        assert_eq!(
            results[2].as_ref().unwrap_err().field(),
            Some("messages[2].topic")
        );
    }

    #[tokio::test]
    async fn retries_stop_at_the_policy_and_permanent_errors_are_not_retried() {
        let calls = Mutex::new(0);
        let err = publish_with_retry(policy(3), prepared(&["a"]), |_| {
            *calls.lock().unwrap() += 1;
            async { Err::<Vec<Answer>, _>(unavailable()) }
        })
        .await
        .unwrap_err();
        assert!(err.is_retryable());
        assert_eq!(*calls.lock().unwrap(), 3);

        let calls = Mutex::new(0);
        let results = publish_with_retry(policy(3), prepared(&["a"]), |_| {
            *calls.lock().unwrap() += 1;
            async { Ok(vec![item_error(Code::Unavailable, "")]) }
        })
        .await
        .unwrap();
        assert_eq!(*calls.lock().unwrap(), 3);
        assert!(results[0].as_ref().unwrap_err().is_retryable());

        let calls = Mutex::new(0);
        let err = publish_with_retry(policy(3), prepared(&["a"]), |_| {
            *calls.lock().unwrap() += 1;
            async { Err::<Vec<Answer>, _>(Error::invalid("messages", "too many")) }
        })
        .await
        .unwrap_err();
        assert_eq!(err.field(), Some("messages"));
        assert_eq!(*calls.lock().unwrap(), 1);
    }

    #[tokio::test]
    async fn a_part_that_failed_as_a_whole_resends_only_its_own_messages() {
        let rounds = Mutex::new(Vec::new());
        let results = publish_with_retry(policy(5), prepared(&["a", "b"]), |batch| {
            let mut rounds = rounds.lock().unwrap();
            rounds.push(batch.iter().map(|m| m.topic.clone()).collect::<Vec<_>>());
            let round = rounds.len();
            async move {
                Ok(match round {
                    // a's part was stored; b's part lost its connection.
                    1 => vec![ack(&batch[0], 1), Err(unavailable())],
                    _ => vec![ack(&batch[0], 2)],
                })
            }
        })
        .await
        .unwrap();
        assert_eq!(rounds.into_inner().unwrap(), [vec!["a", "b"], vec!["b"]]);
        assert_eq!(results[0].as_ref().unwrap().sequence, 1);
        assert_eq!(results[1].as_ref().unwrap().sequence, 2);
    }

    #[tokio::test]
    async fn a_short_answer_is_a_protocol_error() {
        let err = publish_with_retry(policy(3), prepared(&["a", "b"]), |batch| async move {
            Ok(vec![ack(&batch[0], 1)])
        })
        .await
        .unwrap_err();
        assert!(matches!(err, Error::Protocol { .. }));
    }
}

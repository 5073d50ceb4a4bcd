//! The PublishStream call: many publishes in flight on one stream. What has
//! arrived together is published together, so a busy stream costs one
//! engine call (and one task) per batch rather than per message.

use std::sync::Arc;

use futures::FutureExt;
use hermod_proto::v1 as pb;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use crate::domain::ValidationError;
use crate::engine::Broker;
use crate::error::BrokerError;
use crate::state::Published;

use super::convert;
use super::service::{BoxStream, rename_index};

/// Publishes in flight on one stream before the server stops reading it.
pub const MAX_STREAM_IN_FLIGHT: usize = 1024;
/// Most stream messages taken into one publish.
const MAX_STREAM_BATCH: usize = 256;

/// Answers the stream's publishes as they complete, each under its
/// correlation id.
pub fn open(
    broker: Broker,
    incoming: Streaming<pb::PublishStreamRequest>,
) -> BoxStream<pb::PublishStreamResponse> {
    let (out, answers) = mpsc::channel(MAX_STREAM_IN_FLIGHT);
    tokio::spawn(read(broker, incoming, out));
    Box::pin(ReceiverStream::new(answers))
}

type Out = mpsc::Sender<Result<pb::PublishStreamResponse, Status>>;

/// Reads the stream in batches of what is already there, until it ends.
async fn read(broker: Broker, mut incoming: Streaming<pb::PublishStreamRequest>, out: Out) {
    let permits = Arc::new(Semaphore::new(MAX_STREAM_IN_FLIGHT));
    let mut ended = false;
    while !ended {
        let Some(Ok(first)) = incoming.next().await else {
            break;
        };
        let mut items = vec![first];
        while items.len() < MAX_STREAM_BATCH {
            match incoming.next().now_or_never() {
                Some(Some(Ok(item))) => items.push(item),
                Some(_) => {
                    ended = true;
                    break;
                }
                None => break,
            }
        }
        let Ok(permit) = permits.clone().acquire_many_owned(items.len() as u32).await else {
            break;
        };
        let mut publish = Box::pin(answers(broker.clone(), items));
        // At-most-once publishes never wait for a commit: answered in line,
        // they save a task.
        match (&mut publish).now_or_never() {
            Some(answers) => {
                if !send_all(&out, answers).await {
                    break;
                }
            }
            None => {
                let out = out.clone();
                tokio::spawn(async move {
                    send_all(&out, publish.await).await;
                    drop(permit);
                });
            }
        }
    }
}

/// False once the caller is gone.
async fn send_all(out: &Out, answers: Vec<pb::PublishStreamResponse>) -> bool {
    for answer in answers {
        if out.send(Ok(answer)).await.is_err() {
            return false;
        }
    }
    true
}

/// Publishes the valid messages of `items` as one batch and answers every
/// item; an invalid one is answered without holding up the others.
async fn answers(broker: Broker, items: Vec<pb::PublishStreamRequest>) -> Vec<pb::PublishStreamResponse> {
    let mut ids = Vec::with_capacity(items.len());
    let mut results: Vec<Option<Result<Published, BrokerError>>> = Vec::with_capacity(items.len());
    let mut valid = Vec::with_capacity(items.len());
    let mut positions = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        ids.push(item.correlation_id);
        let message = item
            .message
            .ok_or_else(|| ValidationError::new("message", "required"))
            .and_then(|m| convert::message_in("message", m));
        match message {
            Ok(message) => {
                positions.push(index);
                valid.push(message);
                results.push(None);
            }
            Err(e) => results.push(Some(Err(e.into()))),
        }
    }
    let outcomes = broker.publish(valid).await;
    for (position, outcome) in positions.into_iter().zip(outcomes) {
        // Errors name the message as this call knows it: `message.payload`.
        results[position] = Some(outcome.map_err(|e| rename_index(e, usize::MAX)));
    }
    ids.into_iter()
        .zip(results)
        .map(|(correlation_id, result)| {
            let result = result.unwrap_or_else(|| Err(BrokerError::Internal("no publish result".into())));
            pb::PublishStreamResponse {
                correlation_id,
                result: Some(convert::publish_result(result)),
            }
        })
        .collect()
}

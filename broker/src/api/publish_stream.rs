//! The PublishStream call: many publishes in flight on one stream. A
//! request carries several messages, and what has arrived together is
//! published together and answered in one response, so a busy stream costs
//! one engine call, one task and one gRPC message per batch rather than per
//! message.

use std::sync::Arc;

use futures::FutureExt;
use hermod_proto::v1 as pb;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use crate::domain::ValidationError;
use crate::domain::limits::MAX_PUBLISH_BATCH;
use crate::engine::Broker;
use crate::error::BrokerError;
use crate::state::Published;

use super::convert;
use super::service::{BoxStream, rename_index};

/// Messages in flight on one stream before the server stops reading it.
const MAX_STREAM_IN_FLIGHT: usize = 4096;
/// Messages gathered into one publish: requests that have already arrived
/// join the first until this many messages are taken.
const MAX_STREAM_BATCH: usize = 256;
/// Answer batches buffered towards the caller.
const ANSWER_BUFFER: usize = 64;

/// Answers the stream's publishes as they complete, each under its
/// correlation id.
pub fn open(
    broker: Broker,
    incoming: Streaming<pb::PublishStreamRequest>,
) -> BoxStream<pb::PublishStreamResponse> {
    let (out, answers) = mpsc::channel(ANSWER_BUFFER);
    tokio::spawn(read(broker, incoming, out));
    Box::pin(ReceiverStream::new(answers))
}

type Out = mpsc::Sender<Result<pb::PublishStreamResponse, Status>>;

/// Reads the stream in batches of what is already there, until it ends or
/// the node stops (then the caller is told to go elsewhere, and what is in
/// flight is still answered).
async fn read(broker: Broker, mut incoming: Streaming<pb::PublishStreamRequest>, out: Out) {
    let permits = Arc::new(Semaphore::new(MAX_STREAM_IN_FLIGHT));
    let mut ended = false;
    while !ended {
        let next = tokio::select! {
            next = incoming.next() => next,
            () = broker.stopped() => {
                let stopping = Status::unavailable("this node is stopping; publish through another node");
                let _ = out.send(Err(stopping)).await;
                break;
            }
        };
        let Some(Ok(first)) = next else {
            break;
        };
        let mut requests = vec![first];
        let mut count = requests[0].items.len();
        while count < MAX_STREAM_BATCH {
            match incoming.next().now_or_never() {
                Some(Some(Ok(request))) => {
                    count += request.items.len();
                    requests.push(request);
                }
                Some(_) => {
                    ended = true;
                    break;
                }
                None => break,
            }
        }
        if let Some(request) = requests.iter().find(|r| r.items.len() > MAX_PUBLISH_BATCH) {
            let message = format!(
                "items: {} messages, at most {MAX_PUBLISH_BATCH} per request",
                request.items.len()
            );
            let _ = out.send(Err(Status::resource_exhausted(message))).await;
            break;
        }
        let items: Vec<_> = requests.into_iter().flat_map(|r| r.items).collect();
        if items.is_empty() {
            continue;
        }
        let Ok(permit) = permits.clone().acquire_many_owned(items.len() as u32).await else {
            break;
        };
        let mut publish = Box::pin(answers(broker.clone(), items));
        // At-most-once publishes never wait for a commit: answered in line,
        // they save a task.
        match (&mut publish).now_or_never() {
            Some(answers) => {
                if out.send(Ok(answers)).await.is_err() {
                    break;
                }
            }
            None => {
                let out = out.clone();
                tokio::spawn(async move {
                    let _ = out.send(Ok(publish.await)).await;
                    drop(permit);
                });
            }
        }
    }
}

/// Publishes the valid messages of `items` as one batch and answers every
/// item; an invalid one is answered without holding up the others.
async fn answers(broker: Broker, items: Vec<pb::PublishStreamItem>) -> pb::PublishStreamResponse {
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
    let answers = ids
        .into_iter()
        .zip(results)
        .map(|(correlation_id, result)| {
            let result = result.unwrap_or_else(|| Err(BrokerError::Internal("no publish result".into())));
            pb::PublishStreamAnswer {
                correlation_id,
                result: Some(convert::publish_outcome(result, false)),
            }
        })
        .collect();
    pb::PublishStreamResponse { answers }
}

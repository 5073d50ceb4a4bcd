//! The `hermod.v1.Broker` gRPC service: validation at the edge, then the engine.

use std::pin::Pin;

use futures::Stream;
use hermod_proto::v1 as pb;
use hermod_proto::v1::broker_server::Broker as BrokerApi;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::domain::limits::MAX_PUBLISH_BATCH;
use crate::domain::{SubscriptionName, TopicName};
use crate::engine::{Broker, Settle};
use crate::error::BrokerError;

use super::convert;

/// Publishes in flight on one PublishStream before the server stops reading.
pub const MAX_STREAM_IN_FLIGHT: usize = 1024;

/// The gRPC front of one node's engine.
#[derive(Clone)]
pub struct BrokerService {
    broker: Broker,
}

impl BrokerService {
    pub fn new(broker: Broker) -> Self {
        Self { broker }
    }
}

pub type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn status(error: impl Into<BrokerError>) -> Status {
    error.into().into()
}

#[tonic::async_trait]
impl BrokerApi for BrokerService {
    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let messages = request.into_inner().messages;
        if messages.is_empty() {
            return Err(Status::invalid_argument(
                "messages: at least one message is required",
            ));
        }
        if messages.len() > MAX_PUBLISH_BATCH {
            return Err(Status::resource_exhausted(format!(
                "messages: {} messages, at most {MAX_PUBLISH_BATCH} per request",
                messages.len()
            )));
        }
        // Invalid messages are answered at once; the valid ones go on together.
        let mut results: Vec<Option<pb::PublishResult>> = Vec::with_capacity(messages.len());
        let mut valid = Vec::new();
        let mut positions = Vec::new();
        for (index, message) in messages.into_iter().enumerate() {
            match convert::message_in(&format!("messages[{index}]"), message) {
                Ok(m) => {
                    positions.push(index);
                    valid.push(m);
                    results.push(None);
                }
                Err(e) => results.push(Some(convert::publish_result(Err(e.into())))),
            }
        }
        let outcomes = self.broker.publish(valid).await;
        for (position, outcome) in positions.into_iter().zip(outcomes) {
            let outcome = outcome.map_err(|e| rename_index(e, position));
            results[position] = Some(convert::publish_result(outcome));
        }
        Ok(Response::new(pb::PublishResponse {
            results: results.into_iter().flatten().collect(),
        }))
    }

    type PublishStreamStream = BoxStream<pb::PublishStreamResponse>;

    async fn publish_stream(
        &self,
        request: Request<Streaming<pb::PublishStreamRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        let mut incoming = request.into_inner();
        let (tx, rx) = mpsc::channel(MAX_STREAM_IN_FLIGHT);
        let broker = self.broker.clone();
        let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_STREAM_IN_FLIGHT));
        tokio::spawn(async move {
            while let Some(item) = incoming.next().await {
                let Ok(item) = item else { break };
                // An at-most-once publish never waits for a commit: answered
                // in line, it saves a task per message.
                let live = item
                    .message
                    .as_ref()
                    .is_some_and(|m| m.delivery == pb::DeliveryGuarantee::AtMostOnce as i32);
                if live {
                    if tx.send(Ok(stream_answer(&broker, item).await)).await.is_err() {
                        break;
                    }
                    continue;
                }
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let (broker, tx) = (broker.clone(), tx.clone());
                // Each publish runs on its own, so many share one group commit.
                tokio::spawn(async move {
                    let _ = tx.send(Ok(stream_answer(&broker, item).await)).await;
                    drop(permit);
                });
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type SubscribeStream = BoxStream<pb::SubscribeResponse>;

    async fn subscribe(
        &self,
        request: Request<Streaming<pb::SubscribeRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        super::subscribe::open(self.broker.clone(), request.into_inner()).await
    }

    async fn ack(&self, request: Request<pb::AckRequest>) -> Result<Response<pb::AckResponse>, Status> {
        let tokens = request.into_inner().ack_tokens;
        if tokens.is_empty() {
            return Err(Status::invalid_argument(
                "ack_tokens: at least one token is required",
            ));
        }
        let outcomes = self.broker.settle(&tokens, "ack_tokens", Settle::Ack).await;
        let results = tokens
            .into_iter()
            .zip(outcomes)
            .map(|(ack_token, outcome)| match outcome {
                Ok(()) => pb::AckResult {
                    ack_token,
                    confirmed: true,
                    error: None,
                },
                Err(e) => pb::AckResult {
                    ack_token,
                    confirmed: false,
                    error: Some(convert::item_error(e)),
                },
            })
            .collect();
        Ok(Response::new(pb::AckResponse { results }))
    }

    async fn create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::TopicInfo>, Status> {
        let request = request.into_inner();
        let name = TopicName::parse("name", &request.name).map_err(status)?;
        let settings = convert::topic_settings_in(request.settings).map_err(status)?;
        let topic = self.broker.create_topic(name, settings).await.map_err(status)?;
        Ok(Response::new(convert::topic_out(topic)))
    }

    async fn get_topic(
        &self,
        request: Request<pb::GetTopicRequest>,
    ) -> Result<Response<pb::TopicInfo>, Status> {
        let name = TopicName::parse_any("name", &request.into_inner().name).map_err(status)?;
        Ok(Response::new(convert::topic_out(
            self.broker.get_topic(&name).map_err(status)?,
        )))
    }

    async fn list_topics(
        &self,
        _: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        let topics = self
            .broker
            .list_topics()
            .into_iter()
            .map(convert::topic_out)
            .collect();
        Ok(Response::new(pb::ListTopicsResponse { topics }))
    }

    async fn delete_topic(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        let name = TopicName::parse("name", &request.into_inner().name).map_err(status)?;
        self.broker.delete_topic(name).await.map_err(status)?;
        Ok(Response::new(pb::DeleteTopicResponse {}))
    }

    async fn create_subscription(
        &self,
        request: Request<pb::CreateSubscriptionRequest>,
    ) -> Result<Response<pb::SubscriptionInfo>, Status> {
        let request = request.into_inner();
        let name = SubscriptionName::parse("name", &request.name).map_err(status)?;
        let settings = convert::subscription_settings_in(request.settings).map_err(status)?;
        let record = self
            .broker
            .create_subscription(name.clone(), settings)
            .await
            .map_err(status)?;
        let (_, stats) = self
            .broker
            .get_subscription(&name)
            .await
            .unwrap_or((record.clone(), Default::default()));
        Ok(Response::new(convert::subscription_out(record, stats)))
    }

    async fn get_subscription(
        &self,
        request: Request<pb::GetSubscriptionRequest>,
    ) -> Result<Response<pb::SubscriptionInfo>, Status> {
        let name = SubscriptionName::parse("name", &request.into_inner().name).map_err(status)?;
        let (record, stats) = self.broker.get_subscription(&name).await.map_err(status)?;
        Ok(Response::new(convert::subscription_out(record, stats)))
    }

    async fn list_subscriptions(
        &self,
        _: Request<pb::ListSubscriptionsRequest>,
    ) -> Result<Response<pb::ListSubscriptionsResponse>, Status> {
        let subscriptions = self
            .broker
            .list_subscriptions()
            .await
            .into_iter()
            .map(|(record, stats)| convert::subscription_out(record, stats))
            .collect();
        Ok(Response::new(pb::ListSubscriptionsResponse { subscriptions }))
    }

    async fn delete_subscription(
        &self,
        request: Request<pb::DeleteSubscriptionRequest>,
    ) -> Result<Response<pb::DeleteSubscriptionResponse>, Status> {
        let name = SubscriptionName::parse("name", &request.into_inner().name).map_err(status)?;
        self.broker.delete_subscription(name).await.map_err(status)?;
        Ok(Response::new(pb::DeleteSubscriptionResponse {}))
    }
}

/// The engine names a message by its place among the messages it was given;
/// the client knows it by its place in the request.
fn rename_index(error: BrokerError, position: usize) -> BrokerError {
    let rename = |text: String| -> String {
        match text
            .strip_prefix("messages[")
            .and_then(|rest| rest.find(']').map(|end| rest[end + 1..].to_string()))
        {
            Some(rest) if position == usize::MAX => format!("message{rest}"),
            Some(rest) => format!("messages[{position}]{rest}"),
            None => text,
        }
    };
    match error {
        BrokerError::Invalid(mut v) => {
            v.field = rename(v.field);
            BrokerError::Invalid(v)
        }
        BrokerError::NotFound(t) => BrokerError::NotFound(rename(t)),
        BrokerError::ResourceExhausted(t) => BrokerError::ResourceExhausted(rename(t)),
        BrokerError::FailedPrecondition(t) => BrokerError::FailedPrecondition(rename(t)),
        other => other,
    }
}

/// The answer to one message of a publish stream.
async fn stream_answer(broker: &Broker, item: pb::PublishStreamRequest) -> pb::PublishStreamResponse {
    let result = match item.message {
        None => Err(BrokerError::Invalid(crate::domain::ValidationError::new(
            "message", "required",
        ))),
        Some(m) => match convert::message_in("message", m) {
            Err(e) => Err(e.into()),
            Ok(m) => broker
                .publish(vec![m])
                .await
                .pop()
                .unwrap_or_else(|| Err(BrokerError::Internal("no publish result".into()))),
        },
    };
    pb::PublishStreamResponse {
        correlation_id: item.correlation_id,
        result: Some(convert::publish_result(
            result.map_err(|e| rename_index(e, usize::MAX)),
        )),
    }
}

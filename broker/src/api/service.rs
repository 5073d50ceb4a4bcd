//! The `hermod.v1.Broker` gRPC service: validation at the edge, then the engine.

use std::pin::Pin;

use futures::Stream;
use hermod_proto::v1 as pb;
use hermod_proto::v1::broker_server::Broker as BrokerApi;
use tonic::{Request, Response, Status, Streaming};

use crate::domain::limits::MAX_PUBLISH_BATCH;
use crate::domain::{SubscriptionName, TopicName};
use crate::engine::{Broker, Settle};
use crate::error::{BrokerError, NOT_LEADER_METADATA};

use super::convert;

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
        // Checked before the publish, when the request's route was chosen.
        let forwarded = !self.broker.leads_all(valid.iter().map(|m| &m.topic));
        let outcomes = self.broker.publish(valid).await;
        for (position, outcome) in positions.into_iter().zip(outcomes) {
            let outcome = outcome.map_err(|e| rename_index(e, position));
            results[position] = Some(convert::publish_result(outcome));
        }
        let mut response = Response::new(pb::PublishResponse {
            results: results.into_iter().flatten().collect(),
        });
        if forwarded {
            // Tells a routing client that its table is stale: this node
            // passed part of the request on to another group's leader.
            response.metadata_mut().insert(
                NOT_LEADER_METADATA,
                tonic::metadata::MetadataValue::from_static("1"),
            );
        }
        Ok(response)
    }

    type PublishStreamStream = BoxStream<pb::PublishStreamResponse>;

    async fn publish_stream(
        &self,
        request: Request<Streaming<pb::PublishStreamRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        Ok(Response::new(super::publish_stream::open(
            self.broker.clone(),
            request.into_inner(),
        )))
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
            self.broker.get_topic(&name).await.map_err(status)?,
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
pub(super) fn rename_index(error: BrokerError, position: usize) -> BrokerError {
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

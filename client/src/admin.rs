//! Topic and subscription administration.
//!
//! Reads are retried on every retryable error. Creates and deletes are not
//! idempotent (a retry after a lost answer would see `AlreadyExists` or
//! `NotFound` for its own success), so they are retried only when the
//! broker answered `Unavailable`, which it does before changing anything.

use hermod_proto::v1 as pb;

use crate::client::Client;
use crate::convert::{
    subscription_info_from_pb, subscription_settings_to_pb, topic_info_from_pb, topic_settings_to_pb,
};
use crate::error::Result;
use crate::retry::Idempotence::{Idempotent, NotIdempotent};
use crate::settings::{SubscriptionConfig, SubscriptionInfo, TopicConfig, TopicInfo};

impl Client {
    /// Creates a topic; fails with `AlreadyExists` if it exists.
    pub async fn create_topic(&self, name: impl Into<String>, config: TopicConfig) -> Result<TopicInfo> {
        let request = pb::CreateTopicRequest {
            name: name.into(),
            settings: Some(topic_settings_to_pb(&config)),
        };
        let info = self
            .call(NotIdempotent, request, |mut stub, r| async move {
                stub.create_topic(r).await
            })
            .await?;
        Ok(topic_info_from_pb(info))
    }

    /// A topic's effective settings and counters; `NotFound` if it does not exist.
    pub async fn get_topic(&self, name: impl Into<String>) -> Result<TopicInfo> {
        let request = pb::GetTopicRequest { name: name.into() };
        let info = self
            .call(Idempotent, request, |mut stub, r| async move {
                stub.get_topic(r).await
            })
            .await?;
        Ok(topic_info_from_pb(info))
    }

    /// Every topic, reserved ones (`$cluster.events`) included.
    pub async fn list_topics(&self) -> Result<Vec<TopicInfo>> {
        let response = self
            .call(Idempotent, pb::ListTopicsRequest {}, |mut stub, r| async move {
                stub.list_topics(r).await
            })
            .await?;
        Ok(response.topics.into_iter().map(topic_info_from_pb).collect())
    }

    /// Deletes a topic and its messages; `NotFound` if it does not exist.
    pub async fn delete_topic(&self, name: impl Into<String>) -> Result<()> {
        let request = pb::DeleteTopicRequest { name: name.into() };
        self.call(NotIdempotent, request, |mut stub, r| async move {
            stub.delete_topic(r).await
        })
        .await?;
        Ok(())
    }

    /// Creates a durable subscription; fails with `AlreadyExists` if it exists.
    pub async fn create_subscription(
        &self,
        name: impl Into<String>,
        config: SubscriptionConfig,
    ) -> Result<SubscriptionInfo> {
        let request = pb::CreateSubscriptionRequest {
            name: name.into(),
            settings: Some(subscription_settings_to_pb(&config)),
        };
        let info = self
            .call(NotIdempotent, request, |mut stub, r| async move {
                stub.create_subscription(r).await
            })
            .await?;
        Ok(subscription_info_from_pb(info))
    }

    /// A subscription's effective settings and counters.
    pub async fn get_subscription(&self, name: impl Into<String>) -> Result<SubscriptionInfo> {
        let request = pb::GetSubscriptionRequest { name: name.into() };
        let info = self
            .call(Idempotent, request, |mut stub, r| async move {
                stub.get_subscription(r).await
            })
            .await?;
        Ok(subscription_info_from_pb(info))
    }

    /// Every durable subscription.
    pub async fn list_subscriptions(&self) -> Result<Vec<SubscriptionInfo>> {
        let response = self
            .call(
                Idempotent,
                pb::ListSubscriptionsRequest {},
                |mut stub, r| async move { stub.list_subscriptions(r).await },
            )
            .await?;
        Ok(response
            .subscriptions
            .into_iter()
            .map(subscription_info_from_pb)
            .collect())
    }

    /// Deletes a subscription and its cursor; `NotFound` if it does not exist.
    pub async fn delete_subscription(&self, name: impl Into<String>) -> Result<()> {
        let request = pb::DeleteSubscriptionRequest { name: name.into() };
        self.call(NotIdempotent, request, |mut stub, r| async move {
            stub.delete_subscription(r).await
        })
        .await?;
        Ok(())
    }
}

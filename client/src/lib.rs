//! Rust client for the Hermod publish/subscribe broker.
//!
//! - [`Client::connect`] with [`ClientOptions`] (several seed endpoints,
//!   timeouts, retry policy); the [`Client`] is cheap to clone and fails over
//!   to another endpoint by itself. It learns which node leads each shard
//!   from the cluster's status and sends publishes there directly.
//! - Publishing: [`Client::publish`], [`Client::publish_batch`], and the
//!   pipelined [`Publisher`] with a bounded in-flight window. A message
//!   without an id gets a UUIDv7 once, before its first attempt, and keeps
//!   it on every retry, so with exactly-once delivery a retry never stores
//!   the message twice.
//! - Consuming: [`Client::subscribe`] returns a [`Subscriber`], a
//!   [`futures::Stream`] of [`ReceivedMessage`]s, each settled with
//!   [`ack`](ReceivedMessage::ack), [`nack`](ReceivedMessage::nack),
//!   [`extend`](ReceivedMessage::extend), [`reject`](ReceivedMessage::reject)
//!   or [`ack_confirmed`](ReceivedMessage::ack_confirmed).
//! - Administration: create, get, list and delete topics and subscriptions;
//!   the cluster's status, and nodes joining and leaving.
//! - Errors: [`Error`], with the offending request field where the broker
//!   named one, and [`Error::is_retryable`].
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use futures::StreamExt;
//! use hermod_client::{
//!     Client, ClientOptions, Delivery, OutgoingMessage, Priority, SubscribeOptions,
//!     SubscriptionConfig,
//! };
//!
//! # async fn example() -> Result<(), hermod_client::Error> {
//! let client = Client::connect(
//!     ClientOptions::new()
//!         .endpoint("http://127.0.0.1:7400")
//!         .endpoint("http://127.0.0.1:7410")
//!         .request_timeout(Duration::from_secs(5)),
//! )
//! .await?;
//!
//! client
//!     .create_subscription("billing", SubscriptionConfig::new("orders.>").delivery(Delivery::ExactlyOnce))
//!     .await?;
//!
//! let receipt = client
//!     .publish(
//!         OutgoingMessage::new("orders.eu.created", r#"{"order": 42}"#)
//!             .priority(Priority::High)
//!             .ttl(Duration::from_secs(3600))
//!             .delivery(Delivery::ExactlyOnce)
//!             .header("content-type", "application/json"),
//!     )
//!     .await?;
//! println!("stored as {}#{} (id {})", receipt.topic, receipt.sequence, receipt.id);
//!
//! let mut subscriber = client.subscribe(SubscribeOptions::subscription("billing")).await?;
//! while let Some(message) = subscriber.next().await {
//!     let message = message?;
//!     println!("{} #{}: {:?}", message.topic, message.sequence, message.payload_str());
//!     // Returns once the ack is committed: the message will not come again.
//!     message.ack_confirmed().await?;
//! }
//! # Ok(())
//! # }
//! ```

mod admin;
mod client;
mod cluster;
mod connection;
mod convert;
mod credit;
mod error;
mod message;
mod options;
mod publish;
mod publish_task;
mod publisher;
mod received;
mod retry;
mod routes;
mod settings;
mod subscribe_task;
mod subscriber;

pub use client::Client;
pub use cluster::{ClusterNode, ClusterStatus, RaftGroupInfo};
pub use error::{Error, LEADER_HINT_METADATA, Result};
pub use message::{Delivery, OutgoingMessage, ParseEnumError, Priority, PublishReceipt};
pub use options::{ClientOptions, DEFAULT_ENDPOINT, RetryPolicy};
pub use publisher::{DEFAULT_PUBLISH_WINDOW, PublishHandle, Publisher};
pub use received::ReceivedMessage;
pub use settings::{
    PriorityPolicy, Retention, StartPosition, SubscriptionConfig, SubscriptionInfo, TopicConfig, TopicInfo,
};
pub use subscriber::{DEFAULT_PREFETCH, SubscribeOptions, Subscriber};

//! The fixture: one in-process node, a raw gRPC client, state snapshots, and open Subscribe streams.

use std::collections::BTreeSet;

use hermod_proto::v1 as pb;
use hermod_proto::v1::broker_client::BrokerClient;
use hermod_tests::TestNode;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

use crate::expect::expect_ack;
use crate::request::message;
use crate::{WAIT, WATCH, elapsed, within};

type Raw = BrokerClient<Channel>;

/// One in-process node, a raw gRPC client, and what the test has stored.
pub(crate) struct Fx {
    pub(crate) node: TestNode,
    pub(crate) raw: Raw,
    /// Ids of the messages the test published successfully (the catch-all
    /// subscription may deliver these, and nothing else).
    published: BTreeSet<String>,
    markers: u32,
}

/// What "nothing changed" compares: every topic (with counts and settings,
/// `$cluster.events` included) and every subscription.
#[derive(Debug, PartialEq)]
pub(crate) struct Snapshot {
    topics: Vec<pb::TopicInfo>,
    subscriptions: Vec<pb::SubscriptionInfo>,
}

impl Fx {
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let node = TestNode::start().await?;
        let raw = tokio::time::timeout(WAIT, BrokerClient::connect(node.endpoint())).await??;
        let mut fx = Self {
            node,
            raw,
            published: BTreeSet::new(),
            markers: 0,
        };
        let settings = pb::SubscriptionSettings {
            pattern: ">".into(),
            start: Some(pb::StartPosition {
                position: Some(pb::start_position::Position::Earliest(true)),
            }),
            ..Default::default()
        };
        fx.create_subscription(WATCH, settings).await?;
        Ok(fx)
    }

    pub(crate) async fn snapshot(&mut self) -> anyhow::Result<Snapshot> {
        let mut topics = within(self.raw.list_topics(pb::ListTopicsRequest {}))
            .await??
            .into_inner()
            .topics;
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        let mut subscriptions = within(self.raw.list_subscriptions(pb::ListSubscriptionsRequest {}))
            .await??
            .into_inner()
            .subscriptions;
        subscriptions.sort_by(|a, b| a.name.cmp(&b.name));
        // Live counters move as consumers come and go; what is stored is
        // compared through the topics, what is delivered by `assert_serves`.
        for info in &mut subscriptions {
            info.backlog = 0;
            info.in_flight = 0;
            info.consumers = 0;
        }
        Ok(Snapshot {
            topics,
            subscriptions,
        })
    }

    pub(crate) async fn assert_unchanged(&mut self, before: &Snapshot) -> anyhow::Result<()> {
        let after = self.snapshot().await?;
        assert_eq!(&after, before, "a refused request changed the broker's state");
        Ok(())
    }

    /// Publishes a batch and returns its results (one per message).
    pub(crate) async fn publish(
        &mut self,
        messages: Vec<pb::PublishMessage>,
    ) -> anyhow::Result<Vec<pb::PublishResult>> {
        let count = messages.len();
        let results = within(self.raw.publish(pb::PublishRequest { messages }))
            .await??
            .into_inner()
            .results;
        assert_eq!(results.len(), count, "one result per message");
        Ok(results)
    }

    pub(crate) async fn publish_one(
        &mut self,
        message: pb::PublishMessage,
    ) -> anyhow::Result<pb::PublishResult> {
        Ok(self.publish(vec![message]).await?.remove(0))
    }

    /// Publishes a message that must be accepted; remembers its id.
    pub(crate) async fn publish_ok(&mut self, message: pb::PublishMessage) -> anyhow::Result<pb::PublishAck> {
        let result = self.publish_one(message).await?;
        Ok(self.accepted(&result))
    }

    pub(crate) fn accepted(&mut self, result: &pb::PublishResult) -> pb::PublishAck {
        let ack = expect_ack(result);
        self.published.insert(ack.id.clone());
        ack
    }

    pub(crate) async fn create_topic(
        &mut self,
        name: &str,
        settings: pb::TopicSettings,
    ) -> Result<pb::TopicInfo, Status> {
        let request = pb::CreateTopicRequest {
            name: name.into(),
            settings: Some(settings),
        };
        Ok(within(self.raw.create_topic(request))
            .await
            .map_err(elapsed)??
            .into_inner())
    }

    pub(crate) async fn create_subscription(
        &mut self,
        name: &str,
        settings: pb::SubscriptionSettings,
    ) -> Result<pb::SubscriptionInfo, Status> {
        let request = pb::CreateSubscriptionRequest {
            name: name.into(),
            settings: Some(settings),
        };
        Ok(within(self.raw.create_subscription(request))
            .await
            .map_err(elapsed)??
            .into_inner())
    }

    pub(crate) async fn get_topic(&mut self, name: &str) -> Result<pb::TopicInfo, Status> {
        let request = pb::GetTopicRequest { name: name.into() };
        Ok(within(self.raw.get_topic(request))
            .await
            .map_err(elapsed)??
            .into_inner())
    }

    pub(crate) async fn get_subscription(&mut self, name: &str) -> Result<pb::SubscriptionInfo, Status> {
        let request = pb::GetSubscriptionRequest { name: name.into() };
        Ok(within(self.raw.get_subscription(request))
            .await
            .map_err(elapsed)??
            .into_inner())
    }

    pub(crate) async fn ack(&mut self, tokens: Vec<String>) -> Result<Vec<pb::AckResult>, Status> {
        let count = tokens.len();
        let results = within(self.raw.ack(pb::AckRequest { ack_tokens: tokens }))
            .await
            .map_err(elapsed)??
            .into_inner()
            .results;
        assert_eq!(results.len(), count, "one ack result per token");
        Ok(results)
    }

    /// Opens a Subscribe stream with `first` as its first request.
    pub(crate) async fn open(&mut self, first: Vec<pb::SubscribeRequest>) -> Result<Consumer, Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        for request in first {
            tx.send(request).expect("the stream is open");
        }
        let response = within(self.raw.subscribe(UnboundedReceiverStream::new(rx)))
            .await
            .map_err(elapsed)??;
        Ok(Consumer {
            tx,
            inbound: response.into_inner(),
        })
    }

    pub(crate) async fn attach(&mut self, subscription: &str, credit: u32) -> Result<Consumer, Status> {
        self.open(vec![start_durable(subscription, credit)]).await
    }

    /// The node still serves: a good publish is stored, and the catch-all
    /// subscription delivers nothing but what the test published (so the
    /// refused messages were not stored and do not come later).
    pub(crate) async fn assert_serves(&mut self) -> anyhow::Result<()> {
        self.markers += 1;
        let marker = format!("marker-{}", self.markers);
        let ack = self
            .send_ok(message("after.ok", b"still serving").id(&marker))
            .await?;
        assert!(ack.sequence >= 1 && !ack.duplicate, "{ack:?}");
        let mut consumer = self.attach(WATCH, 10_000).await?;
        let mut seen = Vec::new();
        for _ in 0..10_000 {
            let batch = consumer.deliveries().await?;
            for delivered in &batch {
                assert!(
                    self.published.contains(&delivered.id),
                    "a message nobody published successfully was delivered: {} on {}",
                    delivered.id,
                    delivered.topic
                );
            }
            seen.extend(batch.into_iter().map(|d| d.id));
            if seen.contains(&marker) {
                return Ok(());
            }
        }
        anyhow::bail!("the marker never arrived; got {seen:?}")
    }
}

/// An open Subscribe stream.
pub(crate) struct Consumer {
    tx: mpsc::UnboundedSender<pb::SubscribeRequest>,
    inbound: Streaming<pb::SubscribeResponse>,
}

impl Consumer {
    pub(crate) fn send(&self, request: pb::subscribe_request::Request) {
        self.tx
            .send(pb::SubscribeRequest {
                request: Some(request),
            })
            .expect("the request stream is open");
    }

    pub(crate) async fn response(&mut self) -> Result<pb::subscribe_response::Response, Status> {
        let next = within(self.inbound.message()).await.map_err(elapsed)??;
        next.and_then(|r| r.response)
            .ok_or_else(|| Status::unknown("the stream ended or sent an empty response"))
    }

    /// The next batch of deliveries (settlement answers in between are skipped).
    pub(crate) async fn deliveries(&mut self) -> anyhow::Result<Vec<pb::DeliveredMessage>> {
        for _ in 0..100 {
            if let pb::subscribe_response::Response::Deliveries(batch) = self.response().await? {
                return Ok(batch.messages);
            }
        }
        anyhow::bail!("no deliveries among 100 responses")
    }

    /// The next single delivery (the subscription must deliver one at a time).
    pub(crate) async fn delivery(&mut self) -> anyhow::Result<pb::DeliveredMessage> {
        let mut batch = self.deliveries().await?;
        assert_eq!(batch.len(), 1, "{batch:?}");
        Ok(batch.remove(0))
    }

    /// The next settlement answer (deliveries in between are skipped).
    pub(crate) async fn settled(&mut self) -> anyhow::Result<Vec<pb::SettleResult>> {
        for _ in 0..100 {
            if let pb::subscribe_response::Response::Settled(settled) = self.response().await? {
                return Ok(settled.results);
            }
        }
        anyhow::bail!("no settlement answer among 100 responses")
    }
}

fn start_durable(subscription: &str, credit: u32) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        request: Some(pb::subscribe_request::Request::Start(pb::SubscribeStart {
            target: Some(pb::subscribe_start::Target::Subscription(subscription.into())),
            initial_credit: credit,
        })),
    }
}

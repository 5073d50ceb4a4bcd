//! Consumers connected to a node that does not lead: the node relays
//! deliveries from the leader and settlements back to it, and the stream
//! outlives a change of leader. Raw gRPC on the consumer side, so nothing in
//! the client crate (which would follow a redirect) hides what the node does.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use hermod_client::{Delivery, SubscriptionConfig};
use hermod_proto::v1 as pb;
use hermod_proto::v1::broker_client::BrokerClient;
use hermod_tests::cluster::{TestCluster, exactly_once_job};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// Longest wait for any one delivery.
const DELIVERY_WAIT: Duration = Duration::from_secs(30);

/// A raw consumer stream on one node.
struct RawConsumer {
    requests: mpsc::Sender<pb::SubscribeRequest>,
    responses: Streaming<pb::SubscribeResponse>,
    raw: BrokerClient<tonic::transport::Channel>,
    buffered: VecDeque<pb::DeliveredMessage>,
}

impl RawConsumer {
    async fn open(endpoint: String, subscription: &str, credit: u32) -> anyhow::Result<Self> {
        let mut raw = BrokerClient::connect(endpoint).await?;
        let (requests, rx) = mpsc::channel(16);
        let start = pb::SubscribeRequest {
            request: Some(pb::subscribe_request::Request::Start(pb::SubscribeStart {
                target: Some(pb::subscribe_start::Target::Subscription(subscription.into())),
                initial_credit: credit,
            })),
        };
        requests.send(start).await?;
        let responses = raw.subscribe(ReceiverStream::new(rx)).await?.into_inner();
        Ok(Self {
            requests,
            responses,
            raw,
            buffered: VecDeque::new(),
        })
    }

    /// The next delivered message; fails if the stream ends or errors.
    async fn next(&mut self) -> anyhow::Result<pb::DeliveredMessage> {
        if let Some(first) = self.buffered.pop_front() {
            return Ok(first);
        }
        let deadline = Instant::now() + DELIVERY_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let response = tokio::time::timeout(left, self.responses.next())
                .await
                .map_err(|_| anyhow::anyhow!("no delivery within {DELIVERY_WAIT:?}"))?
                .ok_or_else(|| anyhow::anyhow!("the consumer's stream ended"))??;
            if let Some(pb::subscribe_response::Response::Deliveries(batch)) = response.response {
                self.buffered.extend(batch.messages);
            }
            if let Some(first) = self.buffered.pop_front() {
                return Ok(first);
            }
        }
    }

    async fn grant(&self, messages: u32) -> anyhow::Result<()> {
        let credit = pb::SubscribeRequest {
            request: Some(pb::subscribe_request::Request::Credit(pb::Credit { messages })),
        };
        self.requests.send(credit).await?;
        Ok(())
    }

    /// A confirmed ack through the unary call on the same node.
    async fn ack_confirmed(&mut self, token: &str) -> anyhow::Result<()> {
        let request = pb::AckRequest {
            ack_tokens: vec![token.to_string()],
        };
        let results = self.raw.ack(request).await?.into_inner().results;
        anyhow::ensure!(results.len() == 1, "one result per token");
        anyhow::ensure!(results[0].confirmed, "ack not confirmed: {:?}", results[0].error);
        Ok(())
    }
}

/// Receives every id in `expected` on `consumer`, acking each with
/// confirmation; fails on a redelivery of an acked message.
async fn receive_all(consumer: &mut RawConsumer, expected: &BTreeSet<String>) -> anyhow::Result<()> {
    let mut got = BTreeSet::new();
    let mut acked = BTreeSet::new();
    while got.len() < expected.len() {
        let delivered = consumer.next().await?;
        anyhow::ensure!(
            !acked.contains(&delivered.id),
            "{} delivered again after a confirmed ack",
            delivered.id
        );
        got.insert(delivered.id.clone());
        match consumer.ack_confirmed(&delivered.ack_token).await {
            Ok(()) => {
                acked.insert(delivered.id);
            }
            // A lease granted by a leader that has since stopped cannot be
            // checked; the message comes again after its deadline.
            Err(e) => eprintln!("ack of {} not confirmed ({e}); it will come again", delivered.id),
        }
        consumer.grant(1).await?;
    }
    anyhow::ensure!(&got == expected, "every acknowledged publish is delivered");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_on_a_follower_receives_and_confirms_through_the_leader() -> anyhow::Result<()> {
    let cluster = TestCluster::start(3).await?;
    let leader = cluster.wait_for_leader().await?;
    let follower = (0..3).find(|i| *i != leader).expect("three nodes");
    let client = cluster.client(&[leader]).await?;
    client
        .create_subscription(
            "jobs",
            SubscriptionConfig::new("jobs.>").delivery(Delivery::ExactlyOnce),
        )
        .await?;
    cluster.wait_caught_up().await?;
    let mut consumer = RawConsumer::open(cluster.endpoint(follower), "jobs", 1).await?;
    let mut expected = BTreeSet::new();
    for n in 0..20 {
        let id = format!("m-{n}");
        client.publish(exactly_once_job(&id)).await?;
        expected.insert(id);
    }
    receive_all(&mut consumer, &expected).await?;
    // Every ack was confirmed: the next delivery is a new message, never one
    // of those again.
    client.publish(exactly_once_job("marker")).await?;
    let next = consumer.next().await?;
    assert_eq!(next.id, "marker", "acked messages stay acked");
    assert_eq!(next.attempt, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_stream_on_a_follower_outlives_a_leader_change() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(3).await?;
    let old = cluster.wait_for_leader().await?;
    let follower = (0..3).find(|i| *i != old).expect("three nodes");
    let client = cluster.client(&[follower]).await?;
    client
        .create_subscription(
            "jobs",
            SubscriptionConfig::new("jobs.>")
                .delivery(Delivery::ExactlyOnce)
                .ack_deadline(Duration::from_secs(2)),
        )
        .await?;
    cluster.wait_caught_up().await?;
    let mut consumer = RawConsumer::open(cluster.endpoint(follower), "jobs", 1).await?;
    let before: BTreeSet<String> = (0..5).map(|n| format!("before-{n}")).collect();
    for id in &before {
        client.publish(exactly_once_job(id)).await?;
    }
    receive_all(&mut consumer, &before).await?;

    cluster.stop(old).await;
    let new = cluster.wait_for_leader().await?;
    assert_ne!(new, old, "a surviving node leads");
    let after: BTreeSet<String> = (0..5).map(|n| format!("after-{n}")).collect();
    for id in &after {
        client.publish(exactly_once_job(id)).await?;
    }
    // The same stream, opened before the leader changed, delivers the rest.
    receive_all(&mut consumer, &after).await?;
    Ok(())
}

//! The client's routing table: publishes go straight to the leader of their
//! topic's shard, learnt from the cluster's status; the table follows a
//! leader that died; a node that had to forward a publish says so.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use hermod_client::{Client, Delivery, OutgoingMessage, RetryPolicy, SubscriptionConfig};
use hermod_proto::v1 as pb;
use hermod_proto::v1::broker_client::BrokerClient;
use hermod_tests::cluster::{SETTLE_TIMEOUT, TestCluster, consume_confirmed};

/// Topics published to: enough to reach every shard.
const TOPICS: usize = 24;
/// The seed every client of these tests is given.
const SEED: usize = 0;

fn message(topic: &str, id: &str) -> OutgoingMessage {
    OutgoingMessage::new(topic, id.to_owned())
        .id(id.to_owned())
        .delivery(Delivery::ExactlyOnce)
}

fn topics() -> Vec<String> {
    (0..TOPICS).map(|t| format!("routed.t{t}")).collect()
}

async fn subscribe_all(client: &Client) -> anyhow::Result<()> {
    let config = SubscriptionConfig::new("routed.>").delivery(Delivery::ExactlyOnce);
    client.create_subscription("routed", config).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publishes_reach_their_leaders_even_when_the_seed_is_cut_off() -> anyhow::Result<()> {
    let cluster = TestCluster::start(3).await?;
    let client = cluster.client(&[SEED]).await?;
    subscribe_all(&client).await?;
    // The client learnt every shard's leader from its seed; the seed's own
    // shards it reaches through the seed connection.
    for topic in topics() {
        let leader = cluster.leader_of(&topic).expect("every shard has a leader");
        let address = (leader != SEED).then(|| cluster.members[leader].address.clone());
        assert_eq!(client.leader_route(&topic), address, "route of {topic}");
    }
    let elsewhere: Vec<String> = topics()
        .into_iter()
        .filter(|t| cluster.leader_of(t) != Some(SEED))
        .collect();
    assert!(!elsewhere.is_empty(), "the seed does not lead every shard");

    // Cut off from the cluster, the seed can forward nothing: a client
    // that sends everything to it is refused...
    cluster.isolate(SEED);
    let unrouted = Client::connect(
        cluster
            .client_options(&[SEED])
            .route_to_leaders(false)
            .request_timeout(Duration::from_secs(10))
            .retry_policy(RetryPolicy::none()),
    )
    .await?;
    let refused = unrouted.publish(message(&elsewhere[0], "through-the-seed")).await;
    let error = refused.expect_err("a node cut off from the leaders cannot forward");
    assert!(error.is_retryable(), "{error}");
    // ...while the routed client reaches the leaders of the other shards.
    let mut expected = BTreeSet::new();
    for topic in &elsewhere {
        let id = format!("{topic}-direct");
        let receipt = client.publish(message(topic, &id)).await?;
        assert!(!receipt.duplicate);
        expected.insert(id);
    }

    cluster.heal();
    cluster.wait_caught_up().await?;
    consume_confirmed(&cluster.client(&[1]).await?, "routed", &expected).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_table_follows_a_leader_that_died() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(3).await?;
    let client = cluster.client(&[SEED]).await?;
    subscribe_all(&client).await?;
    let (topic, old) = topics()
        .into_iter()
        .find_map(|t| cluster.leader_of(&t).filter(|l| *l != SEED).map(|l| (t, l)))
        .expect("another node than the seed leads some shard");
    assert_eq!(
        client.leader_route(&topic),
        Some(cluster.members[old].address.clone())
    );
    cluster.stop(old).await;

    // Publishing on: the dead leader's route fails and is dropped, the
    // seed forwards meanwhile, and the table learns the new leader.
    let mut expected = BTreeSet::new();
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let new = loop {
        let id = format!("after-{}", expected.len());
        client.publish(message(&topic, &id)).await?;
        expected.insert(id);
        // A new leader on the seed is reached through the seed connection.
        if let Some(new) = cluster.leader_of(&topic)
            && client.leader_route(&topic) == (new != SEED).then(|| cluster.members[new].address.clone())
        {
            break new;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the route of {topic} is {:?} after {SETTLE_TIMEOUT:?}",
            client.leader_route(&topic)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(new, old);
    consume_confirmed(&client, "routed", &expected).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_forwards_a_publish_says_so() -> anyhow::Result<()> {
    let cluster = TestCluster::start(3).await?;
    let topic = topics().remove(0);
    let leader = cluster.leader_of(&topic).expect("the shard has a leader");
    let follower = (leader + 1) % 3;
    for (node, forwards) in [(leader, false), (follower, true)] {
        let mut raw = BrokerClient::connect(cluster.endpoint(node)).await?;
        let request = pb::PublishRequest {
            messages: vec![pb::PublishMessage {
                topic: topic.clone(),
                payload: b"x".to_vec().into(),
                ..Default::default()
            }],
        };
        let response = raw.publish(request).await?;
        assert_eq!(
            response.metadata().contains_key("hermod-not-leader"),
            forwards,
            "node {node} (leader: {leader})"
        );
        let result = response.into_inner().results.remove(0);
        assert!(
            matches!(result.outcome, Some(pb::publish_result::Outcome::Ack(_))),
            "{result:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pipelined_publisher_loses_nothing_when_a_leader_it_streams_to_dies() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(3).await?;
    let client = cluster.client(&[SEED]).await?;
    subscribe_all(&client).await?;
    let topics = topics();
    let victim = (0..3)
        .find(|n| *n != SEED && topics.iter().any(|t| cluster.leader_of(t) == Some(*n)))
        .expect("another node than the seed leads some shard");
    // One stream to each leader; the victim dies with messages in flight.
    let publisher = client.publisher_with_window(64);
    let mut handles = Vec::new();
    let mut expected = BTreeSet::new();
    for n in 0..600 {
        if n == 200 {
            cluster.stop(victim).await;
        }
        let id = format!("piped-{n}");
        handles.push(publisher.send(message(&topics[n % TOPICS], &id)).await);
        expected.insert(id);
    }
    for handle in handles {
        handle.await?;
    }
    publisher.close().await;
    consume_confirmed(&client, "routed", &expected).await?;
    Ok(())
}

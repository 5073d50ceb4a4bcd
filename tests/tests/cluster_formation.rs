//! Clusters of several nodes in one process: they form (by expected size or
//! by joining), replicate every durable change, serve any request on any
//! node, and grow from one node to three.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use hermod_client::{
    Client, ClientOptions, Delivery, OutgoingMessage, RetryPolicy, SubscribeOptions, SubscriptionConfig,
};
use hermod_tests::cluster::{Formation, Links, TestCluster, all_agree};

/// A client that knows every node of `cluster` and retries through a leader change.
async fn client_of(cluster: &TestCluster) -> anyhow::Result<Client> {
    let endpoints: Vec<String> = (0..cluster.members.len()).map(|i| cluster.endpoint(i)).collect();
    let options = ClientOptions::new()
        .endpoints(endpoints)
        .request_timeout(Duration::from_secs(15))
        .retry_policy(RetryPolicy::new(
            40,
            Duration::from_millis(50),
            Duration::from_millis(500),
        ));
    Ok(Client::connect(options).await?)
}

async fn publish_ids(client: &Client, topic: &str, ids: &[String]) -> anyhow::Result<()> {
    for id in ids {
        client
            .publish(
                OutgoingMessage::new(topic, id.clone())
                    .id(id.clone())
                    .delivery(Delivery::AtLeastOnce),
            )
            .await?;
    }
    Ok(())
}

/// Receives `count` messages, acking each, and returns their ids.
async fn consume(client: &Client, subscription: &str, count: usize) -> anyhow::Result<BTreeSet<String>> {
    let mut subscriber = client
        .subscribe(SubscribeOptions::subscription(subscription))
        .await?;
    let mut got = BTreeSet::new();
    while got.len() < count {
        let message = tokio::time::timeout(Duration::from_secs(20), subscriber.next())
            .await
            .map_err(|_| anyhow::anyhow!("only {} of {count} messages arrived", got.len()))?
            .ok_or_else(|| anyhow::anyhow!("the stream ended"))??;
        got.insert(message.id.clone());
        message.ack_confirmed().await?;
    }
    Ok(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_form_and_any_node_serves_any_request() -> anyhow::Result<()> {
    let cluster = TestCluster::start(3).await?;
    let leader = cluster.wait_for_leader().await?;
    let follower = (leader + 1) % 3;
    // A client that knows only a follower: the follower forwards writes to the leader.
    let client = Client::connect_to(cluster.endpoint(follower)).await?;
    client
        .create_subscription("audit", SubscriptionConfig::new("orders.>"))
        .await?;
    let ids: Vec<String> = (0..20).map(|n| format!("order-{n}")).collect();
    publish_ids(&client, "orders.eu", &ids).await?;
    cluster.wait_caught_up().await?;
    for (index, _) in cluster.views() {
        let topics = cluster.node(index).broker.list_topics();
        assert!(
            topics.iter().any(|t| t.name.as_str() == "orders.eu"),
            "node {index} has the topic"
        );
    }
    // The consumer connects to the follower too; it is sent on to the leader.
    let got = consume(&client, "audit", ids.len()).await?;
    assert_eq!(got, ids.iter().cloned().collect::<BTreeSet<_>>());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_nodes_form_by_joining_the_first() -> anyhow::Result<()> {
    let cluster = TestCluster::start_with(5, Formation::Join, Links::Grpc).await?;
    cluster.wait_for_leader().await?;
    let views = cluster.views();
    assert!(all_agree(&views, 5), "{views:#?}");
    for (_, view) in &views {
        assert_eq!(view.nodes.len(), 5, "every node knows five members");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_in_process_transport_forms_a_cluster_too() -> anyhow::Result<()> {
    let cluster = TestCluster::start_with(3, Formation::Expect, Links::InProcess).await?;
    cluster.wait_for_leader().await?;
    let client = client_of(&cluster).await?;
    let ids: Vec<String> = (0..5).map(|n| format!("m-{n}")).collect();
    publish_ids(&client, "local.t", &ids).await?;
    cluster.wait_caught_up().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn growing_from_one_node_to_three_replicates_the_existing_data() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_with(1, Formation::Join, Links::Grpc).await?;
    let client = client_of(&cluster).await?;
    client
        .create_subscription("grow", SubscriptionConfig::new("grow.>"))
        .await?;
    let ids: Vec<String> = (0..10).map(|n| format!("g-{n}")).collect();
    publish_ids(&client, "grow.t", &ids).await?;
    cluster.add_node().await?;
    cluster.add_node().await?;
    cluster.wait_for(|views| all_agree(views, 3)).await?;
    // The shards gain their new replicas once the nodes joined.
    cluster.wait_settled().await?;
    cluster.wait_caught_up().await?;
    for index in 1..3 {
        let topics = cluster.node(index).broker.list_topics();
        assert!(
            topics.iter().any(|t| t.name.as_str() == "grow.t"),
            "node {index} caught up"
        );
    }
    let got = consume(&client, "grow", ids.len()).await?;
    assert_eq!(got.len(), ids.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_leaves_under_load_loses_nothing_and_stops_taking_part() -> anyhow::Result<()> {
    let cluster = TestCluster::start(3).await?;
    let leader = cluster.wait_for_leader().await?;
    let leaving = (leader + 1) % 3;
    let stays: Vec<usize> = (0..3).filter(|i| *i != leaving).collect();
    let leaving_id = cluster.node(leaving).broker.consensus().node_id();
    // The publisher knows only the nodes that stay.
    let endpoints: Vec<String> = stays.iter().map(|i| cluster.endpoint(*i)).collect();
    let options = ClientOptions::new()
        .endpoints(endpoints.clone())
        .request_timeout(Duration::from_secs(15))
        .retry_policy(RetryPolicy::new(
            40,
            Duration::from_millis(50),
            Duration::from_millis(500),
        ));
    let client = Client::connect(options).await?;
    client
        .create_subscription("kept", SubscriptionConfig::new("leave.>"))
        .await?;
    let publisher = {
        let client = client.clone();
        tokio::spawn(async move {
            let ids: Vec<String> = (0..300).map(|n| format!("l-{n}")).collect();
            publish_ids(&client, "leave.t", &ids).await.map(|_| ids)
        })
    };
    client.leave_cluster(Some(leaving_id)).await?;

    // The two that stay agree on a leader and on two members.
    let staying: Vec<usize> = stays.clone();
    cluster
        .wait_for(|views| {
            let of_stayers: Vec<_> = views.iter().filter(|(i, _)| staying.contains(i)).collect();
            of_stayers.len() == 2
                && of_stayers.iter().all(|(_, v)| {
                    v.quorum && v.nodes.len() == 2 && !v.nodes.iter().any(|n| n.id == leaving_id)
                })
        })
        .await?;
    // The node that left learns it from its former peers and stops campaigning.
    let removed = cluster.node(leaving).broker.consensus().clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !removed.was_removed() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the node that left did not notice within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let ids = publisher.await??;
    let got = consume(&client, "kept", ids.len()).await?;
    assert_eq!(
        got,
        ids.into_iter().collect::<BTreeSet<_>>(),
        "every acknowledged publish is kept"
    );
    let count = hermod_tests::checks::agreed_count(&endpoints, "leave.t", Duration::from_secs(10)).await?;
    assert_eq!(count, 300, "both remaining nodes store each message once");
    Ok(())
}

//! Topics spread over the shard groups of a cluster: any node takes any
//! publish and forwards it to the leader of its topic's shard, even a node
//! that holds no replica of that shard; a consumer on any node receives
//! every shard's messages of its subscription, each once.

use hermod_client::{Delivery, OutgoingMessage, SubscriptionConfig};
use hermod_tests::cluster::{TestCluster, consume_confirmed};
use std::collections::BTreeSet;

/// Topics published to: enough to reach every shard.
const TOPICS: usize = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_nodes_serve_every_shard_through_any_node() -> anyhow::Result<()> {
    let cluster = TestCluster::start(5).await?;
    // Three replicas a shard, the leaderships spread over the nodes.
    let views = cluster.views();
    let shards: Vec<_> = views[0]
        .1
        .groups
        .iter()
        .filter(|g| g.name.starts_with("shard-"))
        .collect();
    assert_eq!(shards.len(), 8, "eight shards by default: {views:#?}");
    let mut leaders = BTreeSet::new();
    for shard in &shards {
        let owner = views
            .iter()
            .find_map(|(_, v)| {
                v.groups
                    .iter()
                    .find(|g| g.name == shard.name && g.replicas.contains(&v.node_id))
            })
            .expect("some node replicates the shard");
        assert_eq!(owner.replicas.len(), 3, "{} has three replicas", shard.name);
        leaders.extend(owner.leader);
    }
    assert_eq!(leaders.len(), 5, "every node leads some shard");

    let client = cluster.client(&[0]).await?;
    client
        .create_subscription(
            "spread",
            SubscriptionConfig::new("spread.>").delivery(Delivery::ExactlyOnce),
        )
        .await?;
    // Every node takes publishes for every shard (the client does not
    // route them, so the nodes forward).
    let mut expected = BTreeSet::new();
    for node in 0..5 {
        let publisher = cluster.unrouted_client(&[node]).await?;
        for topic in 0..TOPICS {
            let id = format!("n{node}-t{topic}");
            let message = OutgoingMessage::new(format!("spread.t{topic}"), id.clone())
                .id(id.clone())
                .delivery(Delivery::ExactlyOnce);
            publisher.publish(message).await?;
            expected.insert(id);
        }
    }
    // A consumer on the last node reads every shard's share.
    consume_confirmed(&cluster.client(&[4]).await?, "spread", &expected).await?;
    // Every node answers for every topic, also of shards it holds no
    // replica of: five messages each, one through every node.
    for node in 0..5 {
        let reader = cluster.unrouted_client(&[node]).await?;
        for topic in 0..TOPICS {
            let info = reader.get_topic(format!("spread.t{topic}")).await?;
            assert_eq!(info.messages, 5, "node {node} counts spread.t{topic}");
        }
    }
    Ok(())
}

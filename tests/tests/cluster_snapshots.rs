//! A node that falls further behind than the leader's log reaches catches up
//! from a snapshot file sent over gRPC, and then holds every message itself.

use std::collections::BTreeSet;
use std::sync::Arc;

use hermod_broker::cluster::DEFAULT_SHARDS;
use hermod_broker::domain::{MessageKey, Shards, TopicName};
use hermod_broker::state::{Reader, StateMachine};
use hermod_broker::storage::{Keyspace, RocksStore, Store};
use hermod_client::{Delivery, OutgoingMessage};
use hermod_tests::cluster::{Formation, Links, TestCluster};

/// Snapshots this often let a few hundred publishes purge the log twice over.
const SNAPSHOT_EVERY_ENTRIES: u64 = 100;
const MESSAGES: usize = 400;
const TOPIC: &str = "orders.eu";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_behind_the_purged_log_catches_up_from_a_snapshot_and_holds_every_message()
-> anyhow::Result<()> {
    let mut cluster =
        TestCluster::start_snapshotting(3, Formation::Expect, Links::Grpc, SNAPSHOT_EVERY_ENTRIES).await?;
    let leader = cluster.wait_for_leader().await?;
    let lagging = (leader + 1) % 3;
    cluster.stop(lagging).await;

    let client = cluster.client(&[leader]).await?;
    let mut ids = BTreeSet::new();
    // One at a time, so every publish is a log entry of its own.
    for n in 0..MESSAGES {
        let id = format!("order-{n}");
        let message = OutgoingMessage::new(TOPIC, id.clone())
            .id(id.clone())
            .delivery(Delivery::AtLeastOnce);
        client.publish(message).await?;
        ids.insert(id);
    }

    cluster.restart(lagging).await?;
    cluster.wait_caught_up().await?;
    let group = shard_of_topic()?;
    let snapshot_dir = cluster.members[lagging]
        .dir
        .join("snapshots")
        .join(format!("group-{group}"));
    let snapshots = std::fs::read_dir(snapshot_dir)?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("snapshot-"))
        .count();
    assert_eq!(
        snapshots, 1,
        "the lagging node installed a snapshot and keeps it as its current one"
    );

    for index in 0..3 {
        cluster.stop(index).await;
    }
    let stored = stored_payloads(&cluster.members[lagging].dir.join("db"))?;
    assert_eq!(
        stored.len(),
        MESSAGES,
        "each message is stored once on the lagging node"
    );
    assert_eq!(stored.into_iter().collect::<BTreeSet<_>>(), ids);
    Ok(())
}

/// The shard group that holds `TOPIC`.
fn shard_of_topic() -> anyhow::Result<u32> {
    Ok(Shards::new("shards", DEFAULT_SHARDS)?.group_of(&TopicName::parse("topic", TOPIC)?))
}

/// Every payload of `TOPIC` in the database at `dir`, read from disk.
fn stored_payloads(dir: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let store: Arc<dyn Store> = Arc::new(RocksStore::open(dir)?);
    let group = shard_of_topic()?;
    let shard: Arc<dyn Store> = Keyspace::new(store, group);
    let reader = Reader::new(StateMachine::open_group(shard, group)?);
    let topic = TopicName::parse("topic", TOPIC)?;
    let record = reader
        .machine()
        .catalog()
        .topics
        .get(&topic)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("the lagging node has no topic {TOPIC}"))?;
    let mut payloads = Vec::new();
    for sequence in record.first_sequence..record.next_sequence {
        let key = MessageKey {
            topic: topic.clone(),
            sequence,
        };
        let message = reader
            .message(&key)?
            .ok_or_else(|| anyhow::anyhow!("sequence {sequence} is missing"))?;
        payloads.push(String::from_utf8(message.payload.to_vec())?);
    }
    Ok(payloads)
}

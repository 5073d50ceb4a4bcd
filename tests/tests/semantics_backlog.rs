//! A backlog larger than the queue window: most of it waits on disk and is
//! paged in, and still strict priorities, FIFO, counts and restarts hold.

mod support;

use std::collections::BTreeSet;

use hermod_client::{Client, OutgoingMessage, Priority, StartPosition, SubscribeOptions};
use hermod_tests::TestNode;
use support::{next, quick, restart, wait_backlog};

/// Far smaller than the backlogs below, so every lane pages many times.
const WINDOW: usize = 16;

async fn start_small() -> anyhow::Result<(TestNode, Client)> {
    let node = TestNode::start_with(|config| config.queue_window = WINDOW).await?;
    let client = Client::connect_to(node.endpoint()).await?;
    Ok((node, client))
}

/// Publishes `count` messages of `priority` with ids `tag-N`, in one batch.
async fn publish(client: &Client, topic: &str, priority: Priority, count: usize) -> anyhow::Result<()> {
    let tag = priority.as_str();
    let batch = (0..count)
        .map(|n| {
            let id = format!("{tag}-{n}");
            OutgoingMessage::new(topic, id.clone()).id(id).priority(priority)
        })
        .collect();
    for result in client.publish_batch(batch).await? {
        result?;
    }
    Ok(())
}

/// Receives and acks `count` messages; their ids in delivery order.
async fn drain(client: &Client, subscription: &str, count: usize) -> anyhow::Result<Vec<String>> {
    let mut subscriber = client
        .subscribe(SubscribeOptions::subscription(subscription))
        .await?;
    let mut ids = Vec::new();
    for _ in 0..count {
        let message = next(&mut subscriber).await?;
        assert_eq!(message.attempt, 1, "{} was delivered before", message.id);
        message.ack_confirmed().await?;
        ids.push(message.id.clone());
    }
    subscriber.close().await?;
    Ok(ids)
}

fn expected(groups: &[(Priority, std::ops::Range<usize>)]) -> Vec<String> {
    groups
        .iter()
        .flat_map(|(priority, range)| range.clone().map(move |n| format!("{}-{n}", priority.as_str())))
        .collect()
}

#[tokio::test]
async fn strict_priority_holds_across_pages_of_a_backlog_on_disk() -> anyhow::Result<()> {
    let (_node, client) = start_small().await?;
    client.create_subscription("deep", quick("deep.>")).await?;
    // The lowest first, the highest last: memory alone would hold only the
    // first LOW ones and deliver them first.
    publish(&client, "deep.jobs", Priority::Low, 100).await?;
    publish(&client, "deep.jobs", Priority::High, 40).await?;
    publish(&client, "deep.jobs", Priority::Critical, 30).await?;
    wait_backlog(&client, "deep", 170).await?;

    let got = drain(&client, "deep", 170).await?;
    let want = expected(&[
        (Priority::Critical, 0..30),
        (Priority::High, 0..40),
        (Priority::Low, 0..100),
    ]);
    assert_eq!(got, want, "strictly by priority, FIFO within each, each once");
    wait_backlog(&client, "deep", 0).await?;
    Ok(())
}

#[tokio::test]
async fn a_restart_pages_the_rest_of_the_backlog_in_without_loss_or_repeat() -> anyhow::Result<()> {
    let (mut node, client) = start_small().await?;
    client
        .create_subscription("kept", quick("kept.>").start(StartPosition::Earliest))
        .await?;
    publish(&client, "kept.jobs", Priority::Normal, 60).await?;
    publish(&client, "kept.jobs", Priority::High, 25).await?;
    wait_backlog(&client, "kept", 85).await?;
    let first = drain(&client, "kept", 30).await?;
    assert_eq!(
        first,
        expected(&[(Priority::High, 0..25), (Priority::Normal, 0..5)])
    );

    let client = restart(&mut node).await?;
    // Counted from disk at the start, most of it never in memory.
    wait_backlog(&client, "kept", 55).await?;
    let rest = drain(&client, "kept", 55).await?;
    assert_eq!(rest, expected(&[(Priority::Normal, 5..60)]));
    let all: BTreeSet<_> = first.iter().chain(&rest).collect();
    assert_eq!(all.len(), 85, "no message twice");
    wait_backlog(&client, "kept", 0).await?;
    Ok(())
}

#[tokio::test]
async fn deleting_a_topic_forgets_its_backlog_in_memory_and_on_disk() -> anyhow::Result<()> {
    let (_node, client) = start_small().await?;
    client.create_subscription("gone", quick("gone.>")).await?;
    publish(&client, "gone.a", Priority::Low, 50).await?;
    publish(&client, "gone.b", Priority::High, 3).await?;
    wait_backlog(&client, "gone", 53).await?;
    client.delete_topic("gone.a").await?;
    wait_backlog(&client, "gone", 3).await?;
    let got = drain(&client, "gone", 3).await?;
    assert_eq!(got, expected(&[(Priority::High, 0..3)]));
    wait_backlog(&client, "gone", 0).await?;
    Ok(())
}

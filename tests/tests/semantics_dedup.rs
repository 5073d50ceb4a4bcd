//! Publish deduplication by message id within the topic's dedup window.

mod support;

use std::time::Duration;

use hermod_client::{
    Delivery, OutgoingMessage, StartPosition, SubscribeOptions, SubscriptionConfig, TopicConfig,
};
use support::{assert_nothing, next, start};

#[tokio::test]
async fn sequential_duplicates_are_stored_once() -> anyhow::Result<()> {
    let (_node, client) = start().await?;
    client.create_topic("dedup.seq", TopicConfig::new()).await?;

    let mut receipts = Vec::new();
    for n in 0..10 {
        // Even a different payload under the same id is a duplicate.
        let message = OutgoingMessage::new("dedup.seq", format!("payload-{n}"))
            .id("order-1")
            .delivery(Delivery::ExactlyOnce);
        receipts.push(client.publish(message).await?);
    }
    let first = &receipts[0];
    assert!(!first.duplicate, "the first publish stores the message");
    for (n, receipt) in receipts.iter().enumerate().skip(1) {
        assert!(receipt.duplicate, "publish #{n} is a duplicate");
        assert_eq!(
            receipt.sequence, first.sequence,
            "publish #{n} names the first sequence"
        );
        assert_eq!(receipt.id, "order-1");
    }

    let topic = client.get_topic("dedup.seq").await?;
    assert_eq!(topic.messages, 1, "stored once");
    assert_eq!(topic.last_sequence, first.sequence);

    // A reader sees exactly one message, the first payload.
    client
        .create_subscription(
            "dedup-reader",
            SubscriptionConfig::new("dedup.seq").start(StartPosition::Earliest),
        )
        .await?;
    let mut subscriber = client
        .subscribe(SubscribeOptions::subscription("dedup-reader"))
        .await?;
    let message = next(&mut subscriber).await?;
    assert_eq!(message.id, "order-1");
    assert_eq!(message.payload_str(), Some("payload-0"));
    message.ack().await?;
    assert_nothing(
        &mut subscriber,
        Duration::from_millis(300),
        "duplicates must not be stored",
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn concurrent_duplicates_are_stored_once() -> anyhow::Result<()> {
    const TASKS: usize = 20;
    let (_node, client) = start().await?;
    client.create_topic("dedup.conc", TopicConfig::new()).await?;

    let mut tasks = Vec::new();
    for n in 0..TASKS {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            client
                .publish(
                    OutgoingMessage::new("dedup.conc", format!("from task {n}"))
                        .id("same-id")
                        .delivery(Delivery::ExactlyOnce),
                )
                .await
        }));
    }
    let mut receipts = Vec::new();
    for task in tasks {
        receipts.push(tokio::time::timeout(support::WAIT, task).await???);
    }

    let originals: Vec<_> = receipts.iter().filter(|r| !r.duplicate).collect();
    assert_eq!(originals.len(), 1, "exactly one publish stores it: {receipts:?}");
    let sequence = originals[0].sequence;
    assert!(
        receipts.iter().all(|r| r.sequence == sequence),
        "every answer carries the first sequence: {receipts:?}"
    );
    let topic = client.get_topic("dedup.conc").await?;
    assert_eq!(topic.messages, 1, "stored once");

    // The sequence moved on by exactly one.
    let other = client
        .publish(OutgoingMessage::new("dedup.conc", "other").id("other-id"))
        .await?;
    assert!(!other.duplicate);
    assert_eq!(other.sequence, sequence + 1);
    Ok(())
}

#[tokio::test]
async fn an_id_is_accepted_again_after_the_dedup_window() -> anyhow::Result<()> {
    const WINDOW: Duration = Duration::from_millis(300);
    let (_node, client) = start().await?;
    let topic = client
        .create_topic("dedup.win", TopicConfig::new().dedup_window(WINDOW))
        .await?;
    assert_eq!(topic.config.dedup_window, Some(WINDOW));

    let publish = || {
        client.publish(
            OutgoingMessage::new("dedup.win", "x")
                .id("w-1")
                .delivery(Delivery::ExactlyOnce),
        )
    };
    let first = publish().await?;
    assert!(!first.duplicate);

    // Republish every 100 ms. The window counts from the first publish and
    // duplicates do not refresh it, so within about the window plus one
    // sweep (every second) the id must be new again.
    let mut duplicates = 0;
    let mut accepted = None;
    for _ in 0..40 {
        let receipt = publish().await?;
        if receipt.duplicate {
            assert_eq!(receipt.sequence, first.sequence);
            duplicates += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        } else {
            accepted = Some(receipt);
            break;
        }
    }
    let again = accepted.expect("the id was never accepted again (is the window refreshed by duplicates?)");
    assert!(duplicates >= 1, "a publish within the window is a duplicate");
    assert!(
        again.publish_time >= first.publish_time + WINDOW,
        "accepted again only after the window"
    );
    assert!(
        again.sequence > first.sequence,
        "a new message gets a new sequence"
    );
    let topic = client.get_topic("dedup.win").await?;
    assert_eq!(topic.messages, 2);

    // And the new publish opens a new window.
    let dup = publish().await?;
    assert!(dup.duplicate);
    assert_eq!(dup.sequence, again.sequence);
    Ok(())
}

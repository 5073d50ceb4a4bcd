//! What survives a restart of the node: unacked messages, confirmed acks,
//! delays, and leases of exactly-once messages.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use hermod_client::{Client, Delivery, OutgoingMessage, SubscribeOptions};
use support::{assert_nothing, next, quick, restart, start};

#[tokio::test]
async fn unacked_at_least_once_messages_are_delivered_after_a_restart() -> anyhow::Result<()> {
    let (mut node, client) = start().await?;
    client.create_subscription("dur", quick("dur.>")).await?;
    let expected: BTreeSet<String> = (0..5).map(|n| format!("dur-{n}")).collect();
    for id in &expected {
        client
            .publish(OutgoingMessage::new("dur.jobs", id.clone()).id(id.clone()))
            .await?;
    }
    // One consumer sees two of them and acks neither.
    let mut subscriber = client
        .subscribe(SubscribeOptions::subscription("dur").limit(2))
        .await?;
    next(&mut subscriber).await?;
    next(&mut subscriber).await?;
    drop(subscriber);
    drop(client);

    let client = restart(&mut node).await?;
    let mut subscriber = client.subscribe(SubscribeOptions::subscription("dur")).await?;
    let mut got = BTreeSet::new();
    for _ in 0..expected.len() {
        let message = next(&mut subscriber).await?;
        assert!(got.insert(message.id.clone()), "{} delivered twice", message.id);
        message.ack_confirmed().await?;
    }
    assert_eq!(got, expected, "every unacked message survives the restart");
    assert_nothing(&mut subscriber, Duration::from_millis(500), "all acked").await?;
    Ok(())
}

#[tokio::test]
async fn a_confirmed_ack_holds_across_restarts() -> anyhow::Result<()> {
    const DEADLINE: Duration = Duration::from_millis(500);
    let (mut node, client) = start().await?;
    client
        .create_subscription(
            "eo",
            quick("eo.>")
                .delivery(Delivery::ExactlyOnce)
                .ack_deadline(DEADLINE),
        )
        .await?;
    for id in ["done", "pending"] {
        client
            .publish(
                OutgoingMessage::new("eo.jobs", id)
                    .id(id)
                    .delivery(Delivery::ExactlyOnce),
            )
            .await?;
    }
    let mut subscriber = client.subscribe(SubscribeOptions::subscription("eo")).await?;
    let done = next(&mut subscriber).await?;
    assert_eq!(done.id, "done");
    assert_eq!(done.delivery, Delivery::ExactlyOnce);
    done.ack_confirmed().await?;
    // "pending" is delivered and held: its lease is valid when the node stops.
    let pending = next(&mut subscriber).await?;
    assert_eq!(pending.id, "pending");
    // Every handle goes, so no stream stays open across the restart.
    drop((done, pending, subscriber, client));

    let restarted = Instant::now();
    let client = restart(&mut node).await?;
    let mut subscriber = client.subscribe(SubscribeOptions::subscription("eo")).await?;
    let again = next(&mut subscriber).await?;
    assert_eq!(again.id, "pending", "the acked message must never come again");
    assert!(
        restarted.elapsed() >= DEADLINE,
        "an exactly-once message is held one ack deadline after a restart (came after {:?})",
        restarted.elapsed()
    );
    again.ack_confirmed().await?;
    assert_nothing(
        &mut subscriber,
        DEADLINE * 2,
        "no acked message comes again after the restart",
    )
    .await?;
    drop((again, subscriber, client));

    // And once more: both acks are durable.
    let client = restart(&mut node).await?;
    let mut subscriber = client.subscribe(SubscribeOptions::subscription("eo")).await?;
    assert_nothing(
        &mut subscriber,
        DEADLINE * 2 + Duration::from_millis(300),
        "confirmed acks survive a second restart",
    )
    .await?;
    // The subscription still works.
    client
        .publish(
            OutgoingMessage::new("eo.jobs", "after")
                .id("after")
                .delivery(Delivery::ExactlyOnce),
        )
        .await?;
    let after = next(&mut subscriber).await?;
    assert_eq!(after.id, "after");
    after.ack_confirmed().await?;
    Ok(())
}

#[tokio::test]
async fn a_delay_survives_a_restart() -> anyhow::Result<()> {
    const DELAY: Duration = Duration::from_millis(1500);
    let (mut node, client) = start().await?;
    client.create_subscription("later", quick("later.>")).await?;
    let receipt = client
        .publish(OutgoingMessage::new("later.jobs", "x").id("later-1").delay(DELAY))
        .await?;
    drop(client);

    let client = restart(&mut node).await?;
    let mut subscriber = client.subscribe(SubscribeOptions::subscription("later")).await?;
    let message = next(&mut subscriber).await?;
    assert_eq!(message.id, "later-1");
    assert!(
        SystemTime::now() >= receipt.publish_time + DELAY,
        "a delayed message is not delivered early after a restart"
    );
    message.ack_confirmed().await?;
    Ok(())
}

#[tokio::test]
async fn the_dedup_index_survives_a_restart() -> anyhow::Result<()> {
    let (mut node, client) = start().await?;
    let message = || {
        OutgoingMessage::new("dd.orders", "x")
            .id("order-7")
            .delivery(Delivery::ExactlyOnce)
    };
    let first = client.publish(message()).await?;
    assert!(!first.duplicate);
    drop(client);

    let client = restart(&mut node).await?;
    let again = client.publish(message()).await?;
    assert!(again.duplicate, "the id is remembered across a restart");
    assert_eq!(again.sequence, first.sequence);
    assert_eq!(client.get_topic("dd.orders").await?.messages, 1);
    Ok(())
}

#[tokio::test]
async fn a_restart_completes_while_a_consumer_is_connected() -> anyhow::Result<()> {
    let (mut node, client) = start().await?;
    client.create_subscription("busy", quick("busy.>")).await?;
    client
        .publish(OutgoingMessage::new("busy.jobs", "x").id("b-1"))
        .await?;
    // A consumer holds an unacked message and keeps its stream open.
    let mut subscriber = client.subscribe(SubscribeOptions::subscription("busy")).await?;
    let held = next(&mut subscriber).await?;
    assert_eq!(held.id, "b-1");

    tokio::time::timeout(Duration::from_secs(10), node.restart())
        .await
        .map_err(|_| anyhow::anyhow!("the node did not stop within 10 s while a consumer was connected"))??;
    drop((held, subscriber, client));

    let client = Client::connect_to(node.endpoint()).await?;
    let mut subscriber = client.subscribe(SubscribeOptions::subscription("busy")).await?;
    let again = next(&mut subscriber).await?;
    assert_eq!(again.id, "b-1", "the unacked message survives");
    again.ack_confirmed().await?;
    Ok(())
}

//! Fan-out across subscriptions, work sharing inside one, and ephemeral
//! (pattern) subscriptions.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use hermod_client::{Delivery, OutgoingMessage, SubscribeOptions};
use support::{assert_nothing, next, quick, start};

#[tokio::test]
async fn every_subscription_gets_every_message() -> anyhow::Result<()> {
    const COUNT: usize = 50;
    let (_node, client) = start().await?;
    client.create_subscription("fan-a", quick("fan.>")).await?;
    client.create_subscription("fan-b", quick("fan.*.orders")).await?;

    let mut batch = Vec::new();
    for n in 0..COUNT {
        // Two topics, both matched by both patterns.
        let topic = if n % 2 == 0 {
            "fan.eu.orders"
        } else {
            "fan.us.orders"
        };
        batch.push(OutgoingMessage::new(topic, format!("{n}")).id(format!("f-{n}")));
    }
    for result in client.publish_batch(batch).await? {
        result?;
    }
    let expected: BTreeSet<String> = (0..COUNT).map(|n| format!("f-{n}")).collect();

    for name in ["fan-a", "fan-b"] {
        let mut subscriber = client.subscribe(SubscribeOptions::subscription(name)).await?;
        let mut got = BTreeSet::new();
        for _ in 0..COUNT {
            let message = next(&mut subscriber).await?;
            assert!(got.insert(message.id.clone()), "{name}: {} twice", message.id);
            message.ack().await?;
        }
        assert_eq!(got, expected, "{name} gets every message");
        assert_nothing(&mut subscriber, Duration::from_millis(200), "nothing extra").await?;
        subscriber.close().await?;
    }
    Ok(())
}

#[tokio::test]
async fn consumers_of_one_subscription_share_its_messages() -> anyhow::Result<()> {
    const COUNT: usize = 100;
    let (_node, client) = start().await?;
    client.create_subscription("work", quick("work.>")).await?;
    let mut first = client
        .subscribe(SubscribeOptions::subscription("work").prefetch(8))
        .await?;
    let mut second = client
        .subscribe(SubscribeOptions::subscription("work").prefetch(8))
        .await?;

    let publisher = client.clone();
    let publishing = tokio::spawn(async move {
        for chunk in 0..10 {
            let batch = (0..10)
                .map(|i| {
                    let n = chunk * 10 + i;
                    OutgoingMessage::new("work.jobs", format!("{n}")).id(format!("w-{n}"))
                })
                .collect();
            for result in publisher.publish_batch(batch).await? {
                result?;
            }
        }
        anyhow::Ok(())
    });

    let mut got = [BTreeSet::new(), BTreeSet::new()];
    for _ in 0..COUNT {
        let (index, message) = tokio::select! {
            m = next(&mut first) => (0, m?),
            m = next(&mut second) => (1, m?),
        };
        assert!(
            got[index].insert(message.id.clone()),
            "{} delivered twice to one consumer",
            message.id
        );
        message.ack().await?;
    }
    tokio::time::timeout(support::WAIT, publishing).await???;

    let both: Vec<_> = got[0].intersection(&got[1]).collect();
    assert!(both.is_empty(), "delivered to both consumers: {both:?}");
    let all: BTreeSet<String> = got[0].union(&got[1]).cloned().collect();
    let expected: BTreeSet<String> = (0..COUNT).map(|n| format!("w-{n}")).collect();
    assert_eq!(all, expected, "none missing");
    assert!(
        !got[0].is_empty() && !got[1].is_empty(),
        "both consumers get work ({} / {})",
        got[0].len(),
        got[1].len()
    );
    assert_nothing(&mut first, Duration::from_millis(200), "nothing extra").await?;
    assert_nothing(&mut second, Duration::from_millis(100), "nothing extra").await?;
    Ok(())
}

#[tokio::test]
async fn an_ephemeral_subscription_gets_live_messages_only() -> anyhow::Result<()> {
    let (_node, client) = start().await?;
    client
        .publish(OutgoingMessage::new("live.news", "old").id("before"))
        .await?;

    let mut live = client.subscribe(SubscribeOptions::pattern("live.>")).await?;
    client
        .publish(OutgoingMessage::new("live.news", "durable").id("after-durable"))
        .await?;
    client
        .publish(
            OutgoingMessage::new("live.sports", "fleeting")
                .id("after-at-most-once")
                .delivery(Delivery::AtMostOnce),
        )
        .await?;
    // Not matched by the pattern.
    client
        .publish(OutgoingMessage::new("other.news", "elsewhere").id("unmatched"))
        .await?;

    let mut got = Vec::new();
    for _ in 0..2 {
        let message = next(&mut live).await?;
        assert_eq!(
            message.delivery,
            Delivery::AtMostOnce,
            "ephemeral is at most once"
        );
        assert!(message.ack_token().is_empty(), "nothing to settle");
        assert_eq!(message.attempt, 1);
        got.push((message.id.clone(), message.payload_str().map(str::to_owned)));
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            ("after-at-most-once".to_string(), Some("fleeting".to_string())),
            ("after-durable".to_string(), Some("durable".to_string())),
        ]
    );
    assert_nothing(
        &mut live,
        Duration::from_millis(300),
        "no message from before it opened, none unmatched",
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn durable_subscriptions_start_where_they_are_told() -> anyhow::Result<()> {
    use hermod_client::StartPosition;

    let (_node, client) = start().await?;
    let mut receipts = Vec::new();
    for n in 1..=4 {
        if n == 3 {
            // Publish times are in milliseconds: keep p-2 and p-3 apart.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let id = format!("p-{n}");
        receipts.push(
            client
                .publish(OutgoingMessage::new("pos.t", id.clone()).id(id))
                .await?,
        );
    }
    assert!(receipts[2].publish_time > receipts[1].publish_time);

    let starts = [
        ("pos-new", StartPosition::New, vec!["p-5"]),
        (
            "pos-earliest",
            StartPosition::Earliest,
            vec!["p-1", "p-2", "p-3", "p-4", "p-5"],
        ),
        (
            "pos-seq",
            StartPosition::Sequence(receipts[2].sequence),
            vec!["p-3", "p-4", "p-5"],
        ),
        (
            "pos-time",
            StartPosition::Time(receipts[2].publish_time),
            vec!["p-3", "p-4", "p-5"],
        ),
    ];
    for (name, position, _) in &starts {
        client
            .create_subscription(*name, quick("pos.>").start(*position))
            .await?;
    }
    client
        .publish(OutgoingMessage::new("pos.t", "p-5").id("p-5"))
        .await?;

    for (name, _, expected) in starts {
        let mut subscriber = client.subscribe(SubscribeOptions::subscription(name)).await?;
        let mut got = Vec::new();
        for _ in 0..expected.len() {
            let message = next(&mut subscriber).await?;
            message.ack().await?;
            got.push(message.id.clone());
        }
        assert_eq!(got, expected, "{name}");
        assert_nothing(&mut subscriber, Duration::from_millis(200), name).await?;
        subscriber.close().await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_wildcard_ephemeral_subscription_does_not_see_reserved_topics() -> anyhow::Result<()> {
    let (_node, client) = start().await?;
    let mut everything = client.subscribe(SubscribeOptions::pattern(">")).await?;
    let mut events = client
        .subscribe(SubscribeOptions::pattern("$cluster.events"))
        .await?;
    // Auto-creates the topic, which is a `$cluster.events` event.
    client
        .publish(OutgoingMessage::new("wild.card", "x").id("w-1"))
        .await?;

    let message = next(&mut everything).await?;
    assert_eq!(message.id, "w-1");
    let event = next(&mut events).await?;
    assert_eq!(event.topic, "$cluster.events", "naming the topic reads it");
    assert_nothing(
        &mut everything,
        Duration::from_millis(300),
        "`>` must not select `$cluster.events`",
    )
    .await?;
    Ok(())
}

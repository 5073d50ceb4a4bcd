//! `$cluster.events`: the broker's own events, consumed like any topic.

mod support;

use std::time::Duration;

use hermod_client::{
    Client, OutgoingMessage, StartPosition, SubscribeOptions, SubscriptionConfig, TopicConfig,
};
use serde_json::Value;
use support::{next, quick, start};

/// One event as read from `$cluster.events`.
#[derive(Debug)]
struct Event {
    sequence: u64,
    json: Value,
}

impl Event {
    fn kind(&self) -> &str {
        self.json["type"].as_str().unwrap_or_default()
    }

    fn field(&self, name: &str) -> &str {
        self.json[name].as_str().unwrap_or_default()
    }
}

async fn watch(client: &Client, name: &str) -> anyhow::Result<hermod_client::Subscriber> {
    client
        .create_subscription(
            name,
            SubscriptionConfig::new("$cluster.events").start(StartPosition::Earliest),
        )
        .await?;
    Ok(client.subscribe(SubscribeOptions::subscription(name)).await?)
}

/// Reads events until `done` says all wanted ones were seen (at most 100).
async fn collect_until(
    subscriber: &mut hermod_client::Subscriber,
    mut done: impl FnMut(&[Event]) -> bool,
) -> anyhow::Result<Vec<Event>> {
    let mut events = Vec::new();
    for _ in 0..100 {
        let message = next(subscriber).await?;
        assert_eq!(message.topic, "$cluster.events");
        let json: Value = serde_json::from_slice(&message.payload)?;
        let kind = json["type"].as_str().unwrap_or_default().to_string();
        assert_eq!(
            message.headers.get("hermod-event").map(String::as_str),
            Some(kind.as_str()),
            "the header names the event type: {json}"
        );
        message.ack().await?;
        events.push(Event {
            sequence: message.sequence,
            json,
        });
        if done(&events) {
            return Ok(events);
        }
    }
    anyhow::bail!("the wanted events did not all come: {events:?}")
}

fn position(events: &[Event], kind: &str, field: &str, value: &str) -> Option<usize> {
    events
        .iter()
        .position(|e| e.kind() == kind && e.field(field) == value)
}

#[tokio::test]
async fn topic_and_subscription_changes_are_published_as_events() -> anyhow::Result<()> {
    let (_node, client) = start().await?;
    let mut watcher = watch(&client, "watcher").await?;

    client.create_topic("ev.orders", TopicConfig::new()).await?;
    client
        .create_subscription("ev-billing", SubscriptionConfig::new("ev.>"))
        .await?;
    client.delete_subscription("ev-billing").await?;
    client.delete_topic("ev.orders").await?;
    // A topic created by its first publish is announced too.
    client
        .publish(OutgoingMessage::new("ev.auto", "x").id("auto-1"))
        .await?;

    let wanted = [
        ("topic_created", "topic", "ev.orders"),
        ("subscription_created", "subscription", "ev-billing"),
        ("subscription_deleted", "subscription", "ev-billing"),
        ("topic_deleted", "topic", "ev.orders"),
        ("topic_created", "topic", "ev.auto"),
    ];
    let events = collect_until(&mut watcher, |events| {
        wanted
            .iter()
            .all(|(kind, field, value)| position(events, kind, field, value).is_some())
    })
    .await?;

    // The watcher's own subscription is an event too.
    assert!(
        position(&events, "subscription_created", "subscription", "watcher").is_some(),
        "{events:?}"
    );
    let created = position(&events, "subscription_created", "subscription", "ev-billing").unwrap_or(0);
    assert_eq!(events[created].field("pattern"), "ev.>");

    // Each topic's and each subscription's events come in the order they
    // happened. (Events of topics in different shards share no order: each
    // shard numbers the events it writes.)
    let sequence = |kind: &str, field: &str, value: &str| {
        position(&events, kind, field, value).map(|at| events[at].sequence)
    };
    assert!(
        sequence("topic_created", "topic", "ev.orders") < sequence("topic_deleted", "topic", "ev.orders"),
        "{events:?}"
    );
    assert!(
        sequence("subscription_created", "subscription", "ev-billing")
            < sequence("subscription_deleted", "subscription", "ev-billing"),
        "{events:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_message_dropped_without_a_dead_letter_topic_is_an_event() -> anyhow::Result<()> {
    let (_node, client) = start().await?;
    // No dead-letter topic: a rejected message is dropped, with an event.
    client
        .create_subscription("nodlq", quick("drop.>").ack_deadline(Duration::from_secs(5)))
        .await?;
    let mut watcher = watch(&client, "drop-watcher").await?;
    let mut subscriber = client.subscribe(SubscribeOptions::subscription("nodlq")).await?;
    let receipt = client
        .publish(OutgoingMessage::new("drop.jobs", "x").id("dropped-1"))
        .await?;
    let message = next(&mut subscriber).await?;
    message.reject().await?;

    let events = collect_until(&mut watcher, |events| {
        events.iter().any(|e| e.kind() == "message_dropped")
    })
    .await?;
    let dropped = events
        .iter()
        .find(|e| e.kind() == "message_dropped")
        .expect("collected");
    assert_eq!(dropped.field("subscription"), "nodlq");
    assert_eq!(dropped.field("topic"), "drop.jobs");
    assert_eq!(dropped.field("reason"), "rejected");
    assert_eq!(dropped.json["sequence"].as_u64(), Some(receipt.sequence));
    Ok(())
}

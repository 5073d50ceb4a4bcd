//! Priorities: strict order across priorities with FIFO inside each, and a
//! weighted subscription that never starves low priorities.

mod support;

use std::time::Duration;

use hermod_client::{OutgoingMessage, Priority, PriorityPolicy, StartPosition, SubscribeOptions};
use support::{next, quick, start, wait_backlog};

const PER_PRIORITY: usize = 5;

fn tag(priority: Priority) -> &'static str {
    priority.as_str()
}

/// The order a strict subscription must deliver: CRITICAL, HIGH, NORMAL,
/// LOW, each in publish order.
fn expected_strict_order() -> Vec<String> {
    let mut expected = Vec::new();
    for priority in [
        Priority::Critical,
        Priority::High,
        Priority::Normal,
        Priority::Low,
    ] {
        for n in 0..PER_PRIORITY {
            expected.push(format!("{}-{n}", tag(priority)));
        }
    }
    expected
}

async fn drain_in_order(
    client: &hermod_client::Client,
    subscription: &str,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    let mut subscriber = client
        .subscribe(SubscribeOptions::subscription(subscription))
        .await?;
    let mut got = Vec::new();
    for _ in 0..count {
        let message = next(&mut subscriber).await?;
        let expected_tag = message.id.split('-').next().unwrap_or_default().to_string();
        assert_eq!(
            tag(message.priority),
            expected_tag,
            "the delivered priority matches the published one ({})",
            message.id
        );
        assert_eq!(message.attempt, 1);
        message.ack().await?;
        got.push(message.id.clone());
    }
    subscriber.close().await?;
    Ok(got)
}

#[tokio::test]
async fn strict_subscription_delivers_by_priority_then_fifo() -> anyhow::Result<()> {
    let (_node, client) = start().await?;
    // One subscription exists before the messages are published…
    client.create_subscription("prio-before", quick("prio.>")).await?;

    // Interleaved: LOW, CRITICAL, NORMAL, HIGH, LOW, CRITICAL, …
    for n in 0..PER_PRIORITY {
        for priority in [
            Priority::Low,
            Priority::Critical,
            Priority::Normal,
            Priority::High,
        ] {
            let id = format!("{}-{n}", tag(priority));
            client
                .publish(
                    OutgoingMessage::new("prio.jobs", id.clone())
                        .id(id)
                        .priority(priority),
                )
                .await?;
        }
    }
    let total = PER_PRIORITY * 4;

    // …and one is created afterwards, starting at the earliest message.
    client
        .create_subscription("prio-after", quick("prio.>").start(StartPosition::Earliest))
        .await?;

    for subscription in ["prio-before", "prio-after"] {
        // Every message is queued before any consumer attaches.
        wait_backlog(&client, subscription, total as u64).await?;
        let got = drain_in_order(&client, subscription, total).await?;
        assert_eq!(
            got,
            expected_strict_order(),
            "{subscription}: strictly by priority, FIFO within each"
        );
    }
    Ok(())
}

#[tokio::test]
async fn weighted_subscription_does_not_starve_low_priority() -> anyhow::Result<()> {
    const HIGH: usize = 40;
    const LOW: usize = 5;
    let (_node, client) = start().await?;
    client
        .create_subscription(
            "weighted",
            quick("wrr.>").priority_policy(PriorityPolicy::Weighted),
        )
        .await?;
    // The strict twin shows what starvation would look like.
    client.create_subscription("strict", quick("wrr.>")).await?;

    // All HIGH first, then the LOW ones: FIFO alone would put LOW last.
    let mut batch = Vec::new();
    for n in 0..HIGH {
        let id = format!("high-{n}");
        batch.push(
            OutgoingMessage::new("wrr.work", id.clone())
                .id(id)
                .priority(Priority::High),
        );
    }
    for n in 0..LOW {
        let id = format!("low-{n}");
        batch.push(
            OutgoingMessage::new("wrr.work", id.clone())
                .id(id)
                .priority(Priority::Low),
        );
    }
    for result in client.publish_batch(batch).await? {
        result?;
    }

    for subscription in ["weighted", "strict"] {
        wait_backlog(&client, subscription, (HIGH + LOW) as u64).await?;
        let mut subscriber = client
            .subscribe(SubscribeOptions::subscription(subscription).prefetch(1))
            .await?;
        let mut order = Vec::new();
        for _ in 0..HIGH + LOW {
            let message = next(&mut subscriber).await?;
            message.ack().await?;
            order.push(message.priority);
        }
        subscriber.close().await?;

        let first_low = order
            .iter()
            .position(|p| *p == Priority::Low)
            .expect("LOW messages are delivered");
        assert_eq!(order.iter().filter(|p| **p == Priority::Low).count(), LOW);
        assert_eq!(order.iter().filter(|p| **p == Priority::High).count(), HIGH);
        match subscription {
            "weighted" => assert!(
                first_low < HIGH,
                "weighted: a LOW message must come while HIGH ones are still pending; \
                 the first LOW came after {first_low} HIGH ({order:?})"
            ),
            _ => assert_eq!(
                first_low, HIGH,
                "strict: every HIGH message goes before any LOW one"
            ),
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_redelivery_goes_before_new_messages_of_its_priority() -> anyhow::Result<()> {
    const DELAY: Duration = Duration::from_millis(300);
    let (_node, client) = start().await?;
    client.create_subscription("redo", quick("redo.>")).await?;
    // "older" has the lower sequence but only becomes ready after DELAY;
    // "newer" is delivered at once and given back.
    client
        .publish(
            OutgoingMessage::new("redo.jobs", "older")
                .id("older")
                .delay(DELAY),
        )
        .await?;
    client
        .publish(OutgoingMessage::new("redo.jobs", "newer").id("newer"))
        .await?;
    {
        let mut first = client
            .subscribe(SubscribeOptions::subscription("redo").prefetch(1).limit(1))
            .await?;
        let message = next(&mut first).await?;
        assert_eq!(message.id, "newer");
        message.nack(None).await?;
        first.close().await?;
    }
    // Let the delay pass with no consumer attached: both are ready now, one
    // new (lower sequence) and one redelivery.
    tokio::time::sleep(DELAY + Duration::from_millis(200)).await;
    wait_backlog(&client, "redo", 2).await?;

    let mut subscriber = client
        .subscribe(SubscribeOptions::subscription("redo").prefetch(1))
        .await?;
    let a = next(&mut subscriber).await?;
    a.ack().await?;
    let b = next(&mut subscriber).await?;
    b.ack().await?;
    assert_eq!(
        [(a.id.as_str(), a.attempt), (b.id.as_str(), b.attempt)],
        [("newer", 2), ("older", 1)],
        "the redelivery goes first"
    );
    Ok(())
}

//! TTL (per message and topic default) and delayed delivery.

mod support;

use std::time::{Duration, Instant, SystemTime};

use hermod_client::{OutgoingMessage, SubscribeOptions, TopicConfig};
use support::{assert_dead_letter, assert_nothing, next, quick, start, wait_backlog};

#[tokio::test]
async fn expired_message_is_never_delivered_and_is_dead_lettered() -> anyhow::Result<()> {
    let (_node, client) = start().await?;
    client
        .create_subscription("ttl", quick("ttl.>").dead_letter_topic("dlq.ttl"))
        .await?;
    client.create_subscription("ttl-dlq", quick("dlq.ttl")).await?;

    let doomed = client
        .publish(
            OutgoingMessage::new("ttl.orders", "too late")
                .id("doomed")
                .ttl(Duration::from_millis(300))
                .header("k", "v"),
        )
        .await?;
    client
        .publish(OutgoingMessage::new("ttl.orders", "in time").id("keeper"))
        .await?;

    // No consumer is attached: the message expires in the queue.
    let mut dead = client
        .subscribe(SubscribeOptions::subscription("ttl-dlq"))
        .await?;
    let letter = next(&mut dead).await?;
    assert!(
        SystemTime::now() >= doomed.publish_time + Duration::from_millis(300),
        "dead-lettered only once expired"
    );
    assert_eq!(letter.topic, "dlq.ttl");
    assert_eq!(letter.payload_str(), Some("too late"));
    assert_eq!(letter.headers.get("k").map(String::as_str), Some("v"));
    assert_dead_letter(&letter, "expired", "ttl.orders", "doomed", "ttl", 0);
    letter.ack().await?;

    // A consumer attaching now gets the live message, never the expired one.
    let mut subscriber = client.subscribe(SubscribeOptions::subscription("ttl")).await?;
    let message = next(&mut subscriber).await?;
    assert_eq!(message.id, "keeper");
    message.ack_confirmed().await?;
    assert_nothing(
        &mut subscriber,
        Duration::from_millis(500),
        "the expired message must never be delivered",
    )
    .await?;
    assert_nothing(&mut dead, Duration::from_millis(200), "one dead letter only").await?;
    Ok(())
}

#[tokio::test]
async fn topic_default_ttl_applies_when_the_message_has_none() -> anyhow::Result<()> {
    let (_node, client) = start().await?;
    let topic = client
        .create_topic(
            "dttl.orders",
            TopicConfig::new().default_ttl(Duration::from_millis(300)),
        )
        .await?;
    assert_eq!(topic.config.default_ttl, Some(Duration::from_millis(300)));
    client
        .create_subscription("dttl", quick("dttl.>").dead_letter_topic("dlq.dttl"))
        .await?;
    client.create_subscription("dttl-dlq", quick("dlq.dttl")).await?;

    client
        .publish(OutgoingMessage::new("dttl.orders", "default ttl").id("inherits"))
        .await?;
    let own = client
        .publish(
            OutgoingMessage::new("dttl.orders", "own ttl")
                .id("own")
                .ttl(Duration::from_secs(60)),
        )
        .await?;

    let mut dead = client
        .subscribe(SubscribeOptions::subscription("dttl-dlq"))
        .await?;
    let letter = next(&mut dead).await?;
    assert_dead_letter(&letter, "expired", "dttl.orders", "inherits", "dttl", 0);
    letter.ack().await?;

    let mut subscriber = client.subscribe(SubscribeOptions::subscription("dttl")).await?;
    let message = next(&mut subscriber).await?;
    assert_eq!(
        message.id, "own",
        "the message's own TTL overrides the topic default"
    );
    assert_eq!(
        message.expires_at,
        Some(own.publish_time + Duration::from_secs(60))
    );
    message.ack().await?;
    assert_nothing(
        &mut subscriber,
        Duration::from_millis(500),
        "a message expired by the topic default must never be delivered",
    )
    .await?;
    assert_nothing(&mut dead, Duration::from_millis(200), "one dead letter only").await?;
    Ok(())
}

#[tokio::test]
async fn message_expiring_while_waiting_for_redelivery_is_not_redelivered() -> anyhow::Result<()> {
    let (_node, client) = start().await?;
    client
        .create_subscription(
            "exp",
            quick("exp.>")
                .ack_deadline(Duration::from_secs(5))
                .dead_letter_topic("dlq.exp"),
        )
        .await?;
    client.create_subscription("exp-dlq", quick("dlq.exp")).await?;
    client
        .publish(
            OutgoingMessage::new("exp.jobs", "short-lived")
                .id("short")
                .ttl(Duration::from_millis(500)),
        )
        .await?;

    let mut subscriber = client.subscribe(SubscribeOptions::subscription("exp")).await?;
    let message = next(&mut subscriber).await?;
    assert_eq!(message.id, "short");
    // Asks for a redelivery after the message will have expired.
    message.nack(Some(Duration::from_millis(1000))).await?;
    let nacked = Instant::now();

    let mut dead = client
        .subscribe(SubscribeOptions::subscription("exp-dlq"))
        .await?;
    let letter = next(&mut dead).await?;
    assert_dead_letter(&letter, "expired", "exp.jobs", "short", "exp", 1);

    // Past the nack delay, with room to spare: still nothing.
    let quiet = Duration::from_millis(1500).saturating_sub(nacked.elapsed());
    assert_nothing(
        &mut subscriber,
        quiet.max(Duration::from_millis(200)),
        "an expired message must not be redelivered",
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn delayed_message_is_delivered_not_before_its_time() -> anyhow::Result<()> {
    const DELAY: Duration = Duration::from_millis(700);
    let (_node, client) = start().await?;
    client.create_subscription("delay", quick("delay.>")).await?;
    let mut subscriber = client.subscribe(SubscribeOptions::subscription("delay")).await?;

    let later = client
        .publish(
            OutgoingMessage::new("delay.jobs", "later")
                .id("later")
                .delay(DELAY),
        )
        .await?;
    client
        .publish(OutgoingMessage::new("delay.jobs", "now").id("now"))
        .await?;

    // The delayed message does not hold up the one behind it.
    let first = next(&mut subscriber).await?;
    assert_eq!(first.id, "now");
    first.ack().await?;

    let second = next(&mut subscriber).await?;
    let received_at = SystemTime::now();
    assert_eq!(second.id, "later");
    assert_eq!(second.publish_time, later.publish_time);
    assert!(
        received_at >= second.publish_time + DELAY,
        "delivered {:?} after publish, before its delay of {DELAY:?}",
        received_at
            .duration_since(second.publish_time)
            .unwrap_or_default()
    );
    assert_eq!(second.attempt, 1);
    second.ack().await?;
    Ok(())
}

#[tokio::test]
async fn delayed_messages_count_in_the_backlog_before_their_time() -> anyhow::Result<()> {
    let (_node, client) = start().await?;
    client.create_subscription("held", quick("held.>")).await?;
    let published = client
        .publish(
            OutgoingMessage::new("held.jobs", "x")
                .id("held-1")
                .delay(Duration::from_millis(600)),
        )
        .await?;
    // Waiting, not lost: the subscription reports it.
    wait_backlog(&client, "held", 1).await?;

    let mut subscriber = client.subscribe(SubscribeOptions::subscription("held")).await?;
    let message = next(&mut subscriber).await?;
    assert!(SystemTime::now() >= published.publish_time + Duration::from_millis(600));
    assert_eq!(message.id, "held-1");
    message.ack().await?;
    Ok(())
}

/// Either nothing arrives within `limit`, or what arrives came no sooner
/// than `not_before`.
async fn assert_not_early(
    subscriber: &mut hermod_client::Subscriber,
    not_before: SystemTime,
    limit: Duration,
    what: &str,
) -> anyhow::Result<()> {
    use futures::StreamExt;
    match tokio::time::timeout(limit, subscriber.next()).await {
        Err(_) => Ok(()),
        Ok(Some(Ok(message))) => {
            let now = SystemTime::now();
            let early = not_before.duration_since(now).unwrap_or_default();
            assert!(
                early.is_zero(),
                "{what}: {} was delivered {early:?} before its delay ended",
                message.id
            );
            Ok(())
        }
        Ok(other) => anyhow::bail!("{what}: the stream ended: {other:?}"),
    }
}

#[tokio::test]
async fn an_ephemeral_subscription_does_not_get_a_delayed_message_early() -> anyhow::Result<()> {
    const DELAY: Duration = Duration::from_millis(1000);
    let (_node, client) = start().await?;
    let mut live = client.subscribe(SubscribeOptions::pattern("edelay.>")).await?;
    let receipt = client
        .publish(OutgoingMessage::new("edelay.jobs", "x").id("e-1").delay(DELAY))
        .await?;
    assert_not_early(&mut live, receipt.publish_time + DELAY, DELAY * 2, "ephemeral").await
}

#[tokio::test]
async fn a_delayed_at_most_once_message_is_not_delivered_early() -> anyhow::Result<()> {
    const DELAY: Duration = Duration::from_millis(1000);
    let (_node, client) = start().await?;
    client.create_subscription("amod", quick("amod.>")).await?;
    let mut durable = client.subscribe(SubscribeOptions::subscription("amod")).await?;
    let receipt = client
        .publish(
            OutgoingMessage::new("amod.jobs", "x")
                .id("a-1")
                .delivery(hermod_client::Delivery::AtMostOnce)
                .delay(DELAY),
        )
        .await;
    let receipt = match receipt {
        // Refusing the combination, naming the field, is a fine answer too.
        Err(hermod_client::Error::InvalidArgument { field, .. }) if field.contains("delay") => {
            return Ok(());
        }
        other => other?,
    };
    assert_not_early(
        &mut durable,
        receipt.publish_time + DELAY,
        DELAY * 2,
        "durable consumer",
    )
    .await
}

#[tokio::test]
async fn a_message_that_expires_before_its_delay_ends_is_never_delivered() -> anyhow::Result<()> {
    let (_node, client) = start().await?;
    client
        .create_subscription("dvt", quick("dvt.>").dead_letter_topic("dlq.dvt"))
        .await?;
    client.create_subscription("dvt-dlq", quick("dlq.dvt")).await?;
    let mut subscriber = client.subscribe(SubscribeOptions::subscription("dvt")).await?;
    let mut dead = client
        .subscribe(SubscribeOptions::subscription("dvt-dlq"))
        .await?;
    client
        .publish(
            OutgoingMessage::new("dvt.jobs", "x")
                .id("never")
                .delay(Duration::from_millis(600))
                .ttl(Duration::from_millis(300)),
        )
        .await?;

    let letter = next(&mut dead).await?;
    assert_dead_letter(&letter, "expired", "dvt.jobs", "never", "dvt", 0);
    assert_nothing(
        &mut subscriber,
        Duration::from_millis(700),
        "a message expired before its delay ended must never be delivered",
    )
    .await?;
    Ok(())
}

//! At-least-once and exactly-once delivery on one node: redelivery after the
//! ack deadline, nack, max deliveries, reject, extend, disconnect, and
//! exclusive leases.

mod support;

use std::time::{Duration, Instant};

use hermod_client::{Delivery, Error, OutgoingMessage, SubscribeOptions};
use support::{assert_dead_letter, assert_nothing, next, next_within, quick, start};

#[tokio::test]
async fn unsettled_message_is_redelivered_after_the_ack_deadline() -> anyhow::Result<()> {
    const DEADLINE: Duration = Duration::from_millis(300);
    let (_node, client) = start().await?;
    client
        .create_subscription("alo", quick("alo.>").ack_deadline(DEADLINE))
        .await?;
    let mut subscriber = client.subscribe(SubscribeOptions::subscription("alo")).await?;
    client
        .publish(OutgoingMessage::new("alo.jobs", "x").id("m-1"))
        .await?;

    let first = next(&mut subscriber).await?;
    let received = Instant::now();
    assert_eq!((first.id.as_str(), first.attempt), ("m-1", 1));
    // Neither acked nor nacked.
    let again = next(&mut subscriber).await?;
    assert_eq!(again.id, "m-1");
    assert_eq!(again.attempt, 2, "a redelivery counts its attempt");
    assert!(
        received.elapsed() >= DEADLINE - Duration::from_millis(50),
        "redelivered after {:?}, before the ack deadline of {DEADLINE:?}",
        received.elapsed()
    );
    again.ack_confirmed().await?;
    assert_nothing(
        &mut subscriber,
        DEADLINE * 2 + Duration::from_millis(200),
        "an acked message must not come again",
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn nack_with_delay_redelivers_after_the_delay() -> anyhow::Result<()> {
    const DELAY: Duration = Duration::from_millis(600);
    let (_node, client) = start().await?;
    client
        .create_subscription("nack", quick("nack.>").ack_deadline(Duration::from_secs(10)))
        .await?;
    let mut subscriber = client.subscribe(SubscribeOptions::subscription("nack")).await?;
    client
        .publish(OutgoingMessage::new("nack.jobs", "x").id("n-1"))
        .await?;

    let first = next(&mut subscriber).await?;
    assert_eq!(first.attempt, 1);
    let nacked = Instant::now();
    first.nack(Some(DELAY)).await?;
    assert_nothing(
        &mut subscriber,
        DELAY - Duration::from_millis(200),
        "a nacked message waits out its delay",
    )
    .await?;
    let again = next(&mut subscriber).await?;
    assert_eq!((again.id.as_str(), again.attempt), ("n-1", 2));
    assert!(
        nacked.elapsed() >= DELAY - Duration::from_millis(10),
        "redelivered {:?} after the nack, before its delay of {DELAY:?}",
        nacked.elapsed()
    );
    again.ack().await?;
    Ok(())
}

#[tokio::test]
async fn max_deliveries_sends_the_message_to_the_dead_letter_topic() -> anyhow::Result<()> {
    const DEADLINE: Duration = Duration::from_millis(300);
    let (_node, client) = start().await?;
    client
        .create_subscription(
            "retry",
            quick("retry.>")
                .ack_deadline(DEADLINE)
                .max_deliveries(3)
                .dead_letter_topic("dlq.retry"),
        )
        .await?;
    client
        .create_subscription("retry-dlq", quick("dlq.retry"))
        .await?;
    let mut subscriber = client.subscribe(SubscribeOptions::subscription("retry")).await?;
    client
        .publish(
            OutgoingMessage::new("retry.jobs", "poison")
                .id("poison-1")
                .header("origin", "test"),
        )
        .await?;

    // Attempt 1 is nacked, attempt 2 times out, attempt 3 is nacked: both
    // kinds of failure count.
    for attempt in 1..=3 {
        let message = next(&mut subscriber).await?;
        assert_eq!((message.id.as_str(), message.attempt), ("poison-1", attempt));
        if attempt != 2 {
            message.nack(None).await?;
        }
    }

    let mut dead = client
        .subscribe(SubscribeOptions::subscription("retry-dlq"))
        .await?;
    let letter = next(&mut dead).await?;
    assert_eq!(letter.topic, "dlq.retry");
    assert_eq!(letter.payload_str(), Some("poison"));
    assert_eq!(letter.headers.get("origin").map(String::as_str), Some("test"));
    assert_dead_letter(&letter, "max_deliveries", "retry.jobs", "poison-1", "retry", 3);
    letter.ack().await?;

    assert_nothing(
        &mut subscriber,
        DEADLINE * 2,
        "no fourth delivery after max_deliveries",
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn reject_dead_letters_at_once() -> anyhow::Result<()> {
    let (_node, client) = start().await?;
    client
        .create_subscription(
            "rej",
            quick("rej.>")
                .ack_deadline(Duration::from_millis(300))
                .max_deliveries(5)
                .dead_letter_topic("dlq.rej"),
        )
        .await?;
    client.create_subscription("rej-dlq", quick("dlq.rej")).await?;
    let mut dead = client
        .subscribe(SubscribeOptions::subscription("rej-dlq"))
        .await?;
    let mut subscriber = client.subscribe(SubscribeOptions::subscription("rej")).await?;
    client
        .publish(OutgoingMessage::new("rej.jobs", "bad").id("bad-1"))
        .await?;

    let message = next(&mut subscriber).await?;
    assert_eq!(message.attempt, 1);
    message.reject().await?;

    let letter = next(&mut dead).await?;
    assert_dead_letter(&letter, "rejected", "rej.jobs", "bad-1", "rej", 1);
    assert_nothing(
        &mut subscriber,
        Duration::from_millis(800),
        "a rejected message is not redelivered",
    )
    .await?;
    assert_nothing(&mut dead, Duration::from_millis(100), "dead-lettered once").await?;
    Ok(())
}

#[tokio::test]
async fn extend_keeps_a_message_from_being_redelivered() -> anyhow::Result<()> {
    const DEADLINE: Duration = Duration::from_millis(400);
    let (_node, client) = start().await?;
    client
        .create_subscription(
            "ext",
            quick("ext.>")
                .delivery(Delivery::ExactlyOnce)
                .ack_deadline(DEADLINE),
        )
        .await?;
    let mut subscriber = client.subscribe(SubscribeOptions::subscription("ext")).await?;
    client
        .publish(
            OutgoingMessage::new("ext.jobs", "slow work")
                .id("slow-1")
                .delivery(Delivery::ExactlyOnce),
        )
        .await?;

    let message = next(&mut subscriber).await?;
    message.extend(Some(Duration::from_secs(3))).await?;
    // Well past the original deadline plus the backoff.
    assert_nothing(
        &mut subscriber,
        DEADLINE * 2 + Duration::from_millis(200),
        "an extended lease is not redelivered",
    )
    .await?;
    // The lease is still the consumer's: its ack is confirmed.
    message.ack_confirmed().await?;
    assert_nothing(&mut subscriber, DEADLINE, "acked").await?;
    Ok(())
}

#[tokio::test]
async fn a_disconnected_consumers_message_goes_to_another_consumer() -> anyhow::Result<()> {
    let (_node, client) = start().await?;
    // A long deadline: the redelivery must come from the disconnect, not from it.
    client
        .create_subscription("disc", quick("disc.>").ack_deadline(Duration::from_secs(30)))
        .await?;
    let mut first = client.subscribe(SubscribeOptions::subscription("disc")).await?;
    client
        .publish(OutgoingMessage::new("disc.jobs", "x").id("d-1"))
        .await?;
    let message = next(&mut first).await?;
    assert_eq!(message.attempt, 1);
    drop(message);
    first.close().await?;

    let mut second = client.subscribe(SubscribeOptions::subscription("disc")).await?;
    let again = next_within(&mut second, Duration::from_secs(5)).await?;
    assert_eq!((again.id.as_str(), again.attempt), ("d-1", 2));
    again.ack_confirmed().await?;
    Ok(())
}

#[tokio::test]
async fn a_leased_message_is_not_delivered_to_another_consumer() -> anyhow::Result<()> {
    const DEADLINE: Duration = Duration::from_millis(1000);
    let (_node, client) = start().await?;
    client
        .create_subscription(
            "lease",
            quick("lease.>")
                .delivery(Delivery::ExactlyOnce)
                .ack_deadline(DEADLINE),
        )
        .await?;
    // The holder takes one message and never asks for more, so the
    // redelivery can only go to the other consumer.
    let mut holder = client
        .subscribe(SubscribeOptions::subscription("lease").prefetch(1).limit(1))
        .await?;
    client
        .publish(
            OutgoingMessage::new("lease.jobs", "x")
                .id("l-1")
                .delivery(Delivery::ExactlyOnce),
        )
        .await?;
    let held = next(&mut holder).await?;
    let leased_at = Instant::now();
    assert_eq!((held.id.as_str(), held.attempt), ("l-1", 1));

    // A second consumer with credit attaches while the lease is valid.
    let mut other = client
        .subscribe(SubscribeOptions::subscription("lease").prefetch(1))
        .await?;
    let waiting = &mut other;
    let info = client.get_subscription("lease").await?;
    assert_eq!(
        (info.in_flight, info.backlog, info.consumers),
        (1, 0, 2),
        "one delivery in flight, nothing pending, two consumers"
    );
    assert_nothing(
        waiting,
        DEADLINE - Duration::from_millis(300),
        "no other consumer gets a message under a valid lease",
    )
    .await?;
    let again = next(waiting).await?;
    assert_eq!((again.id.as_str(), again.attempt), ("l-1", 2));
    assert!(
        leased_at.elapsed() >= DEADLINE - Duration::from_millis(100),
        "redelivered {:?} after the first delivery, before the ack deadline {DEADLINE:?}",
        leased_at.elapsed()
    );

    // The first lease has expired: its ack must not be confirmed.
    let stale = held.ack_confirmed().await;
    assert!(
        matches!(stale, Err(Error::FailedPrecondition { .. })),
        "an ack under an expired lease must be refused, got {stale:?}"
    );
    again.ack_confirmed().await?;
    assert_nothing(waiting, DEADLINE + Duration::from_millis(200), "acked").await?;
    Ok(())
}

#[tokio::test]
async fn at_most_once_messages_reach_only_the_consumers_connected_now() -> anyhow::Result<()> {
    let (_node, client) = start().await?;
    client.create_subscription("amo", quick("amo.>")).await?;
    let missed = client
        .publish(
            OutgoingMessage::new("amo.ticks", "nobody listens")
                .id("missed")
                .delivery(Delivery::AtMostOnce),
        )
        .await?;
    assert_eq!(missed.sequence, 0, "at-most-once messages are not stored");

    let mut subscriber = client.subscribe(SubscribeOptions::subscription("amo")).await?;
    client
        .publish(
            OutgoingMessage::new("amo.ticks", "live")
                .id("seen")
                .delivery(Delivery::AtMostOnce),
        )
        .await?;
    let seen = next(&mut subscriber).await?;
    assert_eq!(
        seen.id, "seen",
        "the message published before the consumer came is gone"
    );
    assert_eq!(seen.delivery, Delivery::AtMostOnce);
    assert_eq!(seen.sequence, 0);
    assert!(seen.ack_token().is_empty(), "nothing to settle");
    assert_nothing(
        &mut subscriber,
        Duration::from_millis(300),
        "an at-most-once message is never redelivered",
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn the_guarantee_is_the_weaker_of_message_and_subscription() -> anyhow::Result<()> {
    let (_node, client) = start().await?;
    client
        .create_subscription("weak-eo", quick("weak.>").delivery(Delivery::ExactlyOnce))
        .await?;
    client
        .create_subscription("weak-alo", quick("weak.>").delivery(Delivery::AtLeastOnce))
        .await?;
    for (id, delivery) in [("eo", Delivery::ExactlyOnce), ("alo", Delivery::AtLeastOnce)] {
        client
            .publish(OutgoingMessage::new("weak.jobs", id).id(id).delivery(delivery))
            .await?;
    }
    let expectations = [
        (
            "weak-eo",
            [("eo", Delivery::ExactlyOnce), ("alo", Delivery::AtLeastOnce)],
        ),
        (
            "weak-alo",
            [("eo", Delivery::AtLeastOnce), ("alo", Delivery::AtLeastOnce)],
        ),
    ];
    for (subscription, expected) in expectations {
        let mut subscriber = client
            .subscribe(SubscribeOptions::subscription(subscription))
            .await?;
        for (id, delivery) in expected {
            let message = next(&mut subscriber).await?;
            assert_eq!(message.id, id);
            assert_eq!(message.delivery, delivery, "{subscription}: {id}");
            message.ack_confirmed().await?;
        }
        subscriber.close().await?;
    }
    Ok(())
}

#[tokio::test]
async fn redelivery_backoff_grows_exponentially() -> anyhow::Result<()> {
    const INITIAL: Duration = Duration::from_millis(100);
    let (_node, client) = start().await?;
    client
        .create_subscription(
            "backoff",
            quick("backoff.>")
                .ack_deadline(Duration::from_secs(10))
                .backoff(INITIAL, Duration::from_secs(2)),
        )
        .await?;
    let mut subscriber = client
        .subscribe(SubscribeOptions::subscription("backoff"))
        .await?;
    client
        .publish(OutgoingMessage::new("backoff.jobs", "x").id("b-1"))
        .await?;

    let mut message = next(&mut subscriber).await?;
    let mut gaps = Vec::new();
    for attempt in 1..=4u32 {
        assert_eq!(message.attempt, attempt);
        let nacked = Instant::now();
        message.nack(None).await?;
        message = next(&mut subscriber).await?;
        gaps.push(nacked.elapsed());
    }
    message.ack().await?;
    // 100, 200, 400, 800 ms.
    for (failed, gap) in gaps.iter().enumerate() {
        let expected = INITIAL * 2u32.pow(failed as u32);
        assert!(
            *gap >= expected - Duration::from_millis(10),
            "failure #{}: redelivered after {gap:?}, expected at least {expected:?} ({gaps:?})",
            failed + 1
        );
    }
    assert!(
        gaps[0] < gaps[3] / 2,
        "the backoff grows with the attempts: {gaps:?}"
    );
    Ok(())
}

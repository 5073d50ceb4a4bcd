//! Helpers shared by the `semantics_*` tests, each of which includes this
//! module with `mod support;` (a folder, so cargo builds no test of its own).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use hermod_client::{Client, ReceivedMessage, Subscriber, SubscriptionConfig};
use hermod_tests::TestNode;

/// The longest any single expected event may take before a test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A fresh node and a client connected to it.
pub async fn start() -> anyhow::Result<(TestNode, Client)> {
    let node = TestNode::start().await?;
    let client = Client::connect_to(node.endpoint()).await?;
    Ok((node, client))
}

/// Restarts the node (bounded) and connects a new client to its new port.
pub async fn restart(node: &mut TestNode) -> anyhow::Result<Client> {
    tokio::time::timeout(Duration::from_secs(20), node.restart())
        .await
        .map_err(|_| anyhow::anyhow!("the node did not restart within 20 s"))??;
    Ok(Client::connect_to(node.endpoint()).await?)
}

/// A subscription config with short timers: 1 s ack deadline and a 5–50 ms
/// redelivery backoff, unless the test overrides them.
pub fn quick(pattern: &str) -> SubscriptionConfig {
    SubscriptionConfig::new(pattern)
        .ack_deadline(Duration::from_secs(1))
        .backoff(Duration::from_millis(5), Duration::from_millis(50))
}

/// The next message, waiting at most `WAIT`.
pub async fn next(subscriber: &mut Subscriber) -> anyhow::Result<ReceivedMessage> {
    next_within(subscriber, WAIT).await
}

/// The next message, waiting at most `limit`.
pub async fn next_within(subscriber: &mut Subscriber, limit: Duration) -> anyhow::Result<ReceivedMessage> {
    match tokio::time::timeout(limit, subscriber.next()).await {
        Err(_) => anyhow::bail!("no message within {limit:?}"),
        Ok(None) => anyhow::bail!("the subscription stream ended"),
        Ok(Some(Err(e))) => anyhow::bail!("the subscription stream failed: {e}"),
        Ok(Some(Ok(message))) => Ok(message),
    }
}

/// Waits `quiet` and fails if any message arrives meanwhile.
pub async fn assert_nothing(subscriber: &mut Subscriber, quiet: Duration, why: &str) -> anyhow::Result<()> {
    match tokio::time::timeout(quiet, subscriber.next()).await {
        Err(_) => Ok(()),
        Ok(None) => anyhow::bail!("{why}: the subscription stream ended"),
        Ok(Some(Err(e))) => anyhow::bail!("{why}: the subscription stream failed: {e}"),
        Ok(Some(Ok(message))) => anyhow::bail!(
            "{why}: got {} (attempt {}, headers {:?})",
            message.id,
            message.attempt,
            message.headers
        ),
    }
}

/// Polls the subscription until its backlog (pending, not in flight) is
/// `expected`, so that every published message has reached its queue.
pub async fn wait_backlog(client: &Client, subscription: &str, expected: u64) -> anyhow::Result<()> {
    let mut last = None;
    for _ in 0..400 {
        let info = client.get_subscription(subscription).await?;
        if info.backlog == expected {
            return Ok(());
        }
        last = Some(info.backlog);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    anyhow::bail!("backlog of {subscription} stayed {last:?}, expected {expected}")
}

/// Checks the headers of a dead letter.
pub fn assert_dead_letter(
    message: &ReceivedMessage,
    reason: &str,
    original_topic: &str,
    original_id: &str,
    subscription: &str,
    attempts: u32,
) {
    let headers: &BTreeMap<String, String> = &message.headers;
    let get = |name: &str| headers.get(name).map(String::as_str);
    assert_eq!(get("hermod-dead-letter-reason"), Some(reason), "{headers:?}");
    assert_eq!(get("hermod-original-topic"), Some(original_topic), "{headers:?}");
    assert_eq!(get("hermod-original-id"), Some(original_id), "{headers:?}");
    assert_eq!(get("hermod-subscription"), Some(subscription), "{headers:?}");
    let expected_attempts = attempts.to_string();
    assert_eq!(
        get("hermod-attempts"),
        Some(expected_attempts.as_str()),
        "{headers:?}"
    );
}

//! The shortest round trip: publish, consume with a durable subscription,
//! ack with confirmation, and nothing comes again.

use std::time::Duration;

use futures::StreamExt;
use hermod_client::{Client, Delivery, OutgoingMessage, SubscribeOptions, SubscriptionConfig};
use hermod_tests::TestNode;

#[tokio::test]
async fn publish_consume_ack_round_trip() -> anyhow::Result<()> {
    let node = TestNode::start().await?;
    let client = Client::connect_to(node.endpoint()).await?;
    client
        .create_subscription(
            "smoke",
            SubscriptionConfig::new("smoke.>").delivery(Delivery::ExactlyOnce),
        )
        .await?;
    let receipt = client
        .publish(OutgoingMessage::new("smoke.a", "hello").id("m-1"))
        .await?;
    assert_eq!(receipt.sequence, 1);
    assert!(!receipt.duplicate);

    let mut subscriber = client.subscribe(SubscribeOptions::subscription("smoke")).await?;
    let message = tokio::time::timeout(Duration::from_secs(10), subscriber.next())
        .await?
        .expect("a message")?;
    assert_eq!(message.payload_str(), Some("hello"));
    assert_eq!(message.attempt, 1);
    message.ack_confirmed().await?;

    let again = tokio::time::timeout(Duration::from_millis(500), subscriber.next()).await;
    assert!(again.is_err(), "nothing more may arrive after a confirmed ack");
    Ok(())
}

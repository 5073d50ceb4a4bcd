//! Large payloads: a topic may allow up to 16 MiB per message, and a
//! consumer with credit for several of them still receives every one (the
//! broker splits deliveries into batches that fit a gRPC message).

use std::time::Duration;

use futures::StreamExt;
use hermod_client::{Client, OutgoingMessage, SubscribeOptions, SubscriptionConfig, TopicConfig};
use hermod_tests::TestNode;

const PAYLOAD_BYTES: usize = 8 * 1024 * 1024;
const MESSAGES: usize = 3;

#[tokio::test]
async fn several_8_mib_messages_reach_one_consumer() -> anyhow::Result<()> {
    let node = TestNode::start().await?;
    let client = Client::connect_to(node.endpoint()).await?;
    client
        .create_topic(
            "big.files",
            TopicConfig::new().max_message_bytes(16 * 1024 * 1024),
        )
        .await?;
    client
        .create_subscription("big", SubscriptionConfig::new("big.files"))
        .await?;
    for i in 0..MESSAGES {
        let payload = vec![i as u8; PAYLOAD_BYTES];
        client.publish(OutgoingMessage::new("big.files", payload)).await?;
    }
    let mut subscriber = client
        .subscribe(SubscribeOptions::subscription("big").prefetch(10))
        .await?;
    for i in 0..MESSAGES {
        let message = tokio::time::timeout(Duration::from_secs(30), subscriber.next())
            .await?
            .expect("the stream stays open")?;
        assert_eq!(message.payload.len(), PAYLOAD_BYTES);
        assert!(
            message.payload.iter().all(|b| *b == i as u8),
            "message {i} arrived out of order or corrupted"
        );
        message.ack().await?;
    }
    Ok(())
}

//! The typed client on refused input: the named field, the error kind, and no retry.

use std::time::Duration;

use crate::MIB;
use crate::fixture::Fx;

#[tokio::test]
async fn the_typed_client_names_the_field_and_does_not_retry() -> anyhow::Result<()> {
    use hermod_client::{Client, Error, OutgoingMessage, SubscriptionConfig};
    let mut fx = Fx::start().await?;
    let client = Client::connect_to(fx.node.endpoint()).await?;
    let before = fx.snapshot().await?;

    let error = client
        .publish(OutgoingMessage::new("a b", "x"))
        .await
        .expect_err("a bad topic is refused");
    assert!(
        matches!(&error, Error::InvalidArgument { field, .. } if field == "messages[0].topic"),
        "{error:?}"
    );
    assert_eq!(error.field(), Some("messages[0].topic"));
    assert!(!error.is_retryable());
    assert!(error.to_string().contains("messages[0].topic"), "{error}");

    let error = client
        .publish(OutgoingMessage::new("typed.big", vec![0u8; MIB + 1]))
        .await
        .expect_err("an oversized payload is refused");
    assert!(matches!(error, Error::ResourceExhausted { .. }), "{error:?}");
    assert_eq!(error.field(), Some("messages[0].payload"));
    assert!(!error.is_retryable());

    let error = client
        .create_subscription(
            "typed",
            SubscriptionConfig::new("typed.>").ack_deadline(Duration::from_millis(1)),
        )
        .await
        .expect_err("a 1 ms ack deadline is refused");
    assert!(matches!(error, Error::InvalidArgument { .. }), "{error:?}");
    assert_eq!(error.field(), Some("settings.ack_deadline_ms"));
    assert!(!error.is_retryable());

    let error = client
        .get_subscription("nobody")
        .await
        .expect_err("unknown subscription");
    assert!(matches!(error, Error::NotFound { .. }), "{error:?}");
    assert!(!error.is_retryable());

    fx.assert_unchanged(&before).await?;
    fx.assert_serves().await
}

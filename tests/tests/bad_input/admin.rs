//! Admin calls on names that do not exist, or that exist with other settings.

use hermod_proto::v1 as pb;
use tonic::Code;

use crate::expect::expect_status;
use crate::fixture::Fx;
use crate::request::{message, sub_settings};
use crate::within;

// ---------------------------------------------------------------- unknown names

#[tokio::test]
async fn get_and_delete_of_unknown_names_are_not_found() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    let before = fx.snapshot().await?;
    expect_status(fx.get_subscription("nobody").await, Code::NotFound, "name");
    let result = within(fx.raw.delete_subscription(pb::DeleteSubscriptionRequest {
        name: "nobody".into(),
    }))
    .await?;
    expect_status(result, Code::NotFound, "name");
    expect_status(fx.get_topic("no.such.topic").await, Code::NotFound, "name");
    let result = within(fx.raw.delete_topic(pb::DeleteTopicRequest {
        name: "no.such.topic".into(),
    }))
    .await?;
    expect_status(result, Code::NotFound, "name");
    fx.assert_unchanged(&before).await?;
    fx.assert_serves().await
}

// ---------------------------------------------------------------- create twice

#[tokio::test]
async fn creating_a_topic_again_with_other_settings_is_already_exists() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    let settings = pb::TopicSettings {
        max_messages: 10,
        ..Default::default()
    };
    let original = fx.create_topic("twice.t", settings).await?;
    fx.send_ok(message("twice.t", b"x")).await?;
    let stored = fx.get_topic("twice.t").await?;
    let before = fx.snapshot().await?;
    let other = pb::TopicSettings {
        max_messages: 20,
        ..Default::default()
    };
    let result = fx.create_topic("twice.t", other).await;
    expect_status(result, Code::AlreadyExists, "name");
    fx.assert_unchanged(&before).await?;
    assert_eq!(fx.get_topic("twice.t").await?, stored);
    // The same settings again: OK and idempotent.
    let again = fx.create_topic("twice.t", settings).await?;
    assert_eq!(again.settings, original.settings);
    assert_eq!(again.created_at_ms, original.created_at_ms);
    fx.assert_unchanged(&before).await?;
    fx.assert_serves().await
}

#[tokio::test]
async fn creating_a_subscription_again_with_other_settings_is_already_exists() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    let settings = pb::SubscriptionSettings {
        ack_deadline_ms: 10_000,
        ..sub_settings("twice.>")
    };
    let original = fx.create_subscription("twice", settings.clone()).await?;
    let before = fx.snapshot().await?;
    let others = [
        pb::SubscriptionSettings {
            ack_deadline_ms: 20_000,
            ..settings.clone()
        },
        pb::SubscriptionSettings {
            pattern: "other.>".into(),
            ..settings.clone()
        },
        pb::SubscriptionSettings {
            delivery: pb::DeliveryGuarantee::ExactlyOnce as i32,
            ..settings.clone()
        },
    ];
    for other in others {
        let result = fx.create_subscription("twice", other).await;
        expect_status(result, Code::AlreadyExists, "name");
    }
    fx.assert_unchanged(&before).await?;
    let again = fx.create_subscription("twice", settings).await?;
    assert_eq!(again.settings, original.settings);
    assert_eq!(again.created_at_ms, original.created_at_ms);
    fx.assert_unchanged(&before).await?;
    fx.assert_serves().await
}

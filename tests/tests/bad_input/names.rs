//! Topic names, subscription names and patterns: malformed, wildcard and reserved ones are refused.

use hermod_proto::v1 as pb;
use tonic::Code;

use crate::expect::expect_status;
use crate::fixture::Fx;
use crate::request::{message, sub_settings};
use crate::within;

// ---------------------------------------------------------------- topic names

#[tokio::test]
async fn publish_refuses_bad_topic_names() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    let before = fx.snapshot().await?;
    let long = "a".repeat(256);
    for topic in ["", "a b", "a..b", "a.", ".a", "é", "a/b", long.as_str()] {
        let error = fx
            .send_refused(message(topic, b"x"), Code::InvalidArgument, "messages[0].topic")
            .await?;
        assert!(!error.message.is_empty(), "{topic:?}");
    }
    fx.assert_unchanged(&before).await?;
    // The longest legal name (255 bytes) is fine.
    fx.send_ok(message(&"a".repeat(255), b"x")).await?;
    fx.assert_serves().await
}

#[tokio::test]
async fn publish_refuses_wildcards_in_a_topic() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    let before = fx.snapshot().await?;
    for topic in ["a.*", "a.>", "*", ">", "*.b", "a.*.c"] {
        fx.send_refused(message(topic, b"x"), Code::InvalidArgument, "messages[0].topic")
            .await?;
    }
    fx.assert_unchanged(&before).await?;
    fx.assert_serves().await
}

#[tokio::test]
async fn publish_to_a_reserved_topic_is_refused() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    let events_before = fx.get_topic("$cluster.events").await?;
    let before = fx.snapshot().await?;
    for topic in ["$cluster.events", "$cluster.other", "$mine"] {
        let error = fx
            .send_refused(message(topic, b"x"), Code::InvalidArgument, "messages[0].topic")
            .await?;
        assert!(error.message.contains("reserved"), "{error:?}");
    }
    // The at-most-once fast path validates the same way.
    fx.send_refused(
        message("$cluster.events", b"x").with(|m| m.delivery = pb::DeliveryGuarantee::AtMostOnce as i32),
        Code::InvalidArgument,
        "messages[0].topic",
    )
    .await?;
    fx.assert_unchanged(&before).await?;
    let events_after = fx.get_topic("$cluster.events").await?;
    assert_eq!(events_after.messages, events_before.messages);
    assert_eq!(events_after.last_sequence, events_before.last_sequence);
    fx.assert_serves().await
}

#[tokio::test]
async fn topic_admin_refuses_bad_and_reserved_names() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    let before = fx.snapshot().await?;
    for name in ["", "a..b", "a.*", "a b", "$cluster.events", "$x"] {
        let result = fx.create_topic(name, pb::TopicSettings::default()).await;
        expect_status(result, Code::InvalidArgument, "name");
    }
    for name in ["$cluster.events", "a b", ""] {
        let result = within(fx.raw.delete_topic(pb::DeleteTopicRequest { name: name.into() }))
            .await?
            .map(|r| r.into_inner());
        expect_status(result, Code::InvalidArgument, "name");
    }
    expect_status(fx.get_topic("a..b").await, Code::InvalidArgument, "name");
    fx.assert_unchanged(&before).await?;
    fx.assert_serves().await
}

// ---------------------------------------------------------------- patterns

#[tokio::test]
async fn subscription_refuses_bad_patterns() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    let before = fx.snapshot().await?;
    for pattern in ["a.>.b", "", "a.b*", "a..b", ">.a", "a.**", "a b", "a.$b"] {
        let result = fx.create_subscription("bad-pattern", sub_settings(pattern)).await;
        expect_status(result, Code::InvalidArgument, "settings.pattern");
    }
    // No settings at all: the pattern is required.
    let request = pb::CreateSubscriptionRequest {
        name: "no-settings".into(),
        settings: None,
    };
    let result = within(fx.raw.create_subscription(request)).await?;
    expect_status(result, Code::InvalidArgument, "settings");
    fx.assert_unchanged(&before).await?;
    fx.assert_serves().await
}

#[tokio::test]
async fn subscription_refuses_bad_names() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    let before = fx.snapshot().await?;
    let long = "s".repeat(256);
    for name in ["", "a b", "a/b", "é", long.as_str()] {
        let result = fx.create_subscription(name, sub_settings("a.>")).await;
        expect_status(result, Code::InvalidArgument, "name");
    }
    fx.assert_unchanged(&before).await?;
    fx.assert_serves().await
}

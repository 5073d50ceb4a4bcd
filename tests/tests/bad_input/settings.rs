//! Topic and subscription settings: absurd durations and limits, unknown enums, impossible combinations.

use hermod_proto::v1 as pb;
use tonic::Code;

use crate::expect::expect_status;
use crate::fixture::Fx;
use crate::request::{message, sub_settings};
use crate::{DAY_MS, HOUR_MS, MIB, YEAR_MS, within};

// ---------------------------------------------------------------- absurd durations and limits

#[tokio::test]
async fn absurd_topic_settings_are_refused() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    let before = fx.snapshot().await?;
    let cases: [(&str, pb::TopicSettings); 5] = [
        (
            "settings.dedup_window_ms",
            pb::TopicSettings {
                dedup_window_ms: 30 * DAY_MS + 1,
                ..Default::default()
            },
        ),
        (
            "settings.dedup_window_ms",
            pb::TopicSettings {
                dedup_window_ms: u64::MAX,
                ..Default::default()
            },
        ),
        (
            "settings.max_message_bytes",
            pb::TopicSettings {
                max_message_bytes: 16 * MIB as u64 + 1,
                ..Default::default()
            },
        ),
        (
            "settings.default_ttl_ms",
            pb::TopicSettings {
                default_ttl_ms: YEAR_MS + 1,
                ..Default::default()
            },
        ),
        (
            "settings.max_age_ms",
            pb::TopicSettings {
                max_age_ms: 11 * YEAR_MS,
                ..Default::default()
            },
        ),
    ];
    for (field, settings) in cases {
        let result = fx.create_topic("settings.absurd", settings).await;
        expect_status(result, Code::InvalidArgument, field);
    }
    fx.assert_unchanged(&before).await?;
    expect_status(fx.get_topic("settings.absurd").await, Code::NotFound, "name");
    fx.assert_serves().await
}

#[tokio::test]
async fn an_ack_deadline_out_of_range_is_refused() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    let before = fx.snapshot().await?;
    for deadline in [1, 99, 12 * HOUR_MS + 1, u64::MAX] {
        let settings = pb::SubscriptionSettings {
            ack_deadline_ms: deadline,
            ..sub_settings("deadline.>")
        };
        let result = fx.create_subscription("deadline", settings).await;
        expect_status(result, Code::InvalidArgument, "settings.ack_deadline_ms");
    }
    fx.assert_unchanged(&before).await?;
    fx.assert_serves().await
}

#[tokio::test]
async fn max_deliveries_above_10000_is_refused() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    let before = fx.snapshot().await?;
    for max in [10_001, u32::MAX] {
        let settings = pb::SubscriptionSettings {
            max_deliveries: max,
            ..sub_settings("deliveries.>")
        };
        let result = fx.create_subscription("deliveries", settings).await;
        expect_status(result, Code::InvalidArgument, "settings.max_deliveries");
    }
    fx.assert_unchanged(&before).await?;
    fx.assert_serves().await
}

#[tokio::test]
async fn a_backoff_max_below_backoff_initial_is_refused() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    let before = fx.snapshot().await?;
    let settings = pb::SubscriptionSettings {
        backoff_initial_ms: 5_000,
        backoff_max_ms: 1_000,
        ..sub_settings("backoff.>")
    };
    let result = fx.create_subscription("backoff", settings).await;
    expect_status(result, Code::InvalidArgument, "settings.backoff_max_ms");
    // A backoff beyond an hour is absurd too.
    let settings = pb::SubscriptionSettings {
        backoff_initial_ms: HOUR_MS + 1,
        backoff_max_ms: HOUR_MS + 1,
        ..sub_settings("backoff.>")
    };
    let result = fx.create_subscription("backoff", settings).await;
    expect_status(result, Code::InvalidArgument, "settings.backoff_initial_ms");
    fx.assert_unchanged(&before).await?;
    fx.assert_serves().await
}

#[tokio::test]
async fn extreme_start_positions_do_not_break_the_node() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    fx.send_ok(message("start.t", b"existing").id("existing-1"))
        .await?;
    let positions = [
        pb::start_position::Position::Sequence(u64::MAX),
        pb::start_position::Position::Sequence(0),
        pb::start_position::Position::TimeMs(u64::MAX),
        pb::start_position::Position::TimeMs(0),
    ];
    for (i, position) in positions.into_iter().enumerate() {
        let settings = pb::SubscriptionSettings {
            start: Some(pb::StartPosition {
                position: Some(position),
            }),
            ..sub_settings("start.>")
        };
        let name = format!("start-{i}");
        match fx.create_subscription(&name, settings).await {
            Ok(info) => assert_eq!(info.name, name),
            Err(status) => {
                assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
                assert!(status.message().contains("settings.start"), "{status:?}");
            }
        }
    }
    // The node still serves, including these subscriptions' dispatchers.
    fx.send_ok(message("start.t", b"later").id("later-1")).await?;
    let subscriptions = within(fx.raw.list_subscriptions(pb::ListSubscriptionsRequest {}))
        .await??
        .into_inner()
        .subscriptions;
    assert!(subscriptions.len() >= 2, "{subscriptions:?}");
    fx.assert_serves().await
}

// ---------------------------------------------------------------- enums

#[tokio::test]
async fn unknown_enum_values_in_settings_are_refused() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    let before = fx.snapshot().await?;
    let settings = pb::SubscriptionSettings {
        delivery: 99,
        ..sub_settings("enums.>")
    };
    let result = fx.create_subscription("enums", settings).await;
    expect_status(result, Code::InvalidArgument, "settings.delivery");
    let settings = pb::SubscriptionSettings {
        priority_policy: 99,
        ..sub_settings("enums.>")
    };
    let result = fx.create_subscription("enums", settings).await;
    expect_status(result, Code::InvalidArgument, "settings.priority_policy");
    let settings = pb::TopicSettings {
        retention: 99,
        ..Default::default()
    };
    let result = fx.create_topic("enums.topic", settings).await;
    expect_status(result, Code::InvalidArgument, "settings.retention");
    fx.assert_unchanged(&before).await?;
    fx.assert_serves().await
}

// ---------------------------------------------------------------- impossible subscriptions

#[tokio::test]
async fn a_dead_letter_topic_inside_the_own_pattern_is_refused() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    let before = fx.snapshot().await?;
    for (pattern, dead) in [
        ("orders.>", "orders.dead"),
        ("orders.*", "orders.dlq"),
        ("orders.dlq", "orders.dlq"),
        (">", "dead"),
    ] {
        let settings = pb::SubscriptionSettings {
            dead_letter_topic: dead.into(),
            ..sub_settings(pattern)
        };
        let result = fx.create_subscription("loops", settings).await;
        expect_status(result, Code::InvalidArgument, "settings.dead_letter_topic");
    }
    // A dead-letter topic must be a valid, non-reserved topic name.
    for dead in ["a..b", "dead.*", "$cluster.events"] {
        let settings = pb::SubscriptionSettings {
            dead_letter_topic: dead.into(),
            ..sub_settings("orders.>")
        };
        let result = fx.create_subscription("loops", settings).await;
        expect_status(result, Code::InvalidArgument, "settings.dead_letter_topic");
    }
    fx.assert_unchanged(&before).await?;
    fx.assert_serves().await
}

#[tokio::test]
async fn a_durable_at_most_once_subscription_is_refused() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    let before = fx.snapshot().await?;
    let settings = pb::SubscriptionSettings {
        delivery: pb::DeliveryGuarantee::AtMostOnce as i32,
        ..sub_settings("amo.>")
    };
    let result = fx.create_subscription("amo", settings).await;
    let status = expect_status(result, Code::InvalidArgument, "settings.delivery");
    assert!(status.message().contains("ephemeral"), "{status:?}");
    fx.assert_unchanged(&before).await?;
    fx.assert_serves().await
}

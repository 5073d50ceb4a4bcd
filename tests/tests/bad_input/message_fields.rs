//! The fields of one published message: id, headers, payload size, TTL and delay, priority and delivery.

use hermod_proto::v1 as pb;
use tonic::Code;

use crate::expect::expect_status;
use crate::fixture::Fx;
use crate::request::message;
use crate::{DAY_MS, MIB, YEAR_MS};

// ---------------------------------------------------------------- ids

#[tokio::test]
async fn an_empty_id_gets_a_broker_made_uuid_v7() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    let first = fx.send_ok(message("ids.empty", b"one").id("")).await?;
    let second = fx.send_ok(message("ids.empty", b"two").id("")).await?;
    for ack in [&first, &second] {
        assert_eq!(ack.id.len(), 36, "{ack:?}");
        assert_eq!(ack.id.as_bytes()[14], b'7', "a UUIDv7: {ack:?}");
        assert!(!ack.duplicate);
    }
    assert_ne!(first.id, second.id, "each empty id gets its own UUID");
    assert_eq!((first.sequence, second.sequence), (1, 2));
    assert_eq!(fx.get_topic("ids.empty").await?.messages, 2);
    fx.assert_serves().await
}

#[tokio::test]
async fn an_id_of_129_bytes_is_refused() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    let before = fx.snapshot().await?;
    let error = fx
        .send_refused(
            message("ids.long", b"x").id(&"i".repeat(129)),
            Code::InvalidArgument,
            "messages[0].id",
        )
        .await?;
    assert!(error.message.contains("128"), "{error:?}");
    // The limit is in bytes: 65 two-byte characters are 130 bytes.
    fx.send_refused(
        message("ids.long", b"x").id(&"é".repeat(65)),
        Code::InvalidArgument,
        "messages[0].id",
    )
    .await?;
    fx.assert_unchanged(&before).await?;
    // 128 bytes is the limit, and allowed.
    fx.send_ok(message("ids.long", b"x").id(&"i".repeat(128))).await?;
    fx.send_ok(message("ids.long", b"x").id(&"é".repeat(64))).await?;
    fx.assert_serves().await
}

#[tokio::test]
async fn an_id_with_whitespace_is_refused() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    let before = fx.snapshot().await?;
    for id in [
        "a b",
        " lead",
        "trail ",
        "tab\there",
        "new\nline",
        "nbsp\u{a0}x",
        "nul\0",
    ] {
        fx.send_refused(
            message("ids.space", b"x").id(id),
            Code::InvalidArgument,
            "messages[0].id",
        )
        .await?;
    }
    fx.assert_unchanged(&before).await?;
    fx.assert_serves().await
}

// ---------------------------------------------------------------- headers

#[tokio::test]
async fn sixty_five_headers_are_refused() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    let before = fx.snapshot().await?;
    let many = (0..65).fold(message("headers.many", b"x"), |m, i| {
        m.header(&format!("h{i}"), "v")
    });
    let error = fx
        .send_refused(many, Code::InvalidArgument, "messages[0].headers")
        .await?;
    assert!(error.message.contains("64"), "{error:?}");
    fx.assert_unchanged(&before).await?;
    let enough = (0..64).fold(message("headers.many", b"x"), |m, i| {
        m.header(&format!("h{i}"), "v")
    });
    fx.send_ok(enough).await?;
    fx.assert_serves().await
}

#[tokio::test]
async fn a_header_value_over_4096_bytes_is_refused() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    let before = fx.snapshot().await?;
    let error = fx
        .send_refused(
            message("headers.big", b"x").header("big", &"v".repeat(4097)),
            Code::InvalidArgument,
            "messages[0].headers",
        )
        .await?;
    assert!(
        error.field.contains("big"),
        "the field names the header: {error:?}"
    );
    fx.assert_unchanged(&before).await?;
    fx.send_ok(message("headers.big", b"x").header("big", &"v".repeat(4096)))
        .await?;
    fx.assert_serves().await
}

#[tokio::test]
async fn an_empty_header_name_is_refused() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    let before = fx.snapshot().await?;
    fx.send_refused(
        message("headers.empty", b"x").header("", "v"),
        Code::InvalidArgument,
        "messages[0].headers",
    )
    .await?;
    // Other malformed names are refused the same way.
    for name in ["a b", "a:b", "tab\t", &"n".repeat(257)] {
        fx.send_refused(
            message("headers.empty", b"x").header(name, "v"),
            Code::InvalidArgument,
            "messages[0].headers",
        )
        .await?;
    }
    fx.assert_unchanged(&before).await?;
    fx.assert_serves().await
}

// ---------------------------------------------------------------- payload size

#[tokio::test]
async fn a_payload_over_the_default_limit_is_refused() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    let before = fx.snapshot().await?;
    let big = vec![7u8; MIB + 1];
    let error = fx
        .send_refused(
            message("payload.big", &big),
            Code::ResourceExhausted,
            "messages[0].payload",
        )
        .await?;
    assert!(error.message.contains(&MIB.to_string()), "{error:?}");
    // The at-most-once fast path applies the same limit.
    fx.send_refused(
        message("payload.big", &big).with(|m| m.delivery = pb::DeliveryGuarantee::AtMostOnce as i32),
        Code::ResourceExhausted,
        "messages[0].payload",
    )
    .await?;
    // Not even the topic was auto-created.
    fx.assert_unchanged(&before).await?;
    expect_status(fx.get_topic("payload.big").await, Code::NotFound, "name");
    // Exactly 1 MiB is fine.
    fx.send_ok(message("payload.big", &big[..MIB])).await?;
    fx.assert_serves().await
}

#[tokio::test]
async fn a_topic_max_message_bytes_is_enforced() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    let settings = pb::TopicSettings {
        max_message_bytes: 1000,
        ..Default::default()
    };
    let created = fx.create_topic("payload.small", settings).await?;
    assert_eq!(created.settings.as_ref().map(|s| s.max_message_bytes), Some(1000));
    fx.send_ok(message("payload.small", &[1u8; 1000])).await?;
    let before = fx.snapshot().await?;
    fx.send_refused(
        message("payload.small", &[1u8; 1001]),
        Code::ResourceExhausted,
        "messages[0].payload",
    )
    .await?;
    fx.assert_unchanged(&before).await?;
    fx.assert_serves().await
}

// ---------------------------------------------------------------- absurd durations

#[tokio::test]
async fn a_ttl_above_a_year_is_refused() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    let before = fx.snapshot().await?;
    for ttl in [YEAR_MS + 1, u64::MAX] {
        fx.send_refused(
            message("ttl.long", b"x").with(|m| m.ttl_ms = ttl),
            Code::InvalidArgument,
            "messages[0].ttl_ms",
        )
        .await?;
    }
    fx.assert_unchanged(&before).await?;
    fx.send_ok(message("ttl.long", b"x").with(|m| m.ttl_ms = YEAR_MS))
        .await?;
    fx.assert_serves().await
}

#[tokio::test]
async fn a_delay_above_30_days_is_refused() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    let before = fx.snapshot().await?;
    for delay in [30 * DAY_MS + 1, u64::MAX] {
        fx.send_refused(
            message("delay.long", b"x").with(|m| m.delay_ms = delay),
            Code::InvalidArgument,
            "messages[0].delay_ms",
        )
        .await?;
    }
    fx.assert_unchanged(&before).await?;
    fx.assert_serves().await
}

// ---------------------------------------------------------------- enums

#[tokio::test]
async fn an_unknown_priority_is_refused() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    let before = fx.snapshot().await?;
    for priority in [99, 5, -1] {
        fx.send_refused(
            message("enums.priority", b"x").with(|m| m.priority = priority),
            Code::InvalidArgument,
            "messages[0].priority",
        )
        .await?;
    }
    fx.assert_unchanged(&before).await?;
    fx.assert_serves().await
}

#[tokio::test]
async fn an_unknown_delivery_is_refused() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    let before = fx.snapshot().await?;
    for delivery in [99, 4, -1] {
        fx.send_refused(
            message("enums.delivery", b"x").with(|m| m.delivery = delivery),
            Code::InvalidArgument,
            "messages[0].delivery",
        )
        .await?;
    }
    fx.assert_unchanged(&before).await?;
    fx.assert_serves().await
}

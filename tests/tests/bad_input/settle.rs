//! Settling deliveries: forged, stale and repeated ack tokens, and over-long nack delays and extensions.

use hermod_proto::v1 as pb;
use tonic::{Code, Status};

use crate::expect::{check_item_error, expect_status};
use crate::fixture::{Consumer, Fx, Snapshot};
use crate::request::{message, sub_settings};
use crate::{HOUR_MS, WATCH, within};

#[tokio::test]
async fn forged_ack_tokens_are_refused_per_item() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    fx.send_ok(message("acks.t", b"pending").id("pending-1")).await?;
    let before = fx.snapshot().await?;
    let forged = vec![
        base64(&noise(48, 0x9E37_79B9_7F4A_7C15)),
        "this is not a token!".to_string(),
        String::new(),
        base64(&noise(48, 42))
            .replace('=', "")
            .replace('+', "-")
            .replace('/', "_"),
        "A".repeat(5000),
    ];
    let results = fx.ack(forged.clone()).await?;
    for (index, result) in results.iter().enumerate() {
        assert!(!result.confirmed, "{result:?}");
        assert_eq!(result.ack_token, forged[index]);
        let error = result.error.as_ref().expect("an error per forged token");
        check_item_error(error, Code::InvalidArgument, &format!("ack_tokens[{index}]"));
    }
    // The same on the Subscribe stream, for ack, nack, extend and reject.
    use pb::subscribe_request::Request;
    let mut consumer = fx.attach(WATCH, 1).await?;
    let pending = consumer.delivery().await?;
    assert_eq!(pending.id, "pending-1");
    let settles = [
        (
            "ack.ack_tokens",
            Request::Ack(pb::AckTokens {
                ack_tokens: forged.clone(),
            }),
        ),
        (
            "nack.ack_tokens",
            Request::Nack(pb::NackTokens {
                ack_tokens: forged.clone(),
                delay_ms: 0,
            }),
        ),
        (
            "extend.ack_tokens",
            Request::Extend(pb::ExtendTokens {
                ack_tokens: forged.clone(),
                extension_ms: 0,
            }),
        ),
        (
            "reject.ack_tokens",
            Request::Reject(pb::RejectTokens {
                ack_tokens: forged.clone(),
            }),
        ),
    ];
    for (field, request) in settles {
        consumer.send(request);
        let settled = consumer.settled().await?;
        assert_eq!(settled.len(), forged.len());
        for (index, result) in settled.iter().enumerate() {
            let error = result.error.as_ref().expect("an error per forged token");
            check_item_error(error, Code::InvalidArgument, &format!("{field}[{index}]"));
        }
    }
    // An empty Ack request is refused as a whole; so is one over the limit.
    let result = within(fx.raw.ack(pb::AckRequest { ack_tokens: vec![] })).await?;
    expect_status(result, Code::InvalidArgument, "ack_tokens");
    let too_many = vec![pending.ack_token.clone(); 1001];
    for result in fx.ack(too_many).await? {
        assert!(!result.confirmed);
        let error = result.error.expect("over the limit");
        assert_eq!(Code::from_i32(error.code), Code::ResourceExhausted, "{error:?}");
        assert!(error.message.contains("ack_tokens"), "{error:?}");
    }
    // None of this settled the real delivery: it is still in flight, unacked.
    let info = fx.get_subscription(WATCH).await?;
    assert_eq!(info.in_flight, 1, "{info:?}");
    fx.assert_unchanged(&before).await?;
    drop(consumer);
    fx.assert_serves().await
}

/// A delivery nacked and redelivered: returns the stream and the first and
/// second deliveries (the first one's token is stale).
async fn nacked_and_redelivered(
    fx: &mut Fx,
) -> anyhow::Result<(Consumer, pb::DeliveredMessage, pb::DeliveredMessage)> {
    let settings = pb::SubscriptionSettings {
        delivery: pb::DeliveryGuarantee::ExactlyOnce as i32,
        ack_deadline_ms: 5_000,
        backoff_initial_ms: 1,
        backoff_max_ms: 10,
        ..sub_settings("stale.>")
    };
    fx.create_subscription("stale", settings).await?;
    fx.send_ok(
        message("stale.t", b"once")
            .id("stale-1")
            .with(|m| m.delivery = pb::DeliveryGuarantee::ExactlyOnce as i32),
    )
    .await?;
    let mut consumer = fx.attach("stale", 1).await?;
    let first = consumer.delivery().await?;
    assert_eq!((first.id.as_str(), first.attempt), ("stale-1", 1));
    use pb::subscribe_request::Request;
    consumer.send(Request::Nack(pb::NackTokens {
        ack_tokens: vec![first.ack_token.clone()],
        delay_ms: 1,
    }));
    consumer.send(Request::Credit(pb::Credit { messages: 1 }));
    // The nack answer and the redelivery may come in either order.
    let mut second = None;
    let mut nacked = false;
    for _ in 0..10 {
        match consumer.response().await? {
            pb::subscribe_response::Response::Settled(s) => {
                assert!(s.results.iter().all(|r| r.error.is_none()), "{s:?}");
                nacked = true;
            }
            pb::subscribe_response::Response::Deliveries(batch) => {
                second = batch.messages.into_iter().next();
            }
        }
        if nacked && second.is_some() {
            break;
        }
    }
    let second = second.expect("the nacked message is redelivered");
    assert_eq!((second.id.as_str(), second.attempt), ("stale-1", 2));
    assert_ne!(first.ack_token, second.ack_token);
    Ok((consumer, first, second))
}

#[tokio::test]
async fn a_stale_token_is_refused_and_a_repeated_ack_is_confirmed_again() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    let (consumer, first, second) = nacked_and_redelivered(&mut fx).await?;

    // The first token's lease is gone: FAILED_PRECONDITION, nothing acked.
    let before = fx.snapshot().await?;
    let results = fx.ack(vec![first.ack_token.clone()]).await?;
    assert!(!results[0].confirmed, "{results:?}");
    let error = results[0].error.as_ref().expect("a stale token is refused");
    assert_eq!(Code::from_i32(error.code), Code::FailedPrecondition, "{error:?}");
    // The exact field (`ack_tokens[0]`) is checked by the ignored test
    // `settle_refusals_name_the_token_by_its_index`.
    assert!(error.field.starts_with("ack_token"), "{error:?}");
    assert!(error.message.contains(&error.field), "{error:?}");
    assert_eq!(fx.get_subscription("stale").await?.in_flight, 1);
    fx.assert_unchanged(&before).await?;

    // The current token acks; acking it again is confirmed again.
    for _ in 0..2 {
        let results = fx.ack(vec![second.ack_token.clone()]).await?;
        assert!(results[0].confirmed, "{results:?}");
        assert!(results[0].error.is_none(), "{results:?}");
    }
    let info = fx.get_subscription("stale").await?;
    assert_eq!((info.backlog, info.in_flight), (0, 0), "{info:?}");
    drop(consumer);
    fx.assert_serves().await
}

#[tokio::test]
async fn settle_refusals_name_the_token_by_its_index() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    let (consumer, first, second) = nacked_and_redelivered(&mut fx).await?;
    let before = fx.snapshot().await?;
    // Unary Ack: a forged token at index 0, the stale one at index 1.
    let results = fx.ack(vec!["garbage".into(), first.ack_token.clone()]).await?;
    check_item_error(
        results[0].error.as_ref().expect("forged"),
        Code::InvalidArgument,
        "ack_tokens[0]",
    );
    check_item_error(
        results[1].error.as_ref().expect("stale"),
        Code::FailedPrecondition,
        "ack_tokens[1]",
    );
    // On the stream: a stale nack, at index 1.
    use pb::subscribe_request::Request;
    consumer.send(Request::Nack(pb::NackTokens {
        ack_tokens: vec![second.ack_token.clone(), first.ack_token.clone()],
        delay_ms: 0,
    }));
    let mut consumer = consumer;
    let settled = consumer.settled().await?;
    assert!(settled[0].error.is_none(), "{settled:?}");
    check_item_error(
        settled[1].error.as_ref().expect("stale"),
        Code::FailedPrecondition,
        "nack.ack_tokens[1]",
    );
    fx.assert_unchanged(&before).await?;
    drop(consumer);
    // A token of a subscription deleted since: NOT_FOUND, named by its index.
    within(
        fx.raw
            .delete_subscription(pb::DeleteSubscriptionRequest { name: "stale".into() }),
    )
    .await??;
    let results = fx.ack(vec!["garbage".into(), second.ack_token.clone()]).await?;
    check_item_error(
        results[1].error.as_ref().expect("unknown subscription"),
        Code::NotFound,
        "ack_tokens[1]",
    );
    fx.assert_serves().await
}

/// Holds one delivery of `settle.t` on a fresh subscription.
async fn one_delivery(fx: &mut Fx) -> anyhow::Result<(Consumer, pb::DeliveredMessage)> {
    fx.create_subscription("settle", sub_settings("settle.>")).await?;
    fx.send_ok(message("settle.t", b"x").id("settle-1")).await?;
    let mut consumer = fx.attach("settle", 1).await?;
    let delivery = consumer.delivery().await?;
    assert_eq!(delivery.id, "settle-1");
    Ok((consumer, delivery))
}

/// Sends a nack or extend with a duration above 12 h; the stream must end
/// with INVALID_ARGUMENT. Returns the status and the state before the
/// refused request.
async fn over_long_settle(fx: &mut Fx, extend: bool) -> anyhow::Result<(Status, Snapshot)> {
    let (mut consumer, delivery) = one_delivery(fx).await?;
    let before = fx.snapshot().await?;
    use pb::subscribe_request::Request;
    let too_long = 12 * HOUR_MS + 1;
    consumer.send(if extend {
        Request::Extend(pb::ExtendTokens {
            ack_tokens: vec![delivery.ack_token.clone()],
            extension_ms: too_long,
        })
    } else {
        Request::Nack(pb::NackTokens {
            ack_tokens: vec![delivery.ack_token.clone()],
            delay_ms: too_long,
        })
    });
    let error = consumer
        .settled()
        .await
        .expect_err("an over-long settle duration is refused");
    let status = error
        .downcast::<Status>()
        .map_err(|e| anyhow::anyhow!("not a gRPC status: {e}"))?;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    Ok((status, before))
}

#[tokio::test]
async fn a_nack_delay_or_extension_above_12_hours_is_refused() -> anyhow::Result<()> {
    for extend in [false, true] {
        let mut fx = Fx::start().await?;
        let (status, before) = over_long_settle(&mut fx, extend).await?;
        let kind = if extend { "extend." } else { "nack." };
        assert!(status.message().starts_with(kind), "{status:?}");
        assert!(status.message().contains("43200000"), "{status:?}");
        // Nothing was settled: the message is still unacked.
        fx.assert_unchanged(&before).await?;
        let info = fx.get_subscription("settle").await?;
        assert_eq!(info.backlog + info.in_flight, 1, "{info:?}");
        fx.assert_serves().await?;
    }
    Ok(())
}

#[tokio::test]
async fn an_over_long_nack_delay_or_extension_names_its_own_field() -> anyhow::Result<()> {
    for (extend, field) in [(false, "nack.delay_ms"), (true, "extend.extension_ms")] {
        let mut fx = Fx::start().await?;
        let (status, _) = over_long_settle(&mut fx, extend).await?;
        assert!(
            status.message().starts_with(&format!("{field}:")),
            "expected the field {field}: {status:?}"
        );
    }
    Ok(())
}

/// Base64 (standard alphabet, padded) of `bytes`: a well-formed token shape
/// the broker never issued.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Deterministic pseudo-random bytes (xorshift), no extra crate needed.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

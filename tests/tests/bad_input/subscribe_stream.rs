//! Opening a Subscribe stream: bad patterns, unknown subscriptions, and a first request that is not a start.

use hermod_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Code, Status};

use crate::expect::expect_status;
use crate::fixture::Fx;
use crate::request::message;
use crate::{WATCH, within};

#[tokio::test]
async fn ephemeral_subscribe_refuses_bad_patterns() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    let before = fx.snapshot().await?;
    for pattern in ["a.>.b", "", "a.b*"] {
        let result = fx.open(vec![start_pattern(pattern)]).await.map(|_| ());
        expect_status(result, Code::InvalidArgument, "start.pattern");
    }
    fx.assert_unchanged(&before).await?;
    fx.assert_serves().await
}

#[tokio::test]
async fn subscribing_to_an_unknown_subscription_is_not_found() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    let before = fx.snapshot().await?;
    let result = fx.attach("nobody", 0).await.map(|_| ());
    expect_status(result, Code::NotFound, "start.subscription");
    let result = fx.attach("bad name", 0).await.map(|_| ());
    expect_status(result, Code::InvalidArgument, "start.subscription");
    fx.assert_unchanged(&before).await?;
    fx.assert_serves().await
}

#[tokio::test]
async fn a_subscribe_stream_must_open_with_start() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    fx.send_ok(message("stream.t", b"pending").id("pending-1"))
        .await?;
    let before = fx.snapshot().await?;
    use pb::subscribe_request::Request;
    let not_start = [
        Request::Credit(pb::Credit { messages: 10 }),
        Request::Ack(pb::AckTokens {
            ack_tokens: vec!["x".into()],
        }),
    ];
    for request in not_start {
        let first = pb::SubscribeRequest {
            request: Some(request),
        };
        let result = fx.open(vec![first]).await.map(|_| ());
        expect_status(result, Code::InvalidArgument, "start");
    }
    // A stream closed before any request.
    let (tx, rx) = mpsc::unbounded_channel::<pb::SubscribeRequest>();
    drop(tx);
    let result = within(fx.raw.subscribe(UnboundedReceiverStream::new(rx)))
        .await?
        .map(|_| ());
    expect_status(result, Code::InvalidArgument, "start");
    // A start naming neither subscription nor pattern.
    let empty_start = pb::SubscribeRequest {
        request: Some(Request::Start(pb::SubscribeStart::default())),
    };
    let result = fx.open(vec![empty_start]).await.map(|_| ());
    expect_status(result, Code::InvalidArgument, "start");
    // Too much credit.
    let result = fx.attach(WATCH, 10_001).await.map(|_| ());
    expect_status(result, Code::InvalidArgument, "start.initial_credit");
    // A second start on a started stream ends it.
    let mut consumer = fx.attach(WATCH, 1).await?;
    let first = consumer.delivery().await?;
    assert_eq!(first.id, "pending-1");
    consumer.send(Request::Start(pb::SubscribeStart::default()));
    let ended = consumer.settled().await;
    let status = ended.expect_err("a second start ends the stream");
    let status = status
        .downcast::<Status>()
        .map_err(|e| anyhow::anyhow!("not a gRPC status: {e}"))?;
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("start"), "{status:?}");
    fx.assert_unchanged(&before).await?;
    fx.assert_serves().await
}

fn start_pattern(pattern: &str) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        request: Some(pb::subscribe_request::Request::Start(pb::SubscribeStart {
            target: Some(pb::subscribe_start::Target::Pattern(pattern.into())),
            initial_credit: 0,
        })),
    }
}

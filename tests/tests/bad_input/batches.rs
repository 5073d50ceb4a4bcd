//! Publish requests as a whole: batches with bad members, duplicates, request limits, and the publish stream.

use hermod_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Code;

use crate::expect::{expect_item_error, expect_status};
use crate::fixture::Fx;
use crate::request::message;
use crate::{MIB, within};

// ---------------------------------------------------------------- batches

#[tokio::test]
async fn a_batch_stores_the_good_messages_and_names_the_bad_one() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    let results = fx
        .publish(vec![
            message("batch.t", b"first").id("good-0").into(),
            message("batch t", b"bad").id("bad-1").into(),
            message("batch.t", b"second").id("good-2").into(),
        ])
        .await?;
    let first = fx.accepted(&results[0]);
    expect_item_error(&results[1], Code::InvalidArgument, "messages[1].topic");
    let second = fx.accepted(&results[2]);
    assert_eq!((first.sequence, second.sequence), (1, 2));
    assert_eq!((first.id.as_str(), second.id.as_str()), ("good-0", "good-2"));
    let topic = fx.get_topic("batch.t").await?;
    assert_eq!((topic.messages, topic.last_sequence), (2, 2));
    fx.assert_serves().await
}

#[tokio::test]
async fn a_batch_names_a_stored_side_refusal_by_its_request_index() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    // Index 0 is refused at the edge, index 2 by the topic's size limit: the
    // second must still be named by its place in the request.
    let results = fx
        .publish(vec![
            message("batch.u", b"x").id("bad id").into(),
            message("batch.u", b"ok-1").id("ok-1").into(),
            message("batch.u", &vec![0u8; MIB + 1]).id("too-big").into(),
            message("batch.u", b"ok-3").id("ok-3").into(),
        ])
        .await?;
    expect_item_error(&results[0], Code::InvalidArgument, "messages[0].id");
    fx.accepted(&results[1]);
    expect_item_error(&results[2], Code::ResourceExhausted, "messages[2].payload");
    fx.accepted(&results[3]);
    assert_eq!(fx.get_topic("batch.u").await?.messages, 2);
    fx.assert_serves().await
}

#[tokio::test]
async fn the_same_id_twice_in_one_batch_is_stored_once() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    let exactly_once = |m: &mut pb::PublishMessage| m.delivery = pb::DeliveryGuarantee::ExactlyOnce as i32;
    let results = fx
        .publish(vec![
            message("batch.dup", b"first")
                .id("same")
                .with(exactly_once)
                .into(),
            message("batch.dup", b"second")
                .id("same")
                .with(exactly_once)
                .into(),
            message("batch.other", b"other topic")
                .id("same")
                .with(exactly_once)
                .into(),
        ])
        .await?;
    let first = fx.accepted(&results[0]);
    let second = fx.accepted(&results[1]);
    let other = fx.accepted(&results[2]);
    assert!(!first.duplicate && second.duplicate, "{first:?} {second:?}");
    assert_eq!(second.sequence, first.sequence);
    assert!(!other.duplicate, "dedup is per topic: {other:?}");
    assert_eq!(fx.get_topic("batch.dup").await?.messages, 1);
    fx.assert_serves().await
}

#[tokio::test]
async fn an_empty_publish_is_refused() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    let before = fx.snapshot().await?;
    let result = within(fx.raw.publish(pb::PublishRequest { messages: vec![] })).await?;
    expect_status(result, Code::InvalidArgument, "messages");
    fx.assert_unchanged(&before).await?;
    fx.assert_serves().await
}

#[tokio::test]
async fn more_than_1000_messages_in_one_request_are_refused() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    let before = fx.snapshot().await?;
    let messages: Vec<pb::PublishMessage> = (0..1001)
        .map(|i| message("batch.huge", b"x").id(&format!("m-{i}")).into())
        .collect();
    let result = within(fx.raw.publish(pb::PublishRequest { messages })).await?;
    let status = expect_status(result, Code::ResourceExhausted, "messages");
    assert!(status.message().contains("1000"), "{status:?}");
    fx.assert_unchanged(&before).await?;
    expect_status(fx.get_topic("batch.huge").await, Code::NotFound, "name");
    fx.assert_serves().await
}

// ---------------------------------------------------------------- publish stream

#[tokio::test]
async fn publish_stream_names_the_field_of_a_bad_message() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    let before = fx.snapshot().await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let bad: [(u64, Option<pb::PublishMessage>); 3] = [
        (1, Some(message("a..b", b"x").into())),
        (2, None),
        (3, Some(message("stream.big", &vec![0u8; MIB + 1]).into())),
    ];
    for (correlation_id, message) in bad {
        let item = pb::PublishStreamItem {
            correlation_id,
            message,
        };
        tx.send(pb::PublishStreamRequest { items: vec![item] })?;
    }
    let mut inbound = within(fx.raw.publish_stream(UnboundedReceiverStream::new(rx)))
        .await??
        .into_inner();
    let mut answers = std::collections::BTreeMap::new();
    for _ in 0..3 {
        if answers.len() == 3 {
            break;
        }
        let response = within(inbound.message()).await??.expect("an answer per request");
        for answer in response.answers {
            answers.insert(answer.correlation_id, answer.result.expect("a result"));
        }
    }
    expect_item_error(&answers[&1], Code::InvalidArgument, "message.topic");
    expect_item_error(&answers[&2], Code::InvalidArgument, "message");
    expect_item_error(&answers[&3], Code::ResourceExhausted, "message.payload");
    drop(tx);
    fx.assert_unchanged(&before).await?;
    fx.assert_serves().await
}

#[tokio::test]
async fn a_publish_stream_request_of_too_many_messages_is_refused() -> anyhow::Result<()> {
    let mut fx = Fx::start().await?;
    let before = fx.snapshot().await?;
    let (tx, rx) = mpsc::unbounded_channel();
    // One more than the broker takes per request (1000).
    let items = (0..1001)
        .map(|correlation_id| pb::PublishStreamItem {
            correlation_id,
            message: Some(message("stream.many", b"x").into()),
        })
        .collect();
    tx.send(pb::PublishStreamRequest { items })?;
    let mut inbound = within(fx.raw.publish_stream(UnboundedReceiverStream::new(rx)))
        .await??
        .into_inner();
    let status = expect_status(within(inbound.message()).await?, Code::ResourceExhausted, "items");
    assert!(status.message().contains("1000"), "{status:?}");
    drop(tx);
    fx.assert_unchanged(&before).await?;
    expect_status(fx.get_topic("stream.many").await, Code::NotFound, "name");
    fx.assert_serves().await
}

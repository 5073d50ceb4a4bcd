//! A burst on one PublishStream: the broker publishes what arrives together
//! as one batch, and still answers every message on its own, under its
//! correlation id: valid messages stored once each, an id repeated within
//! the burst answered as a duplicate of the first, invalid messages refused
//! naming their field without holding up the rest.

use std::collections::BTreeMap;
use std::time::Duration;

use hermod_proto::v1 as pb;
use hermod_proto::v1::broker_client::BrokerClient;
use hermod_proto::v1::publish_result::Outcome;
use hermod_tests::TestNode;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

const TOPIC: &str = "burst.orders";
/// More than one server-side batch (256) of messages; the last half in one
/// request.
const MESSAGES: u64 = 600;
/// Every this many messages, one with a bad topic.
const INVALID_EVERY: u64 = 10;
/// Every this many messages, one that repeats the id of the one before.
const REPEAT_EVERY: u64 = 7;
const WAIT: Duration = Duration::from_secs(30);

/// What message `n` of the burst is: its topic and id.
fn shape(n: u64) -> (&'static str, String) {
    let topic = if n % INVALID_EVERY == 9 {
        "burst..bad"
    } else {
        TOPIC
    };
    let id = if n % REPEAT_EVERY == 6 {
        format!("order-{}", n - 1)
    } else {
        format!("order-{n}")
    };
    (topic, id)
}

#[tokio::test]
async fn a_burst_is_answered_message_by_message() -> anyhow::Result<()> {
    let node = TestNode::start().await?;
    let mut raw = tokio::time::timeout(WAIT, BrokerClient::connect(node.endpoint())).await??;
    // Everything is queued before the call starts, so the broker reads it in
    // bursts: requests of a few messages each, then one of many.
    let (tx, rx) = mpsc::unbounded_channel();
    let item = |n: u64| {
        let (topic, id) = shape(n);
        pb::PublishStreamItem {
            correlation_id: n,
            message: Some(pb::PublishMessage {
                id,
                topic: topic.into(),
                payload: format!("payload {n}").into_bytes().into(),
                delivery: pb::DeliveryGuarantee::ExactlyOnce as i32,
                ..Default::default()
            }),
        }
    };
    let mut n = 0;
    while n < MESSAGES {
        let size = if n < MESSAGES / 2 { 3 } else { MESSAGES / 2 };
        let items = (n..(n + size).min(MESSAGES)).map(item).collect();
        tx.send(pb::PublishStreamRequest { items })?;
        n += size;
    }
    drop(tx);
    let mut inbound = tokio::time::timeout(WAIT, raw.publish_stream(UnboundedReceiverStream::new(rx)))
        .await??
        .into_inner();
    let mut answers = BTreeMap::new();
    for _ in 0..MESSAGES {
        if answers.len() as u64 == MESSAGES {
            break;
        }
        let response = tokio::time::timeout(WAIT, inbound.message())
            .await??
            .expect("an answer for every message");
        for answer in response.answers {
            let outcome = answer.result.and_then(|r| r.outcome).expect("an outcome");
            assert!(
                answers.insert(answer.correlation_id, outcome).is_none(),
                "message {} answered twice",
                answer.correlation_id
            );
        }
    }
    assert_eq!(answers.len() as u64, MESSAGES, "every message is answered");

    let mut stored: BTreeMap<String, u64> = BTreeMap::new();
    let mut invalid = 0;
    for n in 0..MESSAGES {
        let (topic, id) = shape(n);
        match &answers[&n] {
            Outcome::Error(e) => {
                assert_eq!(topic, "burst..bad", "message {n} was refused: {e:?}");
                assert_eq!(e.code, tonic::Code::InvalidArgument as i32, "{e:?}");
                assert_eq!(e.field, "message.topic", "{e:?}");
                invalid += 1;
            }
            Outcome::Ack(ack) => {
                assert_eq!(topic, TOPIC, "message {n} with a bad topic was stored");
                assert!(
                    ack.id.is_empty() && ack.topic.is_empty(),
                    "the caller knows them: {ack:?}"
                );
                match stored.get(&id) {
                    // The first of an id stores it; a repeat is its duplicate.
                    Some(first) => {
                        assert!(ack.duplicate, "message {n} repeats {id} but was stored again");
                        assert_eq!(ack.sequence, *first, "a duplicate answers the first sequence");
                    }
                    None => {
                        assert!(!ack.duplicate, "message {n} is the first {id}");
                        stored.insert(id, ack.sequence);
                    }
                }
            }
        }
    }
    assert_eq!(invalid, MESSAGES / INVALID_EVERY);
    let mut sequences: Vec<u64> = stored.values().copied().collect();
    sequences.sort_unstable();
    let expected: Vec<u64> = (1..=stored.len() as u64).collect();
    assert_eq!(sequences, expected, "one sequence per stored id, no gaps");
    let info = raw
        .get_topic(pb::GetTopicRequest { name: TOPIC.into() })
        .await?
        .into_inner();
    assert_eq!(info.messages, stored.len() as u64, "the topic holds each id once");
    Ok(())
}

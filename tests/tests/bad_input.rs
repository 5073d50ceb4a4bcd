//! Bad input at the edge: every rule of the brief's "Bad input" section, one
//! test per rule, through the raw gRPC client so we can send what the typed
//! client would refuse.
//!
//! Each test checks the gRPC code, that the error names the offending field,
//! that nothing changed (topics, their counts and settings, subscriptions),
//! and that the node still serves afterwards: a good publish is stored and
//! is the only message a catch-all subscription delivers.

use std::collections::BTreeSet;
use std::time::Duration;

use hermod_proto::v1 as pb;
use hermod_proto::v1::broker_client::BrokerClient;
use hermod_tests::TestNode;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

/// The longest any single answer may take.
const WAIT: Duration = Duration::from_secs(10);
/// The catch-all subscription every fixture creates before the test runs.
const WATCH: &str = "watch";

const MIB: usize = 1024 * 1024;
const YEAR_MS: u64 = 365 * 24 * 3600 * 1000;
const DAY_MS: u64 = 24 * 3600 * 1000;
const HOUR_MS: u64 = 3600 * 1000;

type Raw = BrokerClient<Channel>;

// ---------------------------------------------------------------- fixture

/// One in-process node, a raw gRPC client, and what the test has stored.
struct Fx {
    node: TestNode,
    raw: Raw,
    /// Ids of the messages the test published successfully (the catch-all
    /// subscription may deliver these, and nothing else).
    published: BTreeSet<String>,
    markers: u32,
}

/// What "nothing changed" compares: every topic (with counts and settings,
/// `$cluster.events` included) and every subscription.
#[derive(Debug, PartialEq)]
struct Snapshot {
    topics: Vec<pb::TopicInfo>,
    subscriptions: Vec<pb::SubscriptionInfo>,
}

impl Fx {
    async fn start() -> anyhow::Result<Self> {
        let node = TestNode::start().await?;
        let raw = tokio::time::timeout(WAIT, BrokerClient::connect(node.endpoint())).await??;
        let mut fx = Self {
            node,
            raw,
            published: BTreeSet::new(),
            markers: 0,
        };
        let settings = pb::SubscriptionSettings {
            pattern: ">".into(),
            start: Some(pb::StartPosition {
                position: Some(pb::start_position::Position::Earliest(true)),
            }),
            ..Default::default()
        };
        fx.create_subscription(WATCH, settings).await?;
        Ok(fx)
    }

    async fn snapshot(&mut self) -> anyhow::Result<Snapshot> {
        let mut topics = within(self.raw.list_topics(pb::ListTopicsRequest {}))
            .await??
            .into_inner()
            .topics;
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        let mut subscriptions = within(self.raw.list_subscriptions(pb::ListSubscriptionsRequest {}))
            .await??
            .into_inner()
            .subscriptions;
        subscriptions.sort_by(|a, b| a.name.cmp(&b.name));
        // Live counters move as consumers come and go; what is stored is
        // compared through the topics, what is delivered by `assert_serves`.
        for info in &mut subscriptions {
            info.backlog = 0;
            info.in_flight = 0;
            info.consumers = 0;
        }
        Ok(Snapshot {
            topics,
            subscriptions,
        })
    }

    async fn assert_unchanged(&mut self, before: &Snapshot) -> anyhow::Result<()> {
        let after = self.snapshot().await?;
        assert_eq!(&after, before, "a refused request changed the broker's state");
        Ok(())
    }

    /// Publishes a batch and returns its results (one per message).
    async fn publish(&mut self, messages: Vec<pb::PublishMessage>) -> anyhow::Result<Vec<pb::PublishResult>> {
        let count = messages.len();
        let results = within(self.raw.publish(pb::PublishRequest { messages }))
            .await??
            .into_inner()
            .results;
        assert_eq!(results.len(), count, "one result per message");
        Ok(results)
    }

    async fn publish_one(&mut self, message: pb::PublishMessage) -> anyhow::Result<pb::PublishResult> {
        Ok(self.publish(vec![message]).await?.remove(0))
    }

    /// Publishes a message that must be accepted; remembers its id.
    async fn publish_ok(&mut self, message: pb::PublishMessage) -> anyhow::Result<pb::PublishAck> {
        let result = self.publish_one(message).await?;
        Ok(self.accepted(&result))
    }

    fn accepted(&mut self, result: &pb::PublishResult) -> pb::PublishAck {
        let ack = expect_ack(result);
        self.published.insert(ack.id.clone());
        ack
    }

    async fn create_topic(
        &mut self,
        name: &str,
        settings: pb::TopicSettings,
    ) -> Result<pb::TopicInfo, Status> {
        let request = pb::CreateTopicRequest {
            name: name.into(),
            settings: Some(settings),
        };
        Ok(within(self.raw.create_topic(request))
            .await
            .map_err(elapsed)??
            .into_inner())
    }

    async fn create_subscription(
        &mut self,
        name: &str,
        settings: pb::SubscriptionSettings,
    ) -> Result<pb::SubscriptionInfo, Status> {
        let request = pb::CreateSubscriptionRequest {
            name: name.into(),
            settings: Some(settings),
        };
        Ok(within(self.raw.create_subscription(request))
            .await
            .map_err(elapsed)??
            .into_inner())
    }

    async fn get_topic(&mut self, name: &str) -> Result<pb::TopicInfo, Status> {
        let request = pb::GetTopicRequest { name: name.into() };
        Ok(within(self.raw.get_topic(request))
            .await
            .map_err(elapsed)??
            .into_inner())
    }

    async fn get_subscription(&mut self, name: &str) -> Result<pb::SubscriptionInfo, Status> {
        let request = pb::GetSubscriptionRequest { name: name.into() };
        Ok(within(self.raw.get_subscription(request))
            .await
            .map_err(elapsed)??
            .into_inner())
    }

    async fn ack(&mut self, tokens: Vec<String>) -> Result<Vec<pb::AckResult>, Status> {
        let count = tokens.len();
        let results = within(self.raw.ack(pb::AckRequest { ack_tokens: tokens }))
            .await
            .map_err(elapsed)??
            .into_inner()
            .results;
        assert_eq!(results.len(), count, "one ack result per token");
        Ok(results)
    }

    /// Opens a Subscribe stream with `first` as its first request.
    async fn open(&mut self, first: Vec<pb::SubscribeRequest>) -> Result<Consumer, Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        for request in first {
            tx.send(request).expect("the stream is open");
        }
        let response = within(self.raw.subscribe(UnboundedReceiverStream::new(rx)))
            .await
            .map_err(elapsed)??;
        Ok(Consumer {
            tx,
            inbound: response.into_inner(),
        })
    }

    async fn attach(&mut self, subscription: &str, credit: u32) -> Result<Consumer, Status> {
        self.open(vec![start_durable(subscription, credit)]).await
    }

    /// The node still serves: a good publish is stored, and the catch-all
    /// subscription delivers nothing but what the test published (so the
    /// refused messages were not stored and do not come later).
    async fn assert_serves(&mut self) -> anyhow::Result<()> {
        self.markers += 1;
        let marker = format!("marker-{}", self.markers);
        let ack = self
            .send_ok(message("after.ok", b"still serving").id(&marker))
            .await?;
        assert!(ack.sequence >= 1 && !ack.duplicate, "{ack:?}");
        let mut consumer = self.attach(WATCH, 10_000).await?;
        let mut seen = Vec::new();
        for _ in 0..10_000 {
            let batch = consumer.deliveries().await?;
            for delivered in &batch {
                assert!(
                    self.published.contains(&delivered.id),
                    "a message nobody published successfully was delivered: {} on {}",
                    delivered.id,
                    delivered.topic
                );
            }
            seen.extend(batch.into_iter().map(|d| d.id));
            if seen.contains(&marker) {
                return Ok(());
            }
        }
        anyhow::bail!("the marker never arrived; got {seen:?}")
    }
}

/// An open Subscribe stream.
struct Consumer {
    tx: mpsc::UnboundedSender<pb::SubscribeRequest>,
    inbound: Streaming<pb::SubscribeResponse>,
}

impl Consumer {
    fn send(&self, request: pb::subscribe_request::Request) {
        self.tx
            .send(pb::SubscribeRequest {
                request: Some(request),
            })
            .expect("the request stream is open");
    }

    async fn response(&mut self) -> Result<pb::subscribe_response::Response, Status> {
        let next = within(self.inbound.message()).await.map_err(elapsed)??;
        next.and_then(|r| r.response)
            .ok_or_else(|| Status::unknown("the stream ended or sent an empty response"))
    }

    /// The next batch of deliveries (settlement answers in between are skipped).
    async fn deliveries(&mut self) -> anyhow::Result<Vec<pb::DeliveredMessage>> {
        for _ in 0..100 {
            if let pb::subscribe_response::Response::Deliveries(batch) = self.response().await? {
                return Ok(batch.messages);
            }
        }
        anyhow::bail!("no deliveries among 100 responses")
    }

    /// The next single delivery (the subscription must deliver one at a time).
    async fn delivery(&mut self) -> anyhow::Result<pb::DeliveredMessage> {
        let mut batch = self.deliveries().await?;
        assert_eq!(batch.len(), 1, "{batch:?}");
        Ok(batch.remove(0))
    }

    /// The next settlement answer (deliveries in between are skipped).
    async fn settled(&mut self) -> anyhow::Result<Vec<pb::SettleResult>> {
        for _ in 0..100 {
            if let pb::subscribe_response::Response::Settled(settled) = self.response().await? {
                return Ok(settled.results);
            }
        }
        anyhow::bail!("no settlement answer among 100 responses")
    }
}

// ---------------------------------------------------------------- helpers

async fn within<F: std::future::Future>(future: F) -> Result<F::Output, tokio::time::error::Elapsed> {
    tokio::time::timeout(WAIT, future).await
}

fn elapsed(_: tokio::time::error::Elapsed) -> Status {
    Status::deadline_exceeded(format!("no answer within {WAIT:?}"))
}

/// A message builder over the wire type.
struct Message(pb::PublishMessage);

fn message(topic: &str, payload: &[u8]) -> Message {
    Message(pb::PublishMessage {
        topic: topic.into(),
        payload: payload.to_vec().into(),
        ..Default::default()
    })
}

impl Message {
    fn id(mut self, id: &str) -> Self {
        self.0.id = id.into();
        self
    }

    fn header(mut self, name: &str, value: &str) -> Self {
        self.0.headers.insert(name.into(), value.into());
        self
    }

    fn with(mut self, change: impl FnOnce(&mut pb::PublishMessage)) -> Self {
        change(&mut self.0);
        self
    }
}

impl From<Message> for pb::PublishMessage {
    fn from(m: Message) -> Self {
        m.0
    }
}

impl Fx {
    async fn send(&mut self, m: Message) -> anyhow::Result<pb::PublishResult> {
        self.publish_one(m.into()).await
    }

    async fn send_ok(&mut self, m: Message) -> anyhow::Result<pb::PublishAck> {
        self.publish_ok(m.into()).await
    }

    /// Sends one message that must be refused with `code`, naming `field`.
    async fn send_refused(&mut self, m: Message, code: Code, field: &str) -> anyhow::Result<pb::ItemError> {
        let result = self.send(m).await?;
        Ok(expect_item_error(&result, code, field))
    }
}

fn expect_ack(result: &pb::PublishResult) -> pb::PublishAck {
    match &result.outcome {
        Some(pb::publish_result::Outcome::Ack(ack)) => ack.clone(),
        other => panic!("expected an ack, got {other:?}"),
    }
}

/// The result is a per-item error with `code`, whose field is `field` and
/// whose message names it too.
fn expect_item_error(result: &pb::PublishResult, code: Code, field: &str) -> pb::ItemError {
    match &result.outcome {
        Some(pb::publish_result::Outcome::Error(error)) => {
            check_item_error(error, code, field);
            error.clone()
        }
        other => panic!("expected {code:?} naming {field}, got {other:?}"),
    }
}

fn check_item_error(error: &pb::ItemError, code: Code, field: &str) {
    assert_eq!(
        Code::from_i32(error.code),
        code,
        "wrong code for {field}: {error:?}"
    );
    assert!(
        error.field == field || error.field.starts_with(&format!("{field}[")),
        "expected field {field}, got {error:?}"
    );
    assert!(
        error.message.contains(field),
        "the message should name {field}: {error:?}"
    );
}

/// The call failed with `code` and a message naming `field`.
fn expect_status<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, field: &str) -> Status {
    match result {
        Ok(value) => panic!("expected {code:?} naming {field}, got {value:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "wrong code for {field}: {status:?}");
            assert!(
                status.message().contains(field),
                "the message should name {field}: {status:?}"
            );
            status
        }
    }
}

fn start_durable(subscription: &str, credit: u32) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        request: Some(pb::subscribe_request::Request::Start(pb::SubscribeStart {
            target: Some(pb::subscribe_start::Target::Subscription(subscription.into())),
            initial_credit: credit,
        })),
    }
}

fn start_pattern(pattern: &str) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        request: Some(pb::subscribe_request::Request::Start(pb::SubscribeStart {
            target: Some(pb::subscribe_start::Target::Pattern(pattern.into())),
            initial_credit: 0,
        })),
    }
}

fn sub_settings(pattern: &str) -> pb::SubscriptionSettings {
    pb::SubscriptionSettings {
        pattern: pattern.into(),
        ..Default::default()
    }
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

// ---------------------------------------------------------------- unknown subscriptions

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

// ---------------------------------------------------------------- the Subscribe stream

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

// ---------------------------------------------------------------- ack tokens

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

// ---------------------------------------------------------------- the typed client

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

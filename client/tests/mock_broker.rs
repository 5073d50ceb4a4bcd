//! The client against an in-process mock broker over real gRPC: retries keep
//! ids, the pipelined publisher survives a broken stream, subscribers grant
//! credit, settle, reconnect and stop at a limit. The mock stores messages
//! deduplicated by id, so "stored once" is checkable.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use hermod_client::{
    Client, ClientOptions, Error, OutgoingMessage, Priority, RetryPolicy, SubscribeOptions,
    SubscriptionConfig, TopicConfig,
};
use hermod_proto::v1 as pb;
use hermod_proto::v1::broker_server::{Broker, BrokerServer};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status, Streaming};

#[derive(Default)]
struct State {
    /// Stored messages by sequence - 1.
    stored: Vec<pb::PublishMessage>,
    ids: HashMap<String, u64>,
    /// Publish calls that store and then answer UNAVAILABLE, as if the answer were lost.
    lose_publish_answers: u32,
    /// Publish streams to break (after storing) at this many messages.
    break_publish_stream_after: Option<usize>,
    /// Deliverable messages of subscription "work", by sequence.
    queue: VecDeque<u64>,
    attempts: HashMap<u64, u32>,
    /// Subscribe streams to break after this many deliveries.
    break_subscribe_after: Option<usize>,
    acked: Vec<String>,
    /// Confirmed acks to answer with a per-token UNAVAILABLE (the ack was
    /// committed, but its commit raced a leader change).
    unknown_ack_outcomes: u32,
    confirmed: Vec<String>,
    delivered: usize,
    subscribe_calls: usize,
    topics: HashMap<String, pb::TopicSettings>,
}

#[derive(Clone, Default)]
struct Mock {
    state: Arc<Mutex<State>>,
    published: Arc<Notify>,
}

fn publish_time() -> u64 {
    1_700_000_000_000
}

impl Mock {
    /// Stores a message unless its id is known; returns (sequence, duplicate).
    fn store(&self, message: pb::PublishMessage) -> pb::PublishResult {
        use pb::publish_result::Outcome;
        if message.topic.contains(' ') {
            return pb::PublishResult {
                outcome: Some(Outcome::Error(pb::ItemError {
                    code: tonic::Code::InvalidArgument as i32,
                    message: "topic may not hold spaces".into(),
                    field: "messages[0].topic".into(),
                })),
            };
        }
        let mut state = self.state.lock().unwrap();
        let (sequence, duplicate) = match state.ids.get(&message.id) {
            Some(sequence) => (*sequence, true),
            None => {
                state.stored.push(message.clone());
                let sequence = state.stored.len() as u64;
                state.ids.insert(message.id.clone(), sequence);
                state.queue.push_back(sequence);
                (sequence, false)
            }
        };
        drop(state);
        self.published.notify_waiters();
        pb::PublishResult {
            outcome: Some(Outcome::Ack(pb::PublishAck {
                id: message.id,
                topic: message.topic,
                sequence,
                duplicate,
                publish_time_ms: publish_time(),
            })),
        }
    }

    fn next_delivery(&self) -> Option<pb::DeliveredMessage> {
        let mut state = self.state.lock().unwrap();
        let sequence = state.queue.pop_front()?;
        let attempt = {
            let attempt = state.attempts.entry(sequence).or_insert(0);
            *attempt += 1;
            *attempt
        };
        state.delivered += 1;
        let message = state.stored[sequence as usize - 1].clone();
        Some(pb::DeliveredMessage {
            id: message.id,
            topic: message.topic,
            payload: message.payload,
            headers: message.headers,
            priority: message.priority,
            sequence,
            publish_time_ms: publish_time(),
            attempt,
            ack_token: format!("tok-{sequence}"),
            expires_at_ms: 0,
            delivery: message.delivery,
        })
    }
}

/// A stream's ack leaves out the id and topic, as the broker's does.
fn without_names(mut result: pb::PublishResult) -> pb::PublishResult {
    if let Some(pb::publish_result::Outcome::Ack(ack)) = &mut result.outcome {
        ack.id.clear();
        ack.topic.clear();
    }
    result
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Broker for Mock {
    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let results = request
            .into_inner()
            .messages
            .into_iter()
            .map(|m| self.store(m))
            .collect();
        let mut state = self.state.lock().unwrap();
        if state.lose_publish_answers > 0 {
            state.lose_publish_answers -= 1;
            return Err(Status::unavailable("answer lost"));
        }
        Ok(Response::new(pb::PublishResponse { results }))
    }

    type PublishStreamStream = BoxStream<pb::PublishStreamResponse>;

    async fn publish_stream(
        &self,
        request: Request<Streaming<pb::PublishStreamRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::unbounded_channel();
        let mock = self.clone();
        tokio::spawn(async move {
            let mut count = 0;
            while let Ok(Some(request)) = inbound.message().await {
                for item in request.items {
                    let result = mock.store(item.message.unwrap_or_default());
                    count += 1;
                    let limit = mock.state.lock().unwrap().break_publish_stream_after;
                    if limit == Some(count) {
                        mock.state.lock().unwrap().break_publish_stream_after = None;
                        let _ = tx.send(Err(Status::unavailable("stream broken")));
                        return;
                    }
                    let answer = pb::PublishStreamAnswer {
                        correlation_id: item.correlation_id,
                        result: Some(without_names(result)),
                    };
                    let _ = tx.send(Ok(pb::PublishStreamResponse {
                        answers: vec![answer],
                    }));
                }
            }
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }

    type SubscribeStream = BoxStream<pb::SubscribeResponse>;

    async fn subscribe(
        &self,
        request: Request<Streaming<pb::SubscribeRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        use pb::subscribe_request::Request as R;
        use pb::subscribe_response::Response as S;
        let mut inbound = request.into_inner();
        let Some(R::Start(start)) = inbound.message().await?.and_then(|r| r.request) else {
            return Err(Status::invalid_argument(
                "request: the first request must be start",
            ));
        };
        if start.target != Some(pb::subscribe_start::Target::Subscription("work".into())) {
            return Err(Status::not_found("subscription: no such subscription"));
        }
        let break_after = {
            let mut state = self.state.lock().unwrap();
            state.subscribe_calls += 1;
            state.break_subscribe_after.take()
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let mock = self.clone();
        tokio::spawn(async move {
            let mut credit = start.initial_credit as usize;
            let mut sent = 0;
            let mut leased: Vec<u64> = Vec::new();
            loop {
                while credit > 0 {
                    if break_after == Some(sent) {
                        // Unacked deliveries go back to the queue, like a consumer disconnect.
                        let mut state = mock.state.lock().unwrap();
                        for sequence in leased.drain(..).rev() {
                            state.queue.push_front(sequence);
                        }
                        let _ = tx.send(Err(Status::unavailable("leader changed")));
                        return;
                    }
                    let Some(message) = mock.next_delivery() else {
                        break;
                    };
                    leased.push(message.sequence);
                    credit -= 1;
                    sent += 1;
                    let batch = pb::DeliveryBatch {
                        messages: vec![message],
                    };
                    let _ = tx.send(Ok(pb::SubscribeResponse {
                        response: Some(S::Deliveries(batch)),
                    }));
                }
                let published = mock.published.notified();
                tokio::select! {
                    request = inbound.message() => {
                        let Ok(Some(request)) = request else {
                            let mut state = mock.state.lock().unwrap();
                            for sequence in leased.drain(..).rev() {
                                state.queue.push_front(sequence);
                            }
                            return;
                        };
                        match request.request {
                            Some(R::Credit(c)) => credit += c.messages as usize,
                            Some(R::Ack(tokens)) => {
                                let results = tokens.ack_tokens.iter().map(|t| pb::SettleResult {
                                    ack_token: t.clone(),
                                    error: None,
                                }).collect();
                                for token in &tokens.ack_tokens {
                                    let sequence: u64 = token.trim_start_matches("tok-").parse().unwrap();
                                    leased.retain(|s| *s != sequence);
                                }
                                mock.state.lock().unwrap().acked.extend(tokens.ack_tokens);
                                let settled = pb::SettleResults { results };
                                let _ = tx.send(Ok(pb::SubscribeResponse { response: Some(S::Settled(settled)) }));
                            }
                            _ => {}
                        }
                    }
                    () = published => {}
                }
            }
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }

    async fn ack(&self, request: Request<pb::AckRequest>) -> Result<Response<pb::AckResponse>, Status> {
        let tokens = request.into_inner().ack_tokens;
        let mut state = self.state.lock().unwrap();
        state.confirmed.extend(tokens.clone());
        let unknown = state.unknown_ack_outcomes > 0;
        state.unknown_ack_outcomes = state.unknown_ack_outcomes.saturating_sub(1);
        let results = tokens
            .into_iter()
            .map(|ack_token| pb::AckResult {
                ack_token,
                confirmed: !unknown,
                error: unknown.then(|| pb::ItemError {
                    code: tonic::Code::Unavailable as i32,
                    message: "the leader changed while the ack was committed; retry".into(),
                    field: String::new(),
                }),
            })
            .collect();
        Ok(Response::new(pb::AckResponse { results }))
    }

    async fn create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::TopicInfo>, Status> {
        let request = request.into_inner();
        let mut state = self.state.lock().unwrap();
        if state.topics.contains_key(&request.name) {
            return Err(Status::already_exists(format!(
                "name: topic {:?} exists",
                request.name
            )));
        }
        let mut settings = request.settings.unwrap_or_default();
        if settings.dedup_window_ms == 0 {
            settings.dedup_window_ms = 120_000;
        }
        state.topics.insert(request.name.clone(), settings);
        Ok(Response::new(pb::TopicInfo {
            name: request.name,
            settings: Some(settings),
            ..Default::default()
        }))
    }

    async fn get_topic(
        &self,
        request: Request<pb::GetTopicRequest>,
    ) -> Result<Response<pb::TopicInfo>, Status> {
        let name = request.into_inner().name;
        let state = self.state.lock().unwrap();
        let settings = state
            .topics
            .get(&name)
            .ok_or_else(|| Status::not_found(format!("name: no topic {name:?}")))?;
        Ok(Response::new(pb::TopicInfo {
            name,
            settings: Some(*settings),
            ..Default::default()
        }))
    }

    async fn list_topics(
        &self,
        _: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        let state = self.state.lock().unwrap();
        let topics = state
            .topics
            .iter()
            .map(|(name, settings)| pb::TopicInfo {
                name: name.clone(),
                settings: Some(*settings),
                ..Default::default()
            })
            .collect();
        Ok(Response::new(pb::ListTopicsResponse { topics }))
    }

    async fn delete_topic(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        let name = request.into_inner().name;
        match self.state.lock().unwrap().topics.remove(&name) {
            Some(_) => Ok(Response::new(pb::DeleteTopicResponse {})),
            None => Err(Status::not_found(format!("name: no topic {name:?}"))),
        }
    }

    async fn create_subscription(
        &self,
        request: Request<pb::CreateSubscriptionRequest>,
    ) -> Result<Response<pb::SubscriptionInfo>, Status> {
        let request = request.into_inner();
        if request.settings.as_ref().is_none_or(|s| s.ack_deadline_ms == 1) {
            return Err(Status::invalid_argument(
                "settings.ack_deadline_ms: 1 ms is out of range",
            ));
        }
        Ok(Response::new(pb::SubscriptionInfo {
            name: request.name,
            settings: request.settings,
            ..Default::default()
        }))
    }

    async fn get_subscription(
        &self,
        _: Request<pb::GetSubscriptionRequest>,
    ) -> Result<Response<pb::SubscriptionInfo>, Status> {
        Err(Status::unimplemented("not in the mock"))
    }

    async fn list_subscriptions(
        &self,
        _: Request<pb::ListSubscriptionsRequest>,
    ) -> Result<Response<pb::ListSubscriptionsResponse>, Status> {
        Err(Status::unimplemented("not in the mock"))
    }

    async fn delete_subscription(
        &self,
        _: Request<pb::DeleteSubscriptionRequest>,
    ) -> Result<Response<pb::DeleteSubscriptionResponse>, Status> {
        Err(Status::unimplemented("not in the mock"))
    }
}

async fn serve(mock: Mock) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(BrokerServer::new(mock))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    address
}

fn fast_retries() -> RetryPolicy {
    RetryPolicy::new(5, Duration::from_millis(5), Duration::from_millis(20))
}

async fn client(address: SocketAddr) -> Client {
    let options = ClientOptions::new()
        .endpoint(format!("http://{address}"))
        .request_timeout(Duration::from_secs(5))
        .retry_policy(fast_retries());
    Client::connect(options).await.unwrap()
}

async fn setup() -> (Mock, Client) {
    let mock = Mock::default();
    let address = serve(mock.clone()).await;
    (mock.clone(), client(address).await)
}

#[tokio::test]
async fn a_publish_retried_after_a_lost_answer_is_stored_once() {
    let (mock, client) = setup().await;
    mock.state.lock().unwrap().lose_publish_answers = 2;
    let receipt = client
        .publish(OutgoingMessage::new("orders.eu", "x").priority(Priority::High))
        .await
        .unwrap();
    let state = mock.state.lock().unwrap();
    assert_eq!(state.stored.len(), 1, "three attempts, one stored message");
    assert_eq!(receipt.id, state.stored[0].id);
    assert!(
        receipt.duplicate,
        "the third attempt found the first one's message"
    );
    assert_eq!(receipt.sequence, 1);
}

#[tokio::test]
async fn a_batch_answers_each_message() {
    let (_mock, client) = setup().await;
    let results = client
        .publish_batch(vec![
            OutgoingMessage::new("a", "1").id("one"),
            OutgoingMessage::new("bad topic", "2"),
        ])
        .await
        .unwrap();
    assert_eq!(results[0].as_ref().unwrap().id, "one");
    let err = results[1].as_ref().unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }));
    assert_eq!(err.field(), Some("messages[1].topic"));
}

#[tokio::test]
async fn the_publisher_survives_a_broken_stream_without_storing_twice() {
    let (mock, client) = setup().await;
    mock.state.lock().unwrap().break_publish_stream_after = Some(10);
    let publisher = client.publisher_with_window(8);
    let mut handles = Vec::new();
    for i in 0..100 {
        handles.push(
            publisher
                .send(OutgoingMessage::new("metrics", format!("{i}")))
                .await,
        );
        assert!(publisher.in_flight() <= 8);
    }
    let mut ids = Vec::new();
    for handle in handles {
        let receipt = handle.await.unwrap();
        assert_eq!(
            receipt.topic, "metrics",
            "the receipt names the topic the answer left out"
        );
        ids.push(receipt.id);
    }
    publisher.flush().await;
    assert_eq!(publisher.in_flight(), 0);
    publisher.close().await;
    let state = mock.state.lock().unwrap();
    assert_eq!(state.stored.len(), 100);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 100);
}

#[tokio::test]
async fn a_subscriber_consumes_acks_and_flushes_on_close() {
    let (mock, client) = setup().await;
    for i in 0..10 {
        client
            .publish(OutgoingMessage::new("jobs", format!("{i}")))
            .await
            .unwrap();
    }
    let mut subscriber = client
        .subscribe(SubscribeOptions::subscription("work").prefetch(4))
        .await
        .unwrap();
    for i in 0..10 {
        let message = subscriber.next().await.unwrap().unwrap();
        assert_eq!(message.payload_str(), Some(format!("{i}").as_str()));
        assert_eq!(message.attempt, 1);
        message.ack().await.unwrap();
    }
    subscriber.close().await.unwrap();
    assert_eq!(mock.state.lock().unwrap().acked.len(), 10);
}

#[tokio::test]
async fn a_durable_subscriber_reconnects_after_a_retryable_failure() {
    let (mock, client) = setup().await;
    for i in 0..6 {
        client
            .publish(OutgoingMessage::new("jobs", format!("{i}")))
            .await
            .unwrap();
    }
    mock.state.lock().unwrap().break_subscribe_after = Some(3);
    let mut subscriber = client
        .subscribe(SubscribeOptions::subscription("work").prefetch(2))
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 6 {
        let message = tokio::time::timeout(Duration::from_secs(10), subscriber.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if !seen.contains(&message.sequence) {
            seen.push(message.sequence);
        }
        message.ack().await.unwrap();
    }
    subscriber.close().await.unwrap();
    assert_eq!(mock.state.lock().unwrap().subscribe_calls, 2);
}

#[tokio::test]
async fn a_limited_subscriber_leases_no_more_than_it_wants() {
    let (mock, client) = setup().await;
    for i in 0..10 {
        client
            .publish(OutgoingMessage::new("jobs", format!("{i}")))
            .await
            .unwrap();
    }
    let subscriber = client
        .subscribe(SubscribeOptions::subscription("work").limit(3))
        .await
        .unwrap();
    let messages: Vec<_> = subscriber.collect().await;
    assert_eq!(messages.len(), 3);
    assert_eq!(mock.state.lock().unwrap().delivered, 3);
}

#[tokio::test]
async fn confirmed_acks_go_through_the_ack_call() {
    let (mock, client) = setup().await;
    client.publish(OutgoingMessage::new("jobs", "x")).await.unwrap();
    let mut subscriber = client
        .subscribe(SubscribeOptions::subscription("work"))
        .await
        .unwrap();
    let message = subscriber.next().await.unwrap().unwrap();
    message.ack_confirmed().await.unwrap();
    assert_eq!(
        mock.state.lock().unwrap().confirmed,
        vec![message.ack_token().to_owned()]
    );
}

#[tokio::test]
async fn a_confirmed_ack_answered_unavailable_is_repeated_until_confirmed() {
    let (mock, client) = setup().await;
    mock.state.lock().unwrap().unknown_ack_outcomes = 2;
    client.publish(OutgoingMessage::new("jobs", "x")).await.unwrap();
    let mut subscriber = client
        .subscribe(SubscribeOptions::subscription("work"))
        .await
        .unwrap();
    let message = subscriber.next().await.unwrap().unwrap();
    message.ack_confirmed().await.unwrap();
    let token = message.ack_token().to_owned();
    assert_eq!(
        mock.state.lock().unwrap().confirmed,
        vec![token.clone(), token.clone(), token],
        "two answers of unknown outcome, then the confirmation, all for the same token"
    );
}

#[tokio::test]
async fn opening_an_unknown_subscription_fails_at_once() {
    let (_mock, client) = setup().await;
    let err = client
        .subscribe(SubscribeOptions::subscription("nope"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert_eq!(err.field(), Some("subscription"));
}

#[tokio::test]
async fn the_client_fails_over_to_the_next_endpoint() {
    let mock = Mock::default();
    let address = serve(mock.clone()).await;
    let options = ClientOptions::new()
        .endpoints(["http://127.0.0.1:1".to_owned(), format!("http://{address}")])
        .connect_timeout(Duration::from_millis(500))
        .retry_policy(fast_retries());
    let client = Client::connect(options).await.unwrap();
    client.publish(OutgoingMessage::new("a", "x")).await.unwrap();
    assert_eq!(mock.state.lock().unwrap().stored.len(), 1);
}

#[tokio::test]
async fn admin_calls_map_settings_and_errors() {
    let (_mock, client) = setup().await;
    let info = client
        .create_topic(
            "orders",
            TopicConfig::new()
                .max_messages(10)
                .default_ttl(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert_eq!(info.config.max_messages, Some(10));
    assert_eq!(info.config.default_ttl, Some(Duration::from_secs(60)));
    assert_eq!(info.config.dedup_window, Some(Duration::from_secs(120)));
    let err = client
        .create_topic("orders", TopicConfig::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }));
    assert_eq!(client.get_topic("orders").await.unwrap().name, "orders");
    assert_eq!(client.list_topics().await.unwrap().len(), 1);
    client.delete_topic("orders").await.unwrap();
    let err = client.get_topic("orders").await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }));

    let config = SubscriptionConfig::new("orders.>").ack_deadline(Duration::from_millis(1));
    let err = client.create_subscription("s", config).await.unwrap_err();
    assert_eq!(err.field(), Some("settings.ack_deadline_ms"));
}

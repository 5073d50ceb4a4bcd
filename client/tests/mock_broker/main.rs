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

mod mock;

use mock::*;

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

//! The scenarios against Hermod, through the `hermod-client` crate.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use futures::{StreamExt, TryFutureExt};
use hermod_client::{
    Client, ClientOptions, Delivery, OutgoingMessage, SubscribeOptions, Subscriber, SubscriptionConfig,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::measure::{Pacer, Recorder, collect_acks};
use crate::process::Server;
use crate::report::{Measured, Outcome};
use crate::scenario::{ACK_DRAIN, CLOSE_TIMEOUT, Load, Produced, RunContext, Shape, Spec};

/// How long one client request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The durable subscription of the latency scenario.
const SUBSCRIPTION: &str = "bench-latency";

/// Starts a fresh broker, runs the scenario against it, and stops it.
pub async fn run(spec: &Spec, binary: &Path) -> anyhow::Result<Measured> {
    let mut server = Server::hermod(binary).await?;
    let outcome = drive(spec, &server).await;
    let metrics = server.hermod_metrics().await;
    let exited = server.exited();
    let warnings = server.warnings();
    server.stop().await;
    if let Some(status) = exited {
        anyhow::bail!("hermod exited during the run ({status}); log: {:?}", warnings.1);
    }
    Ok(outcome?
        .measured(spec.name.primary())
        .with_server(warnings, metrics))
}

async fn connect(server: &Server) -> anyhow::Result<Client> {
    let options = ClientOptions::new()
        .endpoint(&server.url)
        .request_timeout(REQUEST_TIMEOUT);
    Client::connect(options).await.context("connecting to hermod")
}

async fn drive(spec: &Spec, server: &Server) -> anyhow::Result<Outcome> {
    let topic = format!("bench.{}", spec.name.as_str().replace('-', "_"));
    let prefetch = u32::try_from(spec.settings.window).unwrap_or(u32::MAX);
    let (delivery, subscribe, ack) = match spec.name.shape() {
        Shape::FanOut => (
            Delivery::AtMostOnce,
            Some(SubscribeOptions::pattern(&topic)),
            false,
        ),
        Shape::DurablePublish { exactly_once } => {
            let delivery = if exactly_once {
                Delivery::ExactlyOnce
            } else {
                Delivery::AtLeastOnce
            };
            (delivery, None, false)
        }
        Shape::DurableLatency => {
            let admin = connect(server).await?;
            let config = SubscriptionConfig::new(&topic).delivery(Delivery::AtLeastOnce);
            admin
                .create_subscription(SUBSCRIPTION, config)
                .await
                .context("creating the durable subscription")?;
            (
                Delivery::AtLeastOnce,
                Some(SubscribeOptions::subscription(SUBSCRIPTION)),
                true,
            )
        }
    };
    let mut subscribers = Vec::new();
    if let Some(subscribe) = subscribe {
        for _ in 0..spec.consumers {
            let client = connect(server).await?;
            let subscriber = client
                .subscribe(subscribe.clone().prefetch(prefetch))
                .await
                .context("subscribing")?;
            subscribers.push(subscriber);
        }
    }
    let mut producer_clients = Vec::new();
    for _ in 0..spec.settings.producers {
        producer_clients.push(connect(server).await?);
    }

    let load = Load::begin(spec, server.pid());
    let consumers: Vec<JoinHandle<Recorder>> = subscribers
        .into_iter()
        .map(|subscriber| tokio::spawn(consume(subscriber, load.context(), ack)))
        .collect();
    let producers = producer_clients
        .into_iter()
        .enumerate()
        .map(|(index, client)| tokio::spawn(produce(client, load.context(), topic.clone(), delivery, index)))
        .collect();
    load.finish(producers, consumers, spec.fanout()).await
}

/// Publishes through a pipelined `Publisher` until the window ends, then
/// waits for the last acks.
async fn produce(
    client: Client,
    context: RunContext,
    topic: String,
    delivery: Delivery,
    producer: usize,
) -> anyhow::Result<Produced> {
    let publisher = client.publisher_with_window(context.in_flight);
    let (pending, pending_rx) = mpsc::unbounded_channel();
    let acks = tokio::spawn(collect_acks(pending_rx, context.window));
    let mut pacer = Pacer::new(context.window.start, context.rate);
    let (mut sent, mut sent_in_window) = (0u64, 0u64);
    loop {
        let at = pacer.next().await;
        if at >= context.window.stop_at {
            break;
        }
        let payload = context.clock.payload(at, context.message_size);
        let mut message = OutgoingMessage::new(topic.as_str(), payload).delivery(delivery);
        if delivery == Delivery::ExactlyOnce {
            message = message.id(format!("p{producer}-{sent}"));
        }
        let handle = publisher.send(message).await;
        // The collector outlives this loop, so the send cannot fail.
        let _ = pending.send((at, handle.map_ok(drop)));
        sent += 1;
        if context.window.contains(at) {
            sent_in_window += 1;
        }
    }
    drop(pending);
    let acks = tokio::time::timeout(ACK_DRAIN, acks)
        .await
        .with_context(|| format!("hermod did not answer every publish within {ACK_DRAIN:?}"))??;
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, publisher.close()).await;
    Ok(Produced {
        sent,
        sent_in_window,
        acks: Some(acks),
    })
}

/// Receives (and, on a durable subscription, acks) until told to stop.
async fn consume(mut subscriber: Subscriber, context: RunContext, ack: bool) -> Recorder {
    let mut recorder = Recorder::new(context.window);
    let mut stop = context.stop.clone();
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            item = subscriber.next() => match item {
                Some(Ok(message)) => {
                    let now = Instant::now();
                    match context.clock.sent_at(&message.payload) {
                        Some(sent_at) => recorder.record(sent_at, now),
                        None => recorder.error("a delivery without a send time"),
                    }
                    if ack && let Err(error) = message.ack().await {
                        recorder.error(error);
                    }
                    context.progress.delivered_one();
                }
                Some(Err(error)) => {
                    recorder.error(error);
                    break;
                }
                None => break,
            },
        }
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, subscriber.close()).await;
    recorder
}

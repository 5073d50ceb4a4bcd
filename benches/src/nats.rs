//! The scenarios against NATS, through `async-nats`: core NATS for at-most-once, JetStream (file storage, R1) for the durable ones.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::context::{Context, ContextBuilder};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{Config as StreamConfig, StorageType};
use async_nats::{Client, Subject};
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::measure::{Pacer, Recorder, collect_acks};
use crate::process::Server;
use crate::report::{Measured, Outcome};
use crate::scenario::{ACK_DRAIN, Load, Produced, RunContext, Shape, Spec};

/// The stream holding every durable scenario's subjects.
const STREAM: &str = "BENCH";
/// The durable pull consumer of the latency scenario.
const CONSUMER: &str = "bench-latency";
/// How long one JetStream request or publish ack may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts a fresh nats-server, runs the scenario against it, and stops it.
pub async fn run(spec: &Spec, binary: &Path) -> anyhow::Result<Measured> {
    let mut server = Server::nats(binary).await?;
    let outcome = drive(spec, &server).await;
    let exited = server.exited();
    let warnings = server.warnings();
    server.stop().await;
    if let Some(status) = exited {
        anyhow::bail!(
            "nats-server exited during the run ({status}); log: {:?}",
            warnings.1
        );
    }
    Ok(outcome?
        .measured(spec.name.primary())
        .with_server(warnings, Default::default()))
}

async fn connect(server: &Server) -> anyhow::Result<Client> {
    async_nats::connect(&server.url)
        .await
        .context("connecting to nats-server")
}

/// A JetStream context that lets at most `in_flight` publishes await their ack.
fn jetstream(client: Client, in_flight: usize) -> Context {
    ContextBuilder::new()
        .timeout(REQUEST_TIMEOUT)
        .max_ack_inflight(in_flight)
        .backpressure_on_inflight(true)
        .build(client)
}

async fn drive(spec: &Spec, server: &Server) -> anyhow::Result<Outcome> {
    let subject = Subject::from(format!("bench.{}", spec.name.as_str().replace('-', "_")));
    let shape = spec.name.shape();
    if shape != Shape::FanOut {
        let admin = jetstream(connect(server).await?, spec.settings.window);
        let config = StreamConfig {
            name: STREAM.to_owned(),
            subjects: vec!["bench.>".to_owned()],
            storage: StorageType::File,
            num_replicas: 1,
            ..Default::default()
        };
        let stream = admin.create_stream(config).await.context("creating the stream")?;
        if shape == Shape::DurableLatency {
            let config = pull::Config {
                durable_name: Some(CONSUMER.to_owned()),
                ack_policy: AckPolicy::Explicit,
                ..Default::default()
            };
            stream
                .create_consumer(config)
                .await
                .context("creating the consumer")?;
        }
    }

    let mut consumers: Vec<JoinHandle<Recorder>> = Vec::new();
    let mut core_subscribers = Vec::new();
    let mut durable_streams = Vec::new();
    for _ in 0..spec.consumers {
        let client = connect(server).await?;
        match shape {
            Shape::FanOut => {
                let subscriber = client.subscribe(subject.clone()).await.context("subscribing")?;
                // The server has the subscription once the flush returns.
                client.flush().await.context("flushing the subscription")?;
                core_subscribers.push((client, subscriber));
            }
            Shape::DurableLatency => {
                let js = jetstream(client, spec.settings.window);
                let consumer: async_nats::jetstream::consumer::PullConsumer = js
                    .get_consumer_from_stream(CONSUMER, STREAM)
                    .await
                    .context("opening the consumer")?;
                let messages = consumer
                    .stream()
                    .max_messages_per_batch(spec.settings.window)
                    .messages()
                    .await
                    .context("pulling messages")?;
                durable_streams.push(messages);
            }
            Shape::DurablePublish { .. } => {}
        }
    }
    let mut producer_clients = Vec::new();
    for _ in 0..spec.settings.producers {
        producer_clients.push(connect(server).await?);
    }

    let load = Load::begin(spec, server.pid());
    for (client, subscriber) in core_subscribers {
        consumers.push(tokio::spawn(consume_core(client, subscriber, load.context())));
    }
    for messages in durable_streams {
        consumers.push(tokio::spawn(consume_durable(messages, load.context())));
    }
    let producers = producer_clients
        .into_iter()
        .enumerate()
        .map(|(index, client)| {
            let context = load.context();
            match shape {
                Shape::FanOut => tokio::spawn(produce_core(client, context, subject.clone())),
                Shape::DurablePublish { exactly_once } => tokio::spawn(produce_jetstream(
                    client,
                    context,
                    subject.clone(),
                    exactly_once,
                    index,
                )),
                Shape::DurableLatency => {
                    tokio::spawn(produce_jetstream(client, context, subject.clone(), false, index))
                }
            }
        })
        .collect();
    load.finish(producers, consumers, spec.fanout()).await
}

/// Core NATS publishes: no ack, so the rate is what the client sends.
async fn produce_core(client: Client, context: RunContext, subject: Subject) -> anyhow::Result<Produced> {
    let mut pacer = Pacer::new(context.window.start, context.rate);
    let (mut sent, mut sent_in_window) = (0u64, 0u64);
    loop {
        let at = pacer.next().await;
        if at >= context.window.stop_at {
            break;
        }
        let payload = context.clock.payload(at, context.message_size);
        client
            .publish(subject.clone(), payload)
            .await
            .context("publishing")?;
        sent += 1;
        if context.window.contains(at) {
            sent_in_window += 1;
        }
    }
    client.flush().await.context("flushing the publishes")?;
    Ok(Produced {
        sent,
        sent_in_window,
        acks: None,
    })
}

/// JetStream asynchronous publishes with a bounded number awaiting their ack.
async fn produce_jetstream(
    client: Client,
    context: RunContext,
    subject: Subject,
    with_ids: bool,
    producer: usize,
) -> anyhow::Result<Produced> {
    let js = jetstream(client, context.in_flight);
    let (pending, pending_rx) = mpsc::unbounded_channel();
    let acks = tokio::spawn(collect_acks(pending_rx, context.window));
    let mut pacer = Pacer::new(context.window.start, context.rate);
    let (mut sent, mut sent_in_window) = (0u64, 0u64);
    let mut refused = Recorder::new(context.window);
    loop {
        let at = pacer.next().await;
        if at >= context.window.stop_at {
            break;
        }
        let mut publish = PublishMessage::build().payload(context.clock.payload(at, context.message_size));
        if with_ids {
            publish = publish.message_id(format!("p{producer}-{sent}"));
        }
        match js.send_publish(subject.clone(), publish).await {
            Ok(ack) => {
                // The collector outlives this loop, so the send cannot fail.
                let _ = pending.send((at, ack.into_future().map(|outcome| outcome.map(drop))));
            }
            Err(error) => refused.error(error),
        }
        sent += 1;
        if context.window.contains(at) {
            sent_in_window += 1;
        }
    }
    drop(pending);
    let mut acks = tokio::time::timeout(ACK_DRAIN, acks)
        .await
        .with_context(|| format!("JetStream did not ack every publish within {ACK_DRAIN:?}"))??;
    acks.merge(&refused);
    Ok(Produced {
        sent,
        sent_in_window,
        acks: Some(acks),
    })
}

/// Receives from a core subscription until told to stop.
async fn consume_core(
    client: Client,
    mut subscriber: async_nats::Subscriber,
    context: RunContext,
) -> Recorder {
    let mut recorder = Recorder::new(context.window);
    let mut stop = context.stop.clone();
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            item = subscriber.next() => match item {
                Some(message) => {
                    record(&mut recorder, &context, &message.payload);
                    context.progress.delivered_one();
                }
                None => break,
            },
        }
    }
    let _ = subscriber.unsubscribe().await;
    drop(client);
    recorder
}

/// Receives and acks from the durable pull consumer until told to stop.
async fn consume_durable(mut messages: pull::Stream, context: RunContext) -> Recorder {
    let mut recorder = Recorder::new(context.window);
    let mut stop = context.stop.clone();
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            item = messages.next() => match item {
                Some(Ok(message)) => {
                    record(&mut recorder, &context, &message.payload);
                    if let Err(error) = message.ack().await {
                        recorder.error(error);
                    }
                    context.progress.delivered_one();
                }
                Some(Err(error)) => recorder.error(error),
                None => break,
            },
        }
    }
    recorder
}

fn record(recorder: &mut Recorder, context: &RunContext, payload: &[u8]) {
    let now = Instant::now();
    match context.clock.sent_at(payload) {
        Some(sent_at) => recorder.record(sent_at, now),
        None => recorder.error("a delivery without a send time"),
    }
}

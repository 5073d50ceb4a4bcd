//! The scenarios against NATS, through `async-nats`: core NATS for at-most-once, JetStream (file storage, one replica per server) for the durable ones.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::context::{Context, ContextBuilder};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{ClusterInfo, Config as StreamConfig, StorageType};
use async_nats::{Client, Subject};
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::deploy::Deployment;
use crate::failover::{self, ATTEMPT_TIMEOUT_MS, AttemptError, Publishing};
use crate::flow::collect_acks;
use crate::load::{ACK_DRAIN, Load, Phase, Produced, RunContext};
use crate::measure::Recorder;
use crate::memory;
use crate::outcome::{Measured, Outcome};
use crate::scenario::{Shape, Spec};

/// The stream holding every durable scenario's subjects.
const STREAM: &str = "BENCH";
/// The durable pull consumer of the latency and backlog scenarios (and
/// memory-backlog's, which pulls nothing).
const CONSUMER: &str = "bench-durable";
/// How long one JetStream request or publish ack may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a fresh cluster may take before JetStream can place an R3 stream.
const STREAM_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two attempts to create the stream.
const RETRY_INTERVAL: Duration = Duration::from_millis(250);

/// Starts fresh nats-servers, runs the scenario against them, and stops them.
pub async fn run(spec: &Spec, binary: &Path) -> anyhow::Result<Measured> {
    let mut deployment = Deployment::nats(binary, spec.name.nodes()).await?;
    let measured = async {
        let shape = spec.name.shape();
        if shape != Shape::FanOut {
            create_stream(spec, &mut deployment).await?;
        }
        match shape {
            Shape::Backlog { .. } => backlog(spec, &deployment).await,
            Shape::MemoryBacklog => memory_backlog(spec, &deployment).await,
            Shape::Failover => {
                let cluster = NatsCluster::new(&deployment).await?;
                failover::run_rounds(spec, &mut deployment, &cluster).await
            }
            _ => Ok(drive(spec, &deployment).await?.measured(spec.name.primary())),
        }
    }
    .await;
    let exited = deployment.exited();
    let warnings = deployment.warnings();
    deployment.stop().await;
    if let Some(status) = exited {
        anyhow::bail!(
            "nats-server exited during the run ({status}); log: {:?}",
            warnings.1
        );
    }
    Ok(measured?.with_server(warnings, Default::default()))
}

async fn connect(url: &str) -> anyhow::Result<Client> {
    async_nats::connect(url)
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

/// Creates the stream (with one replica per server, so R3 on a cluster) and
/// the durable consumer where the scenario consumes, then points the
/// clients at the stream's leader. A fresh cluster refuses streams until
/// JetStream's meta group has a leader and knows every server, so creation
/// is retried for a while.
async fn create_stream(spec: &Spec, deployment: &mut Deployment) -> anyhow::Result<()> {
    let admin = jetstream(connect(deployment.url()).await?, spec.settings.window);
    let config = StreamConfig {
        name: STREAM.to_owned(),
        subjects: vec!["bench.>".to_owned()],
        storage: StorageType::File,
        num_replicas: deployment.len(),
        ..Default::default()
    };
    let deadline = Instant::now() + STREAM_TIMEOUT;
    let mut stream = loop {
        match admin.create_stream(config.clone()).await {
            Ok(stream) => break stream,
            Err(_) if Instant::now() < deadline && deployment.len() > 1 => {
                tokio::time::sleep(RETRY_INTERVAL).await;
            }
            Err(error) => return Err(error).context("creating the stream"),
        }
    };
    // memory-backlog has the consumer too, as Hermod has its subscription:
    // the stream then keeps track of what that consumer has yet to take.
    if matches!(
        spec.name.shape(),
        Shape::DurableLatency | Shape::Backlog { .. } | Shape::MemoryBacklog
    ) {
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
    if deployment.len() > 1 {
        let info = stream.info().await.context("asking for the stream's leader")?;
        let leader = info.cluster.as_ref().and_then(|c| c.leader.clone());
        if let Some(leader) = leader {
            deployment.target_node(&leader);
        }
    }
    Ok(())
}

/// Opens `count` pull consumers on the durable consumer, each with its own connection.
async fn pull_streams(url: &str, count: usize, batch: usize) -> anyhow::Result<Vec<pull::Stream>> {
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        let js = jetstream(connect(url).await?, batch);
        let consumer: PullConsumer = js
            .get_consumer_from_stream(CONSUMER, STREAM)
            .await
            .context("opening the consumer")?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(batch)
            .messages()
            .await
            .context("pulling messages")?;
        streams.push(messages);
    }
    Ok(streams)
}

async fn producer_clients(url: &str, count: usize) -> anyhow::Result<Vec<Client>> {
    let mut clients = Vec::with_capacity(count);
    for _ in 0..count {
        clients.push(connect(url).await?);
    }
    Ok(clients)
}

/// The scenarios that publish and consume at the same time.
async fn drive(spec: &Spec, deployment: &Deployment) -> anyhow::Result<Outcome> {
    let url = deployment.url();
    let subject = Subject::from(spec.topic());
    let shape = spec.name.shape();
    let mut core_subscribers = Vec::new();
    let mut durable_streams = Vec::new();
    match shape {
        Shape::FanOut => {
            for _ in 0..spec.consumers {
                let client = connect(url).await?;
                let subscriber = client.subscribe(subject.clone()).await.context("subscribing")?;
                // The server has the subscription once the flush returns.
                client.flush().await.context("flushing the subscription")?;
                core_subscribers.push((client, subscriber));
            }
        }
        Shape::DurableLatency => {
            durable_streams = pull_streams(url, spec.consumers, spec.settings.window).await?;
        }
        Shape::DurablePublish { .. } | Shape::Backlog { .. } | Shape::MemoryBacklog | Shape::Failover => {}
    }
    let clients = producer_clients(url, spec.settings.producers).await?;

    let load = Load::begin(spec, deployment.pids(), Phase::Steady);
    let mut consumers: Vec<JoinHandle<Recorder>> = Vec::new();
    for (client, subscriber) in core_subscribers {
        consumers.push(tokio::spawn(consume_core(client, subscriber, load.context())));
    }
    for messages in durable_streams {
        consumers.push(tokio::spawn(consume_durable(messages, load.context(), false)));
    }
    let with_ids = shape == (Shape::DurablePublish { exactly_once: true });
    let producers = clients
        .into_iter()
        .enumerate()
        .map(|(index, client)| match shape {
            Shape::FanOut => tokio::spawn(produce_core(client, load.context(), subject.clone())),
            _ => tokio::spawn(produce_jetstream(
                client,
                load.context(),
                subject.clone(),
                with_ids,
                index,
            )),
        })
        .collect();
    load.finish(producers, consumers, spec.fanout()).await
}

/// Publishes the backlog as fast as it is acked (every publish acked means stored).
async fn fill(spec: &Spec, deployment: &Deployment) -> anyhow::Result<Outcome> {
    let url = deployment.url();
    let subject = Subject::from(spec.topic());
    let clients = producer_clients(url, spec.settings.producers).await?;
    let load = Load::begin(spec, deployment.pids(), Phase::Fill);
    let producers = clients
        .into_iter()
        .enumerate()
        .map(|(index, client)| {
            tokio::spawn(produce_jetstream(
                client,
                load.context(),
                subject.clone(),
                false,
                index,
            ))
        })
        .collect();
    load.finish(producers, Vec::new(), 0).await
}

/// The backlog scenarios: fill the backlog, then consume and ack it.
async fn backlog(spec: &Spec, deployment: &Deployment) -> anyhow::Result<Measured> {
    let url = deployment.url();
    let filled = fill(spec, deployment).await?;
    let expected = filled.published();
    let streams = pull_streams(url, spec.consumers, spec.settings.window).await?;
    let load = Load::begin(spec, deployment.pids(), Phase::Drain { expected });
    let consumers = streams
        .into_iter()
        .map(|messages| tokio::spawn(consume_durable(messages, load.context(), true)))
        .collect();
    let drained = load.finish(Vec::new(), consumers, 1).await?;
    Ok(drained
        .measured(spec.name.primary())
        .with_fill(Some(filled.fill())))
}

/// memory-backlog: fill the stream with nobody pulling while sampling the
/// server's resident memory, and on through a settle (the bound comes from
/// Hermod's configured cache, so NATS has none).
async fn memory_backlog(spec: &Spec, deployment: &Deployment) -> anyhow::Result<Measured> {
    let pid = deployment.target_pid()?;
    let (filled, memory) = memory::sample_during(pid, fill(spec, deployment)).await?;
    Ok(filled
        .measured_with_fill(spec.name.primary())
        .with_memory(Some(memory)))
}

/// The server name of the stream's leader, as its stream info names it.
fn stream_leader(cluster: &ClusterInfo) -> Option<&str> {
    cluster.leader.as_deref().filter(|name| !name.is_empty())
}

/// Whether the stream's info shows it whole: a leader, and every other of
/// the `servers` a replica that is online and current.
fn stream_whole(cluster: &ClusterInfo, servers: usize) -> bool {
    stream_leader(cluster).is_some()
        && cluster.replicas.len() + 1 == servers
        && cluster.replicas.iter().all(|peer| peer.current && !peer.offline)
}

/// leader-failover against NATS: the stream's leader and health from
/// JetStream's stream info, through a connection that reconnects to any
/// server, and publishes through JetStream, each awaiting its ack.
struct NatsCluster {
    admin: Context,
}

impl NatsCluster {
    async fn new(deployment: &Deployment) -> anyhow::Result<Self> {
        let client = connect_in_order(deployment.urls()).await?;
        Ok(Self {
            admin: failover_jetstream(client),
        })
    }

    /// The stream's cluster as the stream's leader describes it, if it answers.
    async fn stream_cluster(&self) -> Option<ClusterInfo> {
        let stream = self.admin.get_stream_no_info(STREAM).await.ok()?;
        stream.get_info().await.ok()?.cluster
    }
}

/// A connection that tries `urls` in their order (the first is the one to
/// start on), and reconnects to the others when its server goes.
async fn connect_in_order(urls: Vec<String>) -> anyhow::Result<Client> {
    async_nats::ConnectOptions::new()
        .retain_servers_order()
        .connection_timeout(Duration::from_millis(ATTEMPT_TIMEOUT_MS))
        .connect(urls)
        .await
        .context("connecting to nats-server")
}

/// A JetStream context whose requests and publish acks may take `ATTEMPT_TIMEOUT_MS`.
fn failover_jetstream(client: Client) -> Context {
    ContextBuilder::new()
        .timeout(Duration::from_millis(ATTEMPT_TIMEOUT_MS))
        .build(client)
}

impl failover::Cluster for NatsCluster {
    async fn leader(&self, deployment: &Deployment) -> Option<usize> {
        let cluster = self.stream_cluster().await?;
        deployment.index_of(stream_leader(&cluster)?)
    }

    async fn start_publisher(
        &self,
        deployment: &Deployment,
        first: usize,
        publishing: Publishing,
    ) -> anyhow::Result<JoinHandle<Produced>> {
        let js = failover_jetstream(connect_in_order(deployment.urls_from(first)).await?);
        let subject = Subject::from(publishing.topic.as_str());
        // Every JetStream publish error is worth sending again: NATS does
        // not tell a refusal of the message from an unavailable stream.
        let publish = move |id: String, payload| {
            let js = js.clone();
            let subject = subject.clone();
            async move {
                let message = PublishMessage::build().payload(payload).message_id(id);
                let ack = js
                    .send_publish(subject, message)
                    .await
                    .map_err(|error| AttemptError::Retryable(error.to_string()))?;
                ack.await
                    .map(drop)
                    .map_err(|error| AttemptError::Retryable(error.to_string()))
            }
        };
        Ok(tokio::spawn(failover::publish_one_at_a_time(publishing, publish)))
    }

    async fn whole(&self, deployment: &Deployment) -> bool {
        let cluster = self.stream_cluster().await;
        cluster.is_some_and(|cluster| stream_whole(&cluster, deployment.len()))
    }
}

/// Core NATS publishes: no ack, so the rate is what the client sends.
async fn produce_core(client: Client, context: RunContext, subject: Subject) -> anyhow::Result<Produced> {
    let mut pacer = context.pacer();
    let mut sent_in_window = 0u64;
    while let Some(at) = pacer.next().await {
        let payload = context.clock.payload(at, context.message_size);
        client
            .publish(subject.clone(), payload)
            .await
            .context("publishing")?;
        if context.window.contains(at) {
            sent_in_window += 1;
        }
    }
    client.flush().await.context("flushing the publishes")?;
    Ok(Produced {
        sent: pacer.sent(),
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
    let mut pacer = context.pacer();
    let mut sent_in_window = 0u64;
    let mut refused = Recorder::new(context.window);
    while let Some(at) = pacer.next().await {
        let sent = pacer.sent() - 1;
        let payload = match context.priority_of(sent) {
            Some(tag) => context.clock.tagged_payload(at, context.message_size, tag),
            None => context.clock.payload(at, context.message_size),
        };
        let mut publish = PublishMessage::build().payload(payload);
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
        sent: pacer.sent(),
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
                Some(message) => context.delivered(&mut recorder, &message.payload, false),
                None => break,
            },
        }
    }
    let _ = subscriber.unsubscribe().await;
    drop(client);
    recorder
}

/// Receives and acks from the durable pull consumer until told to stop.
async fn consume_durable(mut messages: pull::Stream, context: RunContext, backlog: bool) -> Recorder {
    let mut recorder = Recorder::new(context.window);
    let mut stop = context.stop.clone();
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            item = messages.next() => match item {
                Some(Ok(message)) => {
                    context.delivered(&mut recorder, &message.payload, backlog);
                    if let Err(error) = message.ack().await {
                        recorder.error(error);
                    }
                }
                Some(Err(error)) => recorder.error(error),
                None => break,
            },
        }
    }
    recorder
}

#[cfg(test)]
mod tests {
    use async_nats::jetstream::stream::PeerInfo;

    use super::*;

    fn peer(name: &str, current: bool, offline: bool) -> PeerInfo {
        PeerInfo {
            name: name.to_owned(),
            current,
            offline,
            active: Duration::from_millis(100),
            lag: None,
        }
    }

    #[test]
    fn the_stream_leader_comes_from_its_cluster_info() {
        let json = r#"{"name": "bench", "leader": "nats-1", "replicas": [
            {"name": "nats-0", "current": true, "active": 1000000},
            {"name": "nats-2", "current": true, "active": 2000000}]}"#;
        let cluster: ClusterInfo = serde_json::from_str(json).expect("stream cluster info");
        assert_eq!(stream_leader(&cluster), Some("nats-1"));
        assert!(stream_whole(&cluster, 3));
        assert!(!stream_whole(&cluster, 4), "a replica missing");
        let leaderless = ClusterInfo {
            leader: Some(String::new()),
            ..cluster.clone()
        };
        assert_eq!(stream_leader(&leaderless), None);
        assert!(!stream_whole(&leaderless, 3));
    }

    #[test]
    fn a_replica_behind_or_offline_leaves_the_stream_not_whole() {
        let cluster = |replicas| ClusterInfo {
            leader: Some("nats-0".to_owned()),
            replicas,
            ..Default::default()
        };
        let behind = cluster(vec![peer("nats-1", true, false), peer("nats-2", false, false)]);
        assert!(!stream_whole(&behind, 3));
        let offline = cluster(vec![peer("nats-1", true, true), peer("nats-2", true, false)]);
        assert!(!stream_whole(&offline, 3));
        let whole = cluster(vec![peer("nats-1", true, false), peer("nats-2", true, false)]);
        assert!(stream_whole(&whole, 3));
    }
}

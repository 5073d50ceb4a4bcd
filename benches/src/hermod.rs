//! The scenarios against Hermod (one node, or a 3-node cluster), through the `hermod-client` crate.

use std::time::Duration;

use anyhow::Context as _;
use futures::{StreamExt, TryFutureExt};
use hermod_client::{
    Client, ClientOptions, ClusterStatus, Delivery, OutgoingMessage, Priority, RetryPolicy, SubscribeOptions,
    Subscriber, SubscriptionConfig,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::deploy::Deployment;
use crate::failover::{self, ATTEMPT_TIMEOUT_MS, AttemptError, Publishing};
use crate::flow::collect_acks;
use crate::load::{ACK_DRAIN, CLOSE_TIMEOUT, Load, Phase, Produced, RunContext};
use crate::measure::Recorder;
use crate::memory;
use crate::outcome::{Measured, Outcome};
use crate::process::HermodLaunch;
use crate::scenario::{Shape, Spec};

/// How long one client request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The durable subscription of the latency and backlog scenarios (and
/// memory-backlog's, which nobody consumes).
const SUBSCRIPTION: &str = "bench-durable";
/// How long a cluster may take to name its leader, and a backlog to reach the subscription.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two looks at the cluster or the subscription (there is no event to wait for).
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Starts fresh brokers, runs the scenario against them, and stops them.
pub async fn run(spec: &Spec, launch: &HermodLaunch) -> anyhow::Result<Measured> {
    let mut deployment = Deployment::hermod(launch, spec.name.nodes()).await?;
    let measured = async {
        if deployment.len() > 1 {
            target_leader(&mut deployment, &spec.topic()).await?;
        }
        match spec.name.shape() {
            Shape::Backlog { .. } => backlog(spec, &deployment).await,
            Shape::MemoryBacklog => memory_backlog(spec, &deployment, launch).await,
            Shape::Failover => {
                let cluster = HermodCluster::new(&deployment, spec.topic()).await?;
                failover::run_rounds(spec, &mut deployment, &cluster).await
            }
            _ => Ok(drive(spec, &deployment).await?.measured(spec.name.primary())),
        }
    }
    .await;
    let metrics = deployment.hermod_metrics().await;
    let exited = deployment.exited();
    let warnings = deployment.warnings();
    deployment.stop().await;
    if let Some(status) = exited {
        anyhow::bail!("hermod exited during the run ({status}); log: {:?}", warnings.1);
    }
    Ok(measured?.with_server(warnings, metrics))
}

async fn connect(url: &str) -> anyhow::Result<Client> {
    let options = ClientOptions::new()
        .endpoint(url)
        .request_timeout(REQUEST_TIMEOUT);
    Client::connect(options).await.context("connecting to hermod")
}

/// Points the clients at the leader of `topic`'s shard, so that consumers
/// attach where their messages are (publishes go there anyway: the client
/// crate routes them to their shard's leader).
async fn target_leader(deployment: &mut Deployment, topic: &str) -> anyhow::Result<()> {
    let client = connect(deployment.url()).await?;
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while Instant::now() < deadline {
        let status = client
            .cluster_status()
            .await
            .context("asking for the cluster status")?;
        if let Some(url) = leader_url(&status, topic)
            && deployment.target_node(&url)
        {
            return Ok(());
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    anyhow::bail!("the cluster named no leader within {SETTLE_TIMEOUT:?}")
}

/// The client URL of the leader of `topic`'s group as a node's view of the
/// cluster names it, from its advertised address.
fn leader_url(status: &ClusterStatus, topic: &str) -> Option<String> {
    let node = status.leader_of(topic)?;
    Some(format!("http://{}", node.address))
}

/// Whether a node's view shows the cluster whole: that node has a quorum,
/// `topic`'s group a leader, all `nodes` members are up, and the shards'
/// leaderships are spread evenly again. The last matters to the next
/// round: a node that comes back is handed its leaderships a few seconds
/// later, and a kill that met such a handover would time the handover, not
/// an election.
fn is_whole(status: &ClusterStatus, topic: &str, nodes: usize) -> bool {
    status.quorum
        && leader_url(status, topic).is_some()
        && status.nodes.len() == nodes
        && status.nodes.iter().all(|node| node.up)
        && leaders_spread_evenly(status)
}

/// Whether every shard group has a leader and no node leads more than one
/// shard more than another (what the cluster's placement aims at).
fn leaders_spread_evenly(status: &ClusterStatus) -> bool {
    let shards = status
        .groups
        .iter()
        .filter(|group| group.name.starts_with("shard-"));
    let mut led: Vec<usize> = vec![0; status.nodes.len()];
    for shard in shards {
        let Some(index) = shard
            .leader
            .and_then(|leader| status.nodes.iter().position(|node| node.id == leader))
        else {
            return false;
        };
        led[index] += 1;
    }
    let (fewest, most) = (led.iter().min(), led.iter().max());
    fewest.zip(most).is_none_or(|(fewest, most)| most - fewest <= 1)
}

/// leader-failover against Hermod: the leader of the published topic's
/// shard and the cluster's health from `Cluster.Status` through a client
/// that tries every node, and publishes through the client crate's
/// `publish` (routed to that leader).
struct HermodCluster {
    /// Asks whichever node answers; one attempt per look, the rounds poll.
    admin: Client,
    topic: String,
}

impl HermodCluster {
    async fn new(deployment: &Deployment, topic: String) -> anyhow::Result<Self> {
        let admin = Client::connect(failover_options(deployment.urls()))
            .await
            .context("connecting to hermod")?;
        Ok(Self { admin, topic })
    }
}

/// One attempt per call, each within `ATTEMPT_TIMEOUT_MS`, over `urls` in turn.
fn failover_options(urls: Vec<String>) -> ClientOptions {
    let timeout = Duration::from_millis(ATTEMPT_TIMEOUT_MS);
    ClientOptions::new()
        .endpoints(urls)
        .connect_timeout(timeout)
        .request_timeout(timeout)
        .retry_policy(RetryPolicy::none())
}

impl failover::Cluster for HermodCluster {
    async fn leader(&self, deployment: &Deployment) -> Option<usize> {
        let status = self.admin.cluster_status().await.ok()?;
        deployment.index_of(&leader_url(&status, &self.topic)?)
    }

    async fn start_publisher(
        &self,
        deployment: &Deployment,
        first: usize,
        publishing: Publishing,
    ) -> anyhow::Result<JoinHandle<Produced>> {
        let client = Client::connect(failover_options(deployment.urls_from(first)))
            .await
            .context("connecting the publisher to hermod")?;
        let topic = publishing.topic.clone();
        let publish = move |id: String, payload| {
            let client = client.clone();
            let message = OutgoingMessage::new(topic.as_str(), payload)
                .id(id)
                .delivery(Delivery::AtLeastOnce);
            async move {
                match client.publish(message).await {
                    Ok(_) => Ok(()),
                    Err(error) if error.is_retryable() => Err(AttemptError::Retryable(error.to_string())),
                    Err(error) => Err(AttemptError::Final(error.to_string())),
                }
            }
        };
        Ok(tokio::spawn(failover::publish_one_at_a_time(publishing, publish)))
    }

    async fn whole(&self, deployment: &Deployment) -> bool {
        let status = self.admin.cluster_status().await;
        status.is_ok_and(|status| is_whole(&status, &self.topic, deployment.len()))
    }
}

/// Creates the durable subscription the consumers share.
async fn create_subscription(url: &str, topic: &str) -> anyhow::Result<()> {
    let config = SubscriptionConfig::new(topic).delivery(Delivery::AtLeastOnce);
    connect(url)
        .await?
        .create_subscription(SUBSCRIPTION, config)
        .await
        .context("creating the durable subscription")?;
    Ok(())
}

/// Opens `count` consumers with their own connections.
async fn subscribers(
    url: &str,
    subscribe: &SubscribeOptions,
    count: usize,
    prefetch: usize,
) -> anyhow::Result<Vec<Subscriber>> {
    let prefetch = u32::try_from(prefetch).unwrap_or(u32::MAX);
    let mut subscribers = Vec::with_capacity(count);
    for _ in 0..count {
        let subscriber = connect(url)
            .await?
            .subscribe(subscribe.clone().prefetch(prefetch))
            .await
            .context("subscribing")?;
        subscribers.push(subscriber);
    }
    Ok(subscribers)
}

/// Starts one producer task per client.
fn spawn_producers(
    clients: Vec<Client>,
    load: &Load,
    topic: &str,
    delivery: Delivery,
) -> Vec<JoinHandle<anyhow::Result<Produced>>> {
    clients
        .into_iter()
        .enumerate()
        .map(|(index, client)| {
            tokio::spawn(produce(client, load.context(), topic.to_owned(), delivery, index))
        })
        .collect()
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
    let topic = spec.topic();
    let (delivery, subscribe, ack) = match spec.name.shape() {
        Shape::FanOut => (
            Delivery::AtMostOnce,
            Some(SubscribeOptions::pattern(&topic)),
            false,
        ),
        Shape::DurablePublish { exactly_once: true } => (Delivery::ExactlyOnce, None, false),
        // leader-failover publishes through its own loop (failover.rs), never here.
        Shape::DurablePublish { exactly_once: false } | Shape::Failover => {
            (Delivery::AtLeastOnce, None, false)
        }
        Shape::DurableLatency | Shape::Backlog { .. } | Shape::MemoryBacklog => {
            create_subscription(url, &topic).await?;
            (
                Delivery::AtLeastOnce,
                Some(SubscribeOptions::subscription(SUBSCRIPTION)),
                true,
            )
        }
    };
    let subscribers = match &subscribe {
        Some(subscribe) => subscribers(url, subscribe, spec.consumers, spec.settings.window).await?,
        None => Vec::new(),
    };
    let clients = producer_clients(url, spec.settings.producers).await?;
    let load = Load::begin(spec, deployment.pids(), Phase::Steady);
    let consumers = subscribers
        .into_iter()
        .map(|subscriber| tokio::spawn(consume(subscriber, load.context(), ack, false)))
        .collect();
    let producers = spawn_producers(clients, &load, &topic, delivery);
    load.finish(producers, consumers, spec.fanout()).await
}

/// Creates the durable subscription, publishes the backlog into it as fast
/// as it is acked, and waits until the subscription holds all of it.
async fn fill(spec: &Spec, deployment: &Deployment) -> anyhow::Result<Outcome> {
    let url = deployment.url();
    let topic = spec.topic();
    create_subscription(url, &topic).await?;
    let clients = producer_clients(url, spec.settings.producers).await?;
    let load = Load::begin(spec, deployment.pids(), Phase::Fill);
    let producers = spawn_producers(clients, &load, &topic, Delivery::AtLeastOnce);
    let filled = load.finish(producers, Vec::new(), 0).await?;
    wait_for_backlog(url, filled.published()).await?;
    Ok(filled)
}

/// The backlog scenarios: fill the backlog, then consume and ack it.
async fn backlog(spec: &Spec, deployment: &Deployment) -> anyhow::Result<Measured> {
    let url = deployment.url();
    let filled = fill(spec, deployment).await?;
    let expected = filled.published();
    let subscribe = SubscribeOptions::subscription(SUBSCRIPTION);
    let subscribers = subscribers(url, &subscribe, spec.consumers, spec.settings.window).await?;
    let load = Load::begin(spec, deployment.pids(), Phase::Drain { expected });
    let consumers = subscribers
        .into_iter()
        .map(|subscriber| tokio::spawn(consume(subscriber, load.context(), true, true)))
        .collect();
    let drained = load.finish(Vec::new(), consumers, 1).await?;
    Ok(drained
        .measured(spec.name.primary())
        .with_fill(Some(filled.fill())))
}

/// memory-backlog: fill the backlog with nobody consuming while sampling
/// the broker's resident memory, and on through a settle; the figures are
/// the fill's, with the memory and its bound beside them.
async fn memory_backlog(
    spec: &Spec,
    deployment: &Deployment,
    launch: &HermodLaunch,
) -> anyhow::Result<Measured> {
    let pid = deployment.target_pid()?;
    let (filled, memory) = memory::sample_during(pid, fill(spec, deployment)).await?;
    let memory = memory.with_bound(launch.cache_mb, launch.cache_mb_passed);
    Ok(filled
        .measured_with_fill(spec.name.primary())
        .with_memory(Some(memory)))
}

/// Waits until the subscription's backlog counts every message published
/// (the router hands stored messages to it asynchronously), bounded.
async fn wait_for_backlog(url: &str, expected: u64) -> anyhow::Result<()> {
    let client = connect(url).await?;
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let mut backlog = 0;
    while Instant::now() < deadline {
        backlog = client.get_subscription(SUBSCRIPTION).await?.backlog;
        if backlog >= expected {
            return Ok(());
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    anyhow::bail!("the subscription held {backlog} of {expected} messages after {SETTLE_TIMEOUT:?}")
}

/// Publishes through a pipelined `Publisher` until the window ends (or the
/// producer's share of a backlog is sent), then waits for the last acks.
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
    let mut pacer = context.pacer();
    let mut sent_in_window = 0u64;
    while let Some(at) = pacer.next().await {
        let sent = pacer.sent() - 1;
        let mut message = match context.priority_of(sent) {
            Some(tag) => OutgoingMessage::new(
                topic.as_str(),
                context.clock.tagged_payload(at, context.message_size, tag),
            )
            .priority(Priority::ALL[usize::from(tag)]),
            None => OutgoingMessage::new(topic.as_str(), context.clock.payload(at, context.message_size)),
        }
        .delivery(delivery);
        if delivery == Delivery::ExactlyOnce {
            message = message.id(format!("p{producer}-{sent}"));
        }
        let handle = publisher.send(message).await;
        // The collector outlives this loop, so the send cannot fail.
        let _ = pending.send((at, handle.map_ok(drop)));
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
        sent: pacer.sent(),
        sent_in_window,
        acks: Some(acks),
    })
}

/// Receives (and, on a durable subscription, acks) until told to stop.
async fn consume(mut subscriber: Subscriber, context: RunContext, ack: bool, backlog: bool) -> Recorder {
    let mut recorder = Recorder::new(context.window);
    let mut stop = context.stop.clone();
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            item = subscriber.next() => match item {
                Some(Ok(message)) => {
                    context.delivered(&mut recorder, &message.payload, backlog);
                    if ack && let Err(error) = message.ack().await {
                        recorder.error(error);
                    }
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

#[cfg(test)]
mod tests {
    use hermod_client::{ClusterNode, RaftGroupInfo};

    use super::*;

    fn node(id: u64, up: bool, role: &str) -> ClusterNode {
        ClusterNode {
            id,
            address: format!("127.0.0.1:{}", 7400 + id),
            up,
            role: role.to_owned(),
            last_heartbeat_age_ms: Some(10),
        }
    }

    fn group(name: &str, leader: Option<u64>) -> RaftGroupInfo {
        RaftGroupInfo {
            name: name.to_owned(),
            leader,
            term: 4,
            replicas: vec![1, 2, 3],
            lag: 0,
            last_log_index: 10,
            applied_index: 10,
        }
    }

    const TOPIC: &str = "bench.t";

    /// A view of three nodes from node 2, with node 3 `up` or not: one
    /// shard, which holds every user topic and is led by `leader`; node 3
    /// leads the metadata group.
    fn status(leader: Option<u64>, third_up: bool) -> ClusterStatus {
        ClusterStatus {
            node_id: 2,
            quorum: leader.is_some(),
            nodes: vec![
                node(1, true, "leader"),
                node(2, true, "follower"),
                node(3, third_up, "follower"),
            ],
            groups: vec![group("main-0", Some(3)), group("shard-1", leader)],
            shards: 1,
        }
    }

    #[test]
    fn the_leader_of_the_topics_shard_is_found_by_its_advertised_address() {
        assert_eq!(
            leader_url(&status(Some(1), true), TOPIC).as_deref(),
            Some("http://127.0.0.1:7401")
        );
        assert_eq!(leader_url(&status(None, true), TOPIC), None);
        assert_eq!(
            leader_url(&status(Some(9), true), TOPIC),
            None,
            "a leader not among the nodes"
        );
    }

    #[test]
    fn the_cluster_is_whole_with_a_leader_and_every_node_up() {
        assert!(is_whole(&status(Some(1), true), TOPIC, 3));
        assert!(!is_whole(&status(Some(1), false), TOPIC, 3), "a node down");
        assert!(!is_whole(&status(None, true), TOPIC, 3), "no leader");
        assert!(!is_whole(&status(Some(1), true), TOPIC, 4), "a node missing");
    }

    #[test]
    fn the_cluster_is_whole_only_once_shard_leaderships_are_spread_again() {
        let spread = |leaders: &[u64]| {
            let mut status = status(Some(leaders[0]), true);
            status.groups.truncate(1);
            for (index, leader) in leaders.iter().enumerate() {
                status
                    .groups
                    .push(group(&format!("shard-{}", index + 1), Some(*leader)));
            }
            status.shards = leaders.len() as u32;
            is_whole(&status, TOPIC, 3)
        };
        assert!(spread(&[1, 2, 3, 1, 2, 3, 1, 2]));
        assert!(
            !spread(&[2, 2, 3, 3, 2, 3, 2, 3]),
            "node 1 is back but leads nothing yet"
        );
        let mut leaderless = status(Some(1), true);
        leaderless.groups.push(group("shard-2", None));
        leaderless.shards = 2;
        assert!(!leaders_spread_evenly(&leaderless), "a shard without a leader");
    }
}

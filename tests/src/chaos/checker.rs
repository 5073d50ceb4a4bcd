//! The checker: once the faults are over and the cluster is healthy, it
//! proves from what the workload recorded, what the nodes store and what
//! they logged that no guarantee was broken.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use hermod_client::{Client, Delivery, OutgoingMessage, Priority, SubscribeOptions, SubscriptionConfig};

use super::docker::DockerCluster;
use super::workload::{ConsumerLog, Flavour, Ledger};
use crate::checks::{self, check_stored, read_back, read_back_messages, sample};

/// How long every node may take to agree on a topic's contents.
const AGREE_LIMIT: Duration = Duration::from_secs(60);
/// How long one read-back may take.
const READ_BACK_LIMIT: Duration = Duration::from_secs(120);
/// Pause between two polls.
const POLL_TICK: Duration = Duration::from_millis(200);
/// Messages of each priority the priority probe publishes.
const PROBE_PER_PRIORITY: usize = 5;
/// How long the priority probe may take, and each of its steps.
const PROBE_LIMIT: Duration = Duration::from_secs(90);
const PROBE_STEP: Duration = Duration::from_secs(20);

/// A broken guarantee.
#[derive(Debug, Clone)]
pub struct Violation {
    pub kind: &'static str,
    pub detail: String,
}

fn violation(kind: &'static str, detail: impl Into<String>) -> Violation {
    Violation {
        kind,
        detail: detail.into(),
    }
}

/// What the consumers still miss: exactly-once publishes never confirmed,
/// at-least-once publishes never delivered.
pub fn missing(ledger: &Ledger, eo: &ConsumerLog, alo: &ConsumerLog) -> (Vec<String>, Vec<String>) {
    let mut unconfirmed = Vec::new();
    let mut undelivered = Vec::new();
    for (id, published) in &ledger.acked {
        match published.flavour {
            Flavour::ExactlyOnce if !eo.confirmed.contains_key(id) => unconfirmed.push(id.clone()),
            Flavour::AtLeastOnce if !alo.delivered.contains_key(id) => undelivered.push(id.clone()),
            _ => {}
        }
    }
    (unconfirmed, undelivered)
}

/// Violations the publishers and consumers recorded, and acknowledged
/// messages the consumers never got.
pub fn check_workload(ledger: &Ledger, consumers: &[(&str, &ConsumerLog)]) -> Vec<Violation> {
    let mut found = Vec::new();
    for wrong in &ledger.wrong {
        found.push(violation("wrong_publish_answer", wrong.clone()));
    }
    for (name, log) in consumers {
        for v in &log.violations {
            let kind = if v.contains("after its ack") {
                "redelivered_after_confirmed_ack"
            } else if v.contains("expired") {
                "delivered_after_expiry"
            } else if v.contains("delay") {
                "delivered_before_delay"
            } else {
                "stored_twice"
            };
            found.push(violation(kind, format!("{name}: {v}")));
        }
    }
    let eo = consumers.iter().find(|(n, _)| *n == "eo").map(|(_, l)| *l);
    let alo = consumers.iter().find(|(n, _)| *n == "alo").map(|(_, l)| *l);
    if let (Some(eo), Some(alo)) = (eo, alo) {
        let (unconfirmed, undelivered) = missing(ledger, eo, alo);
        if !unconfirmed.is_empty() {
            found.push(violation(
                "exactly_once_never_confirmed",
                format!(
                    "acknowledged exactly-once publishes never acked: {}",
                    sample(&unconfirmed)
                ),
            ));
        }
        if !undelivered.is_empty() {
            found.push(violation(
                "at_least_once_never_delivered",
                format!(
                    "acknowledged at-least-once publishes never delivered: {}",
                    sample(&undelivered)
                ),
            ));
        }
    }
    found
}

/// (messages, first sequence, last sequence) of `topic` once every node
/// reports the same.
pub async fn agreed_count(cluster: &DockerCluster, topic: &str) -> anyhow::Result<u64> {
    checks::agreed_count(&cluster.endpoints(), topic, AGREE_LIMIT).await
}

/// Reads `topic` back through `subscription` (created before the workload,
/// from the earliest message) and checks that every acknowledged publish
/// is stored once, under the sequence it was acknowledged with. Returns the
/// number of distinct ids stored.
pub async fn check_topic(
    cluster: &DockerCluster,
    client: &Client,
    topic: &str,
    subscription: &str,
    ledger: &Ledger,
) -> Result<usize, Violation> {
    let stored = agreed_count(cluster, topic)
        .await
        .map_err(|e| violation("replicas_disagree", format!("{e:#}")))?;
    let deliveries = read_back(client, subscription, stored, READ_BACK_LIMIT)
        .await
        .map_err(|e| violation("read_back_incomplete", format!("{e:#}")))?;
    let acked: BTreeMap<String, (String, u64)> = ledger
        .acked
        .iter()
        .map(|(id, p)| (id.clone(), (p.topic.clone(), p.sequence)))
        .collect();
    check_stored(topic, &deliveries, &ledger.tried, &acked).map_err(|e| {
        let kind = if e.to_string().contains("more than once") {
            "stored_twice"
        } else {
            "acknowledged_publish_lost"
        };
        violation(kind, format!("{e:#}"))
    })
}

/// Leadership claims per term: from each node's log ("node ID is the
/// leader (term T)") and from `leader_changed` events in `$cluster.events`.
pub fn leadership_claims(logs: &[String], events: &[serde_json::Value]) -> BTreeMap<u64, BTreeSet<u64>> {
    let mut claims: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for log in logs {
        for line in log.lines() {
            let Some(at) = line.find(" is the leader (term ") else {
                continue;
            };
            let node = line[..at]
                .rsplit("node ")
                .next()
                .and_then(|n| n.trim().parse::<u64>().ok());
            let rest = &line[at + " is the leader (term ".len()..];
            let term = rest.split(')').next().and_then(|t| t.trim().parse::<u64>().ok());
            if let (Some(node), Some(term)) = (node, term) {
                claims.entry(term).or_default().insert(node);
            }
        }
    }
    for event in events.iter().filter(|e| e["type"] == "leader_changed") {
        if let (Some(node), Some(term)) = (event["node"].as_u64(), event["term"].as_u64()) {
            claims.entry(term).or_default().insert(node);
        }
    }
    claims
}

/// Every `$cluster.events` event, read through `subscription`.
pub async fn read_events(
    cluster: &DockerCluster,
    client: &Client,
    subscription: &str,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let stored = agreed_count(cluster, "$cluster.events").await?;
    let messages = read_back_messages(client, subscription, stored, READ_BACK_LIMIT).await?;
    let mut seen = BTreeSet::new();
    Ok(messages
        .into_iter()
        // A redelivery repeats a message; ids tell apart the events that
        // different groups stored under the same sequence.
        .filter(|(_, id, _)| seen.insert(id.clone()))
        .filter_map(|(_, _, payload)| serde_json::from_slice(&payload).ok())
        .collect())
}

/// Panics in the nodes' logs: no input may panic a node.
pub fn check_panics(logs: &[String]) -> Vec<Violation> {
    let mut found = Vec::new();
    for (index, log) in logs.iter().enumerate() {
        for line in log.lines().filter(|l| l.contains("panicked at")) {
            found.push(violation("node_panicked", format!("n{}: {line}", index + 1)));
        }
    }
    found
}

/// On the recovered cluster, messages of every priority published while no
/// consumer is attached come out highest priority first, FIFO within one.
/// `leader` is a client of the leader alone: only the leader's dispatcher
/// knows a subscription's backlog.
pub async fn check_priorities(client: &Client, leader: &Client) -> Vec<Violation> {
    match tokio::time::timeout(PROBE_LIMIT, priority_probe(client, leader)).await {
        Ok(Ok(())) => Vec::new(),
        Ok(Err(e)) => vec![violation("priority_order", format!("{e:#}"))],
        Err(_) => vec![violation(
            "priority_order",
            format!("the priority probe took over {PROBE_LIMIT:?}"),
        )],
    }
}

async fn priority_probe(client: &Client, leader: &Client) -> anyhow::Result<()> {
    const TOPIC: &str = "chaos.prio";
    const SUBSCRIPTION: &str = "chaos-prio";
    client
        .create_subscription(
            SUBSCRIPTION,
            SubscriptionConfig::new(TOPIC).delivery(Delivery::ExactlyOnce),
        )
        .await?;
    let priorities = [
        Priority::Normal,
        Priority::Low,
        Priority::Critical,
        Priority::High,
    ];
    let mut expected: Vec<(Priority, u64)> = Vec::new();
    for round in 0..PROBE_PER_PRIORITY {
        for priority in priorities {
            let id = format!("prio-{round}-{}", priority.as_str());
            let receipt = client
                .publish(OutgoingMessage::new(TOPIC, id.clone()).id(id).priority(priority))
                .await?;
            expected.push((priority, receipt.sequence));
        }
    }
    expected.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let total = expected.len() as u64;
    // The dispatcher must hold them all before a consumer attaches.
    let mut backlog = 0;
    for _ in 0..PROBE_STEP.as_millis() / POLL_TICK.as_millis() {
        backlog = leader.get_subscription(SUBSCRIPTION).await?.backlog;
        if backlog >= total {
            break;
        }
        tokio::time::sleep(POLL_TICK).await;
    }
    anyhow::ensure!(
        backlog >= total,
        "the subscription's backlog was {backlog}, not {total}, {PROBE_STEP:?} after the probe was published"
    );
    let mut subscriber = client
        .subscribe(
            SubscribeOptions::subscription(SUBSCRIPTION)
                .prefetch(1)
                .limit(total),
        )
        .await?;
    let mut got: Vec<(Priority, u64)> = Vec::new();
    for _ in 0..total {
        let message = tokio::time::timeout(PROBE_STEP, subscriber.next())
            .await
            .map_err(|_| anyhow::anyhow!("no delivery within {PROBE_STEP:?} after {got:?}"))?
            .ok_or_else(|| anyhow::anyhow!("the stream ended after {got:?}"))??;
        tokio::time::timeout(PROBE_STEP, message.ack_confirmed())
            .await
            .map_err(|_| anyhow::anyhow!("no ack confirmation within {PROBE_STEP:?} after {got:?}"))??;
        got.push((message.priority, message.sequence));
    }
    anyhow::ensure!(
        got == expected,
        "delivered in the order {got:?}, expected {expected:?}"
    );
    Ok(())
}

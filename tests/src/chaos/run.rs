//! One chaos run from start to verdict: form the cluster, start the
//! workload, let the nemesis loose, heal, wait for health, drain, check.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hermod_client::{Client, Delivery, SubscriptionConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Options;
use super::checker::{self, Violation};
use super::docker::DockerCluster;
use super::health::{node_client, wait_healthy};
use super::nemesis::{self, Nemesis, RECOVERY_LIMIT};
use super::report::Report;
use super::workload::{self, ConsumerLog, Flavour, Ledger, PublisherSpec};
use crate::checks::{lock, read_back_config, sample};

/// How long a fresh cluster may take to form (debug builds, a loaded machine).
const FORM_LIMIT: Duration = Duration::from_secs(120);
/// The workload goes on this long on the healed cluster before it stops.
const HEALTHY_TAIL: Duration = Duration::from_secs(3);
/// How long the consumers may take, after the publishers stop, to receive
/// every acknowledged message.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);
/// How long a subscription may take to have nothing left in flight.
const SETTLE_LIMIT: Duration = Duration::from_secs(60);
/// How long a workload task may take to stop when asked.
const STOP_LIMIT: Duration = Duration::from_secs(60);
const POLL_TICK: Duration = Duration::from_millis(200);
/// The ack deadline of the consumers' subscriptions.
const ACK_DEADLINE: Duration = Duration::from_secs(5);

/// (subscription, pattern, delivery) the consumers read.
const CONSUMED: [(&str, &str, Delivery); 3] = [
    ("chaos-eo", "chaos.eo", Delivery::ExactlyOnce),
    ("chaos-alo", "chaos.alo", Delivery::AtLeastOnce),
    ("chaos-ttl", "chaos.ttl", Delivery::AtLeastOnce),
];
/// (subscription, topic) created before the workload, read only by the checker.
const CHECKED: [(&str, &str); 2] = [("chaos-check-eo", "chaos.eo"), ("chaos-check-alo", "chaos.alo")];
const EVENTS_SUBSCRIPTION: &str = "chaos-check-events";

/// The endpoints rotated by `k`, so clients spread over the nodes.
fn rotated(endpoints: &[String], k: usize) -> Vec<String> {
    let mut list = endpoints.to_vec();
    let len = list.len().max(1);
    list.rotate_left(k % len);
    list
}

async fn join_all(tasks: Vec<JoinHandle<()>>, what: &str, violations: &mut Vec<Violation>) {
    for task in tasks {
        if tokio::time::timeout(STOP_LIMIT, task).await.is_err() {
            violations.push(Violation {
                kind: "workload_stuck",
                detail: format!("a {what} did not stop within {STOP_LIMIT:?}"),
            });
        }
    }
}

/// Runs the suite on `cluster`; any error is a failure of the run itself.
pub async fn run(options: &Options, cluster: &mut DockerCluster) -> anyhow::Result<Report> {
    let mut report = Report::new(options);
    let (_, formed) = wait_healthy(cluster, FORM_LIMIT)
        .await
        .map_err(|e| anyhow::anyhow!("the cluster did not form: {e}"))?;
    eprintln!("chaos: {} nodes formed a cluster in {formed:.1?}", cluster.len());
    let endpoints = cluster.endpoints();
    let admin = workload::connect(endpoints.clone()).await?;
    for (name, pattern, delivery) in CONSUMED {
        let config = SubscriptionConfig::new(pattern)
            .delivery(delivery)
            .ack_deadline(ACK_DEADLINE);
        admin.create_subscription(name, config).await?;
    }
    for (name, topic) in CHECKED {
        admin.create_subscription(name, read_back_config(topic)).await?;
    }
    admin
        .create_subscription(EVENTS_SUBSCRIPTION, read_back_config("$cluster.events"))
        .await?;

    let epoch = Instant::now();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let (stop_publishers, stop_publishers_rx) = watch::channel(false);
    let (stop_consumers, stop_consumers_rx) = watch::channel(false);
    let specs = [
        ("eo-a", "chaos.eo", Flavour::ExactlyOnce),
        ("eo-b", "chaos.eo", Flavour::ExactlyOnce),
        ("alo-a", "chaos.alo", Flavour::AtLeastOnce),
        ("alo-b", "chaos.alo", Flavour::AtLeastOnce),
        ("ttl-a", "chaos.ttl", Flavour::Expiring),
    ];
    let mut publishers = Vec::new();
    for (k, (name, topic, flavour)) in specs.into_iter().enumerate() {
        let client = workload::connect(rotated(&endpoints, k)).await?;
        let spec = PublisherSpec {
            name: name.to_string(),
            topic: topic.to_string(),
            flavour,
            seed: options.seed.wrapping_add(k as u64 + 1),
        };
        publishers.push(tokio::spawn(workload::publish(
            client,
            spec,
            epoch,
            ledger.clone(),
            stop_publishers_rx.clone(),
        )));
    }
    let logs: Vec<Arc<Mutex<ConsumerLog>>> = CONSUMED.iter().map(|_| Arc::default()).collect();
    let mut consumers = Vec::new();
    for (k, (name, _, delivery)) in CONSUMED.into_iter().enumerate() {
        let client = workload::connect(rotated(&endpoints, k + 1)).await?;
        consumers.push(tokio::spawn(workload::consume(
            client,
            name.to_string(),
            delivery == Delivery::ExactlyOnce,
            epoch,
            logs[k].clone(),
            stop_consumers_rx.clone(),
        )));
    }

    // The faults, then the final heal and the recovery after it.
    let until = epoch + Duration::from_secs_f64(options.minutes * 60.0);
    let mut nemesis = Nemesis::new(options.seed, epoch);
    nemesis.run(cluster, until).await;
    let faults_end_s = epoch.elapsed().as_secs_f64();
    if let Err(e) = nemesis::heal(cluster).await {
        report.violations.push(Violation {
            kind: "heal_failed",
            detail: format!("{e:#}"),
        });
    }
    match wait_healthy(cluster, RECOVERY_LIMIT).await {
        Ok((_, took)) => report.final_recovery = Some(took),
        Err(e) => report.violations.push(Violation {
            kind: "no_recovery",
            detail: format!("after the faults stopped: {e}"),
        }),
    }
    report.faults = std::mem::take(&mut nemesis.faults);
    for fault in report.faults.iter().filter(|f| f.recovery.is_none()) {
        report.violations.push(Violation {
            kind: "no_recovery",
            detail: format!(
                "after {} ({}): {:?}",
                fault.kind.name(),
                fault.detail,
                fault.error
            ),
        });
    }
    tokio::time::sleep(HEALTHY_TAIL).await;
    let _ = stop_publishers.send(true);
    join_all(publishers, "publisher", &mut report.violations).await;
    report.first_publish_after_faults = lock(&ledger)
        .acked_at_s
        .iter()
        .copied()
        .filter(|t| *t >= faults_end_s)
        .reduce(f64::min)
        .map(|t| Duration::from_secs_f64(t - faults_end_s));
    if report.first_publish_after_faults.is_none() {
        report.violations.push(Violation {
            kind: "no_recovery",
            detail: "no publish was acknowledged after the faults stopped".into(),
        });
    }

    drain(&ledger, &logs).await;
    if let Ok((leader, _)) = wait_healthy(cluster, RECOVERY_LIMIT).await
        && let Ok(client) = node_client(cluster, leader).await
    {
        for (name, _, _) in &CONSUMED[..2] {
            if let Err(e) = wait_settled(&client, name).await {
                report.violations.push(Violation {
                    kind: "not_settled",
                    detail: e,
                });
            }
        }
    }
    let _ = stop_consumers.send(true);
    join_all(consumers, "consumer", &mut report.violations).await;

    check(options, cluster, &admin, &ledger, &logs, &mut report).await;
    Ok(report)
}

/// Waits until the consumers have every acknowledged message, or the limit.
async fn drain(ledger: &Mutex<Ledger>, logs: &[Arc<Mutex<ConsumerLog>>]) {
    let started = Instant::now();
    for _ in 0..DRAIN_LIMIT.as_millis() / POLL_TICK.as_millis() {
        let (unconfirmed, undelivered) = checker::missing(&lock(ledger), &lock(&logs[0]), &lock(&logs[1]));
        if unconfirmed.is_empty() && undelivered.is_empty() {
            eprintln!(
                "chaos: the consumers caught up {:.1?} after the publishers stopped",
                started.elapsed()
            );
            return;
        }
        if started.elapsed() >= DRAIN_LIMIT {
            break;
        }
        tokio::time::sleep(POLL_TICK).await;
    }
}

/// Waits until `subscription` has nothing to deliver and nothing in flight.
async fn wait_settled(client: &Client, subscription: &str) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..SETTLE_LIMIT.as_millis() / POLL_TICK.as_millis() {
        match client.get_subscription(subscription).await {
            Ok(info) if info.backlog == 0 && info.in_flight == 0 => return Ok(()),
            Ok(info) => last = format!("backlog {}, in flight {}", info.backlog, info.in_flight),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(POLL_TICK).await;
    }
    Err(format!(
        "{subscription} was not settled within {SETTLE_LIMIT:?}: {last}"
    ))
}

/// Every check of the checker, into the report.
async fn check(
    options: &Options,
    cluster: &DockerCluster,
    client: &Client,
    ledger: &Mutex<Ledger>,
    logs: &[Arc<Mutex<ConsumerLog>>],
    report: &mut Report,
) {
    let ledger = std::mem::take(&mut *lock(ledger));
    let logs: Vec<ConsumerLog> = logs.iter().map(|l| std::mem::take(&mut *lock(l))).collect();
    let named = [("eo", &logs[0]), ("alo", &logs[1]), ("ttl", &logs[2])];
    report.violations.extend(checker::check_workload(&ledger, &named));
    for (subscription, topic) in CHECKED {
        match checker::check_topic(cluster, client, topic, subscription, &ledger).await {
            Ok(stored) => report.stored += stored,
            Err(v) => report.violations.push(v),
        }
    }
    match wait_healthy(cluster, RECOVERY_LIMIT).await {
        Ok((leader, _)) => match node_client(cluster, leader).await {
            Ok(leader) => report
                .violations
                .extend(checker::check_priorities(client, &leader).await),
            Err(e) => report.violations.push(Violation {
                kind: "priority_order",
                detail: format!("no client of the leader for the priority probe: {e:#}"),
            }),
        },
        Err(e) => report.violations.push(Violation {
            kind: "no_recovery",
            detail: format!("before the priority probe: {e}"),
        }),
    }
    let events = match checker::read_events(cluster, client, EVENTS_SUBSCRIPTION).await {
        Ok(events) => events,
        Err(e) => {
            report.violations.push(Violation {
                kind: "read_back_incomplete",
                detail: format!("$cluster.events: {e:#}"),
            });
            Vec::new()
        }
    };
    let mut node_logs = Vec::new();
    for index in 0..cluster.len() {
        let text = cluster
            .logs(index)
            .await
            .unwrap_or_else(|e| format!("(no log: {e:#})"));
        let _ = std::fs::write(options.dir.join(format!("n{}.log", index + 1)), &text);
        node_logs.push(text);
    }
    report.violations.extend(checker::check_panics(&node_logs));
    let claims = checker::leadership_claims(&node_logs, &events);
    for (term, nodes) in claims.iter().filter(|(_, n)| n.len() > 1) {
        report.violations.push(Violation {
            kind: "two_leaders_in_one_term",
            detail: format!("term {term} claimed by nodes {nodes:?}"),
        });
    }
    report.terms_with_leader = claims.len();
    report.leader_events = events.iter().filter(|e| e["type"] == "leader_changed").count();
    if !ledger.failed.is_empty() {
        let failed: Vec<_> = ledger.failed.iter().collect();
        eprintln!(
            "chaos: publishes the client gave up on (outcome unknown): {}",
            sample(&failed)
        );
    }
    report.set_workload(&ledger, &logs);
}

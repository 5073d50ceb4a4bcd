//! Faults in a cluster of three real `hermod serve` processes on 127.0.0.1.
//!
//! A producer publishes exactly-once and at-least-once messages with
//! explicit ids (retried by the client), an exactly-once consumer confirms
//! every ack, an at-least-once consumer acks. Meanwhile the leader (of the
//! shard the exactly-once messages go to) is
//! SIGKILLed and restarted, a follower is paused with SIGSTOP for a few
//! seconds, and finally all three nodes are SIGKILLed and restarted. A
//! checker then proves:
//!
//! - every acknowledged publish is stored (under the sequence it was
//!   acknowledged with), and the nodes agree on what is stored;
//! - no id is stored twice;
//! - no exactly-once message is delivered again after its ack was confirmed;
//! - every acknowledged at-least-once message was delivered at least once,
//!   and every acknowledged exactly-once message was eventually confirmed.
//!
//! It prints the time from the SIGKILL of the leader to the first
//! successful publish afterwards.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hermod_client::{
    Client, ClientOptions, Delivery, Error, OutgoingMessage, ReceivedMessage, RetryPolicy, SubscribeOptions,
    SubscriptionConfig,
};
use hermod_tests::checks::{check_stored, create_and_read_back, lock, sample};
use hermod_tests::processes::ClusterProcesses;
use tokio::sync::watch;
use tokio::task::{JoinError, JoinSet};

mod workload;

use workload::*;

const EO_TOPIC: &str = "chk.eo";
const ALO_TOPIC: &str = "chk.alo";
const EO_SUBSCRIPTION: &str = "eo";
const ALO_SUBSCRIPTION: &str = "alo";
const CHECK_EO: &str = "check-eo";
const CHECK_ALO: &str = "check-alo";
const ACK_DEADLINE: Duration = Duration::from_secs(2);

/// How long the processes may take to start and form (debug builds, a
/// loaded machine).
const START: Duration = Duration::from_secs(60);
/// Bound of every other wait of the test.
const PHASE: Duration = Duration::from_secs(30);
/// How long the consumers may take, after the final restart, to receive
/// every acknowledged message.
const DRAIN: Duration = Duration::from_secs(60);
/// How long a follower stays paused.
const PAUSE: Duration = Duration::from_secs(3);

/// Acknowledged publishes before the leader is killed, and after each
/// fault before the next one.
const BEFORE_KILL: usize = 300;
const BETWEEN_FAULTS: usize = 150;
/// Most messages the producer tries (it is stopped long before).
const MAX_MESSAGES: usize = 50_000;
/// Most events a consumer or a wait handles: bounds every loop in count.
const MAX_EVENTS: usize = 1_000_000;
const PREFETCH: u32 = 64;
/// Processing time of an exactly-once message before its ack, times 0 to 7
/// by sequence: confirmed acks are in flight at every fault.
const EO_WORK_STEP: Duration = Duration::from_millis(40);
/// Every this many exactly-once sequences, the first delivery is left
/// unacked, so it is redelivered after the ack deadline, across faults too.
const EO_FIRST_DELIVERY_DROPPED_EVERY: u64 = 25;

/// Waits until the producer has `target` acknowledged publishes.
async fn wait_acked(count: &mut watch::Receiver<usize>, target: usize, what: &str) -> anyhow::Result<()> {
    let reached = tokio::time::timeout(PHASE, count.wait_for(|n| *n >= target))
        .await
        .map(|r| r.is_ok());
    match reached {
        Ok(true) => Ok(()),
        Ok(false) => anyhow::bail!("{what}: the producer stopped at {} acknowledged", *count.borrow()),
        Err(_) => anyhow::bail!(
            "{what}: {} of {target} publishes acknowledged within {PHASE:?}",
            *count.borrow()
        ),
    }
}

/// What the consumers still miss, or why they cannot go on.
fn pending(produced: &Produced, eo: &EoSeen, alo: &AloSeen) -> Result<Option<String>, String> {
    if let Some(failed) = &eo.failed {
        return Err(format!("the exactly-once consumer stopped: {failed}"));
    }
    if let Some(failed) = &alo.failed {
        return Err(format!("the at-least-once consumer stopped: {failed}"));
    }
    let unconfirmed: Vec<&String> = produced
        .acked
        .iter()
        .filter(|(id, a)| a.delivery == Delivery::ExactlyOnce && !eo.confirmed.contains_key(*id))
        .map(|(id, _)| id)
        .collect();
    let undelivered: Vec<&String> = produced
        .acked
        .iter()
        .filter(|(id, a)| a.delivery == Delivery::AtLeastOnce && !alo.delivered.contains(*id))
        .map(|(id, _)| id)
        .collect();
    if unconfirmed.is_empty() && undelivered.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!(
        "acknowledged exactly-once ids never confirmed: {}; acknowledged at-least-once ids never delivered: {}; \
         last ack error: {:?}",
        sample(&unconfirmed),
        sample(&undelivered),
        eo.last_ack_error
    )))
}

/// Waits until the subscription has nothing left to deliver or settle, as
/// the leader's dispatcher reports it, while its consumer keeps running.
async fn wait_settled(cluster: &ClusterProcesses, leader: usize, subscription: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + PHASE;
    let mut last = String::new();
    for _ in 0..MAX_EVENTS {
        match cluster.node_client(leader).await {
            Ok(client) => match client.get_subscription(subscription).await {
                Ok(info) if info.backlog == 0 && info.in_flight == 0 => return Ok(()),
                Ok(info) => last = format!("{info:?}"),
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("subscription {subscription} was not settled within {PHASE:?}: {last}")
}

/// The number of messages of `topic` every node stores, once all agree.
async fn agreed_count(cluster: &ClusterProcesses, topic: &str) -> anyhow::Result<u64> {
    hermod_tests::checks::agreed_count(&cluster.endpoints(), topic, PHASE).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_processes_survive_leader_kill_pause_and_full_restart_without_loss_or_duplicates()
-> anyhow::Result<()> {
    let started = Instant::now();
    let mut cluster = ClusterProcesses::start(3)?;
    // The leader killed is that of the shard the exactly-once load goes to.
    cluster.watch_topic(EO_TOPIC)?;
    let outcome = scenario(&mut cluster).await;
    if let Err(e) = &outcome {
        eprintln!("FAILED after {:?}: {e:#}", started.elapsed());
        for index in 0..cluster.len() {
            eprintln!(
                "---- node {index} ({}) log tail ----\n{}",
                cluster.address(index),
                cluster.log_tail(index, 60)
            );
        }
    } else {
        eprintln!("the scenario took {:?}", started.elapsed());
    }
    outcome
}

async fn scenario(cluster: &mut ClusterProcesses) -> anyhow::Result<()> {
    // ---- 1. three processes, ready, one leader
    cluster.wait_all_ready(START).await?;
    let all: Vec<usize> = (0..cluster.len()).collect();
    cluster.wait_for_leader(&all, PHASE).await?;
    let producer_client = connect(cluster.endpoints()).await?;
    let consumer_client = connect(cluster.endpoints()).await?;

    // ---- 2. the subscriptions under test
    for (name, topic, delivery) in [
        (EO_SUBSCRIPTION, EO_TOPIC, Delivery::ExactlyOnce),
        (ALO_SUBSCRIPTION, ALO_TOPIC, Delivery::AtLeastOnce),
    ] {
        producer_client
            .create_subscription(
                name,
                SubscriptionConfig::new(topic)
                    .delivery(delivery)
                    .ack_deadline(ACK_DEADLINE),
            )
            .await?;
    }

    // ---- 3, 4. producer and consumers
    let produced = Arc::new(Mutex::new(Produced::default()));
    let eo_seen = Arc::new(Mutex::new(EoSeen::default()));
    let alo_seen = Arc::new(Mutex::new(AloSeen::default()));
    let (stop_producer, stop_producer_rx) = watch::channel(false);
    let (stop_consumers, stop_consumers_rx) = watch::channel(false);
    let (count_tx, mut count) = watch::channel(0usize);
    let (progress_tx, mut progress) = watch::channel(0u64);
    let producer = tokio::spawn(produce(
        producer_client.clone(),
        produced.clone(),
        count_tx,
        stop_producer_rx,
    ));
    let eo_consumer = tokio::spawn(consume_eo(
        consumer_client.clone(),
        eo_seen.clone(),
        progress_tx.clone(),
        stop_consumers_rx.clone(),
    ));
    let alo_consumer = tokio::spawn(consume_alo(
        consumer_client.clone(),
        alo_seen.clone(),
        progress_tx,
        stop_consumers_rx,
    ));

    // ---- 5a. SIGKILL the leader while publishing; restart it
    wait_acked(&mut count, BEFORE_KILL, "before the leader kill").await?;
    let leader = cluster.wait_for_leader(&all, PHASE).await?;
    let survivors: Vec<usize> = all.iter().copied().filter(|i| *i != leader).collect();
    cluster.kill(leader)?;
    let kill_at = Instant::now();
    let acked_at_kill = {
        let mut p = lock(&produced);
        p.kill_at = Some(kill_at);
        p.acked.len()
    };
    eprintln!("SIGKILLed the leader, node {leader}, after {acked_at_kill} acknowledged publishes");
    let new_leader = cluster.wait_for_leader(&survivors, PHASE).await?;
    let elected_after = kill_at.elapsed();
    eprintln!("node {new_leader} leads with a quorum {elected_after:?} after the kill");
    wait_acked(&mut count, acked_at_kill + 1, "after the leader kill").await?;
    cluster.restart(leader)?;
    cluster.wait_all_ready(START).await?;
    eprintln!(
        "node {leader} is back and every node is ready {:?} after the kill",
        kill_at.elapsed()
    );
    let target = *count.borrow() + BETWEEN_FAULTS;
    wait_acked(&mut count, target, "after the killed leader came back").await?;

    // ---- 5b. SIGSTOP a follower, then SIGCONT it
    let leader = cluster.wait_for_leader(&all, PHASE).await?;
    let follower = (leader + 1) % cluster.len();
    cluster.pause(follower)?;
    let paused_at_count = *count.borrow();
    tokio::time::sleep(PAUSE).await;
    cluster.resume(follower)?;
    eprintln!(
        "paused follower node {follower} for {PAUSE:?}: {} publishes acknowledged meanwhile",
        *count.borrow() - paused_at_count
    );
    cluster.wait_all_ready(PHASE).await?;
    let target = *count.borrow() + BETWEEN_FAULTS;
    wait_acked(&mut count, target, "after the paused follower resumed").await?;

    // ---- 5c. stop producing; SIGKILL all three; restart them
    let _ = stop_producer.send(true);
    tokio::time::timeout(PHASE, producer)
        .await
        .map_err(|_| anyhow::anyhow!("the producer did not stop within {PHASE:?}"))??;
    cluster.kill_all()?;
    let all_killed_at = Instant::now();
    cluster.restart_all()?;
    cluster.wait_all_ready(START).await?;
    let leader = cluster.wait_for_leader(&all, PHASE).await?;
    let ready_after = all_killed_at.elapsed();
    // A publish right after readiness: a node that says it is ready serves.
    let probe_id = "eo-after-full-restart".to_string();
    lock(&produced).tried.insert(probe_id.clone());
    let probe = OutgoingMessage::new(EO_TOPIC, "probe")
        .id(probe_id.clone())
        .delivery(Delivery::ExactlyOnce);
    let probe_started = Instant::now();
    let receipt = producer_client.publish(probe).await?;
    let probe_took = probe_started.elapsed();
    anyhow::ensure!(receipt.id == probe_id, "the probe was answered {receipt:?}");
    lock(&produced).acked.insert(
        probe_id,
        Acked {
            topic: receipt.topic,
            sequence: receipt.sequence,
            delivery: Delivery::ExactlyOnce,
            duplicate: receipt.duplicate,
        },
    );
    eprintln!(
        "all three SIGKILLed and restarted: ready with node {leader} leading {ready_after:?} later; \
         a publish then took {probe_took:?}"
    );

    // ---- 6. the consumers receive every acknowledged message
    let deadline = tokio::time::Instant::now() + DRAIN;
    let mut drained = false;
    for _ in 0..MAX_EVENTS {
        let state = pending(&lock(&produced), &lock(&eo_seen), &lock(&alo_seen));
        let missing = match state {
            Ok(None) => {
                drained = true;
                break;
            }
            Ok(Some(missing)) => missing,
            Err(stopped) => anyhow::bail!("{stopped}"),
        };
        match tokio::time::timeout_at(deadline, progress.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => anyhow::bail!("both consumers ended; {missing}"),
            Err(_) => anyhow::bail!("after {DRAIN:?} after the restart: {missing}"),
        }
    }
    anyhow::ensure!(drained, "the consumers never caught up");
    let drained_after = all_killed_at.elapsed();
    // Nothing is left to redeliver: a confirmed ack redelivered late would
    // have been seen by the still running exactly-once consumer.
    wait_settled(cluster, leader, EO_SUBSCRIPTION).await?;
    // The at-least-once messages live in another shard, with its own leader.
    cluster.watch_topic(ALO_TOPIC)?;
    let alo_leader = cluster.wait_for_leader(&all, PHASE).await?;
    wait_settled(cluster, alo_leader, ALO_SUBSCRIPTION).await?;
    let _ = stop_consumers.send(true);
    for consumer in [eo_consumer, alo_consumer] {
        tokio::time::timeout(PHASE * 2, consumer)
            .await
            .map_err(|_| anyhow::anyhow!("a consumer did not stop within {:?}", PHASE * 2))??;
    }

    // ---- the checker
    let produced = std::mem::take(&mut *lock(&produced));
    let eo = std::mem::take(&mut *lock(&eo_seen));
    let alo = std::mem::take(&mut *lock(&alo_seen));
    anyhow::ensure!(
        produced.wrong.is_empty(),
        "wrong publish answers: {}",
        sample(&produced.wrong)
    );
    anyhow::ensure!(
        eo.violations.is_empty(),
        "exactly-once messages delivered again after a confirmed ack: {}",
        sample(&eo.violations)
    );
    let acked: BTreeMap<String, (String, u64)> = produced
        .acked
        .iter()
        .map(|(id, a)| (id.clone(), (a.topic.clone(), a.sequence)))
        .collect();
    let mut distinct_stored = 0;
    for (topic, name) in [(EO_TOPIC, CHECK_EO), (ALO_TOPIC, CHECK_ALO)] {
        let stored = agreed_count(cluster, topic).await?;
        let deliveries = create_and_read_back(&consumer_client, name, topic, stored, PHASE).await?;
        distinct_stored += check_stored(topic, &deliveries, &produced.tried, &acked)?;
    }

    let acked_eo = produced
        .acked
        .values()
        .filter(|a| a.delivery == Delivery::ExactlyOnce)
        .count();
    let duplicates = produced.acked.values().filter(|a| a.duplicate).count();
    let first_after_kill = produced
        .first_after_kill
        .ok_or_else(|| anyhow::anyhow!("no publish succeeded after the leader kill"))?;
    eprintln!(
        "leader SIGKILL -> first successful publish started after it: {first_after_kill:?} \
         (the publish in flight at the kill completed after {:?}; a new leader was reported after {elected_after:?})",
        produced.in_flight_at_kill
    );
    eprintln!(
        "summary: {} publishes tried, {} acknowledged ({acked_eo} exactly-once, {} at-least-once, {duplicates} answered as retried duplicates), \
         {} failed after retries{}; {distinct_stored} ids stored; exactly-once: {} deliveries ({} left unacked on purpose), {} acks confirmed, {} ack failures, \
         0 redeliveries after a confirmed ack; at-least-once: {} deliveries, {} redeliveries, {} ack errors; \
         consumers caught up {drained_after:?} after the full kill; leader kill -> first successful publish {first_after_kill:?}",
        produced.tried.len(),
        produced.acked.len(),
        produced.acked.len() - acked_eo,
        produced.failed.len(),
        if produced.failed.is_empty() {
            String::new()
        } else {
            format!(" ({})", sample(&produced.failed))
        },
        eo.deliveries,
        eo.left_unacked,
        eo.confirmed.len(),
        eo.ack_failures,
        alo.deliveries,
        alo.redeliveries,
        alo.ack_errors,
    );
    Ok(())
}

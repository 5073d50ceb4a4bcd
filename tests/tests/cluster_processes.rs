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

/// An acknowledged publish.
#[derive(Debug, Clone)]
struct Acked {
    topic: String,
    sequence: u64,
    delivery: Delivery,
    /// The answer was `duplicate = true`: a retry found the first attempt stored.
    duplicate: bool,
}

/// What the producer did.
#[derive(Debug, Default)]
struct Produced {
    tried: BTreeSet<String>,
    acked: BTreeMap<String, Acked>,
    /// Publishes that failed after every retry: id and error.
    failed: Vec<(String, String)>,
    /// Answers that broke the protocol (a receipt for another id).
    wrong: Vec<String>,
    /// When the leader was SIGKILLed.
    kill_at: Option<Instant>,
    /// From the kill to the end of the first publish started after it.
    first_after_kill: Option<Duration>,
    /// From the kill to the end of the publish that was in flight at the
    /// kill (it was retried to the new leader).
    in_flight_at_kill: Option<Duration>,
}

/// What the exactly-once consumer saw.
#[derive(Debug, Default)]
struct EoSeen {
    deliveries: usize,
    /// First deliveries deliberately left unsettled.
    left_unacked: usize,
    /// Id to when its ack was first confirmed and the attempt it confirmed.
    confirmed: BTreeMap<String, (Instant, u32)>,
    ack_failures: usize,
    last_ack_error: Option<String>,
    /// Deliveries of an id after an ack of it was confirmed.
    violations: Vec<String>,
    /// Why the consumer stopped, if not on request.
    failed: Option<String>,
}

/// What the at-least-once consumer saw.
#[derive(Debug, Default)]
struct AloSeen {
    deliveries: usize,
    delivered: BTreeSet<String>,
    redeliveries: usize,
    ack_errors: usize,
    failed: Option<String>,
}

fn outgoing(n: usize) -> (OutgoingMessage, String) {
    let (topic, id, delivery) = if n.is_multiple_of(2) {
        (EO_TOPIC, format!("eo-{n}"), Delivery::ExactlyOnce)
    } else {
        (ALO_TOPIC, format!("alo-{n}"), Delivery::AtLeastOnce)
    };
    let message = OutgoingMessage::new(topic, format!("payload of {id}"))
        .id(id.clone())
        .delivery(delivery);
    (message, id)
}

async fn connect(endpoints: Vec<String>) -> anyhow::Result<Client> {
    let options = ClientOptions::new()
        .endpoints(endpoints)
        .connect_timeout(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(15))
        .retry_policy(RetryPolicy::new(
            100,
            Duration::from_millis(50),
            Duration::from_secs(1),
        ));
    Ok(tokio::time::timeout(PHASE, Client::connect(options)).await??)
}

/// Publishes `eo-N` and `alo-N` alternately, one at a time, until stopped.
async fn produce(
    client: Client,
    produced: Arc<Mutex<Produced>>,
    count: watch::Sender<usize>,
    stop: watch::Receiver<bool>,
) {
    for n in 0..MAX_MESSAGES {
        if *stop.borrow() {
            return;
        }
        let (message, id) = outgoing(n);
        let delivery = message.delivery;
        lock(&produced).tried.insert(id.clone());
        let started = Instant::now();
        let result = client.publish(message).await;
        let ended = Instant::now();
        let mut p = lock(&produced);
        match result {
            Ok(receipt) if receipt.id == id => {
                if let Some(kill_at) = p.kill_at {
                    if started >= kill_at {
                        p.first_after_kill.get_or_insert(ended - kill_at);
                    } else if ended >= kill_at {
                        p.in_flight_at_kill.get_or_insert(ended - kill_at);
                    }
                }
                p.acked.insert(
                    id,
                    Acked {
                        topic: receipt.topic,
                        sequence: receipt.sequence,
                        delivery,
                        duplicate: receipt.duplicate,
                    },
                );
                count.send_modify(|c| *c += 1);
            }
            Ok(receipt) => p.wrong.push(format!("publish of {id} answered {receipt:?}")),
            Err(e) => p.failed.push((id, e.to_string())),
        }
    }
}

type AckOutcome = Result<(String, u32, Result<(), Error>), JoinError>;

fn record_ack(seen: &Mutex<EoSeen>, progress: &watch::Sender<u64>, done: AckOutcome) {
    let mut s = lock(seen);
    match done {
        Ok((id, attempt, Ok(()))) => {
            s.confirmed.entry(id).or_insert((Instant::now(), attempt));
        }
        Ok((id, attempt, Err(e))) => {
            s.ack_failures += 1;
            s.last_ack_error = Some(format!("{id} attempt {attempt}: {e}"));
        }
        Err(e) => {
            s.ack_failures += 1;
            s.last_ack_error = Some(format!("ack task: {e}"));
        }
    }
    drop(s);
    progress.send_modify(|p| *p += 1);
}

/// Counts an exactly-once delivery, and records a violation if an ack of
/// the same id was confirmed before it arrived.
fn note_eo_delivery(seen: &Mutex<EoSeen>, message: &ReceivedMessage) {
    let mut s = lock(seen);
    s.deliveries += 1;
    if let Some((confirmed_at, confirmed_attempt)) = s.confirmed.get(&message.id) {
        let violation = format!(
            "{} (sequence {}) delivered again as attempt {}, {:?} after its ack of attempt \
             {confirmed_attempt} was confirmed",
            message.id,
            message.sequence,
            message.attempt,
            confirmed_at.elapsed()
        );
        s.violations.push(violation);
    }
}

/// Consumes "eo", confirming every ack (several in flight at once, so the
/// stream is read as soon as deliveries arrive), until stopped.
async fn consume_eo(
    client: Client,
    seen: Arc<Mutex<EoSeen>>,
    progress: watch::Sender<u64>,
    mut stop: watch::Receiver<bool>,
) {
    let options = SubscribeOptions::subscription(EO_SUBSCRIPTION).prefetch(PREFETCH);
    let mut subscriber = match client.subscribe(options).await {
        Ok(subscriber) => subscriber,
        Err(e) => {
            lock(&seen).failed = Some(format!("subscribe: {e}"));
            progress.send_modify(|p| *p += 1);
            return;
        }
    };
    let mut acks: JoinSet<(String, u32, Result<(), Error>)> = JoinSet::new();
    for _ in 0..MAX_EVENTS {
        tokio::select! {
            item = subscriber.next() => match item {
                Some(Ok(message)) => {
                    let id = message.id.clone();
                    let attempt = message.attempt;
                    note_eo_delivery(&seen, &message);
                    if attempt == 1 && message.sequence.is_multiple_of(EO_FIRST_DELIVERY_DROPPED_EVERY) {
                        // Never settled: redelivered after the ack deadline.
                        lock(&seen).left_unacked += 1;
                        continue;
                    }
                    let work = EO_WORK_STEP * (message.sequence % 8) as u32;
                    acks.spawn(async move {
                        tokio::time::sleep(work).await;
                        (id, attempt, message.ack_confirmed().await)
                    });
                }
                Some(Err(e)) => {
                    lock(&seen).failed = Some(format!("the stream failed: {e}"));
                    break;
                }
                None => {
                    lock(&seen).failed = Some("the stream ended".into());
                    break;
                }
            },
            Some(done) = acks.join_next(), if !acks.is_empty() => {
                record_ack(&seen, &progress, done);
            }
            _ = stop.changed() => break,
        }
    }
    let deadline = tokio::time::Instant::now() + PHASE;
    while let Ok(Some(done)) = tokio::time::timeout_at(deadline, acks.join_next()).await {
        record_ack(&seen, &progress, done);
    }
    acks.abort_all();
    let _ = tokio::time::timeout(PHASE, subscriber.close()).await;
    progress.send_modify(|p| *p += 1);
}

/// Consumes "alo", acking every delivery on the stream, until stopped.
async fn consume_alo(
    client: Client,
    seen: Arc<Mutex<AloSeen>>,
    progress: watch::Sender<u64>,
    mut stop: watch::Receiver<bool>,
) {
    let options = SubscribeOptions::subscription(ALO_SUBSCRIPTION).prefetch(PREFETCH);
    let mut subscriber = match client.subscribe(options).await {
        Ok(subscriber) => subscriber,
        Err(e) => {
            lock(&seen).failed = Some(format!("subscribe: {e}"));
            progress.send_modify(|p| *p += 1);
            return;
        }
    };
    for _ in 0..MAX_EVENTS {
        tokio::select! {
            item = subscriber.next() => match item {
                Some(Ok(message)) => {
                    let acked = message.ack().await;
                    let mut s = lock(&seen);
                    s.deliveries += 1;
                    if !s.delivered.insert(message.id.clone()) {
                        s.redeliveries += 1;
                    }
                    if acked.is_err() {
                        s.ack_errors += 1;
                    }
                    drop(s);
                    progress.send_modify(|p| *p += 1);
                }
                Some(Err(e)) => {
                    lock(&seen).failed = Some(format!("the stream failed: {e}"));
                    break;
                }
                None => {
                    lock(&seen).failed = Some("the stream ended".into());
                    break;
                }
            },
            _ = stop.changed() => break,
        }
    }
    let _ = tokio::time::timeout(PHASE, subscriber.close()).await;
    progress.send_modify(|p| *p += 1);
}

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

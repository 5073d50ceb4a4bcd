//! Crash safety with real processes: `hermod serve` is SIGKILLed while
//! messages are being published and confirmed acks are being made, then
//! restarted on the same data directory. Afterwards:
//!
//! - every acknowledged publish is stored, under the sequence it was
//!   acknowledged with;
//! - no id is stored twice, and republishing an acknowledged exactly-once
//!   id answers `duplicate = true` with the first sequence;
//! - no confirmed ack is undone: the exactly-once subscription holds its
//!   messages for one ack deadline after the restart, then delivers every
//!   message that was never acked and none of the exactly-once messages
//!   whose ack was confirmed (confirmed at-least-once acks delivered again
//!   are only counted: the brief promises this for exactly-once).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hermod_client::{
    Client, ClientOptions, Delivery, OutgoingMessage, RetryPolicy, StartPosition, SubscribeOptions,
    SubscriptionConfig,
};
use hermod_tests::BrokerProcess;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Messages the producers try to publish.
const TOTAL: usize = 2000;
/// Acknowledged publishes after which the broker is killed.
const KILL_AFTER: usize = 700;
/// Messages per publish request, and concurrent producers.
const BATCH: usize = 5;
const PRODUCERS: usize = 4;
/// Failed requests after which a producer stops once the broker is dead.
const FAILURES_AFTER_KILL: usize = 5;
const ACK_DEADLINE: Duration = Duration::from_secs(1);
/// No message is delivered sooner than this after a restart (the hold),
/// minus a little for clock granularity.
const HOLD: Duration = Duration::from_millis(950);
/// Bound of every phase of the test.
const PHASE: Duration = Duration::from_secs(20);
/// How long the restarted subscription must stay quiet once every
/// expected message has arrived.
const QUIET: Duration = Duration::from_millis(700);

const ALO_TOPIC: &str = "crash.alo";
const EO_TOPIC: &str = "crash.eo";
const SUBSCRIPTION: &str = "crash-eo";
const VERIFY: &str = "crash-verify";

/// A message as the broker identifies it.
type Key = (String, u64);

/// An acknowledged publish.
#[derive(Debug, Clone)]
struct Sent {
    id: String,
    topic: String,
    sequence: u64,
    delivery: Delivery,
}

fn outgoing(i: usize) -> OutgoingMessage {
    let (topic, id, delivery) = if i.is_multiple_of(2) {
        (ALO_TOPIC, format!("alo-{i}"), Delivery::AtLeastOnce)
    } else {
        (EO_TOPIC, format!("eo-{i}"), Delivery::ExactlyOnce)
    };
    OutgoingMessage::new(topic, format!("payload of message {i}"))
        .id(id)
        .delivery(delivery)
}

/// Messages the first consumer never acks, so some exactly-once messages
/// are certainly unacked at the crash: every tenth exactly-once message.
fn never_acked(id: &str) -> bool {
    id.strip_prefix("eo-")
        .and_then(|n| n.parse::<usize>().ok())
        .is_some_and(|n| n % 20 == 1)
}

async fn connect(endpoint: String) -> anyhow::Result<Client> {
    let options = ClientOptions::new()
        .endpoint(endpoint)
        .connect_timeout(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(5))
        .retry_policy(RetryPolicy::new(
            2,
            Duration::from_millis(20),
            Duration::from_millis(50),
        ));
    Ok(tokio::time::timeout(PHASE, Client::connect(options)).await??)
}

async fn start_broker(dir: &std::path::Path) -> anyhow::Result<BrokerProcess> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || BrokerProcess::start(&dir)).await?
}

/// What the first consumer learnt before the crash.
#[derive(Debug, Default)]
struct Consumed {
    /// Acks the broker confirmed.
    confirmed: BTreeSet<Key>,
    /// Acks sent whose outcome is unknown (failed, or cut off by the crash):
    /// they may or may not have been committed.
    uncertain: BTreeSet<Key>,
    received: usize,
}

/// Receives from the exactly-once subscription and confirms each ack,
/// several at a time, until `stop` or the stream ends.
async fn consume(client: Client, mut stop: watch::Receiver<bool>) -> anyhow::Result<Consumed> {
    let options = SubscribeOptions::subscription(SUBSCRIPTION)
        .prefetch(256)
        .max_reconnect_attempts(1);
    let mut subscriber = client.subscribe(options).await?;
    let mut acks = JoinSet::new();
    let mut consumed = Consumed::default();
    let mut attempted = BTreeSet::new();
    loop {
        tokio::select! {
            item = subscriber.next() => match item {
                Some(Ok(message)) => {
                    consumed.received += 1;
                    if never_acked(&message.id) {
                        continue;
                    }
                    let key = (message.topic.clone(), message.sequence);
                    attempted.insert(key.clone());
                    // A little processing time per message keeps acks in
                    // flight at any moment, so the kill cuts some off.
                    let work = Duration::from_millis(10 * (message.sequence % 4));
                    acks.spawn(async move {
                        tokio::time::sleep(work).await;
                        (key, message.ack_confirmed().await)
                    });
                }
                // The broker is gone and the reconnect failed.
                _ => break,
            },
            Some(done) = acks.join_next(), if !acks.is_empty() => {
                if let Ok((key, Ok(()))) = done {
                    consumed.confirmed.insert(key);
                }
            }
            _ = stop.changed() => break,
        }
    }
    // Acks still in flight end with the dead broker's answer; give up on
    // those that take too long (their outcome stays unknown).
    let deadline = tokio::time::Instant::now() + PHASE;
    while let Ok(Some(done)) = tokio::time::timeout_at(deadline, acks.join_next()).await {
        if let Ok((key, Ok(()))) = done {
            consumed.confirmed.insert(key);
        }
    }
    acks.abort_all();
    consumed.uncertain = attempted.difference(&consumed.confirmed).cloned().collect();
    drop(subscriber);
    Ok(consumed)
}

/// Publishes messages `0..TOTAL` in small concurrent batches, recording
/// every acknowledged one, until they are all tried or, once the broker is
/// dead, a few requests have failed.
async fn produce(
    client: Client,
    next: Arc<AtomicUsize>,
    killed: Arc<AtomicBool>,
    sent: Arc<Mutex<Vec<Sent>>>,
    count: watch::Sender<usize>,
) {
    let mut failures_after_kill = 0;
    loop {
        let first = next.fetch_add(BATCH, Ordering::SeqCst);
        if first >= TOTAL || failures_after_kill >= FAILURES_AFTER_KILL {
            return;
        }
        let indexes: Vec<usize> = (first..(first + BATCH).min(TOTAL)).collect();
        let batch = indexes.iter().map(|&i| outgoing(i)).collect();
        let was_killed = killed.load(Ordering::SeqCst);
        let mut failed = false;
        match client.publish_batch(batch).await {
            Ok(results) => {
                let mut accepted = Vec::new();
                for (&i, result) in indexes.iter().zip(results) {
                    match result {
                        Ok(receipt) => {
                            assert!(!receipt.duplicate, "first publish of {i}: {receipt:?}");
                            assert_eq!(receipt.id, outgoing(i).id.unwrap_or_default());
                            accepted.push(Sent {
                                id: receipt.id,
                                topic: receipt.topic,
                                sequence: receipt.sequence,
                                delivery: outgoing(i).delivery,
                            });
                        }
                        Err(_) => failed = true,
                    }
                }
                let n = accepted.len();
                sent.lock().expect("sent lock").extend(accepted);
                count.send_modify(|c| *c += n);
            }
            Err(_) => failed = true,
        }
        if failed && was_killed {
            failures_after_kill += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_publish_and_undoes_no_confirmed_ack() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let mut broker = start_broker(data.path()).await?;
    let client = connect(broker.endpoint()).await?;
    client
        .create_subscription(
            SUBSCRIPTION,
            SubscriptionConfig::new("crash.>")
                .delivery(Delivery::ExactlyOnce)
                .ack_deadline(ACK_DEADLINE)
                .start(StartPosition::Earliest),
        )
        .await?;

    // ---- publish and consume, and kill the broker in the middle
    let (stop_tx, stop_rx) = watch::channel(false);
    let consumer = tokio::spawn(consume(client.clone(), stop_rx));
    let next = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Mutex::new(Vec::new()));
    let (count_tx, mut count_rx) = watch::channel(0usize);
    let mut producers = JoinSet::new();
    for _ in 0..PRODUCERS {
        producers.spawn(produce(
            client.clone(),
            next.clone(),
            killed.clone(),
            sent.clone(),
            count_tx.clone(),
        ));
    }
    drop(count_tx);
    tokio::time::timeout(PHASE, count_rx.wait_for(|n| *n >= KILL_AFTER)).await??;
    broker.kill()?;
    killed.store(true, Ordering::SeqCst);
    let at_kill = next.load(Ordering::SeqCst).min(TOTAL);
    tokio::time::timeout(PHASE, async {
        while let Some(done) = producers.join_next().await {
            done?;
        }
        anyhow::Ok(())
    })
    .await??;
    let _ = stop_tx.send(true);
    let consumed = tokio::time::timeout(PHASE * 2, consumer).await???;
    drop(client);
    let sent = std::mem::take(&mut *sent.lock().expect("sent lock"));
    let tried = next.load(Ordering::SeqCst).min(TOTAL);
    eprintln!(
        "before the crash: {} publishes acknowledged of {tried} tried ({at_kill} when killed); \
         {} deliveries, {} acks confirmed, {} uncertain",
        sent.len(),
        consumed.received,
        consumed.confirmed.len(),
        consumed.uncertain.len()
    );
    assert!(sent.len() >= KILL_AFTER);
    assert!(
        tried < TOTAL || sent.len() < TOTAL,
        "the kill came after every publish"
    );
    assert!(
        !consumed.confirmed.is_empty(),
        "no ack was confirmed before the crash"
    );

    // ---- restart on the same data
    let restarting = Instant::now();
    let broker = start_broker(data.path()).await?;
    let client = connect(broker.endpoint()).await?;

    // ---- the exactly-once subscription: nothing confirmed comes again
    let acknowledged: BTreeMap<Key, &Sent> =
        sent.iter().map(|s| ((s.topic.clone(), s.sequence), s)).collect();
    assert_eq!(
        acknowledged.len(),
        sent.len(),
        "two publishes acknowledged with one sequence"
    );
    let expected: BTreeSet<Key> = acknowledged
        .keys()
        .filter(|k| !consumed.confirmed.contains(*k) && !consumed.uncertain.contains(*k))
        .cloned()
        .collect();
    assert!(
        expected.iter().any(|(topic, _)| topic == EO_TOPIC),
        "some exactly-once messages were left unacked"
    );
    let mut subscriber = client
        .subscribe(SubscribeOptions::subscription(SUBSCRIPTION).prefetch(10_000))
        .await?;
    let mut arrived: BTreeMap<Key, String> = BTreeMap::new();
    let mut first_arrival = None;
    let phase_end = tokio::time::Instant::now() + PHASE;
    loop {
        let complete = expected.iter().all(|k| arrived.contains_key(k));
        // Once everything expected is here, wait a quiet spell for anything
        // that should not come; until then, wait up to the phase's end.
        let wait_until = if complete {
            (tokio::time::Instant::now() + QUIET).min(phase_end)
        } else {
            phase_end
        };
        let Ok(item) = tokio::time::timeout_at(wait_until, subscriber.next()).await else {
            break;
        };
        let message = item.expect("the subscription stream stays open")?;
        first_arrival.get_or_insert_with(Instant::now);
        message.ack().await?;
        arrived.insert((message.topic.clone(), message.sequence), message.id.clone());
    }
    subscriber.close().await?;
    let missing: Vec<&Key> = expected.iter().filter(|k| !arrived.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "{} unacked messages were not redelivered after the restart, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let undone: Vec<&Key> = arrived
        .keys()
        .filter(|k| k.0 == EO_TOPIC && consumed.confirmed.contains(*k))
        .collect();
    assert!(
        undone.is_empty(),
        "{} confirmed exactly-once acks were undone by the crash, e.g. {:?}",
        undone.len(),
        &undone[..undone.len().min(5)]
    );
    let redelivered_alo = arrived
        .keys()
        .filter(|k| k.0 == ALO_TOPIC && consumed.confirmed.contains(*k))
        .count();
    eprintln!(
        "after the restart: {} redelivered ({} expected), {redelivered_alo} confirmed at-least-once acks delivered again",
        arrived.len(),
        expected.len()
    );
    let held = first_arrival.expect("something arrived") - restarting;
    eprintln!("the first redelivery came {held:?} after the restart began");
    assert!(
        held >= HOLD,
        "redelivery began {held:?} after the restart began, before one ack deadline ({ACK_DEADLINE:?})"
    );

    // ---- every acknowledged publish is stored, once, under its sequence
    let mut stored_counts = BTreeMap::new();
    for topic in [ALO_TOPIC, EO_TOPIC] {
        let info = client.get_topic(topic).await?;
        stored_counts.insert(topic, info.messages);
    }
    let total: u64 = stored_counts.values().sum();
    assert!(
        total as usize >= sent.len(),
        "{stored_counts:?} < {} acknowledged",
        sent.len()
    );
    assert!(total as usize <= tried, "{stored_counts:?} > {tried} tried");
    client
        .create_subscription(
            VERIFY,
            SubscriptionConfig::new("crash.>")
                .ack_deadline(Duration::from_secs(60))
                .start(StartPosition::Earliest),
        )
        .await?;
    let mut subscriber = client
        .subscribe(
            SubscribeOptions::subscription(VERIFY)
                .prefetch(10_000)
                .limit(total),
        )
        .await?;
    let mut stored: BTreeMap<Key, String> = BTreeMap::new();
    let phase_end = tokio::time::Instant::now() + PHASE;
    while (stored.len() as u64) < total {
        let item = tokio::time::timeout_at(phase_end, subscriber.next())
            .await
            .map_err(|_| anyhow::anyhow!("only {} of {total} stored messages read back", stored.len()))?;
        let message = item.expect("the verify stream stays open")?;
        stored.insert((message.topic.clone(), message.sequence), message.id.clone());
    }
    drop(subscriber);
    for s in &sent {
        let key = (s.topic.clone(), s.sequence);
        assert_eq!(
            stored.get(&key),
            Some(&s.id),
            "acknowledged publish {s:?} is not stored as acknowledged"
        );
    }
    let mut sequences_of: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for ((_, sequence), id) in &stored {
        sequences_of.entry(id).or_default().push(*sequence);
    }
    let twice: Vec<_> = sequences_of.iter().filter(|(_, seqs)| seqs.len() > 1).collect();
    assert!(twice.is_empty(), "ids stored more than once: {twice:?}");

    // ---- republishing an acknowledged exactly-once id stores nothing
    let exactly_once: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.delivery == Delivery::ExactlyOnce)
        .collect();
    for chunk in exactly_once.chunks(500) {
        let batch = chunk
            .iter()
            .map(|s| {
                OutgoingMessage::new(s.topic.clone(), "republished")
                    .id(s.id.clone())
                    .delivery(Delivery::ExactlyOnce)
            })
            .collect();
        let results = client.publish_batch(batch).await?;
        for (s, result) in chunk.iter().zip(results) {
            let receipt = result?;
            assert!(receipt.duplicate, "{s:?} was stored again: {receipt:?}");
            assert_eq!(receipt.sequence, s.sequence, "{s:?}: {receipt:?}");
        }
    }
    for topic in [ALO_TOPIC, EO_TOPIC] {
        assert_eq!(client.get_topic(topic).await?.messages, stored_counts[topic]);
    }
    drop(broker);
    Ok(())
}

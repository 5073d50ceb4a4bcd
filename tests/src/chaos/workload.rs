//! The workload: publishers (exactly-once and at-least-once, ids kept across
//! the client's retries and the publisher's own) and consumers that confirm
//! every ack, each recording what it saw for the checker.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use hermod_client::{
    Client, ClientOptions, Delivery, Error, OutgoingMessage, Priority, ReceivedMessage, RetryPolicy,
    SubscribeOptions,
};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::rng::Rng;
use crate::checks::lock;

/// Pause between two publishes of one publisher: keeps the backlog small
/// enough to drain after the faults.
const PUBLISH_INTERVAL: Duration = Duration::from_millis(30);
/// Times a publisher publishes an id again after the client gave up on it.
const PUBLISHER_RETRIES: u32 = 5;
/// Pause before a publisher's own retry.
const PUBLISHER_RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Most messages one publisher tries: bounds its loop in count.
const MAX_MESSAGES: u64 = 1_000_000;
/// Most events one consumer handles: bounds its loop in count.
const MAX_EVENTS: usize = 10_000_000;
/// Most times a consumer attaches again after its stream failed.
const MAX_RESUBSCRIBES: usize = 10_000;
const RESUBSCRIBE_PAUSE: Duration = Duration::from_millis(250);
const PREFETCH: u32 = 64;
/// Processing time of a delivery before its ack, times 0 to 7 by sequence:
/// confirmed acks are in flight at every fault.
const WORK_STEP: Duration = Duration::from_millis(20);
/// Every this many sequences of an exactly-once subscription, the first
/// delivery is left unacked, so it is redelivered after the ack deadline.
const FIRST_DELIVERY_DROPPED_EVERY: u64 = 25;
/// Times a consumer acks again after a confirmed ack failed with a
/// retryable error, and the pause before each: 30 s in all, longer than any
/// fault (at most 8 s) and the recovery after it, so an ack that was
/// committed while its answer was lost is confirmed by a later attempt.
const ACK_RETRIES: u32 = 60;
const ACK_RETRY_PAUSE: Duration = Duration::from_millis(500);
/// A message may reach the consumer this long after its `expires_at` (the
/// broker checks expiry when it leases; the delivery then travels).
pub const EXPIRY_GRACE: Duration = Duration::from_millis(1000);
/// A delivery that arrives this soon after an ack of the same message was
/// confirmed may have been sent before the ack was committed (a lease that
/// expired while the ack was on its way): it is counted, not a violation.
pub const CROSSED_ACK_WINDOW: Duration = Duration::from_millis(1000);
/// Header carrying a message's delay in milliseconds, for the consumer's check.
pub const DELAY_HEADER: &str = "chaos-delay-ms";
/// How long a client waits for connections and answers, and how it retries.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CLIENT_RETRIES: u32 = 20;
const CLIENT_BACKOFF_MIN: Duration = Duration::from_millis(50);
const CLIENT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What publishers send to a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// Exactly-once publishes, no TTL.
    ExactlyOnce,
    /// At-least-once publishes, no TTL.
    AtLeastOnce,
    /// At-least-once publishes with a short TTL, some delayed.
    Expiring,
}

/// An acknowledged publish.
#[derive(Debug, Clone)]
pub struct Published {
    pub topic: String,
    pub flavour: Flavour,
    pub sequence: u64,
    pub duplicate: bool,
    pub ttl: Option<Duration>,
    /// When the publish was first tried: the message expires no sooner
    /// than this plus its TTL.
    pub first_tried: SystemTime,
}

/// What every publisher did.
#[derive(Debug, Default)]
pub struct Ledger {
    pub tried: BTreeSet<String>,
    pub acked: BTreeMap<String, Published>,
    /// Ids the client gave up on, with the last error (outcome unknown).
    pub failed: BTreeMap<String, String>,
    /// Publisher retries of an id after the client gave up.
    pub republished: usize,
    /// Answers that broke the protocol.
    pub wrong: Vec<String>,
    /// Seconds from the start to each acknowledgement, and to each failed
    /// attempt, for the timeline.
    pub acked_at_s: Vec<f64>,
    pub errors_at_s: Vec<f64>,
}

/// What one consumer saw.
#[derive(Debug, Default)]
pub struct ConsumerLog {
    pub deliveries: usize,
    pub left_unacked: usize,
    /// Id to the sequence it was delivered with.
    pub delivered: BTreeMap<String, u64>,
    /// Id to when its ack was first confirmed and the attempt it confirmed.
    pub confirmed: BTreeMap<String, (Instant, u32)>,
    pub ack_failures: usize,
    pub last_ack_error: Option<String>,
    pub resubscribes: usize,
    /// Deliveries that crossed a confirmed ack (see [`CROSSED_ACK_WINDOW`]).
    pub crossed_acks: usize,
    pub last_stream_error: Option<String>,
    pub violations: Vec<String>,
}

/// A client of every node that retries with the same message id. It does
/// not route to leaders: it reaches the containers through published ports,
/// and the addresses they advertise (`nK:7400`) resolve only among them.
pub async fn connect(endpoints: Vec<String>) -> anyhow::Result<Client> {
    let options = ClientOptions::new()
        .endpoints(endpoints)
        .route_to_leaders(false)
        .connect_timeout(CONNECT_TIMEOUT)
        .request_timeout(REQUEST_TIMEOUT)
        .retry_policy(RetryPolicy::new(
            CLIENT_RETRIES,
            CLIENT_BACKOFF_MIN,
            CLIENT_BACKOFF_MAX,
        ));
    Ok(tokio::time::timeout(REQUEST_TIMEOUT * 3, Client::connect(options)).await??)
}

fn priority(rng: &mut Rng) -> Priority {
    [
        Priority::Low,
        Priority::Normal,
        Priority::High,
        Priority::Critical,
    ][rng.index(4)]
}

/// The `n`-th message of publisher `name` to `topic`.
fn message(
    rng: &mut Rng,
    name: &str,
    n: u64,
    topic: &str,
    flavour: Flavour,
) -> (OutgoingMessage, Option<Duration>) {
    let id = format!("{name}-{n}");
    let mut message = OutgoingMessage::new(topic, format!("payload of {id}"))
        .id(id)
        .priority(priority(rng));
    let mut ttl = None;
    message = match flavour {
        Flavour::ExactlyOnce => message.delivery(Delivery::ExactlyOnce),
        Flavour::AtLeastOnce => message.delivery(Delivery::AtLeastOnce),
        Flavour::Expiring => {
            let lifetime = Duration::from_millis(rng.range(1000, 6000));
            ttl = Some(lifetime);
            let mut m = message.delivery(Delivery::AtLeastOnce).ttl(lifetime);
            if n.is_multiple_of(4) {
                let delay = Duration::from_millis(rng.range(200, 1500));
                m = m.delay(delay).header(DELAY_HEADER, delay.as_millis().to_string());
            }
            m
        }
    };
    (message, ttl)
}

/// One publisher: its name (the prefix of its ids), topic, kind of
/// messages and the seed of its random priorities and TTLs.
#[derive(Debug, Clone)]
pub struct PublisherSpec {
    pub name: String,
    pub topic: String,
    pub flavour: Flavour,
    pub seed: u64,
}

/// Publishes `NAME-N` messages to the topic one at a time until stopped; an
/// id the client gave up on is published again, up to a limit.
pub async fn publish(
    client: Client,
    spec: PublisherSpec,
    epoch: Instant,
    ledger: Arc<Mutex<Ledger>>,
    stop: watch::Receiver<bool>,
) {
    let PublisherSpec {
        name,
        topic,
        flavour,
        seed,
    } = spec;
    let mut rng = Rng::new(seed);
    for n in 0..MAX_MESSAGES {
        if *stop.borrow() {
            return;
        }
        let (outgoing, ttl) = message(&mut rng, &name, n, &topic, flavour);
        let id = outgoing.id.clone().unwrap_or_default();
        let first_tried = SystemTime::now();
        lock(&ledger).tried.insert(id.clone());
        for attempt in 0..=PUBLISHER_RETRIES {
            if attempt > 0 {
                lock(&ledger).republished += 1;
                tokio::time::sleep(PUBLISHER_RETRY_PAUSE).await;
            }
            let result = client.publish(outgoing.clone()).await;
            let mut l = lock(&ledger);
            match result {
                Ok(receipt) if receipt.id == id && receipt.topic == topic && receipt.sequence > 0 => {
                    l.failed.remove(&id);
                    l.acked_at_s.push(epoch.elapsed().as_secs_f64());
                    l.acked.insert(
                        id.clone(),
                        Published {
                            topic: receipt.topic,
                            flavour,
                            sequence: receipt.sequence,
                            duplicate: receipt.duplicate,
                            ttl,
                            first_tried,
                        },
                    );
                    break;
                }
                Ok(receipt) => {
                    l.wrong.push(format!("publish of {id} answered {receipt:?}"));
                    break;
                }
                Err(e) => {
                    l.errors_at_s.push(epoch.elapsed().as_secs_f64());
                    l.failed.insert(id.clone(), e.to_string());
                }
            }
            drop(l);
            // Only exactly-once publishers insist: their retries test dedup.
            if flavour != Flavour::ExactlyOnce || *stop.borrow() {
                break;
            }
        }
        tokio::time::sleep(PUBLISH_INTERVAL).await;
    }
}

/// Records a delivery, and any rule it breaks: delivered after a confirmed
/// ack, after it expired, before its delay, or under another sequence.
fn note_delivery(log: &mut ConsumerLog, subscription: &str, message: &ReceivedMessage, epoch: SystemTime) {
    log.deliveries += 1;
    let now = SystemTime::now();
    // Seconds from the start of the workload, to match the fault log.
    let at = |time: SystemTime| match time.duration_since(epoch) {
        Ok(after) => after.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    };
    if let Some((confirmed_at, _)) = log.confirmed.get(&message.id)
        && confirmed_at.elapsed() <= CROSSED_ACK_WINDOW
    {
        log.crossed_acks += 1;
    } else if let Some((confirmed_at, attempt)) = log.confirmed.get(&message.id) {
        log.violations.push(format!(
            "{subscription}: {} (sequence {}) delivered again as attempt {}, {:?} after its ack of attempt \
             {attempt} was confirmed",
            message.id,
            message.sequence,
            message.attempt,
            confirmed_at.elapsed()
        ));
    }
    if let Some(expires_at) = message.expires_at
        && now > expires_at + EXPIRY_GRACE
    {
        let late = now.duration_since(expires_at).unwrap_or_default();
        log.violations.push(format!(
            "{subscription}: {} (sequence {}, attempt {}) delivered {late:?} after it expired: published at \
             t={:.1}s, expired at t={:.1}s, received at t={:.1}s",
            message.id,
            message.sequence,
            message.attempt,
            at(message.publish_time),
            at(expires_at),
            at(now)
        ));
    }
    if let Some(delay) = message
        .headers
        .get(DELAY_HEADER)
        .and_then(|d| d.parse::<u64>().ok())
    {
        let due = message.publish_time + Duration::from_millis(delay);
        if now + EXPIRY_GRACE < due {
            log.violations.push(format!(
                "{subscription}: {} delivered {:?} before its delay of {delay} ms ended",
                message.id,
                due.duration_since(now).unwrap_or_default()
            ));
        }
    }
    if let Some(previous) = log.delivered.insert(message.id.clone(), message.sequence)
        && previous != message.sequence
    {
        log.violations.push(format!(
            "{subscription}: {} delivered as sequence {previous} and as {} (stored twice)",
            message.id, message.sequence
        ));
    }
}

type AckDone = (String, u32, Result<(), Error>);

fn record_ack(log: &Mutex<ConsumerLog>, done: Result<AckDone, tokio::task::JoinError>) {
    let mut l = lock(log);
    match done {
        Ok((id, attempt, Ok(()))) => {
            l.confirmed.entry(id).or_insert((Instant::now(), attempt));
        }
        Ok((id, attempt, Err(e))) => {
            l.ack_failures += 1;
            l.last_ack_error = Some(format!("{id} attempt {attempt}: {e}"));
        }
        Err(e) => {
            l.ack_failures += 1;
            l.last_ack_error = Some(format!("ack task: {e}"));
        }
    }
}

/// Consumes `subscription`, confirming every ack (several in flight), and
/// attaches again whenever its stream fails, until stopped. With
/// `drop_some`, some first deliveries are left unacked on purpose.
pub async fn consume(
    client: Client,
    subscription: String,
    drop_some: bool,
    epoch: Instant,
    log: Arc<Mutex<ConsumerLog>>,
    mut stop: watch::Receiver<bool>,
) {
    let epoch = SystemTime::now() - epoch.elapsed();
    let mut acks: JoinSet<AckDone> = JoinSet::new();
    'attach: for _ in 0..MAX_RESUBSCRIBES {
        if *stop.borrow() {
            break;
        }
        let options = SubscribeOptions::subscription(subscription.clone()).prefetch(PREFETCH);
        let mut subscriber = match client.subscribe(options).await {
            Ok(subscriber) => subscriber,
            Err(e) => {
                {
                    let mut l = lock(&log);
                    l.resubscribes += 1;
                    l.last_stream_error = Some(format!("subscribe: {e}"));
                }
                tokio::time::sleep(RESUBSCRIBE_PAUSE).await;
                continue;
            }
        };
        for _ in 0..MAX_EVENTS {
            tokio::select! {
                item = subscriber.next() => match item {
                    Some(Ok(message)) => {
                        note_delivery(&mut lock(&log), &subscription, &message, epoch);
                        if drop_some
                            && message.attempt == 1
                            && message.sequence.is_multiple_of(FIRST_DELIVERY_DROPPED_EVERY)
                        {
                            lock(&log).left_unacked += 1;
                            continue;
                        }
                        let id = message.id.clone();
                        let attempt = message.attempt;
                        let work = WORK_STEP * (message.sequence % 8) as u32;
                        acks.spawn(async move {
                            tokio::time::sleep(work).await;
                            // An ack whose answer was lost is acked again: a
                            // repeated ack of an acked message is confirmed again.
                            let mut result = message.ack_confirmed().await;
                            for _ in 0..ACK_RETRIES {
                                match &result {
                                    Err(e) if e.is_retryable() => {
                                        tokio::time::sleep(ACK_RETRY_PAUSE).await;
                                        result = message.ack_confirmed().await;
                                    }
                                    _ => break,
                                }
                            }
                            (id, attempt, result)
                        });
                    }
                    other => {
                        {
                            let mut l = lock(&log);
                            l.resubscribes += 1;
                            l.last_stream_error = Some(match other {
                                Some(Err(e)) => format!("the stream failed: {e}"),
                                _ => "the stream ended".to_string(),
                            });
                        }
                        tokio::time::sleep(RESUBSCRIBE_PAUSE).await;
                        continue 'attach;
                    }
                },
                Some(done) = acks.join_next(), if !acks.is_empty() => record_ack(&log, done),
                _ = stop.changed() => {
                    let _ = tokio::time::timeout(REQUEST_TIMEOUT, subscriber.close()).await;
                    break 'attach;
                }
            }
        }
    }
    let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT * 2;
    while let Ok(Some(done)) = tokio::time::timeout_at(deadline, acks.join_next()).await {
        record_ack(&log, done);
    }
    acks.abort_all();
}

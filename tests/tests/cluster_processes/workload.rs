//! The workload of the process test: the producer and the two consumers,
//! and what each of them records for the checker.

use super::*;

/// An acknowledged publish.
#[derive(Debug, Clone)]
pub(super) struct Acked {
    pub(super) topic: String,
    pub(super) sequence: u64,
    pub(super) delivery: Delivery,
    /// The answer was `duplicate = true`: a retry found the first attempt stored.
    pub(super) duplicate: bool,
}

/// What the producer did.
#[derive(Debug, Default)]
pub(super) struct Produced {
    pub(super) tried: BTreeSet<String>,
    pub(super) acked: BTreeMap<String, Acked>,
    /// Publishes that failed after every retry: id and error.
    pub(super) failed: Vec<(String, String)>,
    /// Answers that broke the protocol (a receipt for another id).
    pub(super) wrong: Vec<String>,
    /// When the leader was SIGKILLed.
    pub(super) kill_at: Option<Instant>,
    /// From the kill to the end of the first publish started after it.
    pub(super) first_after_kill: Option<Duration>,
    /// From the kill to the end of the publish that was in flight at the
    /// kill (it was retried to the new leader).
    pub(super) in_flight_at_kill: Option<Duration>,
}

/// What the exactly-once consumer saw.
#[derive(Debug, Default)]
pub(super) struct EoSeen {
    pub(super) deliveries: usize,
    /// First deliveries deliberately left unsettled.
    pub(super) left_unacked: usize,
    /// Id to when its ack was first confirmed and the attempt it confirmed.
    pub(super) confirmed: BTreeMap<String, (Instant, u32)>,
    pub(super) ack_failures: usize,
    pub(super) last_ack_error: Option<String>,
    /// Deliveries of an id after an ack of it was confirmed.
    pub(super) violations: Vec<String>,
    /// Why the consumer stopped, if not on request.
    pub(super) failed: Option<String>,
}

/// What the at-least-once consumer saw.
#[derive(Debug, Default)]
pub(super) struct AloSeen {
    pub(super) deliveries: usize,
    pub(super) delivered: BTreeSet<String>,
    pub(super) redeliveries: usize,
    pub(super) ack_errors: usize,
    pub(super) failed: Option<String>,
}

pub(super) fn outgoing(n: usize) -> (OutgoingMessage, String) {
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

pub(super) async fn connect(endpoints: Vec<String>) -> anyhow::Result<Client> {
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
pub(super) async fn produce(
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

pub(super) type AckOutcome = Result<(String, u32, Result<(), Error>), JoinError>;

pub(super) fn record_ack(seen: &Mutex<EoSeen>, progress: &watch::Sender<u64>, done: AckOutcome) {
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
pub(super) fn note_eo_delivery(seen: &Mutex<EoSeen>, message: &ReceivedMessage) {
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
pub(super) async fn consume_eo(
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
pub(super) async fn consume_alo(
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

//! Checks shared by the fault tests and the chaos suite: reading a topic
//! back through a subscription, and proving that what was acknowledged is
//! stored exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use hermod_client::{Client, Delivery, StartPosition, SubscribeOptions, SubscriptionConfig};

/// Most deliveries one read-back handles: bounds its loop in count.
const MAX_READ_BACK: usize = 10_000_000;
/// How long a read-back waits for anything beyond the stored count.
const READ_BACK_QUIET: Duration = Duration::from_millis(500);
/// How long a read-back subscription leaves a delivery leased: longer than
/// any read-back, so nothing is redelivered while it runs.
pub const READ_BACK_ACK_DEADLINE: Duration = Duration::from_secs(600);
/// Deliveries a read-back asks for at once.
const READ_BACK_PREFETCH: u32 = 1000;

/// Locks a mutex, going on with the data of a thread that panicked.
pub fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// At most a few examples of a long list, for messages.
pub fn sample<T: std::fmt::Debug>(items: &[T]) -> String {
    format!("{} (e.g. {:?})", items.len(), &items[..items.len().min(5)])
}

/// The settings of a subscription that reads a topic back from its first
/// retained message.
pub fn read_back_config(topic: &str) -> SubscriptionConfig {
    SubscriptionConfig::new(topic)
        .delivery(Delivery::AtLeastOnce)
        .ack_deadline(READ_BACK_ACK_DEADLINE)
        .start(StartPosition::Earliest)
}

/// Reads every stored message through the existing subscription `name`
/// (see [`read_back_config`]) until `stored` distinct sequences arrived and
/// nothing more comes, for at most `limit`; returns (sequence, id) per
/// delivery.
pub async fn read_back(
    client: &Client,
    name: &str,
    stored: u64,
    limit: Duration,
) -> anyhow::Result<Vec<(u64, String)>> {
    let messages = read_back_messages(client, name, stored, limit).await?;
    Ok(messages
        .into_iter()
        .map(|(sequence, id, _)| (sequence, id))
        .collect())
}

/// [`read_back`], with each delivery's payload.
pub async fn read_back_messages(
    client: &Client,
    name: &str,
    stored: u64,
    limit: Duration,
) -> anyhow::Result<Vec<(u64, String, bytes::Bytes)>> {
    let mut subscriber = client
        .subscribe(SubscribeOptions::subscription(name).prefetch(READ_BACK_PREFETCH))
        .await?;
    let mut deliveries = Vec::new();
    let mut sequences = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + limit;
    for _ in 0..MAX_READ_BACK {
        // Once every stored message is here, wait a little for any extra one.
        let until = if sequences.len() as u64 >= stored {
            (tokio::time::Instant::now() + READ_BACK_QUIET).min(deadline)
        } else {
            deadline
        };
        let Ok(item) = tokio::time::timeout_at(until, subscriber.next()).await else {
            break;
        };
        let message = item.ok_or_else(|| anyhow::anyhow!("{name}: the stream ended"))??;
        message.ack().await?;
        // A topic the broker writes in several groups (`$cluster.events`)
        // has a sequence in each: a message is its sequence and id.
        sequences.insert((message.sequence, message.id.clone()));
        deliveries.push((message.sequence, message.id.clone(), message.payload.clone()));
    }
    subscriber.close().await?;
    anyhow::ensure!(
        sequences.len() as u64 >= stored,
        "{name}: only {} of the {stored} stored messages were read back within {limit:?}",
        sequences.len()
    );
    Ok(deliveries)
}

/// Creates the subscription `name` reading `topic` from the earliest
/// message, then reads it back (see [`read_back`]).
pub async fn create_and_read_back(
    client: &Client,
    name: &str,
    topic: &str,
    stored: u64,
    limit: Duration,
) -> anyhow::Result<Vec<(u64, String)>> {
    client.create_subscription(name, read_back_config(topic)).await?;
    read_back(client, name, stored, limit).await
}

/// Checks the read-back of `topic` against the ids that were tried and the
/// publishes that were acknowledged (id to (topic, sequence)): every
/// acknowledged publish is stored under its sequence, no id is stored
/// twice, nothing is stored that was never published, and nothing was read
/// back twice. Returns the number of distinct ids stored.
pub fn check_stored(
    topic: &str,
    deliveries: &[(u64, String)],
    tried: &BTreeSet<String>,
    acked: &BTreeMap<String, (String, u64)>,
) -> anyhow::Result<usize> {
    let mut by_sequence: BTreeMap<u64, &str> = BTreeMap::new();
    let mut times_delivered: BTreeMap<u64, usize> = BTreeMap::new();
    for (sequence, id) in deliveries {
        if let Some(previous) = by_sequence.insert(*sequence, id.as_str()) {
            anyhow::ensure!(
                previous == id.as_str(),
                "{topic}: sequence {sequence} read back as {previous} and as {id}"
            );
        }
        *times_delivered.entry(*sequence).or_default() += 1;
    }
    let mut sequences_of: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (sequence, id) in &by_sequence {
        sequences_of.entry(id).or_default().push(*sequence);
    }
    let twice: Vec<_> = sequences_of.iter().filter(|(_, s)| s.len() > 1).collect();
    anyhow::ensure!(
        twice.is_empty(),
        "{topic}: ids stored more than once: {}",
        sample(&twice)
    );
    let again: Vec<_> = times_delivered.iter().filter(|(_, n)| **n > 1).collect();
    anyhow::ensure!(
        again.is_empty(),
        "{topic}: stored messages read back more than once within the ack deadline (sequence, times): {}",
        sample(&again)
    );
    let unknown: Vec<&&str> = sequences_of.keys().filter(|id| !tried.contains(**id)).collect();
    anyhow::ensure!(
        unknown.is_empty(),
        "{topic}: ids stored that were never published: {}",
        sample(&unknown)
    );
    let mut lost = Vec::new();
    for (id, (_, sequence)) in acked.iter().filter(|(_, (t, _))| t == topic) {
        if by_sequence.get(sequence) != Some(&id.as_str()) {
            lost.push(format!(
                "{id} acknowledged as sequence {sequence}, stored there: {:?}, stored at: {:?}",
                by_sequence.get(sequence),
                sequences_of.get(id.as_str())
            ));
        }
    }
    anyhow::ensure!(
        lost.is_empty(),
        "{topic}: acknowledged publishes not stored as acknowledged: {}",
        sample(&lost)
    );
    Ok(sequences_of.len())
}

/// How long one probe may take: a paused node may accept connections and
/// never answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between two rounds of a poll.
const AGREE_TICK: Duration = Duration::from_millis(100);

/// A client of the node at `endpoint` alone that never retries: for probes.
pub async fn probe_client(endpoint: String) -> anyhow::Result<Client> {
    let options = hermod_client::ClientOptions::new()
        .endpoint(endpoint.clone())
        .connect_timeout(PROBE_TIMEOUT)
        .request_timeout(PROBE_TIMEOUT)
        .retry_policy(hermod_client::RetryPolicy::none())
        .route_to_leaders(false);
    tokio::time::timeout(PROBE_TIMEOUT * 2, Client::connect(options))
        .await
        .map_err(|_| anyhow::anyhow!("{endpoint}: no connection within {:?}", PROBE_TIMEOUT * 2))?
        .map_err(Into::into)
}

/// The number of messages of `topic` that every node (by endpoint) stores,
/// once all report the same count and sequence range, within `limit`.
pub async fn agreed_count(endpoints: &[String], topic: &str, limit: Duration) -> anyhow::Result<u64> {
    let started = std::time::Instant::now();
    let mut last = Vec::new();
    for _ in 0..limit.as_millis() / AGREE_TICK.as_millis() + 1 {
        last.clear();
        for endpoint in endpoints {
            let answer = match probe_client(endpoint.clone()).await {
                Ok(client) => client
                    .get_topic(topic)
                    .await
                    .map(|t| (t.messages, t.first_sequence, t.last_sequence))
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            last.push(answer);
        }
        if let Some(Ok(first)) = last.first()
            && last.iter().all(|a| a.as_ref() == Ok(first))
        {
            return Ok(first.0);
        }
        if started.elapsed() >= limit {
            break;
        }
        tokio::time::sleep(AGREE_TICK).await;
    }
    anyhow::bail!(
        "the nodes did not agree on {topic} within {limit:?}: (messages, first, last) per node {last:?}"
    )
}

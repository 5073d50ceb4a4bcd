//! Leader failover: SIGKILL a 3-node cluster's leader under a steady publisher, time the first publish acknowledged after it, restart the node, and repeat.
//!
//! Each round finds the leader, starts a publisher connected to it first
//! (one durable message at a time, every failed attempt sent again with the
//! same id after a short pause), lets it publish through the warm-up,
//! SIGKILLs the leader and waits for the first acknowledged attempt that
//! started after the process was gone: the round's failover time runs from
//! the kill to that ack. The node then starts again on its data and ports,
//! and the round ends once the cluster is whole again (every node up, a
//! leader). What differs between Hermod and NATS (finding the leader,
//! publishing, judging the cluster whole) is a [`Cluster`]; the rounds,
//! the publisher's loop and the figures are here.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::deploy::Deployment;
use crate::load::Produced;
use crate::measure::{Clock, Recorder, Window};
use crate::outcome::{Measured, Outcome, round1};
use crate::scenario::{Primary, Spec};

/// How long one publish attempt may take before it counts as failed and the
/// message is sent again, in milliseconds (both clients' request timeout).
pub const ATTEMPT_TIMEOUT_MS: u64 = 1_000;
/// The pause after a failed attempt before the next, in milliseconds.
pub const RETRY_PAUSE_MS: u64 = 20;
/// How long after the kill a publish must be acknowledged, in seconds.
const FAILOVER_LIMIT_S: u64 = 60;
/// How long the restarted node and the cluster may take to be whole again,
/// and a fresh publisher to have its first ack, in seconds.
const REJOIN_LIMIT_S: u64 = 60;
/// Pause between two looks at the cluster, in milliseconds.
const POLL_INTERVAL_MS: u64 = 50;
/// How long a publisher may take to stop once told, in seconds: its attempt
/// in flight, bounded by the attempt timeout, and the close.
const PUBLISHER_STOP_S: u64 = 10;

/// The longest one round may take: its warm-up, the wait for the leader and
/// the first ack, the failover and the rejoin.
pub fn round_limit(warmup: Duration) -> Duration {
    warmup + Duration::from_secs(FAILOVER_LIMIT_S + 2 * REJOIN_LIMIT_S)
}

/// What one attempt of a publish came to when it was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptError {
    /// Worth sending again: the system is unavailable, timed out, or the connection broke.
    Retryable(String),
    /// An answer about the message itself: it is counted as an error and the publisher moves on.
    Final(String),
}

/// A publish attempt the system acknowledged: when it started and when the ack came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub started: Instant,
    pub acked: Instant,
}

/// What a round's publisher tells the round: its latest ack and how many attempts failed.
#[derive(Debug)]
pub struct Tally {
    latest: watch::Sender<Option<Ack>>,
    failed_attempts: AtomicU64,
}

impl Tally {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            latest: watch::Sender::new(None),
            failed_attempts: AtomicU64::new(0),
        })
    }

    fn failed_attempts(&self) -> u64 {
        self.failed_attempts.load(Ordering::SeqCst)
    }
}

/// What the publisher of one round needs.
#[derive(Debug, Clone)]
pub struct Publishing {
    /// The Hermod topic or NATS subject.
    pub topic: String,
    /// The round, from 0, which names the message ids.
    pub round: u32,
    pub clock: Clock,
    /// The window of the whole run, so every round's acks share one timeline.
    pub window: Window,
    pub message_size: usize,
    tally: Arc<Tally>,
    stop: watch::Receiver<bool>,
}

impl Publishing {
    /// The id of the round's `n`-th message, kept by every attempt to send it.
    fn message_id(&self, n: u64) -> String {
        format!("failover-{}-{n}", self.round)
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }
}

/// What differs between the systems: finding the leader, publishing, and
/// judging whether the cluster is whole. Crate-private: its `async fn`s
/// make no promise about `Send` to code outside the harness.
pub(crate) trait Cluster {
    /// The place in `deployment` of the node that leads what the publisher
    /// writes to, if one is known right now.
    async fn leader(&self, deployment: &Deployment) -> Option<usize>;

    /// Connects a publisher that tries node `first` first and starts it on
    /// [`publish_one_at_a_time`].
    async fn start_publisher(
        &self,
        deployment: &Deployment,
        first: usize,
        publishing: Publishing,
    ) -> anyhow::Result<JoinHandle<Produced>>;

    /// Whether every node is up and followed by the others, with a leader, right now.
    async fn whole(&self, deployment: &Deployment) -> bool;
}

/// Publishes one message at a time until told to stop. Each attempt goes
/// through `attempt` (given the message's id and payload) and may take
/// `ATTEMPT_TIMEOUT_MS`; a failed one is sent again with the same id after
/// `RETRY_PAUSE_MS`. Publish->ack latency runs from a message's first
/// attempt to its ack.
pub async fn publish_one_at_a_time<F, Fut>(publishing: Publishing, mut attempt: F) -> Produced
where
    F: FnMut(String, Bytes) -> Fut,
    Fut: Future<Output = Result<(), AttemptError>>,
{
    let mut acks = Recorder::new(publishing.window);
    let mut stop = publishing.stop.clone();
    // A guard above the clients' own timeout, which fires first and lets
    // the client drop the connection it timed out on.
    let guard = 2 * Duration::from_millis(ATTEMPT_TIMEOUT_MS);
    let mut sent = 0;
    'messages: while !publishing.stopped() {
        let id = publishing.message_id(sent);
        let sent_at = Instant::now();
        let payload = publishing.clock.payload(sent_at, publishing.message_size);
        sent += 1;
        loop {
            let started = Instant::now();
            let outcome = tokio::time::timeout(guard, attempt(id.clone(), payload.clone())).await;
            match outcome {
                Ok(Ok(())) => {
                    let acked = Instant::now();
                    acks.record(sent_at, acked);
                    publishing.tally.latest.send_replace(Some(Ack { started, acked }));
                    break;
                }
                Ok(Err(AttemptError::Final(error))) => {
                    acks.error(error);
                    break;
                }
                Ok(Err(AttemptError::Retryable(_))) | Err(_) => {
                    publishing.tally.failed_attempts.fetch_add(1, Ordering::SeqCst);
                }
            }
            tokio::select! {
                _ = stop.changed() => break 'messages,
                _ = tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS)) => {}
            }
        }
    }
    Produced {
        sent,
        sent_in_window: sent,
        acks: Some(acks),
    }
}

/// One round: which node was killed, how long the first ack after the kill
/// took, and how long the node took to rejoin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Round {
    /// The leader killed (`hermod-N`, `nats-N`).
    pub killed: String,
    /// From SIGKILL to the ack of the first attempt started after the process was gone.
    pub failover_ms: u64,
    /// Attempts that failed from the kill until that ack.
    pub failed_attempts: u64,
    /// From starting the killed node again until the cluster was whole.
    pub rejoin_ms: u64,
}

/// The failover times of one system, beside its other figures in `report.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailoverTimes {
    /// The median of the rounds' failover times (the mean of the middle two
    /// for an even number of rounds).
    pub failover_median_ms: f64,
    /// The longest failover time of the rounds.
    pub failover_worst_ms: u64,
    /// Every round's failover time, in the order of the rounds.
    pub failover_rounds_ms: Vec<u64>,
    /// Every round in full.
    pub failover_round_detail: Vec<Round>,
    /// How long one publish attempt could take before it was sent again.
    pub failover_attempt_timeout_ms: u64,
    /// The pause after a failed attempt.
    pub failover_retry_pause_ms: u64,
}

impl FailoverTimes {
    /// The figures of `rounds`, if there was one.
    pub fn new(rounds: Vec<Round>) -> Option<Self> {
        let times: Vec<u64> = rounds.iter().map(|round| round.failover_ms).collect();
        Some(Self {
            failover_median_ms: median(&times)?,
            failover_worst_ms: times.iter().copied().max()?,
            failover_rounds_ms: times,
            failover_round_detail: rounds,
            failover_attempt_timeout_ms: ATTEMPT_TIMEOUT_MS,
            failover_retry_pause_ms: RETRY_PAUSE_MS,
        })
    }
}

/// The median of `values`: the middle one, or the mean of the middle two, to 0.1.
pub fn median(values: &[u64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let middle = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => Some(sorted[middle] as f64),
        _ => Some(round1((sorted[middle - 1] + sorted[middle]) as f64 / 2.0)),
    }
}

/// A duration in whole milliseconds, rounded.
fn millis(duration: Duration) -> u64 {
    (duration.as_secs_f64() * 1000.0).round() as u64
}

/// Runs `spec.settings.rounds` rounds against `deployment`; the figures are
/// the publisher's over every round, with the failover times beside them.
pub(crate) async fn run_rounds<C: Cluster>(
    spec: &Spec,
    deployment: &mut Deployment,
    cluster: &C,
) -> anyhow::Result<Measured> {
    let window = Window::starting_now(Duration::ZERO, spec.load_limit());
    let clock = Clock::new();
    let mut outcome = Outcome::new(window);
    let mut rounds = Vec::new();
    for round in 0..spec.settings.rounds {
        let publishing = |tally, stop| Publishing {
            topic: spec.topic(),
            round,
            clock,
            window,
            message_size: spec.settings.message_size,
            tally,
            stop,
        };
        let (figures, produced) = one_round(spec, deployment, cluster, publishing)
            .await
            .with_context(|| format!("round {} of {}", round + 1, spec.settings.rounds))?;
        outcome.add_produced(produced);
        rounds.push(figures);
    }
    outcome.span = Some(window.start.elapsed().as_secs_f64());
    let mut measured = outcome.measured(Primary::PublishToAck);
    measured.failover = FailoverTimes::new(rounds);
    Ok(measured)
}

/// One round, from finding the leader to the cluster whole again; the
/// publisher is stopped whatever happened.
async fn one_round<C, P>(
    spec: &Spec,
    deployment: &mut Deployment,
    cluster: &C,
    publishing: P,
) -> anyhow::Result<(Round, Produced)>
where
    C: Cluster,
    P: FnOnce(Arc<Tally>, watch::Receiver<bool>) -> Publishing,
{
    let rejoin_limit = Duration::from_secs(REJOIN_LIMIT_S);
    let first = wait_for_leader(deployment, cluster, rejoin_limit).await?;
    let tally = Tally::new();
    let (stop, stop_rx) = watch::channel(false);
    let publisher = cluster
        .start_publisher(deployment, first, publishing(tally.clone(), stop_rx))
        .await?;
    let round = kill_and_rejoin(spec, deployment, cluster, &tally).await;
    let _ = stop.send(true);
    let abort = publisher.abort_handle();
    let produced = match tokio::time::timeout(Duration::from_secs(PUBLISHER_STOP_S), publisher).await {
        Ok(joined) => joined.context("the publisher failed")?,
        Err(_) => {
            abort.abort();
            anyhow::bail!("the publisher did not stop within {PUBLISHER_STOP_S} s");
        }
    };
    Ok((round?, produced))
}

/// The heart of a round: warm up, kill the leader, time the first ack after
/// it, start the node again and wait until the cluster is whole.
async fn kill_and_rejoin<C: Cluster>(
    spec: &Spec,
    deployment: &mut Deployment,
    cluster: &C,
    tally: &Tally,
) -> anyhow::Result<Round> {
    let rejoin_limit = Duration::from_secs(REJOIN_LIMIT_S);
    let mut latest = tally.latest.subscribe();
    tokio::time::timeout(rejoin_limit, latest.wait_for(Option::is_some))
        .await
        .with_context(|| format!("the publisher had no ack within {rejoin_limit:?}"))??;
    tokio::time::sleep(spec.settings.warmup).await;
    // The leader of the moment, should it have changed during the warm-up.
    let leader = wait_for_leader(deployment, cluster, rejoin_limit).await?;
    let killed = deployment.name(leader).to_owned();
    let failed_before = tally.failed_attempts();
    let kill_at = Instant::now();
    deployment.kill(leader).await?;
    let gone_at = Instant::now();
    let failover_limit = Duration::from_secs(FAILOVER_LIMIT_S);
    let after = latest.wait_for(|ack| ack.is_some_and(|ack| ack.started >= gone_at));
    let ack: Option<Ack> = match tokio::time::timeout(failover_limit, after).await {
        Ok(Ok(ack)) => *ack,
        Ok(Err(_)) => anyhow::bail!("the publisher ended before an ack after the kill of {killed}"),
        Err(_) => anyhow::bail!("no publish was acked within {failover_limit:?} of the kill of {killed}"),
    };
    let ack = ack.context("the wait for an ack ended without one")?;
    let failover_ms = millis(ack.acked - kill_at);
    let failed_attempts = tally.failed_attempts() - failed_before;
    let restart_at = Instant::now();
    deployment
        .restart(leader)
        .await
        .with_context(|| format!("restarting {killed}"))?;
    wait_until_whole(
        deployment,
        cluster,
        rejoin_limit - restart_at.elapsed().min(rejoin_limit),
    )
    .await
    .with_context(|| format!("after restarting {killed}"))?;
    Ok(Round {
        killed,
        failover_ms,
        failed_attempts,
        rejoin_ms: millis(restart_at.elapsed()),
    })
}

/// Looks for the leader every `POLL_INTERVAL_MS` until one is known, at most `limit`.
async fn wait_for_leader<C: Cluster>(
    deployment: &Deployment,
    cluster: &C,
    limit: Duration,
) -> anyhow::Result<usize> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(leader) = cluster.leader(deployment).await {
            return Ok(leader);
        }
        anyhow::ensure!(Instant::now() < deadline, "no leader within {limit:?}");
        tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
    }
}

/// Looks at the cluster every `POLL_INTERVAL_MS` until it is whole, at most `limit`.
async fn wait_until_whole<C: Cluster>(
    deployment: &Deployment,
    cluster: &C,
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if cluster.whole(deployment).await {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the cluster was not whole again within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(killed: &str, failover_ms: u64) -> Round {
        Round {
            killed: killed.to_owned(),
            failover_ms,
            failed_attempts: 3,
            rejoin_ms: 1500,
        }
    }

    #[test]
    fn the_median_is_the_middle_or_the_mean_of_the_middle_two() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[7]), Some(7.0));
        assert_eq!(median(&[3100, 2800, 4200]), Some(3100.0));
        assert_eq!(median(&[4, 1, 3, 2]), Some(2.5));
        assert_eq!(median(&[1, 2]), Some(1.5));
    }

    #[test]
    fn the_times_keep_every_round_and_name_median_and_worst() {
        assert_eq!(FailoverTimes::new(Vec::new()), None);
        let rounds = vec![
            round("hermod-0", 3100),
            round("hermod-1", 4200),
            round("hermod-2", 2800),
        ];
        let times = FailoverTimes::new(rounds).expect("three rounds");
        assert_eq!(times.failover_median_ms, 3100.0);
        assert_eq!(times.failover_worst_ms, 4200);
        assert_eq!(times.failover_rounds_ms, vec![3100, 4200, 2800]);
        let json = serde_json::to_value(&times).expect("json");
        assert_eq!(json["failover_round_detail"][1]["killed"], "hermod-1");
        assert_eq!(json["failover_attempt_timeout_ms"], ATTEMPT_TIMEOUT_MS);
    }

    #[test]
    fn a_round_may_take_its_warmup_failover_and_rejoin() {
        let limit = round_limit(Duration::from_secs(2));
        assert_eq!(
            limit,
            Duration::from_secs(2 + FAILOVER_LIMIT_S + 2 * REJOIN_LIMIT_S)
        );
        assert_eq!(millis(Duration::from_micros(2_499_600)), 2500);
    }

    /// A publishing context for one round over a long window, and its stop switch.
    fn publishing() -> (Publishing, Arc<Tally>, watch::Sender<bool>) {
        let tally = Tally::new();
        let (stop, stop_rx) = watch::channel(false);
        let publishing = Publishing {
            topic: "bench.leader_failover".to_owned(),
            round: 2,
            clock: Clock::new(),
            window: Window::starting_now(Duration::ZERO, Duration::from_secs(60)),
            message_size: 16,
            tally: tally.clone(),
            stop: stop_rx,
        };
        (publishing, tally, stop)
    }

    #[tokio::test]
    async fn a_failed_attempt_is_sent_again_with_the_same_id() {
        let (publishing, tally, stop) = publishing();
        let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
        let mut attempts = 0;
        let publisher = tokio::spawn(publish_one_at_a_time(publishing, move |id, payload| {
            attempts += 1;
            let _ = seen_tx.send(id.clone());
            async move {
                assert_eq!(payload.len(), 16);
                // Let the test run between attempts, as a real client's I/O would.
                tokio::task::yield_now().await;
                match id.as_str() {
                    // The first message fails twice before it is acked.
                    "failover-2-0" if attempts <= 2 => Err(AttemptError::Retryable("no leader".into())),
                    "failover-2-1" => Err(AttemptError::Final("too large".into())),
                    _ => Ok(()),
                }
            }
        }));
        let mut ids = Vec::new();
        while ids.len() < 4 {
            ids.push(seen.recv().await.expect("an attempt"));
        }
        assert_eq!(&ids[..3], ["failover-2-0"; 3]);
        assert_eq!(ids[3], "failover-2-1");
        let _ = stop.send(true);
        let produced = publisher.await.expect("publisher");
        assert_eq!(tally.failed_attempts(), 2);
        let acks = produced.acks.expect("acks");
        assert_eq!(acks.errors, 1, "the final error is counted once");
        assert_eq!(acks.first_error.as_deref(), Some("too large"));
        assert!(produced.sent >= 2);
    }
}

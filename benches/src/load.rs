//! One phase of a run: the clock and window its tasks share, and gathering what they recorded when it ends.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::flow::{Pacer, Progress};
use crate::measure::{Clock, Recorder, Window};
use crate::outcome::Outcome;
use crate::process;
use crate::scenario::{Shape, Spec};

/// How long after the producers stop the last acks may take.
pub const ACK_DRAIN: Duration = Duration::from_secs(30);
/// How long after the producers finish the last deliveries may take.
const DELIVERY_DRAIN: Duration = Duration::from_secs(5);
/// How long a consumer may take to stop once told.
const CONSUMER_STOP: Duration = Duration::from_secs(10);
/// How long closing a publisher or subscriber may take.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Priorities a message of a priority scenario cycles through (low to critical).
pub const PRIORITY_LEVELS: u64 = 4;

/// The kinds of phase a run has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Producers (and consumers) run for warm-up plus duration; throughput is over the whole window.
    Steady,
    /// Producers publish a backlog as fast as they may and stop; the phase
    /// ends once every publish is acked.
    Fill,
    /// Consumers take a backlog of `expected` messages; the phase ends once
    /// it is consumed, or after the duration.
    Drain { expected: u64 },
}

/// What the tasks of one phase share.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub clock: Clock,
    pub window: Window,
    pub progress: Arc<Progress>,
    /// Becomes true when consumers should stop.
    pub stop: watch::Receiver<bool>,
    pub message_size: usize,
    /// Publishes in flight per producer, and each consumer's prefetch.
    pub in_flight: usize,
    /// Each producer's rate, if paced.
    pub rate: Option<f64>,
    /// Messages each producer sends, when the phase ends by count.
    pub limit: Option<u64>,
    /// Whether messages cycle through the priorities, tagged in their payload.
    pub priorities: bool,
}

impl RunContext {
    /// The pacer of one producer.
    pub fn pacer(&self) -> Pacer {
        Pacer::new(self.window, self.rate, self.limit)
    }

    /// The priority (0 = low … 3 = critical) of a producer's `sent`-th
    /// message, if the scenario mixes them.
    pub fn priority_of(&self, sent: u64) -> Option<u8> {
        self.priorities.then_some((sent % PRIORITY_LEVELS) as u8)
    }

    /// Notes one delivery of `payload` at `now`: latency (or only the count
    /// in a backlog, whose wait is the scenario's making) and its priority tag.
    pub fn delivered(&self, recorder: &mut Recorder, payload: &[u8], backlog: bool) {
        let now = Instant::now();
        match self.clock.sent_at(payload) {
            Some(_) if backlog => recorder.count(now),
            Some(sent_at) => recorder.record(sent_at, now),
            None => recorder.error("a delivery without a send time"),
        }
        if self.priorities
            && let Some(tag) = Clock::tag(payload)
        {
            recorder.note_tag(tag);
        }
        self.progress.delivered_one();
    }
}

/// What one producer did.
#[derive(Debug)]
pub struct Produced {
    /// Messages handed to the client, warm-up included.
    pub sent: u64,
    /// Messages handed to the client inside the measured window.
    pub sent_in_window: u64,
    /// Publish acks, for systems and scenarios that have them.
    pub acks: Option<Recorder>,
}

/// One phase in progress: its clock and window, and the means to end it.
pub struct Load {
    context: RunContext,
    phase: Phase,
    stop: watch::Sender<bool>,
    cpu: JoinHandle<(Option<f64>, Option<f64>)>,
}

impl Load {
    /// Starts the clock of `phase`. Call it once the consumers are
    /// subscribed, right before spawning the tasks.
    pub fn begin(spec: &Spec, server_pids: Vec<u32>, phase: Phase) -> Self {
        let settings = &spec.settings;
        let window = match phase {
            Phase::Steady => Window::starting_now(settings.warmup, settings.duration),
            Phase::Fill => Window::starting_now(Duration::ZERO, spec.fill_limit()),
            Phase::Drain { .. } => Window::starting_now(Duration::ZERO, settings.duration),
        };
        let (stop, stop_rx) = watch::channel(false);
        let cpu = tokio::spawn(process::cpu_during(
            server_pids,
            window.measure_from,
            window.stop_at,
            stop_rx.clone(),
        ));
        Self {
            context: RunContext {
                clock: Clock::new(),
                window,
                progress: Arc::new(Progress::default()),
                stop: stop_rx,
                message_size: settings.message_size,
                in_flight: settings.window,
                rate: spec.rate_per_producer(),
                limit: (phase == Phase::Fill)
                    .then(|| spec.backlog_per_producer())
                    .flatten(),
                priorities: spec.name.shape() == Shape::Backlog { priorities: true },
            },
            phase,
            stop,
            cpu,
        }
    }

    pub fn context(&self) -> RunContext {
        self.context.clone()
    }

    /// Waits for the producers, then for the deliveries they caused
    /// (`fanout` per published message, bounded; in a drain, the whole
    /// backlog until the window ends), stops the consumers and gathers what
    /// every task recorded.
    pub async fn finish(
        self,
        producers: Vec<JoinHandle<anyhow::Result<Produced>>>,
        consumers: Vec<JoinHandle<Recorder>>,
        fanout: u64,
    ) -> anyhow::Result<Outcome> {
        let window = self.context.window;
        let mut outcome = Outcome::new(window);
        let mut failure = None;
        for producer in producers {
            let joined = tokio::time::timeout_at(window.stop_at + ACK_DRAIN + CLOSE_TIMEOUT, producer).await;
            match joined {
                Ok(Ok(Ok(produced))) => outcome.add_produced(produced),
                Ok(Ok(Err(error))) => {
                    failure.get_or_insert(error);
                }
                Ok(Err(join)) => {
                    failure.get_or_insert(anyhow::anyhow!("a producer task failed: {join}"));
                }
                Err(_) => {
                    failure.get_or_insert(anyhow::anyhow!(
                        "a producer did not finish within {ACK_DRAIN:?} of the end"
                    ));
                }
            }
        }
        let (expected, deadline) = match self.phase {
            Phase::Drain { expected } => (expected, window.stop_at),
            Phase::Steady | Phase::Fill => (outcome.published() * fanout, Instant::now() + DELIVERY_DRAIN),
        };
        if expected > 0 {
            outcome.drained = self.context.progress.wait_for(expected, deadline).await;
        }
        if self.phase != Phase::Steady {
            let ended = Instant::now().min(window.stop_at);
            outcome.span = Some((ended - window.measure_from).as_secs_f64());
        }
        let _ = self.stop.send(true);
        for consumer in consumers {
            let abort = consumer.abort_handle();
            match tokio::time::timeout(CONSUMER_STOP, consumer).await {
                Ok(Ok(recorder)) => outcome.add_deliveries(&recorder),
                Ok(Err(join)) => {
                    failure.get_or_insert(anyhow::anyhow!("a consumer task failed: {join}"));
                }
                Err(_) => {
                    abort.abort();
                    failure.get_or_insert(anyhow::anyhow!(
                        "a consumer did not stop within {CONSUMER_STOP:?}"
                    ));
                }
            }
        }
        (outcome.server_cpu_percent, outcome.bench_cpu_percent) = self.cpu.await.unwrap_or((None, None));
        if let Some(error) = failure {
            return Err(error);
        }
        let missing = expected.saturating_sub(self.context.progress.delivered());
        // A backlog not consumed within the duration is left, not lost.
        match self.phase {
            Phase::Drain { .. } => outcome.left = Some(missing),
            Phase::Steady | Phase::Fill => outcome.lost = missing,
        }
        Ok(outcome)
    }
}

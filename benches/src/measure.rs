//! Measuring: send times carried in payloads, the measured window, latency recorders and pacing.

use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

/// The highest latency a histogram holds, in microseconds (one minute).
const MAX_LATENCY_US: u64 = 60_000_000;

/// Turns instants into the 8-byte stamps that travel at the start of each
/// payload, so a consumer in this process knows when a message was sent.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    pub fn new() -> Self {
        Self { base: Instant::now() }
    }

    /// A payload of `size` bytes (at least 8) stamped with `sent_at`.
    pub fn payload(&self, sent_at: Instant, size: usize) -> Bytes {
        let stamp = sent_at.saturating_duration_since(self.base).as_nanos() as u64;
        let mut payload = vec![0u8; size.max(8)];
        payload[..8].copy_from_slice(&stamp.to_le_bytes());
        Bytes::from(payload)
    }

    /// The send time stamped into `payload`, if it holds one.
    pub fn sent_at(&self, payload: &[u8]) -> Option<Instant> {
        let stamp: [u8; 8] = payload.get(..8)?.try_into().ok()?;
        Some(self.base + Duration::from_nanos(u64::from_le_bytes(stamp)))
    }
}

/// A run's timeline: load starts at `start`, measuring at `measure_from`
/// (after the warm-up), and producers stop at `stop_at`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: Instant,
    pub measure_from: Instant,
    pub stop_at: Instant,
}

impl Window {
    /// A window starting now.
    pub fn starting_now(warmup: Duration, duration: Duration) -> Self {
        let start = Instant::now();
        let measure_from = start + warmup;
        Self {
            start,
            measure_from,
            stop_at: measure_from + duration,
        }
    }

    pub fn contains(&self, at: Instant) -> bool {
        at >= self.measure_from && at < self.stop_at
    }

    /// The measured span in seconds.
    pub fn seconds(&self) -> f64 {
        (self.stop_at - self.measure_from).as_secs_f64()
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    pub samples: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

/// Completions of one kind (acks, or deliveries) seen by one task.
///
/// A completion counts towards throughput when it happens inside the
/// measured window, and its latency is recorded when the message was sent
/// inside the window, so warm-up and drain are left out of both.
#[derive(Debug, Clone)]
pub struct Recorder {
    window: Window,
    histogram: Histogram<u64>,
    /// Completions inside the window.
    pub in_window: u64,
    /// Every completion, warm-up and drain included.
    pub total: u64,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Recorder {
    pub fn new(window: Window) -> Self {
        Self {
            window,
            histogram: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("constant histogram bounds are valid"),
            in_window: 0,
            total: 0,
            errors: 0,
            first_error: None,
        }
    }

    /// One message sent at `sent_at` completed at `done_at`.
    pub fn record(&mut self, sent_at: Instant, done_at: Instant) {
        self.total += 1;
        if self.window.contains(done_at) {
            self.in_window += 1;
        }
        if self.window.contains(sent_at) {
            let micros = done_at.saturating_duration_since(sent_at).as_micros();
            let micros = u64::try_from(micros).unwrap_or(u64::MAX).clamp(1, MAX_LATENCY_US);
            self.histogram.saturating_record(micros);
        }
    }

    pub fn error(&mut self, error: impl Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(error.to_string());
        }
    }

    /// Folds another task's completions into this one.
    pub fn merge(&mut self, other: &Recorder) {
        // Both histograms share bounds, so adding cannot fail.
        let _ = self.histogram.add(&other.histogram);
        self.in_window += other.in_window;
        self.total += other.total;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }

    /// Completions per second inside the window.
    pub fn rate(&self) -> f64 {
        self.in_window as f64 / self.window.seconds()
    }

    /// Latency percentiles, if any message sent inside the window completed.
    pub fn percentiles(&self) -> Option<Percentiles> {
        let h = &self.histogram;
        (!h.is_empty()).then(|| Percentiles {
            samples: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: (h.mean() * 10.0).round() / 10.0,
        })
    }
}

/// Paces a producer at a fixed rate, or not at all.
///
/// With a rate, each message is stamped with its *intended* send time, so a
/// stall shows up as latency instead of silently lowering the rate
/// (no coordinated omission).
#[derive(Debug)]
pub struct Pacer {
    start: Instant,
    rate: Option<f64>,
    sent: u64,
}

impl Pacer {
    pub fn new(start: Instant, rate: Option<f64>) -> Self {
        Self { start, rate, sent: 0 }
    }

    /// Waits for the next send slot and returns its time.
    pub async fn next(&mut self) -> Instant {
        let Some(rate) = self.rate else {
            return Instant::now();
        };
        let at = self.start + Duration::from_secs_f64(self.sent as f64 / rate);
        self.sent += 1;
        tokio::time::sleep_until(at).await;
        at
    }
}

/// Deliveries counted across a run's consumers, so the run can end as soon
/// as everything sent has arrived instead of waiting out a fixed drain.
#[derive(Debug)]
pub struct Progress {
    delivered: AtomicU64,
    target: AtomicU64,
    reached: Notify,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            delivered: AtomicU64::new(0),
            target: AtomicU64::new(u64::MAX),
            reached: Notify::new(),
        }
    }
}

impl Progress {
    /// A consumer received one message.
    pub fn delivered_one(&self) {
        let delivered = self.delivered.fetch_add(1, Ordering::SeqCst) + 1;
        if delivered >= self.target.load(Ordering::SeqCst) {
            self.reached.notify_waiters();
        }
    }

    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::SeqCst)
    }

    /// Waits until `target` deliveries have arrived, at most `limit`;
    /// returns whether they did.
    pub async fn wait_for(&self, target: u64, limit: Duration) -> bool {
        let reached = self.reached.notified();
        tokio::pin!(reached);
        // Register before publishing the target, so a consumer that crosses
        // it right after cannot notify before anyone listens.
        reached.as_mut().enable();
        self.target.store(target, Ordering::SeqCst);
        if self.delivered() >= target {
            return true;
        }
        tokio::time::timeout(limit, reached).await.is_ok() || self.delivered() >= target
    }
}

/// Awaits publish acks as they come back (in any order) and records
/// publish→ack latency, until the producer closes the channel and every
/// pending ack has been answered.
pub async fn collect_acks<F, E>(
    mut pending_rx: mpsc::UnboundedReceiver<(Instant, F)>,
    window: Window,
) -> Recorder
where
    F: Future<Output = Result<(), E>> + Send,
    E: Display,
{
    let mut recorder = Recorder::new(window);
    let mut pending = FuturesUnordered::new();
    let mut open = true;
    loop {
        tokio::select! {
            item = pending_rx.recv(), if open => match item {
                Some((sent_at, ack)) => pending.push(async move {
                    let outcome = ack.await;
                    (sent_at, outcome, Instant::now())
                }),
                None => open = false,
            },
            Some((sent_at, outcome, done_at)) = pending.next(), if !pending.is_empty() => match outcome {
                Ok(()) => recorder.record(sent_at, done_at),
                Err(error) => recorder.error(error),
            },
            else => break,
        }
    }
    recorder
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_payload_carries_its_send_time() {
        let clock = Clock::new();
        let at = Instant::now() + Duration::from_millis(3);
        let payload = clock.payload(at, 128);
        assert_eq!(payload.len(), 128);
        let back = clock.sent_at(&payload).expect("stamped");
        assert!(back.max(at) - back.min(at) < Duration::from_micros(1));
        assert_eq!(clock.payload(at, 2).len(), 8);
        assert!(clock.sent_at(b"short").is_none());
    }

    #[tokio::test]
    async fn only_the_window_is_counted() {
        let window = Window::starting_now(Duration::from_secs(1), Duration::from_secs(2));
        let mut recorder = Recorder::new(window);
        let early = window.start;
        let inside = window.measure_from + Duration::from_millis(10);
        recorder.record(early, early + Duration::from_millis(5));
        recorder.record(early, inside);
        recorder.record(inside, inside + Duration::from_micros(250));
        recorder.record(inside, window.stop_at + Duration::from_secs(1));
        assert_eq!(recorder.total, 4);
        assert_eq!(recorder.in_window, 2);
        let p = recorder.percentiles().expect("two samples");
        assert_eq!(p.samples, 2);
        assert!((249..=251).contains(&p.p50_us), "{p:?}");
        assert!((recorder.rate() - 1.0).abs() < 1e-9);
    }

    #[tokio::test(start_paused = true)]
    async fn the_pacer_keeps_its_rate() {
        let start = Instant::now();
        let mut pacer = Pacer::new(start, Some(1000.0));
        let mut last = start;
        for _ in 0..=100 {
            last = pacer.next().await;
        }
        assert_eq!(last - start, Duration::from_millis(100));
        assert!(Instant::now() >= last);
    }

    #[tokio::test]
    async fn progress_wakes_the_waiter_when_the_target_is_reached() {
        let progress = std::sync::Arc::new(Progress::default());
        let consumer = {
            let progress = progress.clone();
            tokio::spawn(async move {
                for _ in 0..1000 {
                    progress.delivered_one();
                    tokio::task::yield_now().await;
                }
            })
        };
        assert!(progress.wait_for(1000, Duration::from_secs(10)).await);
        consumer.await.expect("consumer");
        assert!(!progress.wait_for(2000, Duration::from_millis(10)).await);
    }

    #[tokio::test]
    async fn acks_are_collected_in_any_order() {
        let window = Window::starting_now(Duration::ZERO, Duration::from_secs(60));
        let (tx, rx) = mpsc::unbounded_channel();
        let collector = tokio::spawn(collect_acks(rx, window));
        let (slow_tx, slow_rx) = tokio::sync::oneshot::channel::<()>();
        let now = Instant::now();
        tx.send((
            now,
            futures::future::Either::Left(async move { slow_rx.await.map_err(|e| e.to_string()) }),
        ))
        .expect("send");
        tx.send((
            now,
            futures::future::Either::Right(async { Err("refused".to_owned()) }),
        ))
        .expect("send");
        slow_tx.send(()).expect("slow ack");
        drop(tx);
        let recorder = collector.await.expect("collector");
        assert_eq!(recorder.total, 1);
        assert_eq!(recorder.errors, 1);
        assert_eq!(recorder.first_error.as_deref(), Some("refused"));
    }
}

//! Measuring: send times carried in payloads, the measured window, and latency recorders with their per-second timelines.

use std::fmt::Display;
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

/// The highest latency a histogram holds, in microseconds (one minute).
const MAX_LATENCY_US: u64 = 60_000_000;
/// The longest timeline a recorder keeps, in seconds from the start of its
/// run: the longest duration and warm-up the options allow, with room for the drain.
const MAX_TIMELINE_S: usize = 2 * 3600;
/// At most this many delivered priorities are kept in delivery order (one byte each).
const MAX_ORDER_SAMPLES: usize = 4_000_000;
/// Bytes of the send-time stamp at the start of every payload.
const STAMP_BYTES: usize = 8;

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
        Bytes::from(self.stamped(sent_at, size.max(STAMP_BYTES)))
    }

    /// A payload stamped with `sent_at` that also carries `tag` right after
    /// the stamp (the priority a message was published with), so both
    /// systems report it the same way.
    pub fn tagged_payload(&self, sent_at: Instant, size: usize, tag: u8) -> Bytes {
        let mut payload = self.stamped(sent_at, size.max(STAMP_BYTES + 1));
        payload[STAMP_BYTES] = tag;
        Bytes::from(payload)
    }

    fn stamped(&self, sent_at: Instant, size: usize) -> Vec<u8> {
        let stamp = sent_at.saturating_duration_since(self.base).as_nanos() as u64;
        let mut payload = vec![0u8; size];
        payload[..STAMP_BYTES].copy_from_slice(&stamp.to_le_bytes());
        payload
    }

    /// The send time stamped into `payload`, if it holds one.
    pub fn sent_at(&self, payload: &[u8]) -> Option<Instant> {
        let stamp: [u8; STAMP_BYTES] = payload.get(..STAMP_BYTES)?.try_into().ok()?;
        Some(self.base + Duration::from_nanos(u64::from_le_bytes(stamp)))
    }

    /// The tag of a payload made by [`tagged_payload`](Self::tagged_payload).
    pub fn tag(payload: &[u8]) -> Option<u8> {
        payload.get(STAMP_BYTES).copied()
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

impl Percentiles {
    /// The labelled values a latency chart plots, in order.
    pub fn points(&self) -> [(&'static str, u64); 5] {
        [
            ("p50", self.p50_us),
            ("p90", self.p90_us),
            ("p99", self.p99_us),
            ("p99.9", self.p999_us),
            ("max", self.max_us),
        ]
    }
}

/// Completions of one kind (acks, or deliveries) seen by one task.
///
/// A completion counts towards throughput when it happens inside the
/// measured window, and its latency is recorded when the message was sent
/// inside the window, so warm-up and drain are left out of both. Every
/// completion also counts in its second of the run's timeline, warm-up and
/// drain included, for the throughput chart.
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
    /// Completions per second since the window's start.
    pub per_second: Vec<u64>,
    /// Tags (priorities) of the deliveries, in the order they arrived.
    pub order: Vec<u8>,
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
            per_second: Vec::new(),
            order: Vec::new(),
        }
    }

    /// One message sent at `sent_at` completed at `done_at`.
    pub fn record(&mut self, sent_at: Instant, done_at: Instant) {
        self.count(done_at);
        if self.window.contains(sent_at) {
            let micros = done_at.saturating_duration_since(sent_at).as_micros();
            let micros = u64::try_from(micros).unwrap_or(u64::MAX).clamp(1, MAX_LATENCY_US);
            self.histogram.saturating_record(micros);
        }
    }

    /// One completion at `done_at` whose latency means nothing (a message
    /// published before the measured phase, as in a backlog).
    pub fn count(&mut self, done_at: Instant) {
        self.total += 1;
        if self.window.contains(done_at) {
            self.in_window += 1;
        }
        let second = done_at.saturating_duration_since(self.window.start).as_secs() as usize;
        if second < MAX_TIMELINE_S {
            if self.per_second.len() <= second {
                self.per_second.resize(second + 1, 0);
            }
            self.per_second[second] += 1;
        }
    }

    /// Notes the tag of the latest delivery, to check its order later.
    pub fn note_tag(&mut self, tag: u8) {
        if self.order.len() < MAX_ORDER_SAMPLES {
            self.order.push(tag);
        }
    }

    pub fn error(&mut self, error: impl Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(error.to_string());
        }
    }

    /// Folds another task's completions into this one (the delivery order
    /// of several tasks cannot be merged, so it is appended).
    pub fn merge(&mut self, other: &Recorder) {
        // Both histograms share bounds, so adding cannot fail.
        let _ = self.histogram.add(&other.histogram);
        self.in_window += other.in_window;
        self.total += other.total;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        if self.per_second.len() < other.per_second.len() {
            self.per_second.resize(other.per_second.len(), 0);
        }
        for (mine, theirs) in self.per_second.iter_mut().zip(&other.per_second) {
            *mine += theirs;
        }
        self.order.extend_from_slice(&other.order);
    }

    /// Completions per second inside the window, or inside its first
    /// `seconds` when the phase finished early.
    pub fn rate(&self, seconds: Option<f64>) -> f64 {
        self.in_window as f64 / seconds.unwrap_or(self.window.seconds())
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

/// Deliveries that arrived while a message of strictly higher tag (priority)
/// was still to come: zero when a backlog was delivered highest priority first.
pub fn inversions(order: &[u8]) -> u64 {
    let mut highest_after = 0u8;
    let mut inverted = 0;
    for &tag in order.iter().rev() {
        if tag < highest_after {
            inverted += 1;
        }
        highest_after = highest_after.max(tag);
    }
    inverted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_payload_carries_its_send_time_and_tag() {
        let clock = Clock::new();
        let at = Instant::now() + Duration::from_millis(3);
        let payload = clock.payload(at, 128);
        assert_eq!(payload.len(), 128);
        let back = clock.sent_at(&payload).expect("stamped");
        assert!(back.max(at) - back.min(at) < Duration::from_micros(1));
        assert_eq!(clock.payload(at, 2).len(), 8);
        assert!(clock.sent_at(b"short").is_none());
        let tagged = clock.tagged_payload(at, 8, 3);
        assert_eq!(tagged.len(), 9);
        assert_eq!(Clock::tag(&tagged), Some(3));
        assert!(clock.sent_at(&tagged).is_some());
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
        assert!((recorder.rate(None) - 1.0).abs() < 1e-9);
        assert!((recorder.rate(Some(0.5)) - 4.0).abs() < 1e-9);
        assert_eq!(recorder.per_second, vec![1, 2, 0, 0, 1]);
    }

    #[tokio::test]
    async fn merged_timelines_add_up() {
        let window = Window::starting_now(Duration::ZERO, Duration::from_secs(10));
        let mut a = Recorder::new(window);
        let mut b = Recorder::new(window);
        a.count(window.start);
        b.count(window.start + Duration::from_millis(2500));
        b.count(window.start);
        a.merge(&b);
        assert_eq!(a.per_second, vec![2, 0, 1]);
        assert_eq!(a.total, 3);
        assert!(a.percentiles().is_none());
    }

    #[test]
    fn inversions_count_deliveries_that_overtook_a_higher_priority() {
        assert_eq!(inversions(&[3, 3, 2, 1, 0, 0]), 0);
        assert_eq!(inversions(&[0, 1, 2, 3]), 3);
        assert_eq!(inversions(&[3, 0, 2, 1]), 1);
        assert_eq!(inversions(&[2, 0, 3, 1]), 2);
        assert_eq!(inversions(&[]), 0);
    }
}

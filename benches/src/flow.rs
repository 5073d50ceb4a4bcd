//! The flow of a run: pacing producers, counting deliveries across consumers, and collecting publish acks.

use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::measure::{Recorder, Window};

/// Paces a producer at a fixed rate, or not at all, and ends its run at the
/// end of the window or after a number of messages.
///
/// With a rate, each message is stamped with its *intended* send time, so a
/// stall shows up as latency instead of silently lowering the rate
/// (no coordinated omission).
#[derive(Debug)]
pub struct Pacer {
    start: Instant,
    stop_at: Instant,
    rate: Option<f64>,
    limit: Option<u64>,
    sent: u64,
}

impl Pacer {
    pub fn new(window: Window, rate: Option<f64>, limit: Option<u64>) -> Self {
        Self {
            start: window.start,
            stop_at: window.stop_at,
            rate,
            limit,
            sent: 0,
        }
    }

    /// Waits for the next send slot and returns its time, or `None` once the
    /// window has ended or the limit is reached.
    pub async fn next(&mut self) -> Option<Instant> {
        if self.limit.is_some_and(|limit| self.sent >= limit) {
            return None;
        }
        let Some(rate) = self.rate else {
            // Unpaced: no timer, which would cost a tick per message.
            let now = Instant::now();
            if now >= self.stop_at {
                return None;
            }
            self.sent += 1;
            return Some(now);
        };
        let at = self.start + Duration::from_secs_f64(self.sent as f64 / rate);
        if at >= self.stop_at {
            return None;
        }
        self.sent += 1;
        tokio::time::sleep_until(at).await;
        Some(at)
    }

    /// Messages handed out so far.
    pub fn sent(&self) -> u64 {
        self.sent
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

    /// Waits until `target` deliveries have arrived, at most until
    /// `deadline`; returns whether they did.
    pub async fn wait_for(&self, target: u64, deadline: Instant) -> bool {
        let reached = self.reached.notified();
        tokio::pin!(reached);
        // Register before publishing the target, so a consumer that crosses
        // it right after cannot notify before anyone listens.
        reached.as_mut().enable();
        self.target.store(target, Ordering::SeqCst);
        if self.delivered() >= target {
            return true;
        }
        tokio::time::timeout_at(deadline, reached).await.is_ok() || self.delivered() >= target
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

    #[tokio::test(start_paused = true)]
    async fn the_pacer_keeps_its_rate_and_its_limit() {
        let window = Window::starting_now(Duration::ZERO, Duration::from_secs(1));
        let mut pacer = Pacer::new(window, Some(1000.0), None);
        let mut last = window.start;
        for _ in 0..=100 {
            last = pacer.next().await.expect("inside the window");
        }
        assert_eq!(last - window.start, Duration::from_millis(100));
        assert!(Instant::now() >= last);
        let mut limited = Pacer::new(window, None, Some(2));
        assert!(limited.next().await.is_some());
        assert!(limited.next().await.is_some());
        assert!(limited.next().await.is_none());
        assert_eq!(limited.sent(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_pacer_stops_at_the_end_of_the_window() {
        let window = Window::starting_now(Duration::ZERO, Duration::from_millis(10));
        let mut pacer = Pacer::new(window, Some(1000.0), None);
        let mut count = 0;
        while pacer.next().await.is_some() {
            count += 1;
        }
        assert_eq!(count, 10);
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
        let soon = Instant::now() + Duration::from_secs(10);
        assert!(progress.wait_for(1000, soon).await);
        consumer.await.expect("consumer");
        let brief = Instant::now() + Duration::from_millis(10);
        assert!(!progress.wait_for(2000, brief).await);
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

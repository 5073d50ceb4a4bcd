//! What one system's run of one scenario recorded, and its summary: the figures `report.json` holds per system.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::failover::FailoverTimes;
use crate::load::Produced;
use crate::measure::{Percentiles, Recorder, Window, inversions};
use crate::memory::MemoryUse;
use crate::scenario::Primary;

/// Everything one phase of a run recorded, before it is summarised.
#[derive(Debug)]
pub struct Outcome {
    window: Window,
    pub sent: u64,
    pub sent_in_window: u64,
    pub acks: Option<Recorder>,
    pub deliveries: Option<Recorder>,
    /// Whether every expected delivery arrived before the drain ended.
    pub drained: bool,
    /// Expected deliveries that never arrived.
    pub lost: u64,
    /// Of a backlog, the messages not consumed when the phase ended.
    pub left: Option<u64>,
    /// Seconds measured, when the phase ended before its window did.
    pub span: Option<f64>,
    pub server_cpu_percent: Option<f64>,
    pub bench_cpu_percent: Option<f64>,
}

impl Outcome {
    pub fn new(window: Window) -> Self {
        Self {
            window,
            sent: 0,
            sent_in_window: 0,
            acks: None,
            deliveries: None,
            drained: true,
            lost: 0,
            left: None,
            span: None,
            server_cpu_percent: None,
            bench_cpu_percent: None,
        }
    }

    pub fn add_produced(&mut self, produced: Produced) {
        self.sent += produced.sent;
        self.sent_in_window += produced.sent_in_window;
        if let Some(acks) = produced.acks {
            merge_into(&mut self.acks, &acks);
        }
    }

    pub fn add_deliveries(&mut self, recorder: &Recorder) {
        merge_into(&mut self.deliveries, recorder);
    }

    /// Messages the system took: those acked, or those sent where there are no acks.
    pub fn published(&self) -> u64 {
        self.acks.as_ref().map_or(self.sent, |acks| acks.total)
    }

    /// When the phase ended: the end of its window, or sooner when it finished early.
    pub fn ended(&self) -> Instant {
        match self.span {
            Some(span) => self.window.measure_from + Duration::from_secs_f64(span),
            None => self.window.stop_at,
        }
    }

    fn seconds(&self) -> f64 {
        self.span.unwrap_or(self.window.seconds())
    }

    /// Publishes acked per second (sent per second where there are no acks).
    fn publish_rate(&self) -> f64 {
        match &self.acks {
            Some(acks) => acks.rate(self.span),
            None => self.sent_in_window as f64 / self.seconds(),
        }
    }

    /// What filling a backlog took, for the report of the phase that consumes it.
    pub fn fill(&self) -> Fill {
        Fill {
            messages: self.published(),
            seconds: round1(self.seconds()),
            msgs_per_s: round1(self.publish_rate()),
        }
    }

    /// The summary of a fill phase, with what the fill took beside it.
    pub fn measured_with_fill(self, primary: Primary) -> Measured {
        let fill = self.fill();
        self.measured(primary).with_fill(Some(fill))
    }

    /// The summary, with `primary` as the latency of p50/p99 and the
    /// throughput of `msgs_per_s` (acks for publish scenarios, deliveries otherwise).
    pub fn measured(self, primary: Primary) -> Measured {
        let publish_rate = self.publish_rate();
        let delivery_rate = self.deliveries.as_ref().map(|d| d.rate(self.span));
        let publish_to_ack = self.acks.as_ref().and_then(Recorder::percentiles);
        let publish_to_delivery = self.deliveries.as_ref().and_then(Recorder::percentiles);
        let (msgs_per_s, latency, label, timeline) = match primary {
            Primary::PublishToAck => (publish_rate, publish_to_ack, "publish_to_ack", &self.acks),
            Primary::PublishToDelivery => (
                delivery_rate.unwrap_or(0.0),
                publish_to_delivery,
                "publish_to_delivery",
                &self.deliveries,
            ),
            Primary::Consume => (delivery_rate.unwrap_or(0.0), None, "none", &self.deliveries),
        };
        let per_second = timeline
            .as_ref()
            .map(|r| r.per_second.clone())
            .unwrap_or_default();
        let order = self.deliveries.as_ref().map_or(&[][..], |d| &d.order[..]);
        let priority = (!order.is_empty()).then(|| PriorityOrder {
            deliveries: order.len() as u64,
            inversions: inversions(order),
            honoured: inversions(order) == 0,
        });
        let mut errors = 0;
        let mut first_error = None;
        for recorder in [&self.acks, &self.deliveries].into_iter().flatten() {
            errors += recorder.errors;
            if first_error.is_none() {
                first_error.clone_from(&recorder.first_error);
            }
        }
        Measured {
            msgs_per_s: round1(msgs_per_s),
            p50_us: latency.map(|p| p.p50_us),
            p99_us: latency.map(|p| p.p99_us),
            latency: label,
            publish_rate: round1(publish_rate),
            delivery_rate: delivery_rate.map(round1),
            publish_to_ack,
            publish_to_delivery,
            sent: self.sent,
            acked: self.acks.as_ref().map(|acks| acks.total),
            delivered: self.deliveries.as_ref().map(|d| d.total),
            lost: self.lost,
            errors,
            first_error,
            measured_s: round1(self.seconds()),
            warmup_s: round1((self.window.measure_from - self.window.start).as_secs_f64()),
            per_second,
            backlog: None,
            backlog_left: self.left,
            priority,
            server_cpu_percent: self.server_cpu_percent,
            bench_cpu_percent: self.bench_cpu_percent,
            server_log_warnings: 0,
            server_log_sample: Vec::new(),
            server_metrics: BTreeMap::new(),
            memory: None,
            failover: None,
        }
    }
}

fn merge_into(slot: &mut Option<Recorder>, recorder: &Recorder) {
    match slot {
        Some(existing) => existing.merge(recorder),
        None => *slot = Some(recorder.clone()),
    }
}

pub fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// Publishing a backlog before it was consumed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Fill {
    /// Messages acked into the backlog.
    pub messages: u64,
    pub seconds: f64,
    pub msgs_per_s: f64,
}

/// Whether a backlog of mixed priorities was delivered highest priority first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PriorityOrder {
    /// Deliveries whose order was checked.
    pub deliveries: u64,
    /// Deliveries that came while a message of higher priority was still to come.
    pub inversions: u64,
    /// No inversions: strict priority order.
    pub honoured: bool,
}

/// One system's figures for one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    /// Acks per second for publish scenarios, deliveries per second (over all subscribers) otherwise.
    pub msgs_per_s: f64,
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    /// Which latency `p50_us` and `p99_us` are (`none` for a backlog).
    pub latency: &'static str,
    /// Publishes acked per second (sent per second where the system gives no ack).
    pub publish_rate: f64,
    pub delivery_rate: Option<f64>,
    pub publish_to_ack: Option<Percentiles>,
    pub publish_to_delivery: Option<Percentiles>,
    /// Messages handed to the client, warm-up and drain included.
    pub sent: u64,
    pub acked: Option<u64>,
    pub delivered: Option<u64>,
    /// Deliveries expected from the messages published that never arrived.
    pub lost: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Seconds the rates are over: the duration, or less when a backlog ran out sooner.
    pub measured_s: f64,
    /// Seconds of warm-up before measuring started.
    pub warmup_s: f64,
    /// Completions (those `msgs_per_s` counts) in each second from the start
    /// of the load, warm-up and drain included.
    pub per_second: Vec<u64>,
    /// Publishing the backlog, in a backlog scenario.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog: Option<Fill>,
    /// Backlog messages not consumed within the duration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog_left: Option<u64>,
    /// The order of a backlog of mixed priorities.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<PriorityOrder>,
    /// CPU used during the measured window, in percent of one core (the servers' added up).
    pub server_cpu_percent: Option<f64>,
    pub bench_cpu_percent: Option<f64>,
    pub server_log_warnings: usize,
    pub server_log_sample: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub server_metrics: BTreeMap<String, f64>,
    /// The server's resident memory, in memory-backlog (its fields sit
    /// beside the others: `rss_peak_bytes`, `within_bound`, ...).
    #[serde(flatten)]
    pub memory: Option<MemoryUse>,
    /// The leader's failover times, in leader-failover (`failover_median_ms`,
    /// `failover_worst_ms`, `failover_rounds_ms`, ... beside the others).
    #[serde(flatten)]
    pub failover: Option<FailoverTimes>,
}

impl Measured {
    /// Adds what the server's log and metrics said.
    pub fn with_server(mut self, warnings: (usize, Vec<String>), metrics: BTreeMap<String, f64>) -> Self {
        (self.server_log_warnings, self.server_log_sample) = warnings;
        self.server_metrics = metrics;
        self
    }

    /// Adds what publishing the backlog took.
    pub fn with_fill(mut self, fill: Option<Fill>) -> Self {
        self.backlog = fill;
        self
    }

    /// Adds what the server's resident memory did.
    pub fn with_memory(mut self, memory: Option<MemoryUse>) -> Self {
        self.memory = memory;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_drain_that_ends_early_is_rated_over_its_span() {
        let window = Window::starting_now(Duration::ZERO, Duration::from_secs(10));
        let mut deliveries = Recorder::new(window);
        for tag in [3, 1, 2, 0] {
            deliveries.count(window.start + Duration::from_millis(100));
            deliveries.note_tag(tag);
        }
        let mut outcome = Outcome::new(window);
        outcome.add_deliveries(&deliveries);
        outcome.span = Some(2.0);
        outcome.left = Some(0);
        assert_eq!(outcome.ended(), window.measure_from + Duration::from_secs(2));
        let measured = outcome.measured(Primary::Consume);
        assert_eq!(measured.msgs_per_s, 2.0);
        assert_eq!(measured.p50_us, None);
        assert_eq!(measured.per_second, vec![4]);
        let priority = measured.priority.expect("tags were noted");
        assert_eq!(
            (priority.deliveries, priority.inversions, priority.honoured),
            (4, 1, false)
        );
        let json = serde_json::to_value(&measured).expect("json");
        assert_eq!(json["latency"], "none");
        assert_eq!(json["backlog_left"], 0);
    }
}

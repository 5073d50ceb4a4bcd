//! The report of a chaos run: `report.json`, `summary.txt`, and the one-line
//! verdict printed last.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use super::Options;
use super::checker::Violation;
use super::nemesis::FaultRecord;
use super::timeline;
use super::workload::{ConsumerLog, Flavour, Ledger};

/// Counts of one consumer.
#[derive(Debug, Clone, Default)]
pub struct ConsumerCounts {
    pub deliveries: usize,
    pub distinct: usize,
    pub confirmed: usize,
    pub left_unacked: usize,
    pub ack_failures: usize,
    pub resubscribes: usize,
    pub crossed_acks: usize,
    pub last_ack_error: Option<String>,
    pub last_stream_error: Option<String>,
}

/// Everything a run found.
#[derive(Debug, Clone)]
pub struct Report {
    pub seed: u64,
    pub nodes: usize,
    pub minutes: f64,
    pub faults: Vec<FaultRecord>,
    pub violations: Vec<Violation>,
    /// From the end of the faults to a healthy cluster.
    pub final_recovery: Option<Duration>,
    /// From the end of the faults to the first acknowledged publish.
    pub first_publish_after_faults: Option<Duration>,
    pub tried: usize,
    /// Acknowledged publishes by kind: exactly_once, at_least_once, expiring.
    pub acked: BTreeMap<&'static str, usize>,
    pub duplicates: usize,
    pub gave_up: usize,
    pub republished: usize,
    pub stored: usize,
    pub consumers: BTreeMap<&'static str, ConsumerCounts>,
    pub terms_with_leader: usize,
    pub leader_events: usize,
    /// Seconds from the start to each acknowledged publish, and to each
    /// publish error, for the timeline.
    pub acked_at_s: Vec<f64>,
    pub errors_at_s: Vec<f64>,
}

fn flavour_name(flavour: Flavour) -> &'static str {
    match flavour {
        Flavour::ExactlyOnce => "exactly_once",
        Flavour::AtLeastOnce => "at_least_once",
        Flavour::Expiring => "expiring",
    }
}

fn seconds(duration: Option<Duration>) -> Value {
    duration.map_or(Value::Null, |d| {
        json!((d.as_secs_f64() * 1000.0).round() / 1000.0)
    })
}

impl Report {
    pub fn new(options: &Options) -> Self {
        Self {
            seed: options.seed,
            nodes: options.nodes,
            minutes: options.minutes,
            faults: Vec::new(),
            violations: Vec::new(),
            final_recovery: None,
            first_publish_after_faults: None,
            tried: 0,
            acked: BTreeMap::new(),
            duplicates: 0,
            gave_up: 0,
            republished: 0,
            stored: 0,
            consumers: BTreeMap::new(),
            terms_with_leader: 0,
            leader_events: 0,
            acked_at_s: Vec::new(),
            errors_at_s: Vec::new(),
        }
    }

    /// Takes the counts of the publishers and the consumers (eo, alo, ttl).
    pub fn set_workload(&mut self, ledger: &Ledger, logs: &[ConsumerLog]) {
        self.tried = ledger.tried.len();
        for published in ledger.acked.values() {
            *self.acked.entry(flavour_name(published.flavour)).or_default() += 1;
        }
        self.duplicates = ledger.acked.values().filter(|p| p.duplicate).count();
        self.gave_up = ledger.failed.len();
        self.republished = ledger.republished;
        self.acked_at_s = ledger.acked_at_s.clone();
        self.errors_at_s = ledger.errors_at_s.clone();
        for (name, log) in ["eo", "alo", "ttl"].into_iter().zip(logs) {
            let counts = ConsumerCounts {
                deliveries: log.deliveries,
                distinct: log.delivered.len(),
                confirmed: log.confirmed.len(),
                left_unacked: log.left_unacked,
                ack_failures: log.ack_failures,
                resubscribes: log.resubscribes,
                crossed_acks: log.crossed_acks,
                last_ack_error: log.last_ack_error.clone(),
                last_stream_error: log.last_stream_error.clone(),
            };
            self.consumers.insert(name, counts);
        }
    }

    pub fn acked_total(&self) -> usize {
        self.acked.values().sum()
    }

    pub fn faults_by_kind(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for fault in &self.faults {
            *counts.entry(fault.kind.name()).or_default() += 1;
        }
        counts
    }

    /// The longest recovery after one fault's heal, or after the faults stopped.
    pub fn longest_recovery(&self) -> Option<Duration> {
        self.faults
            .iter()
            .filter_map(|f| f.recovery)
            .chain(self.final_recovery)
            .max()
    }

    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn to_json(&self) -> Value {
        let faults: Vec<Value> = self
            .faults
            .iter()
            .map(|f| {
                json!({
                    "kind": f.kind.name(), "detail": f.detail, "started_s": f.started_s,
                    "healed_s": f.healed_s, "recovery_s": seconds(f.recovery), "error": f.error,
                })
            })
            .collect();
        let violations: Vec<Value> = self
            .violations
            .iter()
            .map(|v| json!({"kind": v.kind, "detail": v.detail}))
            .collect();
        let consumers: BTreeMap<&str, Value> = self
            .consumers
            .iter()
            .map(|(name, c)| {
                let value = json!({
                    "deliveries": c.deliveries, "distinct_ids": c.distinct, "acks_confirmed": c.confirmed,
                    "left_unacked_on_purpose": c.left_unacked, "ack_failures": c.ack_failures,
                    "resubscribes": c.resubscribes, "deliveries_crossing_a_confirmed_ack": c.crossed_acks,
                    "last_ack_error": c.last_ack_error, "last_stream_error": c.last_stream_error,
                });
                (*name, value)
            })
            .collect();
        json!({
            "verdict": if self.passed() { "pass" } else { "fail" },
            "seed": self.seed,
            "nodes": self.nodes,
            "minutes": self.minutes,
            "publishes": {
                "tried": self.tried, "acknowledged": self.acked_total(), "acknowledged_by_kind": self.acked,
                "answered_duplicate": self.duplicates, "client_gave_up": self.gave_up,
                "republished_by_publisher": self.republished, "distinct_ids_stored": self.stored,
            },
            "consumers": consumers,
            "faults_by_kind": self.faults_by_kind(),
            "faults": faults,
            "violations": violations,
            "violations_count": self.violations.len(),
            "recovery": {
                "longest_s": seconds(self.longest_recovery()),
                "after_faults_stopped_s": seconds(self.final_recovery),
                "first_publish_after_faults_s": seconds(self.first_publish_after_faults),
            },
            "leadership": {"terms_with_a_leader": self.terms_with_leader, "leader_changed_events": self.leader_events},
        })
    }

    /// The one-line verdict.
    pub fn one_line(&self, dir: &Path) -> String {
        let faults: Vec<String> = self
            .faults_by_kind()
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        format!(
            "chaos: {} seed={} nodes={} minutes={} acked={} faults={} ({}) violations={} longest_recovery={} report={}",
            if self.passed() { "PASS" } else { "FAIL" },
            self.seed,
            self.nodes,
            self.minutes,
            self.acked_total(),
            self.faults.len(),
            faults.join(" "),
            self.violations.len(),
            self.longest_recovery()
                .map_or_else(|| "none".to_string(), |d| format!("{:.1}s", d.as_secs_f64())),
            dir.display()
        )
    }

    /// The human summary (without the one-line verdict).
    pub fn summary(&self) -> String {
        let mut text = String::new();
        text.push_str(&format!(
            "seed {}, {} nodes, {} minutes of faults\n",
            self.seed, self.nodes, self.minutes
        ));
        text.push_str(&format!(
            "publishes: {} tried, {} acknowledged {:?}, {} answered duplicate, {} given up by the client, \
             {} republished, {} distinct ids stored in chaos.eo and chaos.alo\n",
            self.tried,
            self.acked_total(),
            self.acked,
            self.duplicates,
            self.gave_up,
            self.republished,
            self.stored
        ));
        for (name, c) in &self.consumers {
            text.push_str(&format!(
                "consumer {name}: {} deliveries of {} ids, {} acks confirmed, {} left unacked on purpose, \
                 {} ack failures, {} re-attachments, {} deliveries crossing a confirmed ack\n",
                c.deliveries,
                c.distinct,
                c.confirmed,
                c.left_unacked,
                c.ack_failures,
                c.resubscribes,
                c.crossed_acks
            ));
        }
        text.push_str(&format!("faults by kind: {:?}\n", self.faults_by_kind()));
        for f in &self.faults {
            text.push_str(&format!(
                "  t={:>6.1}s {:<18} {} -> recovered in {}\n",
                f.started_s,
                f.kind.name(),
                f.detail,
                f.recovery.map_or_else(
                    || format!("NEVER ({:?})", f.error),
                    |d| format!("{:.1}s", d.as_secs_f64())
                )
            ));
        }
        text.push_str(&format!(
            "recovery: longest {:?}, after the faults stopped {:?}, first publish after the faults {:?}\n",
            self.longest_recovery(),
            self.final_recovery,
            self.first_publish_after_faults
        ));
        text.push_str(&format!(
            "leadership: {} terms with a leader, {} leader_changed events, at most one leader per term: {}\n",
            self.terms_with_leader,
            self.leader_events,
            !self
                .violations
                .iter()
                .any(|v| v.kind == "two_leaders_in_one_term")
        ));
        text.push_str(&format!("violations: {}\n", self.violations.len()));
        for v in &self.violations {
            text.push_str(&format!("  {}: {}\n", v.kind, v.detail));
        }
        text
    }

    /// Writes `report.json`, `summary.txt` and `timeline.png` into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join("report.json"),
            serde_json::to_string_pretty(&self.to_json())?,
        )?;
        std::fs::write(
            dir.join("summary.txt"),
            format!("{}{}\n", self.summary(), self.one_line(dir)),
        )?;
        timeline::draw(dir, &self.faults, &self.acked_at_s, &self.errors_at_s)?;
        Ok(())
    }
}

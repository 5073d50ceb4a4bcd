//! The human table of a report: both systems' figures side by side, the
//! memory and failover tables, and the notes below them.

use std::fmt::Write as _;

use crate::failover::FailoverTimes;
use crate::memory::{MIB, MemoryUse, RSS_ALLOWANCE_MIB, RSS_SETTLE_S};
use crate::report::{Report, ScenarioReport, SystemResult};
use crate::scenario::ScenarioName;

impl Report {
    /// The human table, with notes on priorities, clusters, the machine and any failures below it.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<16} {:>12} {:>9} {:>9} | {:>12} {:>9} {:>9} | {:>7} {:>7}",
            "scenario",
            "hermod msg/s",
            "p50 us",
            "p99 us",
            "nats msg/s",
            "p50 us",
            "p99 us",
            "ratio",
            "p99 x"
        );
        let _ = writeln!(out, "{}", "-".repeat(105));
        let mut notes = Vec::new();
        for scenario in &self.scenarios {
            let hermod = cells(Some(&scenario.hermod));
            let nats = cells(scenario.nats.as_ref());
            let ratio = scenario.ratio.map_or("-".to_owned(), |r| format!("{r:.2}"));
            let p99_ratio = scenario.p99_ratio.map_or("-".to_owned(), |r| format!("{r:.2}"));
            let _ = writeln!(
                out,
                "{:<16} {} | {} | {:>7} {:>7}",
                scenario.name, hermod, nats, ratio, p99_ratio
            );
            notes.extend(scenario_notes(scenario));
        }
        if let Some(note) = self.cluster_note() {
            notes.push(note);
        }
        if self.scenario(ScenarioName::MemoryBacklog).is_some() {
            notes.push(
                "memory-backlog: ratio = Hermod peak RSS / NATS peak RSS (lower is better), msg/s the fill's, latency publish->ack."
                    .to_owned(),
            );
        }
        if self.scenario(ScenarioName::LeaderFailover).is_some() {
            notes.push(
                "leader-failover: ratio = Hermod median failover / NATS median failover (lower is better); msg/s and latency\n\
                 are the one-at-a-time publisher's over every round, kills included."
                    .to_owned(),
            );
        }
        let m = &self.machine;
        let _ = writeln!(
            out,
            "\nratio = Hermod msg/s / NATS msg/s; p99 x = Hermod p99 / NATS p99. Latency is publish->ack for\n\
             *-publish scenarios, publish->delivery for fan-out and latency-*, none for backlogs.\n\
             {} cores, {}, commit {}{}.",
            m.nproc,
            m.date,
            m.git_commit.as_deref().unwrap_or("unknown"),
            if m.git_dirty == Some(true) {
                " (with local changes)"
            } else {
                ""
            }
        );
        for note in notes {
            let _ = writeln!(out, "{note}");
        }
        if let Some(memory) = self.memory_table() {
            let _ = write!(out, "\n{memory}");
        }
        if let Some(failover) = self.failover_table() {
            let _ = write!(out, "\n{failover}");
        }
        out
    }

    /// leader-failover's times of both systems, round by round, if it ran.
    fn failover_table(&self) -> Option<String> {
        let scenario = self.scenario(ScenarioName::LeaderFailover)?;
        let hermod = failover_of(Some(&scenario.hermod));
        let nats = failover_of(scenario.nats.as_ref());
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<16} {:>13} {:>9} | {:>13} {:>9} | {:>9}",
            "failover (ms)", "hermod median", "worst", "nats median", "worst", "ratio"
        );
        let _ = writeln!(out, "{}", "-".repeat(79));
        let _ = writeln!(
            out,
            "{:<16} {} | {} | {:>9}",
            scenario.name,
            failover_cells(hermod),
            failover_cells(nats),
            scenario.ratio.map_or("-".to_owned(), |r| format!("{r:.2}"))
        );
        for (system, times) in [("hermod", hermod), ("nats", nats)] {
            if let Some(times) = times {
                let rounds: Vec<String> = times
                    .failover_round_detail
                    .iter()
                    .map(|round| format!("{} ({})", round.failover_ms, round.killed))
                    .collect();
                let _ = writeln!(out, "{system} rounds: {}", rounds.join(", "));
            }
        }
        let _ = writeln!(
            out,
            "failover = SIGKILL of the leader -> ack of the first publish attempt started after it was gone\n\
             (one message at a time, attempts time out after {} ms and are sent again after {} ms);\n\
             ratio = Hermod median / NATS median (lower is better).",
            hermod.or(nats).map_or(0, |t| t.failover_attempt_timeout_ms),
            hermod.or(nats).map_or(0, |t| t.failover_retry_pause_ms),
        );
        Some(out)
    }

    /// The resident memory of memory-backlog's servers and Hermod's verdict, if it ran.
    fn memory_table(&self) -> Option<String> {
        let scenario = self.scenario(ScenarioName::MemoryBacklog)?;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<16} {:>11} {:>9} {:>9} {:>9} {:>9} {:>6} | {:>11} {:>9} {:>9} | {:>9}",
            "memory (MiB)",
            "hermod peak",
            "end",
            "per 1M",
            "cache",
            "bound",
            "within",
            "nats peak",
            "end",
            "per 1M",
            "rss ratio"
        );
        let _ = writeln!(out, "{}", "-".repeat(121));
        let hermod = memory_of(Some(&scenario.hermod));
        let nats = memory_of(scenario.nats.as_ref());
        let bound = hermod.and_then(|h| h.bound);
        let _ = writeln!(
            out,
            "{:<16} {} {:>9} {:>9} {:>6} | {} | {:>9}",
            scenario.name,
            rss_cells(hermod),
            mib(bound.map(|b| b.cache_bytes)),
            mib(bound.map(|b| b.bound_bytes)),
            bound.map_or("-", |b| if b.within_bound { "yes" } else { "NO" }),
            rss_cells(nats),
            scenario.ratio.map_or("-".to_owned(), |r| format!("{r:.2}"))
        );
        let messages = scenario
            .hermod
            .measured()
            .and_then(|m| m.backlog)
            .map_or(0, |fill| fill.messages);
        let cache = match bound {
            Some(b) if b.cache_mb_passed => "passed as --cache-mb",
            Some(_) => "the broker's default: it has no --cache-mb",
            None => "unknown",
        };
        let _ = writeln!(
            out,
            "peak = most resident (VmHWM); end = VmRSS {RSS_SETTLE_S} s after the fill ({messages} messages); per 1M = peak growth per\n\
             million messages; bound = Hermod's cache ({cache}) + {RSS_ALLOWANCE_MIB} MiB, within = peak <= bound;\n\
             rss ratio = Hermod peak / NATS peak (lower is better)."
        );
        Some(out)
    }

    /// Hermod (and the peer) on three nodes against one, from `cluster-publish` and `alo-publish`.
    fn cluster_note(&self) -> Option<String> {
        let one = self.scenario(ScenarioName::AloPublish)?;
        let three = self.scenario(ScenarioName::ClusterPublish)?;
        let mut parts = Vec::new();
        for (system, single) in one.systems() {
            if let Some((_, triple)) = three.systems().into_iter().find(|(s, _)| *s == system)
                && single.msgs_per_s > 0.0
            {
                parts.push(format!(
                    "{system} {:.0} -> {:.0} msg/s (x{:.2})",
                    single.msgs_per_s,
                    triple.msgs_per_s,
                    triple.msgs_per_s / single.msgs_per_s
                ));
            }
        }
        (!parts.is_empty()).then(|| format!("1 node -> 3 nodes (durable publish): {}", parts.join("; ")))
    }
}

/// Failures, losses, backlog and priority-order notes of one scenario.
fn scenario_notes(scenario: &ScenarioReport) -> Vec<String> {
    let mut notes = Vec::new();
    for (system, result) in [
        ("hermod", Some(&scenario.hermod)),
        ("nats", scenario.nats.as_ref()),
    ] {
        let name = scenario.name;
        match result {
            Some(SystemResult::Failed { error }) => notes.push(format!("problem: {name} {system}: {error}")),
            Some(SystemResult::Ran(m)) => {
                if m.errors > 0 || m.lost > 0 {
                    notes.push(format!(
                        "problem: {name} {system}: {} errors, {} lost (first error: {})",
                        m.errors,
                        m.lost,
                        m.first_error.as_deref().unwrap_or("none")
                    ));
                }
                if let (Some(fill), Some(_)) = (&m.backlog, &m.memory) {
                    notes.push(format!(
                        "{name} {system}: {} messages published at {:.0} msg/s in {:.1} s, none consumed",
                        fill.messages, fill.msgs_per_s, fill.seconds
                    ));
                } else if let Some(fill) = &m.backlog {
                    notes.push(format!(
                        "{name} {system}: backlog of {} published at {:.0} msg/s; {} left unconsumed after {:.1} s",
                        fill.messages,
                        fill.msgs_per_s,
                        m.backlog_left.unwrap_or(0),
                        m.measured_s
                    ));
                }
                if let Some(order) = &m.priority {
                    notes.push(format!(
                        "{name} {system}: priority order {} ({} of {} deliveries came before a higher priority)",
                        if order.honoured { "honoured" } else { "NOT honoured" },
                        order.inversions,
                        order.deliveries
                    ));
                }
            }
            None => {}
        }
    }
    notes
}

/// The memory figures of a system that ran memory-backlog.
fn memory_of(result: Option<&SystemResult>) -> Option<&MemoryUse> {
    result?.measured()?.memory.as_ref()
}

/// The failover times of a system that ran leader-failover.
fn failover_of(result: Option<&SystemResult>) -> Option<&FailoverTimes> {
    result?.measured()?.failover.as_ref()
}

/// Median and worst columns of one system's failover times.
fn failover_cells(times: Option<&FailoverTimes>) -> String {
    match times {
        Some(t) => format!("{:>13.0} {:>9}", t.failover_median_ms, t.failover_worst_ms),
        None => format!("{:>13} {:>9}", "-", "-"),
    }
}

/// Peak, end and per-million-messages columns of one system's memory, in MiB.
fn rss_cells(memory: Option<&MemoryUse>) -> String {
    format!(
        "{:>11} {:>9} {:>9}",
        mib(memory.map(|m| m.rss_peak_bytes)),
        mib(memory.map(|m| m.rss_end_bytes)),
        mib(memory.map(|m| m.rss_per_million_msgs_bytes))
    )
}

/// Bytes as MiB with one decimal, or "-".
fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("-".to_owned(), |b| format!("{:.1}", b as f64 / MIB as f64))
}

/// Throughput, p50 and p99 columns of one system.
fn cells(result: Option<&SystemResult>) -> String {
    let micros = |value: Option<u64>| value.map_or("-".to_owned(), |v| v.to_string());
    match result {
        Some(SystemResult::Ran(m)) => format!(
            "{:>12.1} {:>9} {:>9}",
            m.msgs_per_s,
            micros(m.p50_us),
            micros(m.p99_us)
        ),
        Some(SystemResult::Failed { .. }) => format!("{:>12} {:>9} {:>9}", "FAILED", "-", "-"),
        None => format!("{:>12} {:>9} {:>9}", "-", "-", "-"),
    }
}

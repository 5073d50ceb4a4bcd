//! Resident memory of a server under test, sampled from /proc while a backlog fills and settles.

use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::outcome::Outcome;

/// Pause between two samples of the server's resident memory, in milliseconds.
const RSS_SAMPLE_INTERVAL_MS: u64 = 250;
/// How long sampling goes on after the fill, in seconds, so memory the
/// server frees (or still takes) once the load stops shows in the end figure.
pub const RSS_SETTLE_S: u64 = 5;
/// What the broker may hold beyond its configured cache, in MiB: the
/// verdict is peak RSS <= cache + this.
pub const RSS_ALLOWANCE_MIB: u64 = 256;
/// Bytes in a MiB.
pub const MIB: u64 = 1024 * 1024;
/// Bytes in the kB unit /proc/PID/status uses.
const KIB: u64 = 1024;
/// Messages per "million messages" of the per-message figure.
const MILLION: f64 = 1_000_000.0;

/// The resident memory of one process right now and its high-water mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Resident {
    /// VmRSS: resident now.
    rss_bytes: u64,
    /// VmHWM: the most the process has had resident since it started.
    hwm_bytes: u64,
}

/// Reads VmRSS and VmHWM of process `pid`.
fn resident(pid: u32) -> anyhow::Result<Resident> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_status(&text).with_context(|| format!("{path} has no VmRSS or VmHWM"))
}

/// VmRSS and VmHWM from the text of /proc/PID/status (lines like `VmRSS:   1234 kB`).
fn parse_status(text: &str) -> Option<Resident> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|line| line.starts_with(name))?;
        let kib: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
        Some(kib * KIB)
    };
    Some(Resident {
        rss_bytes: field("VmRSS:")?,
        hwm_bytes: field("VmHWM:")?,
    })
}

/// The cache the broker ran with and whether its peak stayed within the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bound {
    /// The block cache and memtables the broker was configured with.
    pub cache_bytes: u64,
    /// Whether the harness passed `--cache-mb` (false: the broker has no such
    /// flag yet and ran with its own default, which `cache_bytes` assumes).
    pub cache_mb_passed: bool,
    /// `cache_bytes` + 256 MiB.
    pub bound_bytes: u64,
    /// Whether `rss_peak_bytes` <= `bound_bytes`.
    pub within_bound: bool,
}

impl Bound {
    /// The bound for a broker configured with `cache_mb` MiB, against `peak_bytes`.
    pub fn new(cache_mb: u64, cache_mb_passed: bool, peak_bytes: u64) -> Self {
        let cache_bytes = cache_mb * MIB;
        let bound_bytes = cache_bytes + RSS_ALLOWANCE_MIB * MIB;
        Self {
            cache_bytes,
            cache_mb_passed,
            bound_bytes,
            within_bound: peak_bytes <= bound_bytes,
        }
    }
}

/// What a server's resident memory did over a fill and the settle after it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryUse {
    /// VmRSS right before the fill started.
    pub rss_start_bytes: u64,
    /// The highest resident memory of the process's life: its VmHWM after
    /// the settle, or the highest sample if that is higher.
    pub rss_peak_bytes: u64,
    /// VmRSS at the end of the settle.
    pub rss_end_bytes: u64,
    /// Growth of the peak over the start, per million messages stored.
    pub rss_per_million_msgs_bytes: u64,
    /// Seconds from the start of the fill until every publish was acked.
    pub fill_end_s: f64,
    pub rss_sample_interval_ms: u64,
    /// `[seconds from the start of the fill, VmRSS bytes]`, every
    /// `rss_sample_interval_ms`, through the fill and the settle.
    pub rss_timeline: Vec<(f64, u64)>,
    /// Hermod's configured cache and the verdict (none for the peer).
    #[serde(flatten)]
    pub bound: Option<Bound>,
}

impl MemoryUse {
    /// Adds the broker's configured cache and the verdict on the peak.
    pub fn with_bound(mut self, cache_mb: u64, cache_mb_passed: bool) -> Self {
        self.bound = Some(Bound::new(cache_mb, cache_mb_passed, self.rss_peak_bytes));
        self
    }
}

/// Samples the resident memory of process `pid` while `fill` runs and for
/// `RSS_SETTLE_S` after it; returns the fill's outcome and the memory.
pub async fn sample_during<F>(pid: u32, fill: F) -> anyhow::Result<(Outcome, MemoryUse)>
where
    F: Future<Output = anyhow::Result<Outcome>>,
{
    let sampler = Sampler::start(pid)?;
    let filled = fill.await?;
    let settle = Duration::from_secs(RSS_SETTLE_S);
    let memory = sampler.settle(filled.ended(), filled.published(), settle).await?;
    Ok((filled, memory))
}

/// Samples one process's VmRSS in the background until told to settle.
struct Sampler {
    pid: u32,
    start: Instant,
    rss_start_bytes: u64,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Vec<(f64, u64)>>,
}

impl Sampler {
    /// Takes a first sample of `pid` and starts sampling it every
    /// `RSS_SAMPLE_INTERVAL_MS`; call it right before the fill starts.
    fn start(pid: u32) -> anyhow::Result<Self> {
        let rss_start_bytes = resident(pid)?.rss_bytes;
        let start = Instant::now();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(sample(pid, start, stopped));
        Ok(Self {
            pid,
            start,
            rss_start_bytes,
            stop,
            task,
        })
    }

    /// Goes on sampling for `settle` (`RSS_SETTLE_S` in a run), then stops
    /// and sums up a fill that ended at `fill_end` with `messages` stored.
    async fn settle(self, fill_end: Instant, messages: u64, settle: Duration) -> anyhow::Result<MemoryUse> {
        tokio::time::sleep(settle).await;
        let last = resident(self.pid)?;
        // The send fails only when the task has ended already (the process
        // went away), and then there is nothing to stop.
        let _ = self.stop.send(());
        let mut timeline = self.task.await.context("the memory sampler failed")?;
        timeline.push((seconds_since(self.start, Instant::now()), last.rss_bytes));
        let sampled_peak = timeline.iter().map(|(_, rss)| *rss).max().unwrap_or(0);
        let rss_peak_bytes = last.hwm_bytes.max(sampled_peak);
        let growth = rss_peak_bytes.saturating_sub(self.rss_start_bytes) as f64;
        let per_million = if messages > 0 {
            (growth * MILLION / messages as f64).round() as u64
        } else {
            0
        };
        Ok(MemoryUse {
            rss_start_bytes: self.rss_start_bytes,
            rss_peak_bytes,
            rss_end_bytes: last.rss_bytes,
            rss_per_million_msgs_bytes: per_million,
            fill_end_s: seconds_since(self.start, fill_end),
            rss_sample_interval_ms: RSS_SAMPLE_INTERVAL_MS,
            rss_timeline: timeline,
            bound: None,
        })
    }
}

/// Samples VmRSS of `pid` every `RSS_SAMPLE_INTERVAL_MS` until `stopped`
/// fires or the process is gone.
async fn sample(pid: u32, start: Instant, mut stopped: oneshot::Receiver<()>) -> Vec<(f64, u64)> {
    let mut timeline = Vec::new();
    let mut interval = tokio::time::interval(Duration::from_millis(RSS_SAMPLE_INTERVAL_MS));
    // A late tick (a busy machine) shifts the samples after it instead of
    // bunching them up.
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            _ = interval.tick() => match resident(pid) {
                Ok(now) => timeline.push((seconds_since(start, Instant::now()), now.rss_bytes)),
                Err(_) => break,
            },
        }
    }
    timeline
}

/// Seconds from `start` to `at`, to the millisecond.
fn seconds_since(start: Instant, at: Instant) -> f64 {
    (at.saturating_duration_since(start).as_secs_f64() * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_give_rss_and_its_high_water_mark() {
        let text = "Name:\thermod\nVmPeak:\t  900 kB\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\n";
        let resident = parse_status(text).expect("both fields");
        assert_eq!(resident.rss_bytes, 1024 * KIB);
        assert_eq!(resident.hwm_bytes, 2048 * KIB);
        assert!(parse_status("Name:\thermod\nVmRSS:\t1 kB\n").is_none());
    }

    #[test]
    fn this_process_is_resident() {
        let own = resident(std::process::id()).expect("own status");
        assert!(own.rss_bytes > 0 && own.hwm_bytes >= own.rss_bytes);
    }

    #[test]
    fn the_bound_is_the_cache_plus_the_allowance() {
        let bound = Bound::new(256, true, 512 * MIB);
        assert_eq!(bound.bound_bytes, 512 * MIB);
        assert!(bound.within_bound);
        assert!(!Bound::new(256, false, 512 * MIB + 1).within_bound);
    }

    #[tokio::test]
    async fn sampling_this_process_records_a_timeline() {
        let sampler = Sampler::start(std::process::id()).expect("sampler");
        tokio::time::sleep(Duration::from_millis(2 * RSS_SAMPLE_INTERVAL_MS)).await;
        let fill_end = Instant::now();
        let settle = Duration::from_millis(RSS_SAMPLE_INTERVAL_MS);
        let memory = sampler.settle(fill_end, 2_000_000, settle).await.expect("memory");
        assert!(memory.rss_timeline.len() >= 3, "{:?}", memory.rss_timeline);
        assert!(memory.rss_peak_bytes >= memory.rss_end_bytes);
        assert!(memory.fill_end_s >= 0.4, "{}", memory.fill_end_s);
        let json = serde_json::to_value(memory.with_bound(256, true)).expect("json");
        assert_eq!(json["cache_bytes"], 256 * MIB);
        assert!(json["within_bound"].is_boolean());
    }
}

//! The chaos suite: a containerised hermod cluster under a seeded nemesis
//! (kills, pauses, partitions, restarts) while publishers and consumers run,
//! then a checker that proves every guarantee held. `tests/chaos.sh` runs it;
//! see docs/chaos.md.

pub mod checker;
pub mod docker;
pub mod health;
pub mod nemesis;
pub mod report;
pub mod rng;
pub mod run;
pub mod timeline;
pub mod workload;

use std::path::PathBuf;

/// What one run does.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long the faults go on.
    pub minutes: f64,
    /// Nodes in the cluster: 3 or 5.
    pub nodes: usize,
    /// Seed of every random choice of the nemesis and the workload.
    pub seed: u64,
    /// The container image of the nodes.
    pub image: String,
    /// Names this run's containers and networks.
    pub run_id: String,
    /// Where the report and the nodes' logs go.
    pub dir: PathBuf,
}

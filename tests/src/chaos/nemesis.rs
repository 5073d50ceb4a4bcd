//! The nemesis: faults chosen at random from a seed, injected one at a time
//! (kill, pause, partitions, restarts), each healed after a while, with the
//! time the cluster takes to be healthy again after each heal.

use std::time::{Duration, Instant};

use super::docker::DockerCluster;
use super::health::{current_leader, wait_healthy, wait_ready};
use super::rng::Rng;

/// How long a fault lasts before it is healed, at least and at most.
const HOLD_MIN: Duration = Duration::from_secs(2);
const HOLD_MAX: Duration = Duration::from_secs(8);
/// Quiet time between the recovery from one fault and the next fault.
const GAP_MIN: Duration = Duration::from_millis(500);
const GAP_MAX: Duration = Duration::from_secs(3);
/// How long the cluster may take to be healthy after a heal; longer is a
/// violation (the cluster did not recover).
pub const RECOVERY_LIMIT: Duration = Duration::from_secs(60);

/// The kinds of fault, with their weight in the random choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    KillLeader,
    KillNode,
    Pause,
    Isolate,
    Split,
    Bridge,
    RestartAll,
    RollingRestart,
}

impl FaultKind {
    pub const ALL: [FaultKind; 8] = [
        FaultKind::KillLeader,
        FaultKind::KillNode,
        FaultKind::Pause,
        FaultKind::Isolate,
        FaultKind::Split,
        FaultKind::Bridge,
        FaultKind::RestartAll,
        FaultKind::RollingRestart,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill_leader",
            FaultKind::KillNode => "kill_node",
            FaultKind::Pause => "pause",
            FaultKind::Isolate => "partition_isolate",
            FaultKind::Split => "partition_split",
            FaultKind::Bridge => "partition_bridge",
            FaultKind::RestartAll => "restart_all",
            FaultKind::RollingRestart => "rolling_restart",
        }
    }

    /// Relative frequency: the cheap, common faults more often than the
    /// whole-cluster restarts.
    fn weight(self) -> u64 {
        match self {
            FaultKind::KillLeader | FaultKind::Isolate => 3,
            FaultKind::KillNode | FaultKind::Pause | FaultKind::Split | FaultKind::Bridge => 2,
            FaultKind::RestartAll | FaultKind::RollingRestart => 1,
        }
    }

    fn pick(rng: &mut Rng) -> FaultKind {
        let total: u64 = Self::ALL.iter().map(|k| k.weight()).sum();
        let mut roll = rng.range(0, total);
        for kind in Self::ALL {
            if roll < kind.weight() {
                return kind;
            }
            roll -= kind.weight();
        }
        FaultKind::KillNode
    }
}

/// One injected fault, for the report.
#[derive(Debug, Clone)]
pub struct FaultRecord {
    pub kind: FaultKind,
    /// What was done, with node numbers from 1.
    pub detail: String,
    /// Seconds from the start of the workload.
    pub started_s: f64,
    pub healed_s: f64,
    /// From the heal to a healthy cluster; `None` if it did not recover in time.
    pub recovery: Option<Duration>,
    /// Why it did not recover, or a docker command that failed.
    pub error: Option<String>,
}

/// Injects faults into `cluster` until `until`.
pub struct Nemesis {
    rng: Rng,
    epoch: Instant,
    pub faults: Vec<FaultRecord>,
}

impl Nemesis {
    pub fn new(seed: u64, epoch: Instant) -> Self {
        Self {
            rng: Rng::new(seed),
            epoch,
            faults: Vec::new(),
        }
    }

    fn random_duration(&mut self, low: Duration, high: Duration) -> Duration {
        Duration::from_millis(self.rng.range(low.as_millis() as u64, high.as_millis() as u64))
    }

    /// Injects, holds, heals and waits for recovery, one fault after
    /// another, until `until` (the last fault may end a little after it).
    pub async fn run(&mut self, cluster: &mut DockerCluster, until: Instant) {
        let most_faults = (until.saturating_duration_since(Instant::now()).as_secs() + 1) as usize;
        for _ in 0..most_faults {
            let hold = self.random_duration(HOLD_MIN, HOLD_MAX);
            if Instant::now() + hold >= until {
                break;
            }
            let kind = FaultKind::pick(&mut self.rng);
            let started_s = self.epoch.elapsed().as_secs_f64();
            let (detail, injected) = self.inject(cluster, kind, hold).await;
            let healed = heal(cluster).await;
            let healed_s = self.epoch.elapsed().as_secs_f64();
            let mut error = injected.err().or(healed.err()).map(|e| format!("{e:#}"));
            let recovery = match wait_healthy(cluster, RECOVERY_LIMIT).await {
                Ok((_, took)) => Some(took),
                Err(e) => {
                    error.get_or_insert(e);
                    None
                }
            };
            eprintln!(
                "chaos: t={started_s:.1}s {} ({detail}) healed at t={healed_s:.1}s, recovered in {}",
                kind.name(),
                recovery.map_or_else(|| "NEVER".to_string(), |d| format!("{:.1}s", d.as_secs_f64()))
            );
            let failed = recovery.is_none();
            self.faults.push(FaultRecord {
                kind,
                detail,
                started_s,
                healed_s,
                recovery,
                error,
            });
            if failed {
                // Faults on a cluster that did not recover prove nothing more.
                break;
            }
            let gap = self.random_duration(GAP_MIN, GAP_MAX);
            tokio::time::sleep(gap).await;
        }
    }

    /// Injects one fault and holds it for `hold` (restarts are their own
    /// duration); returns what was done.
    async fn inject(
        &mut self,
        cluster: &mut DockerCluster,
        kind: FaultKind,
        hold: Duration,
    ) -> (String, anyhow::Result<()>) {
        let size = cluster.len();
        let leader = current_leader(cluster).await;
        let mut order = self.rng.shuffled(size);
        // Partitions put the leader where it hurts: alone, or on the minority side.
        if let Some(leader) = leader
            && self.rng.chance(50)
            && let Some(position) = order.iter().position(|i| *i == leader)
        {
            order.swap(0, position);
        }
        let names = |nodes: &[usize]| {
            nodes
                .iter()
                .map(|i| format!("n{}", i + 1))
                .collect::<Vec<_>>()
                .join(",")
        };
        match kind {
            FaultKind::KillLeader | FaultKind::KillNode => {
                let target = match (kind, leader) {
                    (FaultKind::KillLeader, Some(leader)) => leader,
                    _ => order[0],
                };
                let result = async {
                    cluster.kill(target).await?;
                    tokio::time::sleep(hold).await;
                    cluster.start_node(target).await
                }
                .await;
                (format!("SIGKILL n{} for {hold:.1?}", target + 1), result)
            }
            FaultKind::Pause => {
                let target = order[0];
                let result = async {
                    cluster.pause(target).await?;
                    tokio::time::sleep(hold).await;
                    cluster.unpause(target).await
                }
                .await;
                (format!("pause n{} for {hold:.1?}", target + 1), result)
            }
            FaultKind::Isolate | FaultKind::Split | FaultKind::Bridge => {
                let (side_a, side_b): (Vec<usize>, Vec<usize>) = match kind {
                    FaultKind::Isolate => (vec![order[0]], order[1..].to_vec()),
                    FaultKind::Split => {
                        let minority = size / 2;
                        (order[..minority].to_vec(), order[minority..].to_vec())
                    }
                    _ => {
                        // order[0] is the bridge: it keeps both sides.
                        let half = 1 + (size - 1) / 2;
                        (order[1..half].to_vec(), order[half..].to_vec())
                    }
                };
                let detail = match kind {
                    FaultKind::Bridge => format!(
                        "{} | {} with n{} bridging, for {hold:.1?}",
                        names(&side_a),
                        names(&side_b),
                        order[0] + 1
                    ),
                    _ => format!("{} | {} for {hold:.1?}", names(&side_a), names(&side_b)),
                };
                let result = async {
                    for &a in &side_a {
                        for &b in &side_b {
                            cluster.cut(a, b).await?;
                        }
                    }
                    tokio::time::sleep(hold).await;
                    anyhow::Ok(())
                }
                .await;
                (detail, result)
            }
            FaultKind::RestartAll => {
                let result = async {
                    for index in 0..size {
                        cluster.kill(index).await?;
                    }
                    for index in 0..size {
                        cluster.start_node(index).await?;
                    }
                    anyhow::Ok(())
                }
                .await;
                ("SIGKILL every node, then start them".to_string(), result)
            }
            FaultKind::RollingRestart => {
                let result = async {
                    for &index in &order {
                        cluster.restart(index).await?;
                        wait_ready(cluster, index, RECOVERY_LIMIT)
                            .await
                            .map_err(|e| anyhow::anyhow!(e))?;
                    }
                    anyhow::Ok(())
                }
                .await;
                (
                    format!("graceful restart of {} one by one", names(&order)),
                    result,
                )
            }
        }
    }
}

/// Undoes whatever a fault may have left: cut links, paused or stopped
/// containers.
pub async fn heal(cluster: &mut DockerCluster) -> anyhow::Result<()> {
    cluster.heal_all().await?;
    for index in 0..cluster.len() {
        let state = super::docker::docker(&[
            "inspect",
            "--format",
            "{{.State.Status}}",
            &cluster.nodes[index].container,
        ])
        .await?;
        match state.trim() {
            "paused" => cluster.unpause(index).await?,
            "exited" | "created" => cluster.start_node(index).await?,
            _ => {}
        }
    }
    Ok(())
}

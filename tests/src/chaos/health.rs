//! Probes of the containerised cluster: readiness of every node, and every
//! node's view of the leader, as `hermod cluster status --json` shows it.

use std::time::{Duration, Instant};

use hermod_client::{Client, ClusterStatus};

use super::docker::DockerCluster;
use crate::checks::{PROBE_TIMEOUT, probe_client};
use crate::processes::http_get;

/// Pause between two rounds of probes.
const POLL_TICK: Duration = Duration::from_millis(100);

/// A client of node `index` alone that never retries: for probes.
pub async fn node_client(cluster: &DockerCluster, index: usize) -> anyhow::Result<Client> {
    probe_client(cluster.endpoint(index)).await
}

/// Node `index`'s view of the cluster.
pub async fn status(cluster: &DockerCluster, index: usize) -> anyhow::Result<ClusterStatus> {
    let client = node_client(cluster, index).await?;
    let status = tokio::time::timeout(PROBE_TIMEOUT * 2, client.cluster_status())
        .await
        .map_err(|_| anyhow::anyhow!("node {index}: no status within {:?}", PROBE_TIMEOUT * 2))??;
    Ok(status)
}

/// Whether node `index` answers 200 on `/health/ready`.
pub async fn is_ready(cluster: &DockerCluster, index: usize) -> bool {
    let port = cluster.nodes[index].admin_port;
    matches!(http_get(port, "/health/ready", PROBE_TIMEOUT).await, Ok((200, _)))
}

/// The index of the leader `status` names, if the answering node has a
/// quorum and the leader is one of the cluster's nodes.
fn leader_in(cluster: &DockerCluster, status: &ClusterStatus) -> Option<usize> {
    if !status.quorum {
        return None;
    }
    let leader = status.groups.first()?.leader?;
    let node = status.nodes.iter().find(|n| n.id == leader)?;
    cluster.index_of_address(&node.address)
}

/// The leader as the first node with a quorum sees it.
pub async fn current_leader(cluster: &DockerCluster) -> Option<usize> {
    for index in 0..cluster.len() {
        if let Ok(status) = status(cluster, index).await
            && let Some(leader) = leader_in(cluster, &status)
        {
            return Some(leader);
        }
    }
    None
}

/// The leader, if every node is ready, has a quorum and names the same
/// leader; otherwise what is still wrong.
pub async fn healthy(cluster: &DockerCluster) -> Result<usize, String> {
    for index in 0..cluster.len() {
        if !is_ready(cluster, index).await {
            return Err(format!("node {} is not ready", index + 1));
        }
    }
    let mut agreed = None;
    for index in 0..cluster.len() {
        let status = status(cluster, index)
            .await
            .map_err(|e| format!("node {}: {e}", index + 1))?;
        let leader =
            leader_in(cluster, &status).ok_or_else(|| format!("node {} sees no leader", index + 1))?;
        if let Some(previous) = agreed
            && previous != leader
        {
            return Err(format!(
                "nodes disagree on the leader: {} and {}",
                previous + 1,
                leader + 1
            ));
        }
        agreed = Some(leader);
    }
    agreed.ok_or_else(|| "no nodes".to_string())
}

/// Waits until the cluster is [`healthy`], for at most `limit`; returns the
/// leader and how long it took.
pub async fn wait_healthy(cluster: &DockerCluster, limit: Duration) -> Result<(usize, Duration), String> {
    let started = Instant::now();
    let rounds = limit.as_millis() / POLL_TICK.as_millis() + 1;
    let mut last = String::from("never probed");
    for _ in 0..rounds {
        match healthy(cluster).await {
            Ok(leader) => return Ok((leader, started.elapsed())),
            Err(e) => last = e,
        }
        if started.elapsed() >= limit {
            break;
        }
        tokio::time::sleep(POLL_TICK).await;
    }
    Err(format!("not healthy within {limit:?}: {last}"))
}

/// Waits until node `index` is ready, for at most `limit`.
pub async fn wait_ready(cluster: &DockerCluster, index: usize, limit: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let rounds = limit.as_millis() / POLL_TICK.as_millis() + 1;
    for _ in 0..rounds {
        if is_ready(cluster, index).await {
            return Ok(started.elapsed());
        }
        if started.elapsed() >= limit {
            break;
        }
        tokio::time::sleep(POLL_TICK).await;
    }
    Err(format!("node {} was not ready within {limit:?}", index + 1))
}

//! `ClusterProcesses`: a cluster of real `hermod serve` processes on
//! 127.0.0.1, each on fixed ports and its own data directory, that can be
//! SIGKILLed, restarted on the same ports and data, and paused with
//! SIGSTOP/SIGCONT.
//!
//! Every node's stdout and stderr go to `node-N.log` next to its data
//! directory (appended across restarts), so a failing test can show them.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hermod_client::{Client, ClusterStatus};

use crate::checks::PROBE_TIMEOUT;
use crate::{free_port, hermod_binary};

/// Leader heartbeat of process clusters.
pub const HEARTBEAT_INTERVAL_MS: u64 = 150;
/// Lower bound of the election timeout of process clusters.
pub const ELECTION_TIMEOUT_MS: u64 = 750;
/// Pause between two polls of readiness or status.
const POLL_TICK: Duration = Duration::from_millis(50);

/// One node of the cluster; `child` is `None` while it is not running.
pub struct NodeProcess {
    pub grpc_port: u16,
    pub admin_port: u16,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl NodeProcess {
    /// The advertised gRPC address, `127.0.0.1:port`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port)
    }

    /// The process id while the node runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// Several `hermod serve` processes forming one cluster.
pub struct ClusterProcesses {
    pub nodes: Vec<NodeProcess>,
    /// The group whose leader `leader_in` names: the metadata group, or
    /// the shard of the topic given to [`watch_topic`](Self::watch_topic).
    watched: Option<String>,
    temp: tempfile::TempDir,
}

impl ClusterProcesses {
    /// Starts `size` processes that form one cluster by expected size
    /// (`--join` the others, `--expect-nodes size`). Does not wait: see
    /// [`wait_ready`](Self::wait_ready).
    pub fn start(size: usize) -> anyhow::Result<Self> {
        let temp = tempfile::tempdir()?;
        let ports = distinct_free_ports(2 * size)?;
        let nodes = (0..size)
            .map(|index| NodeProcess {
                grpc_port: ports[2 * index],
                admin_port: ports[2 * index + 1],
                data_dir: temp.path().join(format!("node-{index}")),
                log_path: temp.path().join(format!("node-{index}.log")),
                child: None,
                starts: 0,
            })
            .collect();
        let mut cluster = Self {
            nodes,
            watched: None,
            temp,
        };
        for index in 0..size {
            cluster.spawn(index)?;
        }
        Ok(cluster)
    }

    /// The directory holding every node's data directory and log.
    pub fn dir(&self) -> &Path {
        self.temp.path()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The advertised gRPC address of node `index`, `127.0.0.1:port`.
    pub fn address(&self, index: usize) -> String {
        self.nodes[index].address()
    }

    /// The gRPC endpoint of node `index`, `http://127.0.0.1:port`.
    pub fn endpoint(&self, index: usize) -> String {
        format!("http://{}", self.address(index))
    }

    /// Every node's gRPC endpoint.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.endpoint(i)).collect()
    }

    pub fn is_running(&self, index: usize) -> bool {
        self.nodes[index].child.is_some()
    }

    /// The index of the node whose advertised address is `address`.
    pub fn index_of_address(&self, address: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.address() == address)
    }

    fn spawn(&mut self, index: usize) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.nodes[index].child.is_none(),
            "node {index} is already running"
        );
        let seeds: Vec<String> = (0..self.len())
            .filter(|i| *i != index)
            .map(|i| self.address(i))
            .collect();
        let size = self.len();
        let node = &mut self.nodes[index];
        node.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)?;
        writeln!(
            log,
            "=== test harness: start {} of node {index} (grpc {}, admin {}) ===",
            node.starts, node.grpc_port, node.admin_port
        )?;
        let mut command = Command::new(hermod_binary());
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--listen")
            .arg(node.address())
            .arg("--admin-listen")
            .arg(format!("127.0.0.1:{}", node.admin_port))
            .arg("--join")
            .arg(seeds.join(","))
            .arg("--expect-nodes")
            .arg(size.to_string())
            .arg("--heartbeat-interval-ms")
            .arg(HEARTBEAT_INTERVAL_MS.to_string())
            .arg("--election-timeout-ms")
            .arg(ELECTION_TIMEOUT_MS.to_string());
        // Settings of the environment running the tests must not leak in.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("HERMOD_") {
                command.env_remove(key);
            }
        }
        let child = command
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", hermod_binary().display()))?;
        node.child = Some(child);
        Ok(())
    }

    /// Starts a node that was killed, on the same ports and data directory.
    /// Does not wait for it to be ready.
    pub fn restart(&mut self, index: usize) -> anyhow::Result<()> {
        self.spawn(index)
    }

    /// Starts every node that is not running.
    pub fn restart_all(&mut self) -> anyhow::Result<()> {
        for index in 0..self.len() {
            if !self.is_running(index) {
                self.spawn(index)?;
            }
        }
        Ok(())
    }

    /// SIGKILL: no clean shutdown, no flush. Waits for the process to end.
    pub fn kill(&mut self, index: usize) -> anyhow::Result<()> {
        let child = self.nodes[index]
            .child
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("node {index} is not running"))?;
        // `Child::kill` is SIGKILL on Unix; it ends a stopped process too.
        child.kill()?;
        child.wait()?;
        self.nodes[index].child = None;
        Ok(())
    }

    /// SIGKILLs every running node.
    pub fn kill_all(&mut self) -> anyhow::Result<()> {
        for index in 0..self.len() {
            if self.is_running(index) {
                self.kill(index)?;
            }
        }
        Ok(())
    }

    /// SIGSTOP: the process is frozen; its sockets stay open.
    pub fn pause(&self, index: usize) -> anyhow::Result<()> {
        self.signal(index, "-STOP")
    }

    /// SIGCONT: a paused process goes on.
    pub fn resume(&self, index: usize) -> anyhow::Result<()> {
        self.signal(index, "-CONT")
    }

    fn signal(&self, index: usize, signal: &str) -> anyhow::Result<()> {
        let pid = self.nodes[index]
            .pid()
            .ok_or_else(|| anyhow::anyhow!("node {index} is not running"))?;
        let status = Command::new("kill").arg(signal).arg(pid.to_string()).status()?;
        anyhow::ensure!(status.success(), "kill {signal} {pid}: {status}");
        Ok(())
    }

    /// Fails if a node that should run has exited (e.g. it panicked).
    fn check_alive(&mut self, index: usize) -> anyhow::Result<()> {
        if let Some(child) = self.nodes[index].child.as_mut()
            && let Some(status) = child.try_wait()?
        {
            self.nodes[index].child = None;
            anyhow::bail!(
                "node {index} exited by itself ({status}); its log ends with:\n{}",
                self.log_tail(index, 30)
            );
        }
        Ok(())
    }

    /// Waits until every node in `indexes` answers 200 on `GET /health/ready`
    /// (it reaches a quorum), for at most `timeout`.
    pub async fn wait_ready(&mut self, indexes: &[usize], timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let polls = timeout.as_millis() / POLL_TICK.as_millis() + 1;
        for &index in indexes {
            let mut last = String::from("never probed");
            let mut ready = false;
            for _ in 0..polls {
                self.check_alive(index)?;
                anyhow::ensure!(self.is_running(index), "node {index} is not running");
                match http_get(self.nodes[index].admin_port, "/health/ready", PROBE_TIMEOUT).await {
                    Ok((200, _)) => {
                        ready = true;
                        break;
                    }
                    Ok((code, body)) => last = format!("{code} {body}"),
                    Err(e) => last = e.to_string(),
                }
                if Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(POLL_TICK).await;
            }
            anyhow::ensure!(
                ready,
                "node {index} was not ready within {timeout:?}; last answer: {last}"
            );
        }
        Ok(())
    }

    /// Waits until every node is ready.
    pub async fn wait_all_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let all: Vec<usize> = (0..self.len()).collect();
        self.wait_ready(&all, timeout).await
    }

    /// A client of node `index` alone, that never retries: for probes.
    pub async fn node_client(&self, index: usize) -> anyhow::Result<Client> {
        crate::checks::probe_client(self.endpoint(index)).await
    }

    /// Node `index`'s view of the cluster.
    pub async fn status(&self, index: usize) -> anyhow::Result<ClusterStatus> {
        let client = self.node_client(index).await?;
        let status = tokio::time::timeout(PROBE_TIMEOUT * 2, client.cluster_status())
            .await
            .map_err(|_| anyhow::anyhow!("node {index}: no status within {:?}", PROBE_TIMEOUT * 2))??;
        Ok(status)
    }

    /// The index of the leader as node `index` sees it, with quorum.
    pub async fn leader_seen_by(&self, index: usize) -> anyhow::Result<Option<usize>> {
        let status = self.status(index).await?;
        Ok(self.leader_in(&status))
    }

    /// From now on, "the leader" is the leader of the shard that holds
    /// `topic` (in a cluster of the default number of shards).
    pub fn watch_topic(&mut self, topic: &str) -> anyhow::Result<()> {
        let topic = hermod_broker::domain::TopicName::parse("topic", topic)?;
        let shards = hermod_broker::domain::Shards::new("shards", hermod_broker::cluster::DEFAULT_SHARDS)?;
        self.watched = Some(format!("shard-{}", shards.group_of(&topic)));
        Ok(())
    }

    /// The index of the node `status` names as leader of the watched group
    /// (by default its first, the metadata group), if the answering node
    /// has a quorum and the leader is one of ours.
    pub fn leader_in(&self, status: &ClusterStatus) -> Option<usize> {
        if !status.quorum {
            return None;
        }
        let group = match &self.watched {
            Some(name) => status.groups.iter().find(|g| &g.name == name)?,
            None => status.groups.first()?,
        };
        let leader = group.leader?;
        let node = status.nodes.iter().find(|n| n.id == leader)?;
        self.index_of_address(&node.address)
    }

    /// Waits until every node in `among` has a quorum and names the same
    /// leader, itself one of `among`; returns the leader's index.
    pub async fn wait_for_leader(&self, among: &[usize], timeout: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        let polls = timeout.as_millis() / POLL_TICK.as_millis() + 1;
        let mut last: Vec<String> = Vec::new();
        for _ in 0..polls {
            last.clear();
            let mut leaders = Vec::new();
            for &index in among {
                match self.status(index).await {
                    Ok(status) => {
                        leaders.push(self.leader_in(&status));
                        last.push(format!("node {index}: {status:?}"));
                    }
                    Err(e) => {
                        leaders.push(None);
                        last.push(format!("node {index}: {e}"));
                    }
                }
            }
            if let Some(Some(leader)) = leaders.first()
                && leaders.iter().all(|l| *l == Some(*leader))
                && among.contains(leader)
            {
                return Ok(*leader);
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(POLL_TICK).await;
        }
        anyhow::bail!(
            "nodes {among:?} did not agree on a leader among themselves within {timeout:?}:\n{}",
            last.join("\n")
        )
    }

    /// The last `lines` lines of node `index`'s log.
    pub fn log_tail(&self, index: usize, lines: usize) -> String {
        match std::fs::read_to_string(&self.nodes[index].log_path) {
            Ok(text) => {
                let all: Vec<&str> = text.lines().collect();
                all[all.len().saturating_sub(lines)..].join("\n")
            }
            Err(e) => format!("(no log: {e})"),
        }
    }
}

impl Drop for ClusterProcesses {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// `count` distinct free ports on 127.0.0.1.
fn distinct_free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let mut ports: Vec<u16> = Vec::with_capacity(count);
    for _ in 0..count * 20 {
        if ports.len() == count {
            break;
        }
        let port = free_port();
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    anyhow::ensure!(ports.len() == count, "could not find {count} distinct free ports");
    Ok(ports)
}

/// An HTTP/1.1 GET against 127.0.0.1 that gives up after `timeout`;
/// returns the status code and body.
pub async fn http_get(port: u16, path: &str, timeout: Duration) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("GET {path} on port {port}: no answer within {timeout:?}"))??;
    crate::parse_http_response(&response)
}

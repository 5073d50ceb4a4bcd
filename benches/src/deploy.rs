//! A deployment under test: one broker process, or a cluster of them on loopback, and the node clients should talk to.

use std::collections::BTreeMap;
use std::path::Path;

use crate::process::{HermodLaunch, Peering, Ports, Server};

/// The broker processes of one run, stopped together.
#[derive(Debug)]
pub struct Deployment {
    servers: Vec<Server>,
    /// The node producers and consumers connect to: the leader in a cluster.
    target: usize,
}

impl Deployment {
    /// `nodes` Hermod processes; with more than one they form a cluster by
    /// expected size, each with every other as a seed. Waits until every
    /// node is ready (in a cluster: has a quorum).
    pub async fn hermod(launch: &HermodLaunch, nodes: usize) -> anyhow::Result<Self> {
        Self::start(nodes, |ports, peer| Server::spawn_hermod(launch, ports, peer)).await
    }

    /// `nodes` nats-server processes with JetStream; with more than one they
    /// form a cluster with routes to each other. Waits until every server is healthy.
    pub async fn nats(binary: &Path, nodes: usize) -> anyhow::Result<Self> {
        Self::start(nodes, |ports, peer| Server::spawn_nats(binary, ports, peer)).await
    }

    async fn start<F>(nodes: usize, spawn: F) -> anyhow::Result<Self>
    where
        F: Fn(Ports, Option<Peering>) -> anyhow::Result<Server>,
    {
        let ports = Ports::distinct(nodes)?;
        let mut servers = Vec::with_capacity(nodes);
        for (index, own) in ports.iter().enumerate() {
            let peer = (nodes > 1).then(|| Peering {
                index,
                seeds: ports.iter().filter(|p| *p != own).copied().collect(),
            });
            // Dropping the servers started so far kills them.
            servers.push(spawn(*own, peer)?);
        }
        // Every node is started before any is awaited: a cluster node is
        // ready only once it sees a quorum.
        for server in &mut servers {
            server.wait_ready().await?;
        }
        Ok(Self { servers, target: 0 })
    }

    /// The client URL of the node clients should use.
    pub fn url(&self) -> &str {
        &self.servers[self.target].url
    }

    /// Every node's client URL.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.url.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.servers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Points clients at the node with this client URL (Hermod) or server
    /// name (NATS), when there is one.
    pub fn target_node(&mut self, url_or_name: &str) -> bool {
        let found = self.index_of(url_or_name);
        if let Some(index) = found {
            self.target = index;
        }
        found.is_some()
    }

    /// The place of the node with this client URL (Hermod) or server name (NATS).
    pub fn index_of(&self, url_or_name: &str) -> Option<usize> {
        self.servers
            .iter()
            .position(|s| s.url == url_or_name || s.name == url_or_name)
    }

    /// The name of node `index` (`hermod-N`, `nats-N`).
    pub fn name(&self, index: usize) -> &str {
        &self.servers[index].name
    }

    /// Every node's client URL, node `first`'s first: the order a client
    /// that should start on that node tries them in.
    pub fn urls_from(&self, first: usize) -> Vec<String> {
        let mut urls = self.urls();
        let shift = first % urls.len().max(1);
        urls.rotate_left(shift);
        urls
    }

    /// SIGKILLs node `index` and waits until it is gone; its data stays.
    pub async fn kill(&mut self, index: usize) -> anyhow::Result<()> {
        self.servers[index].kill().await
    }

    /// Starts node `index` again on its data and ports, and waits until it
    /// is ready (in a cluster: has a quorum and has caught up).
    pub async fn restart(&mut self, index: usize) -> anyhow::Result<()> {
        let server = &mut self.servers[index];
        server.restart()?;
        server.wait_ready().await
    }

    /// The process ids of every node still running.
    pub fn pids(&self) -> Vec<u32> {
        self.servers.iter().filter_map(Server::pid).collect()
    }

    /// The process id of the node clients use, while it runs.
    pub fn target_pid(&self) -> anyhow::Result<u32> {
        let server = &self.servers[self.target];
        server
            .pid()
            .ok_or_else(|| anyhow::anyhow!("{} is not running", server.name))
    }

    /// The Hermod metrics the report keeps, added up over the nodes.
    pub async fn hermod_metrics(&self) -> BTreeMap<String, f64> {
        let mut sum = BTreeMap::new();
        for server in &self.servers {
            for (name, value) in server.hermod_metrics().await {
                *sum.entry(name).or_insert(0.0) += value;
            }
        }
        sum
    }

    /// The first node that exited during the run (none should have), and how.
    pub fn exited(&mut self) -> Option<String> {
        self.servers
            .iter_mut()
            .find_map(|s| s.exited().map(|status| format!("{} {status}", s.name)))
    }

    /// Warning and error lines of every node's log: how many, and a few of them.
    pub fn warnings(&self) -> (usize, Vec<String>) {
        let mut count = 0;
        let mut sample = Vec::new();
        for server in &self.servers {
            let (n, lines) = server.warnings();
            count += n;
            sample.extend(lines.into_iter().map(|line| format!("{}: {line}", server.name)));
        }
        sample.truncate(crate::process::MAX_LOG_LINES);
        (count, sample)
    }

    /// Kills every node and waits for them, so the next run starts on a quiet machine.
    pub async fn stop(self) {
        for server in self.servers {
            server.stop().await;
        }
    }
}

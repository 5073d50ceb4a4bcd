//! `TestCluster`: several broker nodes in this process, on real gRPC
//! sockets (or the in-process transport), with links that can be cut and
//! slowed between chosen nodes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hermod_broker::cluster::{ClusterView, DEFAULT_SNAPSHOT_EVERY_ENTRIES, Faults, LocalNetwork, Role};
use hermod_broker::config::Config;
use hermod_broker::server::{Node, PeerLinks};
use hermod_client::{Client, ClientOptions, Delivery, OutgoingMessage, RetryPolicy};

use crate::free_port;

/// Heartbeat of test clusters: short, so failover tests run in seconds, yet
/// several times the scheduling hiccups of a loaded 2-core machine.
pub const TEST_HEARTBEAT_MS: u64 = 100;
pub const TEST_ELECTION_TIMEOUT_MS: u64 = 600;
/// Times a test cluster is started before a port taken by another test fails it.
const START_ATTEMPTS: u32 = 3;
/// How long a test waits for the cluster to reach a wanted state.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How the nodes of a new test cluster find each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Formation {
    /// Every node starts with every address and `--expect-nodes N`.
    Expect,
    /// The first node starts alone; the others `--join` it.
    Join,
}

/// Which transport carries Raft and forwarding between nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    Grpc,
    InProcess,
}

/// One node of a test cluster; `node` is `None` while it is stopped.
pub struct Member {
    pub node: Option<Node>,
    pub dir: PathBuf,
    /// The advertised gRPC address, `127.0.0.1:port`, stable across restarts.
    pub address: String,
    seeds: Vec<String>,
    expect_nodes: u32,
}

/// Several nodes of one cluster in this process.
pub struct TestCluster {
    pub members: Vec<Member>,
    pub faults: Faults,
    local: Option<LocalNetwork>,
    snapshot_every_entries: u64,
    _temp: tempfile::TempDir,
}

impl TestCluster {
    /// Starts `size` nodes that form one cluster over gRPC, and waits for a leader.
    pub async fn start(size: usize) -> anyhow::Result<Self> {
        Self::start_with(size, Formation::Expect, Links::Grpc).await
    }

    pub async fn start_with(size: usize, formation: Formation, links: Links) -> anyhow::Result<Self> {
        Self::start_snapshotting(size, formation, links, DEFAULT_SNAPSHOT_EVERY_ENTRIES).await
    }

    /// Like [`TestCluster::start_with`], with a snapshot every `entries` log
    /// entries. The ports are chosen free, yet another test may bind one
    /// before its node does: then the cluster starts again on new ports.
    pub async fn start_snapshotting(
        size: usize,
        formation: Formation,
        links: Links,
        entries: u64,
    ) -> anyhow::Result<Self> {
        let mut attempts_left = START_ATTEMPTS;
        loop {
            attempts_left -= 1;
            match Self::start_once(size, formation, links, entries).await {
                Err(e) if attempts_left > 0 && e.to_string().contains("Address already in use") => {
                    eprintln!("a port was taken meanwhile ({e}); starting the cluster again");
                }
                outcome => return outcome,
            }
        }
    }

    async fn start_once(
        size: usize,
        formation: Formation,
        links: Links,
        entries: u64,
    ) -> anyhow::Result<Self> {
        let temp = tempfile::tempdir()?;
        let addresses: Vec<String> = (0..size).map(|_| format!("127.0.0.1:{}", free_port())).collect();
        let mut cluster = Self {
            members: Vec::new(),
            faults: Faults::default(),
            local: (links == Links::InProcess).then(LocalNetwork::default),
            snapshot_every_entries: entries,
            _temp: temp,
        };
        for (index, address) in addresses.iter().enumerate() {
            let (seeds, expect_nodes) = match formation {
                Formation::Expect => (addresses.clone(), size as u32),
                Formation::Join if index == 0 => (Vec::new(), 1),
                Formation::Join => (vec![addresses[0].clone()], 1),
            };
            let dir = cluster._temp.path().join(format!("node-{index}"));
            cluster.members.push(Member {
                node: None,
                dir,
                address: address.clone(),
                seeds,
                expect_nodes,
            });
        }
        for index in 0..size {
            if let Err(e) = cluster.start_member(index).await {
                for started in 0..index {
                    cluster.stop(started).await;
                }
                return Err(e);
            }
        }
        cluster.wait_for(|views| all_agree(views, size)).await?;
        cluster.wait_settled().await?;
        Ok(cluster)
    }

    /// Waits until every running node sees every shard with the replicas and
    /// the leader its placement names.
    pub async fn wait_settled(&self) -> anyhow::Result<()> {
        self.wait_for(|_| {
            self.members
                .iter()
                .filter_map(|m| m.node.as_ref())
                .all(|n| n.broker.shards_settled())
        })
        .await
    }

    /// Adds a node that joins through the first node's address; returns its index.
    pub async fn add_node(&mut self) -> anyhow::Result<usize> {
        let index = self.members.len();
        let dir = self._temp.path().join(format!("node-{index}"));
        self.members.push(Member {
            node: None,
            dir,
            address: format!("127.0.0.1:{}", free_port()),
            seeds: vec![self.members[0].address.clone()],
            expect_nodes: 1,
        });
        self.start_member(index).await?;
        Ok(index)
    }

    async fn start_member(&mut self, index: usize) -> anyhow::Result<()> {
        let member = &self.members[index];
        let mut config = Config::with_data_dir(&member.dir);
        config.listen = member.address.parse()?;
        config.admin_listen = "127.0.0.1:0".parse()?;
        config.cluster.seeds = member.seeds.clone();
        config.cluster.expect_nodes = member.expect_nodes;
        config.cluster.heartbeat_interval_ms = TEST_HEARTBEAT_MS;
        config.cluster.election_timeout_ms = TEST_ELECTION_TIMEOUT_MS;
        config.cluster.snapshot_every_entries = self.snapshot_every_entries;
        let links = PeerLinks {
            local: self.local.clone(),
            faults: self.faults.clone(),
        };
        let node = Node::start_with(config, links).await?;
        self.members[index].node = Some(node);
        Ok(())
    }

    /// Stops node `index` cleanly (its data stays).
    pub async fn stop(&mut self, index: usize) {
        if let Some(node) = self.members[index].node.take() {
            node.stop().await;
        }
    }

    /// Starts a stopped node again on its data and address.
    pub async fn restart(&mut self, index: usize) -> anyhow::Result<()> {
        self.stop(index).await;
        self.start_member(index).await
    }

    pub fn node(&self, index: usize) -> &Node {
        self.members[index].node.as_ref().expect("the node is running")
    }

    /// The gRPC endpoint of node `index`, e.g. `http://127.0.0.1:41234`.
    pub fn endpoint(&self, index: usize) -> String {
        format!("http://{}", self.members[index].address)
    }

    /// A client of the chosen nodes that retries through a failover: up to
    /// 60 attempts, backing off from 50 ms to 500 ms. Its publishes go to
    /// their shard's leader directly.
    pub async fn client(&self, nodes: &[usize]) -> anyhow::Result<Client> {
        Ok(Client::connect(self.client_options(nodes)).await?)
    }

    /// The options of [`TestCluster::client`].
    pub fn client_options(&self, nodes: &[usize]) -> ClientOptions {
        let endpoints: Vec<String> = nodes.iter().map(|i| self.endpoint(*i)).collect();
        ClientOptions::new()
            .endpoints(endpoints)
            .connect_timeout(Duration::from_secs(1))
            .request_timeout(Duration::from_secs(15))
            .retry_policy(RetryPolicy::new(
                60,
                Duration::from_millis(50),
                Duration::from_millis(500),
            ))
    }

    /// A client like [`TestCluster::client`] that sends every request to
    /// the chosen nodes, so the nodes forward what they do not lead.
    pub async fn unrouted_client(&self, nodes: &[usize]) -> anyhow::Result<Client> {
        Ok(Client::connect(self.client_options(nodes).route_to_leaders(false)).await?)
    }

    /// Every running node's own view, by index.
    pub fn views(&self) -> Vec<(usize, ClusterView)> {
        self.members
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.node.as_ref().map(|n| (i, n.broker.consensus().local_status())))
            .collect()
    }

    /// The index of the running node that leads the group of the tests'
    /// topic (`jobs.t`, see [`exactly_once_job`]), if exactly one claims to.
    pub fn leader(&self) -> Option<usize> {
        self.leader_of(JOBS_TOPIC)
    }

    /// The index of the running node that leads the group of `topic`, if
    /// exactly one claims to.
    pub fn leader_of(&self, topic: &str) -> Option<usize> {
        let topic = hermod_broker::domain::TopicName::parse("topic", topic).expect("a valid topic");
        let leaders: Vec<usize> = self
            .members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.node.as_ref().is_some_and(|n| n.broker.leads_topic(&topic)))
            .map(|(i, _)| i)
            .collect();
        (leaders.len() == 1).then(|| leaders[0])
    }

    /// Cuts every link between node `index` and the others.
    pub fn isolate(&self, index: usize) {
        for (other, member) in self.members.iter().enumerate() {
            if other != index {
                self.faults
                    .partition(&self.members[index].address, &member.address);
            }
        }
    }

    pub fn heal(&self) {
        self.faults.heal();
    }

    /// Waits until `check` holds for the running nodes' views, polling on a
    /// short tick, for at most [`SETTLE_TIMEOUT`].
    pub async fn wait_for(&self, check: impl Fn(&[(usize, ClusterView)]) -> bool) -> anyhow::Result<()> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let views = self.views();
            if check(&views) {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!("the cluster did not settle within {SETTLE_TIMEOUT:?}: {views:#?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until one running node leads with a quorum, and returns its index.
    /// A new leader serves only once it applied its term's first entry, a
    /// moment after its view already says leader: both are waited for.
    pub async fn wait_for_leader(&self) -> anyhow::Result<usize> {
        self.wait_for(|views| {
            let elected = views.iter().any(|(_, v)| {
                v.quorum
                    && v.nodes
                        .iter()
                        .any(|n| n.id == v.node_id && n.role == Role::Leader)
            });
            let served = self
                .members
                .iter()
                .filter_map(|m| m.node.as_ref())
                .all(|n| n.broker.shards_led());
            elected && served && self.leader().is_some()
        })
        .await?;
        self.leader()
            .ok_or_else(|| anyhow::anyhow!("no single node serves as the leader"))
    }

    /// Waits until every running replica of every group has applied that
    /// group's last entry.
    pub async fn wait_caught_up(&self) -> anyhow::Result<()> {
        self.wait_for(|views| {
            let names: std::collections::BTreeSet<&str> = views
                .iter()
                .flat_map(|(_, v)| v.groups.iter().map(|g| g.name.as_str()))
                .collect();
            names.into_iter().all(|name| {
                let replicas: Vec<_> = views
                    .iter()
                    .filter_map(|(_, v)| {
                        v.groups
                            .iter()
                            .find(|g| g.name == name && g.replicas.contains(&v.node_id))
                    })
                    .collect();
                // Every replica runs and has opened the group (a restarted
                // node reopens its shards a moment after it starts).
                let running = replicas.iter().map(|g| g.replicas.len()).max().unwrap_or(0);
                let last = replicas.iter().map(|g| g.last_log_index).max().unwrap_or(0);
                replicas.len() == running && replicas.iter().all(|g| g.applied_index == last)
            })
        })
        .await
    }
}

/// True when `size` running nodes agree on one leader with a quorum and
/// every one of them is a voter.
pub fn all_agree(views: &[(usize, ClusterView)], size: usize) -> bool {
    if views.len() < size {
        return false;
    }
    let leaders: Vec<Option<u64>> = views.iter().map(|(_, v)| v.groups[0].leader).collect();
    leaders[0].is_some()
        && leaders.iter().all(|l| *l == leaders[0])
        && views
            .iter()
            .all(|(_, v)| v.quorum && v.groups[0].replicas.len() == size)
}

/// The topic of [`exactly_once_job`].
pub const JOBS_TOPIC: &str = "jobs.t";

/// An exactly-once message on `jobs.t` whose id and payload are `id`.
pub fn exactly_once_job(id: &str) -> OutgoingMessage {
    OutgoingMessage::new(JOBS_TOPIC, id.to_string())
        .id(id.to_string())
        .delivery(Delivery::ExactlyOnce)
}

/// Receives exactly `expected` from `subscription`, acking each with
/// confirmation; fails on a duplicate or when nothing comes for 30 s.
pub async fn consume_confirmed(
    client: &Client,
    subscription: &str,
    expected: &std::collections::BTreeSet<String>,
) -> anyhow::Result<()> {
    use futures::StreamExt;
    let options = hermod_client::SubscribeOptions::subscription(subscription);
    let mut subscriber = client.subscribe(options).await?;
    let mut got = std::collections::BTreeSet::new();
    while got.len() < expected.len() {
        let next = tokio::time::timeout(Duration::from_secs(30), subscriber.next())
            .await
            .map_err(|_| anyhow::anyhow!("only {} of {} arrived", got.len(), expected.len()))?
            .ok_or_else(|| anyhow::anyhow!("the stream ended"))??;
        assert!(
            got.insert(next.id.clone()),
            "{} delivered twice after confirmed acks",
            next.id
        );
        next.ack_confirmed().await?;
    }
    assert_eq!(&got, expected, "every acknowledged publish is delivered");
    Ok(())
}

//! `DockerCluster`: hermod nodes in containers of the `hermod:local` image,
//! on networks of their own, that the nemesis can kill, pause, restart and
//! partition.
//!
//! Every pair of nodes shares a private "link" network, and a node reaches
//! a peer only through their link (the peer's name, `nK`, is an alias on
//! that network alone), so disconnecting one node from one link cuts exactly
//! that pair; reconnecting gives the node its old address back. A further
//! network, never cut, carries the published ports the workload uses. The
//! containers keep docker's default host names: a node's `--hostname`
//! would resolve on every network, that one too, and bypass the links.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::process::Command;

/// How long one docker command may take before it is abandoned.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(90);
/// Seconds a graceful stop waits before docker sends SIGKILL.
pub const STOP_GRACE_SECONDS: u32 = 15;
/// The gRPC and admin ports inside every container.
const GRPC_PORT: u16 = 7400;
const ADMIN_PORT: u16 = 7401;
/// Link networks take /24 subnets `10.LINK_SUBNET_OCTET.K.0/24`, K free.
const LINK_SUBNET_OCTET: u8 = 231;
/// Subnets tried before giving up on creating a link network.
const SUBNET_ATTEMPTS: u16 = 256;
/// The label every container and network of this suite carries (value: the run id).
pub const RUN_LABEL: &str = "hermod-chaos.run";

/// One node's container.
#[derive(Debug, Clone)]
pub struct DockerNode {
    pub container: String,
    /// The name peers dial, `nK`; its advertised address is `nK:7400`.
    pub alias: String,
    pub grpc_port: u16,
    pub admin_port: u16,
}

/// The network joining two nodes.
#[derive(Debug, Clone)]
struct Link {
    network: String,
    /// The first three octets of its /24 subnet.
    prefix: String,
    cut: bool,
}

/// A containerised cluster that removes its containers and networks when dropped.
pub struct DockerCluster {
    pub run_id: String,
    pub nodes: Vec<DockerNode>,
    client_network: String,
    links: BTreeMap<(usize, usize), Link>,
}

/// Runs `docker ARGS`; returns its standard output, or fails with its error output.
pub async fn docker(args: &[&str]) -> anyhow::Result<String> {
    let mut command = Command::new("docker");
    command.args(args).kill_on_drop(true);
    let output = tokio::time::timeout(DOCKER_TIMEOUT, command.output())
        .await
        .map_err(|_| anyhow::anyhow!("docker {}: no answer within {DOCKER_TIMEOUT:?}", args.join(" ")))??;
    anyhow::ensure!(
        output.status.success(),
        "docker {}: {}: {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

impl DockerCluster {
    /// Creates the networks and `size` containers of `image` forming one
    /// cluster by expected size, and starts them. Does not wait for them.
    pub async fn start(run_id: &str, image: &str, size: usize) -> anyhow::Result<Self> {
        let mut cluster = Self {
            run_id: run_id.to_string(),
            nodes: Vec::new(),
            client_network: format!("hermod-chaos-{run_id}-0clients"),
            links: BTreeMap::new(),
        };
        let label = format!("{RUN_LABEL}={run_id}");
        docker(&["network", "create", "--label", &label, &cluster.client_network]).await?;
        for a in 0..size {
            for b in a + 1..size {
                let link = cluster.create_link(a, b, &label).await?;
                cluster.links.insert((a, b), link);
            }
        }
        for index in 0..size {
            let node = DockerNode {
                container: format!("hermod-chaos-{run_id}-n{}", index + 1),
                alias: format!("n{}", index + 1),
                grpc_port: crate::free_port(),
                admin_port: crate::free_port(),
            };
            cluster.nodes.push(node);
        }
        for index in 0..size {
            cluster.create_container(index, image, &label).await?;
        }
        for index in 0..size {
            docker(&["start", &cluster.nodes[index].container]).await?;
        }
        Ok(cluster)
    }

    async fn create_link(&self, a: usize, b: usize, label: &str) -> anyhow::Result<Link> {
        let network = format!("hermod-chaos-{}-link{}{}", self.run_id, a + 1, b + 1);
        let first = self.run_id.bytes().map(u16::from).sum::<u16>();
        let mut last_error = String::new();
        for attempt in 0..SUBNET_ATTEMPTS {
            let octet = (first + attempt) % 256;
            let prefix = format!("10.{LINK_SUBNET_OCTET}.{octet}");
            let subnet = format!("{prefix}.0/24");
            match docker(&[
                "network", "create", "--label", label, "--subnet", &subnet, &network,
            ])
            .await
            {
                Ok(_) => {
                    return Ok(Link {
                        network,
                        prefix,
                        cut: false,
                    });
                }
                // Another network holds the subnet: try the next one.
                Err(e) => last_error = e.to_string(),
            }
        }
        anyhow::bail!("no free subnet for {network}: {last_error}")
    }

    async fn create_container(&self, index: usize, image: &str, label: &str) -> anyhow::Result<()> {
        let node = &self.nodes[index];
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.alias != node.alias)
            .map(|n| format!("{}:{GRPC_PORT}", n.alias))
            .collect();
        let env = [
            "HERMOD_DATA_DIR=/data".to_string(),
            format!("HERMOD_LISTEN=0.0.0.0:{GRPC_PORT}"),
            format!("HERMOD_ADMIN_LISTEN=0.0.0.0:{ADMIN_PORT}"),
            format!("HERMOD_ADVERTISE={}:{GRPC_PORT}", node.alias),
            format!("HERMOD_SEEDS={}", seeds.join(",")),
            format!("HERMOD_EXPECT_NODES={}", self.nodes.len()),
            "HERMOD_LOG_FORMAT=text".to_string(),
            "NO_COLOR=1".to_string(),
        ];
        let grpc = format!("127.0.0.1:{}:{GRPC_PORT}", node.grpc_port);
        let admin = format!("127.0.0.1:{}:{ADMIN_PORT}", node.admin_port);
        let mut args = vec![
            "create",
            "--name",
            &node.container,
            "--label",
            label,
            "--network",
            &self.client_network,
            "-p",
            &grpc,
            "-p",
            &admin,
        ];
        for variable in &env {
            args.push("-e");
            args.push(variable);
        }
        args.push(image);
        docker(&args).await?;
        for (&(a, b), _) in self.links.iter().filter(|((a, b), _)| *a == index || *b == index) {
            self.connect(index, a, b).await?;
        }
        Ok(())
    }

    /// Connects node `index` to the link network of `a` and `b`, under its
    /// fixed address and its alias.
    async fn connect(&self, index: usize, a: usize, b: usize) -> anyhow::Result<()> {
        let link = &self.links[&(a, b)];
        let ip = format!("{}.{}", link.prefix, 10 + index);
        let node = &self.nodes[index];
        docker(&[
            "network",
            "connect",
            "--ip",
            &ip,
            "--alias",
            &node.alias,
            &link.network,
            &node.container,
        ])
        .await?;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The gRPC endpoint of node `index` on the host.
    pub fn endpoint(&self, index: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[index].grpc_port)
    }

    pub fn endpoints(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.endpoint(i)).collect()
    }

    /// The index of the node whose advertised address is `address` (`nK:7400`).
    pub fn index_of_address(&self, address: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| format!("{}:{GRPC_PORT}", n.alias) == address)
    }

    /// SIGKILL: no clean shutdown, no flush.
    pub async fn kill(&self, index: usize) -> anyhow::Result<()> {
        docker(&["kill", "--signal", "KILL", &self.nodes[index].container]).await?;
        Ok(())
    }

    /// Starts a stopped container on the same data, ports and networks.
    pub async fn start_node(&self, index: usize) -> anyhow::Result<()> {
        docker(&["start", &self.nodes[index].container]).await?;
        Ok(())
    }

    /// SIGTERM, then SIGKILL after the grace period, then start again.
    pub async fn restart(&self, index: usize) -> anyhow::Result<()> {
        let grace = STOP_GRACE_SECONDS.to_string();
        docker(&["restart", "--time", &grace, &self.nodes[index].container]).await?;
        Ok(())
    }

    /// Freezes every process of the container (cgroup freezer).
    pub async fn pause(&self, index: usize) -> anyhow::Result<()> {
        docker(&["pause", &self.nodes[index].container]).await?;
        Ok(())
    }

    pub async fn unpause(&self, index: usize) -> anyhow::Result<()> {
        docker(&["unpause", &self.nodes[index].container]).await?;
        Ok(())
    }

    /// Cuts the link between nodes `a` and `b` (both ways).
    pub async fn cut(&mut self, a: usize, b: usize) -> anyhow::Result<()> {
        let key = (a.min(b), a.max(b));
        let link = self
            .links
            .get(&key)
            .ok_or_else(|| anyhow::anyhow!("no link {a}-{b}"))?;
        if link.cut {
            return Ok(());
        }
        docker(&[
            "network",
            "disconnect",
            "--force",
            &link.network,
            &self.nodes[key.0].container,
        ])
        .await?;
        if let Some(link) = self.links.get_mut(&key) {
            link.cut = true;
        }
        Ok(())
    }

    /// Restores every cut link.
    pub async fn heal_all(&mut self) -> anyhow::Result<()> {
        let cut: Vec<(usize, usize)> = self
            .links
            .iter()
            .filter(|(_, l)| l.cut)
            .map(|(k, _)| *k)
            .collect();
        for (a, b) in cut {
            self.connect(a, a, b).await?;
            if let Some(link) = self.links.get_mut(&(a, b)) {
                link.cut = false;
            }
        }
        Ok(())
    }

    /// Everything node `index` wrote to its standard output and error,
    /// across restarts.
    pub async fn logs(&self, index: usize) -> anyhow::Result<String> {
        let mut command = Command::new("docker");
        command
            .args(["logs", &self.nodes[index].container])
            .kill_on_drop(true);
        let output = tokio::time::timeout(DOCKER_TIMEOUT, command.output())
            .await
            .map_err(|_| anyhow::anyhow!("docker logs: no answer within {DOCKER_TIMEOUT:?}"))??;
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        Ok(text)
    }

    /// Removes the containers (with their anonymous data volumes) and the
    /// networks of this run, whatever state they are in.
    pub fn remove(&mut self) {
        for node in self.nodes.drain(..) {
            let _ = std::process::Command::new("docker")
                .args(["rm", "--force", "--volumes", &node.container])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
        let networks = std::iter::once(self.client_network.clone())
            .chain(self.links.values().map(|l| l.network.clone()))
            .collect::<Vec<_>>();
        self.links.clear();
        for network in networks {
            let _ = std::process::Command::new("docker")
                .args(["network", "rm", &network])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

impl Drop for DockerCluster {
    fn drop(&mut self) {
        self.remove();
    }
}

//! Test harness: brokers started in-process (ports 0, temporary data
//! directories) or as real `hermod serve` processes that can be killed, and
//! in-process clusters (`cluster::TestCluster`).

pub mod chaos;
pub mod checks;
pub mod cluster;
pub mod processes;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hermod_broker::config::Config;
use hermod_broker::server::Node;

/// How long a broker may take to start before a test gives up.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A broker running inside the test process.
pub struct TestNode {
    pub node: Option<Node>,
    pub dir: PathBuf,
    /// Changes the test configuration, at the start and at every restart.
    tune: fn(&mut Config),
    _temp: Option<tempfile::TempDir>,
}

impl TestNode {
    /// Starts a node on fresh storage.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(|_| {}).await
    }

    /// Starts a node on fresh storage with `tune` applied to its configuration.
    pub async fn start_with(tune: fn(&mut Config)) -> anyhow::Result<Self> {
        let temp = tempfile::tempdir()?;
        let dir = temp.path().to_path_buf();
        let node = Node::start(tuned_config(&dir, tune)).await?;
        Ok(Self {
            node: Some(node),
            dir,
            tune,
            _temp: Some(temp),
        })
    }

    /// The gRPC endpoint, e.g. `http://127.0.0.1:41234`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.node().grpc_addr)
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.node().admin_addr
    }

    pub fn node(&self) -> &Node {
        self.node.as_ref().expect("the node is running")
    }

    /// Stops the node cleanly and starts it again on the same data (new ports).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if let Some(node) = self.node.take() {
            node.stop().await;
        }
        self.node = Some(Node::start(tuned_config(&self.dir, self.tune)).await?);
        Ok(())
    }
}

fn tuned_config(dir: &Path, tune: fn(&mut Config)) -> Config {
    let mut config = Config::with_data_dir(dir);
    config.listen = "127.0.0.1:0".parse().expect("address");
    config.admin_listen = "127.0.0.1:0".parse().expect("address");
    tune(&mut config);
    config
}

/// The `hermod` binary built for these tests.
pub fn hermod_binary() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    target.join(profile).join("hermod")
}

/// A free port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A `hermod serve` process.
pub struct BrokerProcess {
    pub child: Child,
    pub grpc_port: u16,
    pub admin_port: u16,
    pub data_dir: PathBuf,
}

impl BrokerProcess {
    /// Starts `hermod serve` on `data_dir` and waits until it is ready.
    pub fn start(data_dir: &Path) -> anyhow::Result<Self> {
        let (grpc_port, admin_port) = (free_port(), free_port());
        let child = Command::new(hermod_binary())
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{grpc_port}"))
            .arg("--admin-listen")
            .arg(format!("127.0.0.1:{admin_port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut process = Self {
            child,
            grpc_port,
            admin_port,
            data_dir: data_dir.to_path_buf(),
        };
        process.wait_ready()?;
        Ok(process)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("hermod exited during start: {status}");
            }
            if http_get(self.admin_port, "/health/ready").is_ok_and(|(code, _)| code == 200) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        anyhow::bail!("hermod was not ready within {START_TIMEOUT:?}")
    }

    /// SIGKILL: no clean shutdown, no flush.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 GET against 127.0.0.1; returns the status code and body.
pub fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    parse_http_response(&response)
}

/// The status code and body of a raw HTTP/1.1 response.
pub fn parse_http_response(response: &str) -> anyhow::Result<(u16, String)> {
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("malformed HTTP response"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

//! Broker processes started by the harness: a fresh `hermod serve` or `nats-server` per run, on loopback.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::Instant;

/// How long a broker may take to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between readiness probes (there is no event to wait for).
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// How long a process may take to exit after SIGKILL.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one HTTP probe may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many warning lines of a server log go into the report.
pub const MAX_LOG_LINES: usize = 5;
/// Prefixes of the Hermod metrics kept in the report.
const KEPT_METRICS: [&str; 5] = [
    "hermod_messages_dropped_total",
    "hermod_fsync_batch_entries_sum",
    "hermod_fsync_batch_entries_count",
    "hermod_publish_to_ack_seconds_sum",
    "hermod_publish_to_ack_seconds_count",
];

/// The flag of `hermod serve` that bounds RocksDB's block cache and memtables, in MiB.
const CACHE_FLAG: &str = "--cache-mb";
/// The cache `hermod serve` runs with when it has no `--cache-mb` to be
/// given, in MiB: the default the flag is announced with.
const BROKER_DEFAULT_CACHE_MB: u64 = 256;

/// The name of the NATS cluster the harness forms.
const NATS_CLUSTER: &str = "bench";
/// Attempts to find distinct free ports before giving up.
const PORT_ATTEMPTS: usize = 100;

/// The loopback ports of one broker process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// Clients (and, for Hermod, peers).
    pub client: u16,
    /// Health and metrics over HTTP.
    pub http: u16,
    /// NATS routes between servers (unused by Hermod, whose peers use `client`).
    pub cluster: u16,
}

impl Ports {
    /// Ports for `count` processes, all distinct and free right now.
    pub fn distinct(count: usize) -> anyhow::Result<Vec<Ports>> {
        let mut found: Vec<u16> = Vec::with_capacity(3 * count);
        for _ in 0..PORT_ATTEMPTS {
            if found.len() == 3 * count {
                break;
            }
            let port = free_port()?;
            if !found.contains(&port) {
                found.push(port);
            }
        }
        anyhow::ensure!(
            found.len() == 3 * count,
            "could not find {} distinct free ports",
            3 * count
        );
        Ok(found
            .chunks(3)
            .map(|p| Ports {
                client: p[0],
                http: p[1],
                cluster: p[2],
            })
            .collect())
    }
}

/// How one node of a cluster finds the others.
#[derive(Debug, Clone)]
pub struct Peering {
    /// This node's place in the cluster, from 0.
    pub index: usize,
    /// The ports of every other node.
    pub seeds: Vec<Ports>,
}

/// How the harness starts `hermod serve`: the binary, and the cache it is given.
#[derive(Debug, Clone)]
pub struct HermodLaunch {
    pub binary: PathBuf,
    /// The cache in MiB the broker runs with: the harness's `--cache-mb`
    /// when the broker takes the flag, its own default otherwise.
    pub cache_mb: u64,
    /// Whether `hermod serve --help` lists `--cache-mb`, so the harness passes it.
    pub cache_mb_passed: bool,
}

impl HermodLaunch {
    /// Asks `binary` whether `hermod serve` takes `--cache-mb`, so an older
    /// broker still starts (with its own cache) instead of refusing the flag.
    pub async fn detect(binary: PathBuf, cache_mb: u64) -> Self {
        let help = crate::machine::output(&binary, &["serve", "--help"]).await;
        let cache_mb_passed = help.is_some_and(|text| text.contains(CACHE_FLAG));
        Self {
            binary,
            cache_mb: if cache_mb_passed {
                cache_mb
            } else {
                BROKER_DEFAULT_CACHE_MB
            },
            cache_mb_passed,
        }
    }
}

/// A broker process, killed when dropped, with a data directory and a log
/// removed with it. It can be killed and started again on the same
/// directory and ports (the leader-failover scenario).
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// How the process was started, to start it again the same way.
    command: Command,
    /// Whether the harness killed the process on purpose (and has not
    /// restarted it yet), so its exit is not a failure of the run.
    killed: bool,
    /// The client address: `http://127.0.0.1:PORT` for Hermod, `nats://127.0.0.1:PORT` for NATS.
    pub url: String,
    /// `hermod-N` or `nats-N` (NATS's server name, which JetStream reports as a stream's leader).
    pub name: String,
    /// The HTTP port of health and metrics.
    pub http_port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `hermod serve` on fresh storage (fsync on, the default) on
    /// `ports`, with the launch's cache when the broker takes one; in a
    /// cluster, `peer` says how it finds the others. Does not wait: see
    /// [`wait_ready`](Self::wait_ready).
    pub fn spawn_hermod(launch: &HermodLaunch, ports: Ports, peer: Option<Peering>) -> anyhow::Result<Self> {
        let binary = &launch.binary;
        anyhow::ensure!(
            binary.is_file(),
            "no hermod binary at {} (build it with `cargo build --release -p hermod-broker --bin hermod`, or pass --hermod-bin)",
            binary.display()
        );
        let dir = tempfile::Builder::new().prefix("hermod-bench-").tempdir()?;
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", ports.client))
            .arg("--admin-listen")
            .arg(format!("127.0.0.1:{}", ports.http));
        if launch.cache_mb_passed {
            command.arg(CACHE_FLAG).arg(launch.cache_mb.to_string());
        }
        if let Some(peer) = &peer {
            let seeds: Vec<String> = peer
                .seeds
                .iter()
                .map(|p| format!("127.0.0.1:{}", p.client))
                .collect();
            command
                .arg("--node-id")
                .arg((peer.index + 1).to_string())
                .arg("--join")
                .arg(seeds.join(","))
                .arg("--expect-nodes")
                .arg((peer.seeds.len() + 1).to_string());
        }
        // Settings of the caller's environment (HERMOD_FSYNC, ...) must not change what is measured.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("HERMOD_") {
                command.env_remove(key);
            }
        }
        command.env("RUST_LOG", "warn");
        let url = format!("http://127.0.0.1:{}", ports.client);
        let name = format!("hermod-{}", peer.map_or(0, |p| p.index));
        Self::spawn(command, dir, url, name, ports.http)
    }

    /// Starts `nats-server` with JetStream (default settings, file store in a
    /// fresh directory) on `ports`; in a cluster, with routes to the `peer`s.
    /// Does not wait: see [`wait_ready`](Self::wait_ready).
    pub fn spawn_nats(binary: &Path, ports: Ports, peer: Option<Peering>) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("nats-bench-").tempdir()?;
        let name = format!("nats-{}", peer.as_ref().map_or(0, |p| p.index));
        let mut command = Command::new(binary);
        command
            .arg("-js")
            .arg("-sd")
            .arg(dir.path().join("store"))
            .arg("-a")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(ports.client.to_string())
            .arg("-m")
            .arg(ports.http.to_string())
            .arg("-n")
            .arg(&name);
        if let Some(peer) = &peer {
            let routes: Vec<String> = peer
                .seeds
                .iter()
                .map(|p| format!("nats://127.0.0.1:{}", p.cluster))
                .collect();
            command
                .arg("--cluster_name")
                .arg(NATS_CLUSTER)
                .arg("--cluster")
                .arg(format!("nats://127.0.0.1:{}", ports.cluster))
                .arg("--routes")
                .arg(routes.join(","));
        }
        let url = format!("nats://127.0.0.1:{}", ports.client);
        Self::spawn(command, dir, url, name, ports.http)
    }

    fn spawn(
        mut command: Command,
        dir: tempfile::TempDir,
        url: String,
        name: String,
        http_port: u16,
    ) -> anyhow::Result<Self> {
        let log = dir.path().join("server.log");
        let child = start(&mut command, &log)?;
        Ok(Self {
            child,
            command,
            killed: false,
            url,
            name,
            http_port,
            log,
            _dir: dir,
        })
    }

    /// Sends SIGKILL and waits (bounded) until the process is gone; its data
    /// directory stays, for [`restart`](Self::restart).
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        // `start_kill` is SIGKILL on Unix.
        self.child
            .start_kill()
            .with_context(|| format!("killing {}", self.name))?;
        self.killed = true;
        tokio::time::timeout(KILL_TIMEOUT, self.child.wait())
            .await
            .with_context(|| format!("{} did not exit within {KILL_TIMEOUT:?} of SIGKILL", self.name))?
            .with_context(|| format!("waiting for {}", self.name))?;
        Ok(())
    }

    /// Starts the process again with the same arguments, data directory and
    /// ports, its output appended to the same log. Does not wait: see
    /// [`wait_ready`](Self::wait_ready).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let exited = self
            .child
            .try_wait()
            .with_context(|| format!("asking after {}", self.name))?;
        anyhow::ensure!(exited.is_some(), "{} is still running", self.name);
        self.child = start(&mut self.command, &self.log)?;
        self.killed = false;
        Ok(())
    }

    /// Waits until the server answers 200 on its readiness path (Hermod:
    /// `/health/ready`, which needs a quorum; NATS: `/healthz`).
    pub async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let path = if self.url.starts_with("nats:") {
            "/healthz"
        } else {
            "/health/ready"
        };
        let name = self.name.clone();
        self.poll_ready(path)
            .await
            .with_context(|| format!("{name}: {}", self.log_tail()))
    }

    async fn poll_ready(&mut self, path: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("exited during start ({status})");
            }
            if http_get(self.http_port, path)
                .await
                .is_ok_and(|(code, _)| code == 200)
            {
                return Ok(());
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
        bail!("not ready within {START_TIMEOUT:?}")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Whether the process has exited (it should not have, during a run),
    /// unless the harness killed it on purpose.
    pub fn exited(&mut self) -> Option<String> {
        if self.killed {
            return None;
        }
        self.child
            .try_wait()
            .ok()
            .flatten()
            .map(|status| status.to_string())
    }

    /// Warning and error lines of the log, at most a few, and how many there were.
    pub fn warnings(&self) -> (usize, Vec<String>) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter(|line| {
                line.contains("WARN")
                    || line.contains("ERROR")
                    || line.contains("[WRN]")
                    || line.contains("[ERR]")
            })
            .collect();
        let kept = lines.iter().take(MAX_LOG_LINES).map(|l| l.to_string()).collect();
        (lines.len(), kept)
    }

    /// The last lines of the log, to explain a failed start.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(10)..].join("\n");
        if tail.is_empty() {
            "(empty log)".to_owned()
        } else {
            tail
        }
    }

    /// The Hermod metrics the report keeps (drops, fsync batching, server-side publish latency).
    pub async fn hermod_metrics(&self) -> BTreeMap<String, f64> {
        let Ok((200, body)) = http_get(self.http_port, "/metrics").await else {
            return BTreeMap::new();
        };
        body.lines()
            .filter(|line| KEPT_METRICS.iter().any(|prefix| line.starts_with(prefix)))
            .filter_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                Some((name.to_owned(), value.parse().ok()?))
            })
            .collect()
    }

    /// Kills the process and waits for it (bounded), so the next run starts on a quiet machine.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// Starts `command` with its output appended to `log` (created if need be).
fn start(command: &mut Command, log: &Path) -> anyhow::Result<Child> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let program = command.as_std().get_program().to_string_lossy().into_owned();
    command
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {program}"))
}

/// A free port on 127.0.0.1 (bound, then released).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A minimal HTTP/1.1 GET against 127.0.0.1; returns the status code and body.
pub async fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(HTTP_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("GET {path}: no answer within {HTTP_TIMEOUT:?}"))??;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("GET {path}: malformed HTTP response"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// CPU time (user + system) a process has used so far, from /proc.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are plain.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // /proc reports in USER_HZ, which is 100 on Linux.
    Some(Duration::from_millis(ticks * 10))
}

/// Samples the CPU time of the servers and of this process at the start
/// and end of the measured window (or when `ended` turns true, if sooner);
/// returns both as percentages of one core (the servers' added up).
pub async fn cpu_during(
    server_pids: Vec<u32>,
    from: Instant,
    until: Instant,
    mut ended: watch::Receiver<bool>,
) -> (Option<f64>, Option<f64>) {
    let own = std::process::id();
    let servers = || -> Option<Duration> {
        let times: Option<Vec<Duration>> = server_pids.iter().map(|pid| cpu_time(*pid)).collect();
        times.filter(|t| !t.is_empty()).map(|t| t.into_iter().sum())
    };
    tokio::time::sleep_until(from).await;
    let before = (servers(), cpu_time(own));
    let end = tokio::select! {
        _ = tokio::time::sleep_until(until) => until,
        _ = ended.changed() => Instant::now().min(until),
    };
    let after = (servers(), cpu_time(own));
    let span = (end - from).as_secs_f64();
    let percent = |a: Option<Duration>, b: Option<Duration>| {
        let used = b?.checked_sub(a?)?.as_secs_f64();
        (span > 0.0).then(|| (used / span * 1000.0).round() / 10.0)
    };
    (percent(before.0, after.0), percent(before.1, after.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_broker_without_the_cache_flag_keeps_its_own_cache() {
        let launch = HermodLaunch::detect(PathBuf::from("/nonexistent/hermod"), 64).await;
        assert!(!launch.cache_mb_passed);
        assert_eq!(launch.cache_mb, BROKER_DEFAULT_CACHE_MB);
    }

    #[tokio::test]
    async fn a_killed_server_starts_again_with_the_same_command_and_log() {
        let dir = tempfile::tempdir().expect("dir");
        let mut command = Command::new("sh");
        command.arg("-c").arg("echo started; exec sleep 60");
        let mut server = Server::spawn(command, dir, "test://".into(), "sleeper".into(), 0).expect("spawn");
        let first = server.pid().expect("running");
        wait_for_starts(&server, 1).await;
        assert!(server.restart().is_err(), "a running server is not restarted");
        server.kill().await.expect("kill");
        assert_eq!(server.pid(), None);
        assert_eq!(server.exited(), None, "a kill on purpose is no failure");
        server.restart().expect("restart");
        assert!(server.pid().is_some_and(|pid| pid != first));
        wait_for_starts(&server, 2).await;
        server.stop().await;
    }

    /// Waits (at most 10 s) until the log of `server` says `started` `count` times.
    async fn wait_for_starts(server: &Server, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = std::fs::read_to_string(&server.log).unwrap_or_default();
            if log.matches("started").count() >= count {
                return;
            }
            assert!(Instant::now() < deadline, "{count} starts not logged: {log:?}");
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    #[test]
    fn this_process_has_a_cpu_time() {
        assert!(cpu_time(std::process::id()).is_some());
        assert!(free_port().expect("port") > 0);
        let ports = Ports::distinct(3).expect("ports");
        let mut all: Vec<u16> = ports.iter().flat_map(|p| [p.client, p.http, p.cluster]).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 9);
    }
}

//! Broker processes started by the harness: a fresh `hermod serve` or `nats-server` per run, on loopback.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// How long a broker may take to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between readiness probes (there is no event to wait for).
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// How long one HTTP probe may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many warning lines of a server log go into the report.
const MAX_LOG_LINES: usize = 5;
/// Prefixes of the Hermod metrics kept in the report.
const KEPT_METRICS: [&str; 5] = [
    "hermod_messages_dropped_total",
    "hermod_fsync_batch_entries_sum",
    "hermod_fsync_batch_entries_count",
    "hermod_publish_to_ack_seconds_sum",
    "hermod_publish_to_ack_seconds_count",
];

/// A broker process, killed when dropped, with a data directory and a log
/// removed with it.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// The client address: `http://127.0.0.1:PORT` for Hermod, `nats://127.0.0.1:PORT` for NATS.
    pub url: String,
    /// The HTTP port of health and metrics.
    pub http_port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `hermod serve` on fresh storage (fsync on, the default) and waits until it is ready.
    pub async fn hermod(binary: &Path) -> anyhow::Result<Self> {
        anyhow::ensure!(
            binary.is_file(),
            "no hermod binary at {} (build it with `cargo build --release -p hermod-broker --bin hermod`, or pass --hermod-bin)",
            binary.display()
        );
        let dir = tempfile::Builder::new().prefix("hermod-bench-").tempdir()?;
        let (grpc_port, admin_port) = (free_port()?, free_port()?);
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{grpc_port}"))
            .arg("--admin-listen")
            .arg(format!("127.0.0.1:{admin_port}"))
            .env("RUST_LOG", "warn");
        let url = format!("http://127.0.0.1:{grpc_port}");
        Self::start(command, dir, url, admin_port, "/health/ready").await
    }

    /// Starts `nats-server` with JetStream (default settings, file store in a
    /// fresh directory) and waits until it is healthy.
    pub async fn nats(binary: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("nats-bench-").tempdir()?;
        let (port, monitor_port) = (free_port()?, free_port()?);
        let mut command = Command::new(binary);
        command
            .arg("-js")
            .arg("-sd")
            .arg(dir.path().join("store"))
            .arg("-a")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(port.to_string())
            .arg("-m")
            .arg(monitor_port.to_string());
        let url = format!("nats://127.0.0.1:{port}");
        Self::start(command, dir, url, monitor_port, "/healthz").await
    }

    async fn start(
        mut command: Command,
        dir: tempfile::TempDir,
        url: String,
        http_port: u16,
        ready_path: &str,
    ) -> anyhow::Result<Self> {
        let log = dir.path().join("server.log");
        let log_file = std::fs::File::create(&log)?;
        let program = command.as_std().get_program().to_string_lossy().into_owned();
        let child = command
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {program}"))?;
        let mut server = Self {
            child,
            url,
            http_port,
            log,
            _dir: dir,
        };
        server
            .wait_ready(ready_path)
            .await
            .with_context(|| format!("{program}: {}", server.log_tail()))?;
        Ok(server)
    }

    async fn wait_ready(&mut self, path: &str) -> anyhow::Result<()> {
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

    /// Whether the process has exited (it should not have, during a run).
    pub fn exited(&mut self) -> Option<String> {
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

/// Samples the CPU time of the server and of this process at the start and
/// end of the measured window; returns both as percentages of one core.
pub async fn cpu_during(
    server_pid: Option<u32>,
    from: Instant,
    until: Instant,
) -> (Option<f64>, Option<f64>) {
    let own = std::process::id();
    tokio::time::sleep_until(from).await;
    let before = (server_pid.and_then(cpu_time), cpu_time(own));
    tokio::time::sleep_until(until).await;
    let after = (server_pid.and_then(cpu_time), cpu_time(own));
    let span = (until - from).as_secs_f64();
    let percent = |a: Option<Duration>, b: Option<Duration>| {
        Some(((b? - a?).as_secs_f64() / span * 1000.0).round() / 10.0)
    };
    (percent(before.0, after.0), percent(before.1, after.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_cpu_time() {
        assert!(cpu_time(std::process::id()).is_some());
        assert!(free_port().expect("port") > 0);
    }
}

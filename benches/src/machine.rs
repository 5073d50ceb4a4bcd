//! The machine a report was measured on: cores, CPU, kernel, memory, the commit and both servers' versions.

use std::path::Path;
use std::time::SystemTime;

use serde::Serialize;

/// How long one probing command (git, uname, `--version`) may take.
const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The machine a report was measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub date: String,
    pub git_commit: Option<String>,
    pub git_dirty: Option<bool>,
    pub cpu_model: Option<String>,
    pub kernel: Option<String>,
    pub memory_mib: Option<u64>,
    pub hermod_version: Option<String>,
    pub nats_server_version: Option<String>,
}

impl Machine {
    pub async fn detect(hermod: &Path, nats: &Path, with_nats: bool) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|line| line.starts_with("model name"))
            .and_then(|line| line.split_once(':'))
            .map(|(_, model)| model.trim().to_owned());
        let memory_mib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| {
            let line = text.lines().find(|line| line.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib / 1024)
        });
        // scripts/bench.sh names the checkout; otherwise the current directory's.
        let source = std::env::var("HERMOD_BENCH_SOURCE").unwrap_or_else(|_| ".".to_owned());
        let git_status = output(
            "git",
            &["-C", &source, "status", "--porcelain", "--untracked-files=no"],
        )
        .await;
        Self {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            date: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            git_commit: output("git", &["-C", &source, "rev-parse", "--short", "HEAD"]).await,
            git_dirty: git_status.map(|status| !status.is_empty()),
            cpu_model,
            kernel: output("uname", &["-r"]).await,
            memory_mib,
            hermod_version: output(hermod, &["--version"]).await,
            nats_server_version: if with_nats {
                output(nats, &["--version"]).await
            } else {
                None
            },
        }
    }
}

/// The trimmed standard output of a command that succeeded (an empty
/// output counts), bounded in time.
pub async fn output(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Option<String> {
    let run = tokio::process::Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(COMMAND_TIMEOUT, run).await.ok()?.ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

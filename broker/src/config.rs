//! The broker's configuration: flags > `HERMOD_*` environment > TOML file > defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::domain::limits::{DEFAULT_QUEUE_WINDOW, MAX_QUEUE_WINDOW, MIN_QUEUE_WINDOW};
use crate::error::BrokerError;
use crate::storage::{DEFAULT_CACHE_BYTES, MIN_CACHE_BYTES};

/// Where a node keeps its data unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "./data";
/// The gRPC address unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7400";
/// The admin HTTP address unless told otherwise.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:7401";

/// The largest cache a node may be given, in bytes (1 TiB).
const MAX_CACHE_BYTES: u64 = 1 << 40;
const MIB: u64 = 1024 * 1024;

/// Flags of `hermod serve`. Every flag can also come from the environment
/// (`HERMOD_*`) or the TOML file named by `--config`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (flags and environment win).
    #[arg(long, env = "HERMOD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory of the node's RocksDB data.
    #[arg(long, env = "HERMOD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// gRPC listen address.
    #[arg(long, env = "HERMOD_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Admin HTTP listen address (health, metrics).
    #[arg(long, env = "HERMOD_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Fsync before acknowledging durable publishes and confirmed acks.
    /// Turning it off risks losing acknowledged messages on power loss.
    #[arg(long, env = "HERMOD_FSYNC")]
    pub fsync: Option<bool>,
    /// Memory for RocksDB's block cache and write buffers together, in MiB.
    #[arg(long, env = "HERMOD_CACHE_MB")]
    pub cache_mb: Option<u64>,
    /// Pending messages per subscription and priority kept in memory; the
    /// rest of a backlog waits on disk and is paged in as it drains.
    #[arg(long, env = "HERMOD_QUEUE_WINDOW")]
    pub queue_window: Option<usize>,
    /// Create a topic on its first publish.
    #[arg(long, env = "HERMOD_AUTO_CREATE_TOPICS")]
    pub auto_create_topics: Option<bool>,
    /// Log format: `text` or `json`.
    #[arg(long, env = "HERMOD_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// This node's id in the cluster (made and kept in the data directory when absent).
    #[arg(long, env = "HERMOD_NODE_ID")]
    pub node_id: Option<u64>,
    /// The `host:port` peers and clients reach this node's gRPC at (default: --listen).
    #[arg(long, env = "HERMOD_ADVERTISE")]
    pub advertise: Option<String>,
    /// Comma-separated `host:port` gRPC addresses of nodes to join or form a cluster with.
    #[arg(long, env = "HERMOD_SEEDS", value_delimiter = ',')]
    pub join: Vec<String>,
    /// Find peers by DNS: `dns:NAME:PORT` (e.g. a Kubernetes headless service),
    /// re-resolved while the cluster forms.
    #[arg(long, env = "HERMOD_DISCOVERY")]
    pub discovery: Option<String>,
    /// Nodes that must see each other before a fresh cluster forms (with --join).
    #[arg(long, env = "HERMOD_EXPECT_NODES")]
    pub expect_nodes: Option<u32>,
    /// Raft heartbeat interval in milliseconds.
    #[arg(long, env = "HERMOD_HEARTBEAT_INTERVAL_MS")]
    pub heartbeat_interval_ms: Option<u64>,
    /// Lower bound of the Raft election timeout in milliseconds (the upper is twice it).
    #[arg(long, env = "HERMOD_ELECTION_TIMEOUT_MS")]
    pub election_timeout_ms: Option<u64>,
    /// Raft log entries between snapshots (the log before a snapshot is purged).
    #[arg(long, env = "HERMOD_SNAPSHOT_EVERY_ENTRIES")]
    pub snapshot_every_entries: Option<u64>,
    /// Shard groups of a new cluster (0: every topic in the metadata
    /// group); fixed once the cluster has placed them.
    #[arg(long, env = "HERMOD_SHARDS")]
    pub shards: Option<u32>,
    /// Replicas per shard (default: 3, or every node of a smaller cluster).
    #[arg(long, env = "HERMOD_REPLICATION_FACTOR")]
    pub replication_factor: Option<usize>,
}

/// The settings a TOML file may hold; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
    fsync: Option<bool>,
    cache_mb: Option<u64>,
    queue_window: Option<usize>,
    auto_create_topics: Option<bool>,
    log_format: Option<String>,
    node_id: Option<u64>,
    advertise: Option<String>,
    join: Option<Vec<String>>,
    discovery: Option<String>,
    expect_nodes: Option<u32>,
    heartbeat_interval_ms: Option<u64>,
    election_timeout_ms: Option<u64>,
    snapshot_every_entries: Option<u64>,
    shards: Option<u32>,
    replication_factor: Option<usize>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The node's effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub fsync: bool,
    /// RocksDB's block cache and write buffers together, in bytes.
    pub cache_bytes: u64,
    /// Pending messages per subscription and priority kept in memory.
    pub queue_window: usize,
    pub auto_create_topics: bool,
    pub log_format: LogFormat,
    pub cluster: ClusterConfig,
}

/// How the node takes part in a cluster; the defaults make a one-node cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub node_id: Option<u64>,
    pub advertise: Option<String>,
    pub seeds: Vec<String>,
    /// A DNS name and port whose addresses are seeds too.
    pub discovery: Option<(String, u16)>,
    pub expect_nodes: u32,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    pub snapshot_every_entries: u64,
    /// Shard groups a new cluster gets.
    pub shards: u32,
    /// Replicas per shard; `None` is min(3, nodes).
    pub replication_factor: Option<usize>,
}

impl ClusterConfig {
    /// Whether this node looks for peers at all.
    pub fn has_peers(&self) -> bool {
        !self.seeds.is_empty() || self.discovery.is_some()
    }
}

/// Parses `dns:NAME:PORT`.
fn parse_discovery(text: &str) -> Result<(String, u16), BrokerError> {
    let bad = || BrokerError::Config(format!("discovery: {text:?} is not dns:NAME:PORT"));
    let rest = text.strip_prefix("dns:").ok_or_else(bad)?;
    let (name, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let port = port.parse().map_err(|_| bad())?;
    if name.is_empty() {
        return Err(bad());
    }
    Ok((name.to_string(), port))
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            node_id: None,
            advertise: None,
            seeds: Vec::new(),
            discovery: None,
            expect_nodes: 1,
            heartbeat_interval_ms: crate::cluster::DEFAULT_HEARTBEAT_INTERVAL_MS,
            election_timeout_ms: crate::cluster::DEFAULT_ELECTION_TIMEOUT_MS,
            snapshot_every_entries: crate::cluster::DEFAULT_SNAPSHOT_EVERY_ENTRIES,
            shards: crate::cluster::DEFAULT_SHARDS,
            replication_factor: None,
        }
    }
}

/// Most replicas a shard may ask for.
pub const MAX_REPLICATION_FACTOR: usize = 9;
/// Most nodes `expect_nodes` may ask for.
pub const MAX_EXPECT_NODES: u32 = 100;
/// Fewest log entries between snapshots: more often would snapshot all the time.
pub const MIN_SNAPSHOT_EVERY_ENTRIES: u64 = 100;
/// Shortest heartbeat interval accepted, in milliseconds.
pub const MIN_HEARTBEAT_INTERVAL_MS: u64 = 10;

impl ClusterConfig {
    fn resolve(args: &ServeArgs, file: &FileConfig) -> Result<Self, BrokerError> {
        let defaults = Self::default();
        let seeds = if args.join.is_empty() {
            file.join.clone().unwrap_or_default()
        } else {
            args.join.clone()
        };
        let config = Self {
            node_id: args.node_id.or(file.node_id),
            advertise: args.advertise.clone().or(file.advertise.clone()),
            seeds: seeds
                .into_iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            discovery: match args.discovery.clone().or(file.discovery.clone()) {
                Some(text) => Some(parse_discovery(&text)?),
                None => None,
            },
            expect_nodes: args
                .expect_nodes
                .or(file.expect_nodes)
                .unwrap_or(defaults.expect_nodes),
            heartbeat_interval_ms: args
                .heartbeat_interval_ms
                .or(file.heartbeat_interval_ms)
                .unwrap_or(defaults.heartbeat_interval_ms),
            election_timeout_ms: args
                .election_timeout_ms
                .or(file.election_timeout_ms)
                .unwrap_or(defaults.election_timeout_ms),
            snapshot_every_entries: args
                .snapshot_every_entries
                .or(file.snapshot_every_entries)
                .unwrap_or(defaults.snapshot_every_entries),
            shards: args.shards.or(file.shards).unwrap_or(defaults.shards),
            replication_factor: args.replication_factor.or(file.replication_factor),
        };
        config.validate()?;
        Ok(config)
    }

    /// Refuses settings a cluster cannot run with, naming the setting.
    pub fn validate(&self) -> Result<(), BrokerError> {
        if self.node_id == Some(0) {
            return Err(BrokerError::Config("node_id: 0 is not a valid node id".into()));
        }
        if !(1..=MAX_EXPECT_NODES).contains(&self.expect_nodes) {
            return Err(BrokerError::Config(format!(
                "expect_nodes: {} is not between 1 and {MAX_EXPECT_NODES}",
                self.expect_nodes
            )));
        }
        if self.expect_nodes > 1 && !self.has_peers() {
            return Err(BrokerError::Config(
                "expect_nodes: a cluster of several nodes needs --join or --discovery to find the others"
                    .into(),
            ));
        }
        for (i, seed) in self.seeds.iter().enumerate() {
            if seed
                .rsplit_once(':')
                .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            {
                return Err(BrokerError::Config(format!(
                    "join[{i}]: {seed:?} is not host:port"
                )));
            }
        }
        if self.shards > crate::domain::MAX_SHARDS {
            return Err(BrokerError::Config(format!(
                "shards: {} is more than the allowed {}",
                self.shards,
                crate::domain::MAX_SHARDS
            )));
        }
        if let Some(factor) = self.replication_factor
            && !(1..=MAX_REPLICATION_FACTOR).contains(&factor)
        {
            return Err(BrokerError::Config(format!(
                "replication_factor: {factor} is not between 1 and {MAX_REPLICATION_FACTOR}"
            )));
        }
        if self.snapshot_every_entries < MIN_SNAPSHOT_EVERY_ENTRIES {
            return Err(BrokerError::Config(format!(
                "snapshot_every_entries: {} is below the minimum of {MIN_SNAPSHOT_EVERY_ENTRIES}",
                self.snapshot_every_entries
            )));
        }
        if self.heartbeat_interval_ms < MIN_HEARTBEAT_INTERVAL_MS {
            return Err(BrokerError::Config(format!(
                "heartbeat_interval_ms: {} is below the minimum of {MIN_HEARTBEAT_INTERVAL_MS}",
                self.heartbeat_interval_ms
            )));
        }
        if self.election_timeout_ms < 3 * self.heartbeat_interval_ms {
            return Err(BrokerError::Config(format!(
                "election_timeout_ms: {} must be at least three heartbeat intervals ({} ms)",
                self.election_timeout_ms,
                3 * self.heartbeat_interval_ms
            )));
        }
        Ok(())
    }
}

impl Config {
    /// A configuration with every default and the given data directory.
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            listen: DEFAULT_LISTEN.parse().expect("constant address parses"),
            admin_listen: DEFAULT_ADMIN_LISTEN.parse().expect("constant address parses"),
            fsync: true,
            cache_bytes: DEFAULT_CACHE_BYTES,
            queue_window: DEFAULT_QUEUE_WINDOW,
            auto_create_topics: true,
            log_format: LogFormat::Text,
            cluster: ClusterConfig::default(),
        }
    }

    /// Merges flags and environment (already in `args`) over the file over defaults.
    pub fn resolve(args: &ServeArgs) -> Result<Self, BrokerError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let defaults = Self::with_data_dir(DEFAULT_DATA_DIR);
        let cluster = ClusterConfig::resolve(args, &file)?;
        let log_format = match args.log_format.clone().or(file.log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(BrokerError::Config(format!(
                    "log_format: {other:?} is not one of text, json"
                )));
            }
        };
        let cache_bytes = match args.cache_mb.or(file.cache_mb) {
            None => defaults.cache_bytes,
            Some(mb) => cache_bytes(mb)?,
        };
        let queue_window = match args.queue_window.or(file.queue_window) {
            None => defaults.queue_window,
            Some(window) => queue_window(window)?,
        };
        Ok(Self {
            cluster,
            cache_bytes,
            queue_window,
            data_dir: args
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or(defaults.data_dir),
            listen: args.listen.or(file.listen).unwrap_or(defaults.listen),
            admin_listen: args
                .admin_listen
                .or(file.admin_listen)
                .unwrap_or(defaults.admin_listen),
            fsync: args.fsync.or(file.fsync).unwrap_or(true),
            auto_create_topics: args
                .auto_create_topics
                .or(file.auto_create_topics)
                .unwrap_or(true),
            log_format,
        })
    }
}

/// Checks a cache size in MiB and turns it into bytes.
fn cache_bytes(mb: u64) -> Result<u64, BrokerError> {
    let bytes = mb.saturating_mul(MIB);
    if !(MIN_CACHE_BYTES..=MAX_CACHE_BYTES).contains(&bytes) {
        return Err(BrokerError::Config(format!(
            "cache_mb: {mb} is outside {}..={} MiB",
            MIN_CACHE_BYTES / MIB,
            MAX_CACHE_BYTES / MIB
        )));
    }
    Ok(bytes)
}

/// Checks a queue window.
fn queue_window(window: usize) -> Result<usize, BrokerError> {
    if !(MIN_QUEUE_WINDOW..=MAX_QUEUE_WINDOW).contains(&window) {
        return Err(BrokerError::Config(format!(
            "queue_window: {window} is outside {MIN_QUEUE_WINDOW}..={MAX_QUEUE_WINDOW} messages"
        )));
    }
    Ok(window)
}

fn read_file(path: &Path) -> Result<FileConfig, BrokerError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| BrokerError::Config(format!("config: cannot read {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| BrokerError::Config(format!("config: {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hermod.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\nfsync = false\ndata_dir = \"/tmp/x\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            data_dir: Some("/tmp/flag".into()),
            ..Default::default()
        };
        let config = Config::resolve(&args).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/tmp/flag"));
        assert_eq!(config.listen, "127.0.0.1:9000".parse().unwrap());
        assert!(!config.fsync);
        assert_eq!(config.admin_listen, DEFAULT_ADMIN_LISTEN.parse().unwrap());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hermod.toml");
        std::fs::write(&path, "lisen = \"127.0.0.1:9000\"\n").unwrap();
        let args = ServeArgs {
            config: Some(path),
            ..Default::default()
        };
        assert!(Config::resolve(&args).unwrap_err().to_string().contains("lisen"));
        let args = ServeArgs {
            log_format: Some("xml".into()),
            ..Default::default()
        };
        assert!(
            Config::resolve(&args)
                .unwrap_err()
                .to_string()
                .contains("log_format")
        );
    }

    #[test]
    fn the_queue_window_is_checked() {
        assert_eq!(
            Config::resolve(&ServeArgs::default()).unwrap().queue_window,
            DEFAULT_QUEUE_WINDOW
        );
        let args = |window| ServeArgs {
            queue_window: Some(window),
            ..ServeArgs::default()
        };
        assert_eq!(Config::resolve(&args(64)).unwrap().queue_window, 64);
        for window in [0, MIN_QUEUE_WINDOW - 1, MAX_QUEUE_WINDOW + 1] {
            let error = Config::resolve(&args(window)).unwrap_err().to_string();
            assert!(error.contains("queue_window"), "{error} names queue_window");
        }
    }

    #[test]
    fn the_cache_size_is_read_in_mib_and_checked() {
        assert_eq!(
            Config::resolve(&ServeArgs::default()).unwrap().cache_bytes,
            DEFAULT_CACHE_BYTES
        );
        let args = ServeArgs {
            cache_mb: Some(64),
            ..Default::default()
        };
        assert_eq!(Config::resolve(&args).unwrap().cache_bytes, 64 * MIB);
        for mb in [0, 1, u64::MAX] {
            let args = ServeArgs {
                cache_mb: Some(mb),
                ..Default::default()
            };
            let error = Config::resolve(&args).unwrap_err().to_string();
            assert!(error.contains("cache_mb"), "{error} names cache_mb");
        }
    }

    #[test]
    fn cluster_settings_are_read_and_checked() {
        let args = ServeArgs {
            join: vec!["10.0.0.1:7400".into(), " 10.0.0.2:7400 ".into()],
            expect_nodes: Some(3),
            discovery: Some("dns:hermod-headless:7400".into()),
            ..Default::default()
        };
        let cluster = Config::resolve(&args).unwrap().cluster;
        assert_eq!(cluster.seeds, vec!["10.0.0.1:7400", "10.0.0.2:7400"]);
        assert_eq!(cluster.discovery, Some(("hermod-headless".into(), 7400)));
        assert_eq!(cluster.expect_nodes, 3);
        assert!(cluster.has_peers());

        let refused = |args: ServeArgs, field: &str| {
            let error = Config::resolve(&args).unwrap_err().to_string();
            assert!(error.contains(field), "{error} names {field}");
        };
        refused(
            ServeArgs {
                expect_nodes: Some(3),
                ..Default::default()
            },
            "expect_nodes",
        );
        refused(
            ServeArgs {
                join: vec!["no-port".into()],
                ..Default::default()
            },
            "join[0]",
        );
        refused(
            ServeArgs {
                discovery: Some("srv:x:1".into()),
                ..Default::default()
            },
            "discovery",
        );
        refused(
            ServeArgs {
                node_id: Some(0),
                ..Default::default()
            },
            "node_id",
        );
        refused(
            ServeArgs {
                heartbeat_interval_ms: Some(500),
                election_timeout_ms: Some(1000),
                ..Default::default()
            },
            "election_timeout_ms",
        );
    }
}

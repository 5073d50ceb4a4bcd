//! The broker's configuration: flags > `HERMOD_*` environment > TOML file > defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::BrokerError;

/// Where a node keeps its data unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "./data";
/// The gRPC address unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7400";
/// The admin HTTP address unless told otherwise.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:7401";

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
    /// Create a topic on its first publish.
    #[arg(long, env = "HERMOD_AUTO_CREATE_TOPICS")]
    pub auto_create_topics: Option<bool>,
    /// Log format: `text` or `json`.
    #[arg(long, env = "HERMOD_LOG_FORMAT")]
    pub log_format: Option<String>,
}

/// The settings a TOML file may hold; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
    fsync: Option<bool>,
    auto_create_topics: Option<bool>,
    log_format: Option<String>,
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
    pub auto_create_topics: bool,
    pub log_format: LogFormat,
}

impl Config {
    /// A configuration with every default and the given data directory.
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            listen: DEFAULT_LISTEN.parse().expect("constant address parses"),
            admin_listen: DEFAULT_ADMIN_LISTEN.parse().expect("constant address parses"),
            fsync: true,
            auto_create_topics: true,
            log_format: LogFormat::Text,
        }
    }

    /// Merges flags and environment (already in `args`) over the file over defaults.
    pub fn resolve(args: &ServeArgs) -> Result<Self, BrokerError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let defaults = Self::with_data_dir(DEFAULT_DATA_DIR);
        let log_format = match args.log_format.clone().or(file.log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(BrokerError::Config(format!(
                    "log_format: {other:?} is not one of text, json"
                )));
            }
        };
        Ok(Self {
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
}

//! Starting a node: storage, consensus, engine, the gRPC server and the admin
//! HTTP server, and stopping it cleanly.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::admin;
use crate::api::{BrokerService, ClusterService};
use crate::cluster::{
    ClusterOptions, Consensus, Faults, GroupParts, GroupSource, GrpcTransport, LIVE_INBOX_BATCHES,
    LocalNetwork, MAIN_GROUP, NodeId, PeerHandler, PeerService, RELAY_INBOX, ShardOptions, Shards, Transport,
};
use crate::config::{Config, LogFormat, ServeArgs};
use crate::engine::{Broker, GroupSetup};
use crate::error::BrokerError;
use crate::state::{Reader, StateMachine};
use crate::storage::{Keyspace, RocksStore, Store};

/// Applied-change batches waiting for the router; a full channel slows applying.
const APPLIED_CHANNEL: usize = 1024;
/// How long stopping waits for every task to let go of the database.
pub const STOP_TIMEOUT_MS: u64 = 10_000;
/// How long a one-node cluster may take to start its shards.
pub const SHARDS_START_TIMEOUT_MS: u64 = 30_000;
/// How often starting looks whether the shards are led yet.
const SHARDS_START_POLL_MS: u64 = 20;
/// Largest gRPC message accepted or sent: the largest payload plus headroom.
pub const MAX_GRPC_MESSAGE_BYTES: usize = 20 * 1024 * 1024;

/// A running node.
pub struct Node {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub broker: Broker,
    /// Drives this node's shard groups while it lives.
    _shards: Shards,
    /// Ends once the database is closed.
    closed: watch::Receiver<()>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Runs `hermod serve` until Ctrl-C or SIGTERM.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::resolve(&args)?;
    init_tracing(config.log_format);
    let node = Node::start(config).await?;
    tracing::info!(
        "hermod serving gRPC on {} and admin HTTP on {}",
        node.grpc_addr,
        node.admin_addr
    );
    wait_for_signal().await;
    tracing::info!("shutting down");
    node.stop().await;
    Ok(())
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    // Colours only for a terminal: a file, a pipe or a container's log
    // collector would keep the escape codes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// How a node reaches its peers: over gRPC (the default), or in-process for
/// a test cluster; either way through `faults`.
#[derive(Clone, Default)]
pub struct PeerLinks {
    pub local: Option<LocalNetwork>,
    pub faults: Faults,
}

/// The node id kept in the data directory, made on first start (or taken
/// from `wanted`, which must agree with a kept one).
fn node_id(data_dir: &Path, wanted: Option<NodeId>) -> Result<NodeId, BrokerError> {
    let path = data_dir.join("node_id");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let kept: NodeId = text
                .trim()
                .parse()
                .map_err(|e| BrokerError::Config(format!("{}: not a node id: {e}", path.display())))?;
            match wanted {
                Some(wanted) if wanted != kept => Err(BrokerError::Config(format!(
                    "node_id: {wanted} differs from {kept}, the id this data directory belongs to"
                ))),
                _ => Ok(kept),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = wanted.unwrap_or_else(|| rand::random::<u64>() >> 1 | 1);
            std::fs::write(&path, format!("{id}\n"))
                .map_err(|e| BrokerError::Storage(format!("cannot write {}: {e}", path.display())))?;
            Ok(id)
        }
        Err(e) => Err(BrokerError::Storage(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

impl Node {
    /// Opens the data directory and starts serving on the configured
    /// addresses, talking to peers over gRPC.
    pub async fn start(config: Config) -> Result<Node, BrokerError> {
        Self::start_with(config, PeerLinks::default()).await
    }

    /// Starts a node whose peer links are `links`. A one-node cluster is
    /// leading when this returns; a node of several forms or joins its
    /// cluster in the background (see `/health/ready`).
    pub async fn start_with(config: Config, links: PeerLinks) -> Result<Node, BrokerError> {
        if !config.fsync {
            tracing::warn!("fsync is OFF: acknowledged messages can be lost if the machine crashes");
        }
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| BrokerError::Storage(format!("cannot create {}: {e}", config.data_dir.display())))?;
        let id = node_id(&config.data_dir, config.cluster.node_id)?;
        let grpc = TcpListener::bind(config.listen)
            .await
            .map_err(|e| BrokerError::Config(format!("listen: cannot bind {}: {e}", config.listen)))?;
        let admin_listener = TcpListener::bind(config.admin_listen).await.map_err(|e| {
            BrokerError::Config(format!("admin_listen: cannot bind {}: {e}", config.admin_listen))
        })?;
        let grpc_addr = grpc
            .local_addr()
            .map_err(|e| BrokerError::Internal(e.to_string()))?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|e| BrokerError::Internal(e.to_string()))?;
        let advertise = advertised(&config, grpc_addr)?;

        let rocks = RocksStore::open_with_cache(&config.data_dir.join("db"), config.cache_bytes)?;
        let closed = rocks.on_close();
        let base: Arc<dyn Store> = Arc::new(rocks);
        let transport: Arc<dyn Transport> = match &links.local {
            Some(local) => Arc::new(local.clone()),
            None => Arc::new(GrpcTransport::default()),
        };
        let options = ClusterOptions {
            node_id: id,
            advertise: advertise.clone(),
            seeds: config.cluster.seeds.clone(),
            discovery: config.cluster.discovery.clone(),
            expect_nodes: config.cluster.expect_nodes,
            heartbeat_interval_ms: config.cluster.heartbeat_interval_ms,
            election_timeout_ms: config.cluster.election_timeout_ms,
            fsync: config.fsync,
            snapshot_dir: config.data_dir.join("snapshots"),
            snapshot_every_entries: config.cluster.snapshot_every_entries,
        };
        // The groups of a node share its database, each in its keyspace.
        let (main_parts, main_setup) = group_parts(&base, MAIN_GROUP, &config)?;
        let consensus = Consensus::open(
            options,
            main_parts.store,
            main_parts.machine,
            main_parts.events,
            transport,
            links.faults.clone(),
        )
        .await?;
        let (live_tx, live_rx) = mpsc::channel(LIVE_INBOX_BATCHES);
        let (relay_tx, relay_rx) = mpsc::channel(RELAY_INBOX);
        let handler = consensus.handler(live_tx, relay_tx);
        if let Some(local) = &links.local {
            local.register(&advertise, &handler);
        }
        let configured = crate::domain::Shards::new("shards", config.cluster.shards)
            .map_err(|e| BrokerError::Config(e.to_string()))?;
        let broker = Broker::start(consensus.clone(), main_setup, configured, live_rx, relay_rx);
        let shard_options = ShardOptions {
            shards: config.cluster.shards,
            replication_factor: config.cluster.replication_factor,
        };
        let shards = Shards::start(
            consensus.clone(),
            shard_options,
            shard_source(base, &broker, &config),
        );

        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(serve_grpc(
            grpc,
            broker.clone(),
            handler,
            stopped.clone(),
        )));
        let metrics = crate::metrics::install().map_err(BrokerError::Internal)?;
        let admin_state = admin::AdminState {
            node_id: id,
            consensus: consensus.clone(),
            broker: broker.clone(),
            metrics,
        };
        tasks.push(tokio::spawn(admin::serve(
            admin_listener,
            admin_state,
            stopped.clone(),
        )));
        let node = Node {
            grpc_addr,
            admin_addr,
            broker,
            _shards: shards,
            closed,
            stop,
            tasks,
        };
        if !config.cluster.has_peers() {
            let formed = match consensus.form(stopped).await {
                Ok(()) => node.wait_for_shards().await,
                Err(e) => Err(e),
            };
            if let Err(e) = formed {
                node.stop().await;
                return Err(e);
            }
        } else {
            tokio::spawn(async move {
                if let Err(e) = consensus.form(stopped).await {
                    tracing::error!("this node could not join a cluster: {e}");
                }
            });
        }
        Ok(node)
    }

    /// Waits until this node serves every shard, for a one-node cluster,
    /// whose shards are placed and founded here as it starts.
    async fn wait_for_shards(&self) -> Result<(), BrokerError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(SHARDS_START_TIMEOUT_MS);
        while !self.broker.shards_led() {
            if std::time::Instant::now() > deadline {
                return Err(BrokerError::Unavailable(format!(
                    "the shards did not start within {SHARDS_START_TIMEOUT_MS} ms"
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(SHARDS_START_POLL_MS)).await;
        }
        Ok(())
    }

    /// Stops serving, ends every task, and waits until the database is
    /// closed, so the same data directory can be opened again at once.
    pub async fn stop(self) {
        let Node {
            broker,
            _shards,
            mut closed,
            stop,
            tasks,
            ..
        } = self;
        broker.shutdown();
        let _ = stop.send(true);
        for task in tasks {
            let _ = task.await;
        }
        broker.consensus().shutdown().await;
        drop(broker);
        drop(_shards);
        // The last holder of the store may be closing it on another thread
        // (RocksDB flushes unlogged writes then): wait for the close itself.
        let limit = std::time::Duration::from_millis(STOP_TIMEOUT_MS);
        if tokio::time::timeout(limit, closed.changed()).await.is_err() {
            tracing::warn!("the database was still in use {STOP_TIMEOUT_MS} ms after stopping");
        }
    }
}

/// A group's state machine on its keyspace of `base`, and what its engine
/// starts from.
fn group_parts(
    base: &Arc<dyn Store>,
    group: u32,
    config: &Config,
) -> Result<(GroupParts, GroupSetup), BrokerError> {
    let store: Arc<dyn Store> = Keyspace::new(base.clone(), group);
    let machine = StateMachine::open_group(store.clone(), group)?;
    let (events, applied) = mpsc::channel(APPLIED_CHANNEL);
    let setup = GroupSetup {
        reader: Reader::new(machine.clone()),
        auto_create_topics: config.auto_create_topics,
        queue_window: config.queue_window,
        applied,
    };
    let parts = GroupParts {
        store,
        machine,
        events,
        started: Box::new(|_| {}),
    };
    Ok((parts, setup))
}

/// Opens shard groups for `Shards`, each starting its engine in `broker`
/// once open. A weak handle: the engine must not keep itself alive.
fn shard_source(base: Arc<dyn Store>, broker: &Broker, config: &Config) -> GroupSource {
    let broker = broker.downgrade();
    let config = config.clone();
    Arc::new(move |group| {
        let (mut parts, setup) = group_parts(&base, group, &config)?;
        let broker = broker.clone();
        parts.started = Box::new(move |consensus| {
            if let Some(broker) = broker.upgrade() {
                broker.start_shard(consensus, setup);
            }
        });
        Ok(parts)
    })
}

/// The address peers and clients are told to use: `advertise`, or the bound
/// gRPC address when that is a specific one.
fn advertised(config: &Config, bound: SocketAddr) -> Result<String, BrokerError> {
    match &config.cluster.advertise {
        Some(address) => Ok(address.clone()),
        None if bound.ip().is_unspecified() && config.cluster.has_peers() => {
            Err(BrokerError::Config(format!(
                "advertise: the node listens on {bound}, which peers cannot dial; set --advertise host:port"
            )))
        }
        None => Ok(bound.to_string()),
    }
}

/// The accepted connections, with Nagle's algorithm off: a small answer
/// (a publish ack, a delivery) must leave at once, not wait for the
/// client's delayed ACK. Tonic applies its own socket options only to
/// listeners it binds itself.
fn incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

async fn serve_grpc(
    listener: TcpListener,
    broker: Broker,
    peers: Arc<PeerHandler>,
    mut stopped: watch::Receiver<bool>,
) {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<hermod_proto::v1::broker_server::BrokerServer<BrokerService>>()
        .await;
    let service = hermod_proto::v1::broker_server::BrokerServer::new(BrokerService::new(broker.clone()))
        .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
    let cluster = hermod_proto::v1::cluster_server::ClusterServer::new(ClusterService::new(broker));
    let result = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(service)
        .add_service(cluster)
        .add_service(PeerService::server(peers))
        .serve_with_incoming_shutdown(incoming(listener), async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!("gRPC server failed: {e}");
    }
}

//! The engine of one Raft group: its publish path, the routing of what it
//! applied to its subscriptions' dispatchers, and settlement. A node runs
//! one per group it hosts; `broker.rs` routes between them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::cluster::Consensus;
use crate::domain::{Pattern, SubscriptionName, SubscriptionSettings, TopicName, TopicSettings};
use crate::error::BrokerError;
use crate::state::{Command, Reader, Response, SubscriptionRecord, TopicRecord};

use super::{Delivery, Input, batcher, dispatcher, leadership, live, now_ms, relay, router};

/// Deliveries buffered per consumer stream, in batches.
pub const CONSUMER_BUFFER_BATCHES: usize = 64;
/// How often housekeeping (retention, dedup window) runs.
pub const SWEEP_INTERVAL_MS: u64 = 1_000;

/// A consumer attached to a durable subscription.
pub struct Attachment {
    pub consumer: u64,
    pub deliveries: mpsc::Receiver<Vec<Delivery>>,
    pub inbox: mpsc::Sender<Input>,
}

/// Subscription counters for the admin API.
#[derive(Debug, Clone, Copy, Default)]
pub struct SubscriptionStats {
    pub backlog: u64,
    pub in_flight: u64,
    pub consumers: u32,
}

/// The engine of one Raft group on this node; cheap to clone.
#[derive(Clone)]
pub struct Group {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) consensus: Consensus,
    pub(super) reader: Reader,
    pub(super) auto_create_topics: bool,
    /// Pending messages per subscription and priority kept in memory.
    pub(super) queue_window: usize,
    pub(super) batcher: batcher::Batcher,
    /// The node's ephemeral listeners, shared by all its groups.
    pub(super) live: Arc<live::LiveBus>,
    pub(super) dispatchers: Mutex<HashMap<SubscriptionName, (Pattern, mpsc::Sender<Input>)>>,
    /// Consumers connected to other nodes, attached here while this node leads.
    pub(super) remotes: relay::Remotes,
    pub(super) next_id: AtomicU64,
    /// This node's current term of leadership; ack tokens of earlier ones
    /// (or of other nodes) carry another, since their leases are gone.
    pub(super) epoch: AtomicU64,
    /// Set once when the node stops; every task of the engine ends on it.
    pub(super) stopping: tokio::sync::watch::Sender<bool>,
}

/// What a group's engine is built from besides its consensus.
pub struct GroupSetup {
    pub reader: Reader,
    pub auto_create_topics: bool,
    pub queue_window: usize,
    pub applied: mpsc::Receiver<Vec<crate::state::Applied>>,
}

impl Group {
    /// Builds the engine over a started consensus and starts the tasks that
    /// route applied changes and run housekeeping.
    pub(super) fn start(consensus: Consensus, setup: GroupSetup, live: Arc<live::LiveBus>) -> Self {
        let (batcher, merging) = batcher::Batcher::start(consensus.clone(), setup.auto_create_topics);
        let group = Group {
            inner: Arc::new(Inner {
                consensus,
                reader: setup.reader,
                auto_create_topics: setup.auto_create_topics,
                queue_window: setup.queue_window,
                batcher,
                live,
                dispatchers: Mutex::new(HashMap::new()),
                remotes: relay::Remotes::default(),
                next_id: AtomicU64::new(1),
                epoch: AtomicU64::new(rand::random()),
                stopping: tokio::sync::watch::Sender::new(false),
            }),
        };
        group.spawn(merging);
        group.spawn(router::run(group.clone(), setup.applied));
        group.spawn(leadership::follow(group.clone()));
        group.spawn(relay::reap(group.clone()));
        group.spawn(group.clone().sweep_forever());
        group
    }

    pub fn reader(&self) -> &Reader {
        &self.inner.reader
    }

    pub fn consensus(&self) -> &Consensus {
        &self.inner.consensus
    }

    /// Runs `task` until it ends or the engine stops, whichever comes first.
    pub fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut stopping = self.inner.stopping.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                _ = task => {}
                _ = stopping.wait_for(|stop| *stop) => {}
            }
        });
    }

    /// Ends every task of the engine: dispatchers, routing, housekeeping and
    /// open consumer streams. Their handles on storage go with them.
    pub fn shutdown(&self) {
        self.inner.stopping.send_replace(true);
    }

    pub(super) fn next_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    async fn sweep_forever(self) {
        let mut ticker = tokio::time::interval(std::time::Duration::from_millis(SWEEP_INTERVAL_MS));
        loop {
            ticker.tick().await;
            let now = now_ms();
            if !self.inner.consensus.is_leader() {
                continue;
            }
            match self.inner.reader.sweep_due(now) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!("sweep: cannot tell whether anything expired: {e}");
                    continue;
                }
            }
            if let Err(e) = self.inner.consensus.propose(Command::Sweep { now_ms: now }).await {
                tracing::debug!("sweep: {e}");
            }
        }
    }

    pub async fn create_topic(
        &self,
        name: TopicName,
        settings: TopicSettings,
    ) -> Result<TopicRecord, BrokerError> {
        match self
            .inner
            .consensus
            .propose(Command::CreateTopic {
                name,
                settings,
                now_ms: now_ms(),
            })
            .await?
        {
            Response::Topic(result) => result.map_err(Into::into),
            other => Err(BrokerError::Internal(format!("unexpected answer: {other:?}"))),
        }
    }

    pub fn get_topic(&self, name: &TopicName) -> Result<TopicRecord, BrokerError> {
        let catalog = self.inner.reader.machine().catalog();
        catalog
            .topics
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::NotFound(format!("name: topic {name} does not exist")))
    }

    pub fn list_topics(&self) -> Vec<TopicRecord> {
        self.inner
            .reader
            .machine()
            .catalog()
            .topics
            .values()
            .cloned()
            .collect()
    }

    pub async fn delete_topic(&self, name: TopicName) -> Result<(), BrokerError> {
        match self
            .inner
            .consensus
            .propose(Command::DeleteTopic {
                name,
                now_ms: now_ms(),
            })
            .await?
        {
            Response::Deleted(result) => result.map_err(Into::into),
            other => Err(BrokerError::Internal(format!("unexpected answer: {other:?}"))),
        }
    }

    pub async fn create_subscription(
        &self,
        name: SubscriptionName,
        settings: SubscriptionSettings,
    ) -> Result<SubscriptionRecord, BrokerError> {
        let command = Command::CreateSubscription {
            name,
            settings,
            now_ms: now_ms(),
        };
        match self.inner.consensus.propose(command).await? {
            Response::Subscription(result) => result.map_err(Into::into),
            other => Err(BrokerError::Internal(format!("unexpected answer: {other:?}"))),
        }
    }

    pub(super) async fn stats(&self, name: &SubscriptionName) -> SubscriptionStats {
        let Some(inbox) = self.inbox(name) else {
            return SubscriptionStats::default();
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        if inbox.send(Input::Info(reply)).await.is_err() {
            return SubscriptionStats::default();
        }
        match answer.await {
            Ok((backlog, in_flight, consumers)) => SubscriptionStats {
                backlog: backlog as u64,
                in_flight: in_flight as u64,
                consumers: consumers as u32,
            },
            Err(_) => SubscriptionStats::default(),
        }
    }

    pub async fn delete_subscription(&self, name: SubscriptionName) -> Result<(), BrokerError> {
        match self
            .inner
            .consensus
            .propose(Command::DeleteSubscription {
                name,
                now_ms: now_ms(),
            })
            .await?
        {
            Response::Deleted(result) => result.map_err(Into::into),
            other => Err(BrokerError::Internal(format!("unexpected answer: {other:?}"))),
        }
    }

    pub(super) fn inbox(&self, name: &SubscriptionName) -> Option<mpsc::Sender<Input>> {
        self.inner
            .dispatchers
            .lock()
            .expect("dispatchers lock")
            .get(name)
            .map(|(_, tx)| tx.clone())
    }

    /// Attaches a consumer to a durable subscription.
    pub async fn attach(&self, name: &SubscriptionName, credit: u32) -> Result<Attachment, BrokerError> {
        let inbox = self.inbox_or_redirect(name, "start.subscription")?;
        let (tx, deliveries) = mpsc::channel(CONSUMER_BUFFER_BATCHES);
        let consumer = self.next_id();
        inbox
            .send(Input::Attach {
                consumer,
                deliveries: tx,
                credit,
            })
            .await
            .map_err(|_| BrokerError::Unavailable("the subscription is shutting down".into()))?;
        Ok(Attachment {
            consumer,
            deliveries,
            inbox,
        })
    }

    /// When this node does not lead, the error that sends a client to the leader.
    pub(super) fn redirect(&self) -> Option<BrokerError> {
        (!self.inner.consensus.is_leader()).then(|| BrokerError::NotLeader {
            leader: self.inner.consensus.leader_or_placed().map(|l| l.address),
        })
    }

    /// Whether this node has applied the creation of subscription `name`.
    pub(super) fn knows_subscription(&self, name: &SubscriptionName) -> bool {
        let catalog = self.inner.reader.machine().catalog();
        catalog.subscriptions.contains_key(name)
    }

    /// The inbox of a subscription's dispatcher; when this node does not
    /// lead, an error that sends the client to the leader.
    pub(super) fn inbox_or_redirect(
        &self,
        name: &SubscriptionName,
        field: &str,
    ) -> Result<mpsc::Sender<Input>, BrokerError> {
        if let Some(inbox) = self.inbox(name) {
            return Ok(inbox);
        }
        if self.knows_subscription(name) {
            if let Some(redirect) = self.redirect() {
                return Err(redirect);
            }
            // Leading, but the dispatcher is not started yet (leadership
            // came a moment ago): start it now rather than refuse.
            self.spawn_dispatcher(name);
            if let Some(inbox) = self.inbox(name) {
                return Ok(inbox);
            }
        }
        Err(BrokerError::NotFound(format!(
            "{field}: subscription {name} does not exist"
        )))
    }

    /// Starts the dispatcher of `name` if this node leads and it has none yet.
    pub(super) fn spawn_dispatcher(&self, name: &SubscriptionName) {
        if !self.inner.consensus.is_leader() {
            return;
        }
        let settings = match self.inner.reader.machine().catalog().subscriptions.get(name) {
            Some(record) => record.settings.clone(),
            None => return,
        };
        let (tx, rx) = mpsc::channel(dispatcher::DISPATCHER_INBOX);
        {
            let mut dispatchers = self.inner.dispatchers.lock().expect("dispatchers lock");
            if dispatchers.contains_key(name) {
                return;
            }
            dispatchers.insert(name.clone(), (settings.pattern.clone(), tx));
        }
        self.spawn(dispatcher::Dispatcher::run(
            name.clone(),
            settings,
            self.inner.reader.clone(),
            self.inner.consensus.clone(),
            self.inner.epoch.load(Ordering::Relaxed),
            self.inner.queue_window,
            rx,
        ));
    }
}

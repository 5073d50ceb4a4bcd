//! The node's engine: the publish path (at-most-once fast path, durable path
//! through consensus), the routing of applied changes to subscriptions, and
//! settlement of deliveries. Protocol-free: `api/` speaks gRPC in front of it.

mod clock;
mod delivery;
mod dispatcher;
mod live;
mod router;
mod settle;
mod token;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::cluster::Consensus;
use crate::domain::{
    DeliveryGuarantee, Message, NewMessage, Pattern, SubscriptionName, SubscriptionSettings, TopicName,
    TopicSettings,
};
use crate::error::BrokerError;
use crate::state::{Command, Published, Reader, Response, SubscriptionRecord, TopicRecord};

pub use clock::now_ms;
pub use delivery::Delivery;
pub use dispatcher::{Input, Settle};
pub use token::AckToken;

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

/// The engine of one node; cheap to clone.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    consensus: Consensus,
    reader: Reader,
    auto_create_topics: bool,
    live: live::LiveBus,
    dispatchers: Mutex<HashMap<SubscriptionName, (Pattern, mpsc::Sender<Input>)>>,
    next_id: AtomicU64,
    /// This incarnation; ack tokens of earlier ones carry another.
    epoch: u64,
    /// Set once when the node stops; every task of the engine ends on it.
    stopping: tokio::sync::watch::Sender<bool>,
}

impl Broker {
    /// Builds the engine over a started consensus and starts the tasks that
    /// route applied changes and run housekeeping.
    pub fn start(
        consensus: Consensus,
        reader: Reader,
        auto_create_topics: bool,
        applied: mpsc::Receiver<Vec<crate::state::Applied>>,
    ) -> Self {
        let broker = Broker {
            inner: Arc::new(Inner {
                consensus,
                reader,
                auto_create_topics,
                live: live::LiveBus::default(),
                dispatchers: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                epoch: rand::random(),
                stopping: tokio::sync::watch::Sender::new(false),
            }),
        };
        let names: Vec<_> = broker
            .inner
            .reader
            .machine()
            .catalog()
            .subscriptions
            .keys()
            .cloned()
            .collect();
        for name in names {
            broker.spawn_dispatcher(&name);
        }
        broker.spawn(router::run(broker.clone(), applied));
        broker.spawn(broker.clone().sweep_forever());
        broker
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

    fn next_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    async fn sweep_forever(self) {
        let mut ticker = tokio::time::interval(std::time::Duration::from_millis(SWEEP_INTERVAL_MS));
        loop {
            ticker.tick().await;
            if self.inner.consensus.is_leader()
                && let Err(e) = self
                    .inner
                    .consensus
                    .propose(Command::Sweep { now_ms: now_ms() })
                    .await
            {
                tracing::debug!("sweep: {e}");
            }
        }
    }

    /// Publishes a batch: at-most-once messages go straight to live
    /// consumers; the others are ordered, stored and fsynced first.
    pub async fn publish(&self, messages: Vec<NewMessage>) -> Vec<Result<Published, BrokerError>> {
        let started = std::time::Instant::now();
        let now = now_ms();
        let mut results: Vec<Option<Result<Published, BrokerError>>> = vec![None; messages.len()];
        let mut durable = Vec::new();
        let mut positions = Vec::new();
        for (index, message) in messages.into_iter().enumerate() {
            if message.delivery == DeliveryGuarantee::AtMostOnce {
                results[index] = Some(self.publish_live(index, message, now));
            } else {
                positions.push(index);
                durable.push(message);
            }
        }
        if !durable.is_empty() {
            let command = Command::Publish {
                messages: durable,
                auto_create: self.inner.auto_create_topics,
                now_ms: now,
            };
            match self.inner.consensus.propose(command).await {
                Ok(Response::Published(outcomes)) => {
                    for (position, outcome) in positions.iter().zip(outcomes) {
                        results[*position] = Some(outcome.map_err(|e| reindex(e, *position)));
                    }
                }
                Ok(other) => {
                    let e = BrokerError::Internal(format!("unexpected answer to publish: {other:?}"));
                    positions.iter().for_each(|p| results[*p] = Some(Err(e.clone())));
                }
                Err(e) => positions.iter().for_each(|p| results[*p] = Some(Err(e.clone()))),
            }
            metrics::histogram!(crate::metrics::PUBLISH_LATENCY).record(started.elapsed().as_secs_f64());
        }
        let results: Vec<_> = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(BrokerError::Internal("lost result".into()))))
            .collect();
        for result in &results {
            match result {
                Ok(p) if p.duplicate => metrics::counter!(crate::metrics::DUPLICATES).increment(1),
                Ok(_) => metrics::counter!(crate::metrics::PUBLISHED).increment(1),
                Err(_) => {}
            }
        }
        results
    }

    fn publish_live(&self, index: usize, message: NewMessage, now: u64) -> Result<Published, BrokerError> {
        if message.delay_ms > 0 {
            return Err(BrokerError::Invalid(crate::domain::ValidationError::new(
                format!("messages[{index}].delay_ms"),
                "an at-most-once message is delivered now or never; a delay needs at-least-once",
            )));
        }
        let limit = {
            let catalog = self.inner.reader.machine().catalog();
            match catalog.topics.get(&message.topic) {
                Some(topic) => topic.settings.max_message_bytes,
                None if self.inner.auto_create_topics => TopicSettings::default().max_message_bytes,
                None => {
                    return Err(BrokerError::NotFound(format!(
                        "messages[{index}].topic: topic {} does not exist and auto_create_topics is off",
                        message.topic
                    )));
                }
            }
        };
        if message.payload.len() as u64 > limit {
            return Err(BrokerError::ResourceExhausted(format!(
                "messages[{index}].payload: {} bytes exceed the topic's limit of {limit} bytes",
                message.payload.len()
            )));
        }
        let stored = Message {
            id: message.id.clone(),
            topic: message.topic.clone(),
            sequence: 0,
            payload: message.payload,
            headers: message.headers,
            priority: message.priority,
            publish_time_ms: now,
            expires_at_ms: message.ttl_ms.map(|ttl| now.saturating_add(ttl)),
            not_before_ms: now,
            delivery: DeliveryGuarantee::AtMostOnce,
        };
        let delivery = Delivery {
            message: Arc::new(stored),
            attempt: 1,
            ack_token: None,
            delivery: DeliveryGuarantee::AtMostOnce,
        };
        self.inner.live.offer(&delivery);
        let shared = Arc::new(delivery);
        for (_, (pattern, inbox)) in self.inner.dispatchers.lock().expect("dispatchers lock").iter() {
            if pattern.matches(&message.topic) {
                let _ = inbox.try_send(Input::Live(shared.clone()));
            }
        }
        Ok(Published {
            id: message.id,
            topic: message.topic,
            sequence: 0,
            duplicate: false,
            publish_time_ms: now,
        })
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

    pub async fn get_subscription(
        &self,
        name: &SubscriptionName,
    ) -> Result<(SubscriptionRecord, SubscriptionStats), BrokerError> {
        let record = self
            .inner
            .reader
            .machine()
            .catalog()
            .subscriptions
            .get(name)
            .cloned();
        let record = record
            .ok_or_else(|| BrokerError::NotFound(format!("name: subscription {name} does not exist")))?;
        Ok((record, self.stats(name).await))
    }

    pub async fn list_subscriptions(&self) -> Vec<(SubscriptionRecord, SubscriptionStats)> {
        let records: Vec<_> = self
            .inner
            .reader
            .machine()
            .catalog()
            .subscriptions
            .values()
            .cloned()
            .collect();
        let mut out = Vec::with_capacity(records.len());
        for record in records {
            let stats = self.stats(&record.name).await;
            out.push((record, stats));
        }
        out
    }

    async fn stats(&self, name: &SubscriptionName) -> SubscriptionStats {
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

    fn inbox(&self, name: &SubscriptionName) -> Option<mpsc::Sender<Input>> {
        self.inner
            .dispatchers
            .lock()
            .expect("dispatchers lock")
            .get(name)
            .map(|(_, tx)| tx.clone())
    }

    /// Attaches a consumer to a durable subscription.
    pub async fn attach(&self, name: &SubscriptionName, credit: u32) -> Result<Attachment, BrokerError> {
        let inbox = self.inbox(name).ok_or_else(|| {
            BrokerError::NotFound(format!("start.subscription: subscription {name} does not exist"))
        })?;
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

    /// Opens an ephemeral subscription; it lives until the returned id is detached.
    pub fn listen(&self, pattern: Pattern, buffer_batches: usize) -> (u64, mpsc::Receiver<Vec<Delivery>>) {
        let (tx, rx) = mpsc::channel(buffer_batches.max(1));
        let id = self.next_id();
        self.inner.live.add(id, pattern, tx);
        (id, rx)
    }

    pub fn unlisten(&self, id: u64) {
        self.inner.live.remove(id);
    }

    fn spawn_dispatcher(&self, name: &SubscriptionName) {
        let settings = match self.inner.reader.machine().catalog().subscriptions.get(name) {
            Some(record) => record.settings.clone(),
            None => return,
        };
        let (tx, rx) = mpsc::channel(dispatcher::DISPATCHER_INBOX);
        self.inner
            .dispatchers
            .lock()
            .expect("dispatchers lock")
            .insert(name.clone(), (settings.pattern.clone(), tx));
        self.spawn(dispatcher::Dispatcher::run(
            name.clone(),
            settings,
            self.inner.reader.clone(),
            self.inner.consensus.clone(),
            self.inner.epoch,
            rx,
        ));
    }
}

/// Batch results name the message by its place in the caller's request.
fn reindex(mut error: crate::state::CommandError, position: usize) -> BrokerError {
    if let Some(rest) = error.field.strip_prefix("messages[")
        && let Some(end) = rest.find(']')
    {
        error.field = format!("messages[{position}]{}", &rest[end + 1..]);
    }
    error.into()
}

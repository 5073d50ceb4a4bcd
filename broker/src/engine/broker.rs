//! The node's engine: one `Group` per Raft group the node hosts, and the
//! routing between them. A topic's messages, acks and dead letters belong
//! to the group its name hashes to (`domain::Shards`); subscriptions live
//! in group 0 and in every shard, and a consumer reads from all at once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};

use tokio::sync::mpsc;

use crate::cluster::{Consensus, PEER_CALL_TIMEOUT_MS, RelayCall, RelayReply, RelayRequest};
use crate::domain::limits::{MAX_CONSUMER_CREDIT, MAX_SETTLE_BATCH};
use crate::domain::{
    META_GROUP, Message, NewMessage, Pattern, Shards, SubscriptionName, SubscriptionSettings, TopicName,
    TopicSettings, ValidationError,
};
use crate::error::BrokerError;
use crate::state::{Published, SubscriptionRecord, TopicRecord};

use super::group::{Group, GroupSetup, SubscriptionStats};
use super::live::LiveBus;
use super::{AckToken, Delivery, Settle};

/// The engine of one node; cheap to clone.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

/// A handle that does not keep the engine alive.
#[derive(Clone)]
pub struct WeakBroker(Weak<Inner>);

impl WeakBroker {
    pub fn upgrade(&self) -> Option<Broker> {
        self.0.upgrade().map(|inner| Broker { inner })
    }
}

struct Inner {
    main: Group,
    /// The shard groups started on this node.
    shards: RwLock<BTreeMap<u32, Group>>,
    /// How many shards this node places if it is first to place them.
    configured: Shards,
    live: Arc<LiveBus>,
    next_listener: AtomicU64,
    stopping: tokio::sync::watch::Sender<bool>,
}

impl Broker {
    /// Starts the engine of group 0 over `main`, serving live messages and
    /// relay requests from peers for every group.
    pub fn start(
        main: Consensus,
        setup: GroupSetup,
        configured: Shards,
        live_from_peers: mpsc::Receiver<Vec<Message>>,
        relayed: mpsc::Receiver<RelayCall>,
    ) -> Self {
        let live = Arc::new(LiveBus::default());
        let broker = Broker {
            inner: Arc::new(Inner {
                main: Group::start(main, setup, live.clone()),
                shards: RwLock::default(),
                configured,
                live,
                next_listener: AtomicU64::new(1),
                stopping: tokio::sync::watch::Sender::new(false),
            }),
        };
        broker.spawn(receive_live(broker.downgrade(), live_from_peers));
        broker.spawn(serve_relay(broker.downgrade(), relayed));
        broker.spawn(super::reconcile::run(broker.downgrade()));
        broker
    }

    /// Starts the engine of shard `id` once its consensus is open.
    pub fn start_shard(&self, consensus: Consensus, setup: GroupSetup) {
        let id = consensus.group_id();
        let group = Group::start(consensus, setup, self.inner.live.clone());
        if *self.inner.stopping.borrow() {
            group.shutdown();
            return;
        }
        let replaced = self.inner.shards.write().expect("shards lock").insert(id, group);
        if let Some(old) = replaced {
            old.shutdown();
        }
    }

    /// Resolves once the engine is stopping: long-lived calls end then, so
    /// the server's graceful shutdown does not wait on them forever.
    pub async fn stopped(&self) {
        let mut stopping = self.inner.stopping.subscribe();
        let _ = stopping.wait_for(|stopping| *stopping).await;
    }

    pub fn downgrade(&self) -> WeakBroker {
        WeakBroker(Arc::downgrade(&self.inner))
    }

    /// Group 0's consensus: membership, placement, the cluster's status.
    pub fn consensus(&self) -> &Consensus {
        self.inner.main.consensus()
    }

    /// Runs `task` until it ends or the engine stops.
    pub fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.inner.main.spawn(task);
    }

    /// Ends every task of every group's engine.
    pub fn shutdown(&self) {
        self.inner.stopping.send_replace(true);
        self.inner.main.shutdown();
        for group in self.inner.shards.read().expect("shards lock").values() {
            group.shutdown();
        }
    }

    /// The cluster's shards as placed; before placement, none if this node
    /// would place none, else a retryable error.
    pub fn shard_count(&self) -> Result<Shards, BrokerError> {
        match self.consensus().placement() {
            Some(record) => Shards::new("shards", record.shards).map_err(Into::into),
            None if self.inner.configured == Shards::NONE => Ok(Shards::NONE),
            None => Err(BrokerError::Unavailable(
                "the cluster has not placed its shards yet; retry".into(),
            )),
        }
    }

    /// Whether every group of the placement has its engine on this node.
    pub fn shards_open(&self) -> bool {
        match self.shard_count() {
            Ok(shards) => {
                let open = self.inner.shards.read().expect("shards lock");
                (1..=shards.count()).all(|id| open.contains_key(&id))
            }
            Err(_) => false,
        }
    }

    /// Whether every shard is open here and every group this node is
    /// placed in knows its leader (a node knows nothing of the leaders of
    /// shards it holds no replica of).
    pub fn shards_led(&self) -> bool {
        if !self.shards_open() || self.consensus().leader().is_none() {
            return false;
        }
        let Some(record) = self.consensus().placement() else {
            return true;
        };
        let me = self.consensus().node_id();
        record.placed.iter().all(|(id, placed)| {
            !placed.target.replicas.contains(&me)
                || self
                    .group(*id)
                    .is_some_and(|group| group.consensus().leader().is_some())
        })
    }

    /// Whether every shard placed on this node has the replicas and the
    /// leader its placement target names, as this node sees them.
    pub fn shards_settled(&self) -> bool {
        let Some(record) = self.consensus().placement() else {
            return self.inner.configured == Shards::NONE;
        };
        let me = self.consensus().node_id();
        self.shards_led()
            && record.placed.iter().all(|(id, placed)| {
                !placed.target.replicas.contains(&me)
                    || self.group(*id).is_some_and(|group| {
                        let consensus = group.consensus();
                        let voters: std::collections::BTreeSet<u64> =
                            consensus.voters().into_iter().collect();
                        consensus.leader() == Some(placed.target.leader) && voters == placed.target.replicas
                    })
            })
    }

    /// Whether this node leads the group of every one of `topics`, so a
    /// request about them is served here, not forwarded. Each group is
    /// looked at once, however many of the topics it holds.
    pub fn leads_all<'a>(&self, topics: impl IntoIterator<Item = &'a TopicName>) -> bool {
        let Ok(shards) = self.shard_count() else {
            return false;
        };
        let mut led = Vec::new();
        topics.into_iter().all(|topic| {
            let id = shards.group_of(topic);
            if led.contains(&id) {
                return true;
            }
            led.push(id);
            self.group(id).is_some_and(|group| group.consensus().is_leader())
        })
    }

    /// Whether this node leads, with a quorum, the group that holds `topic`.
    pub fn leads_topic(&self, topic: &TopicName) -> bool {
        self.route(topic)
            .is_ok_and(|(_, group)| group.consensus().leads_with_quorum())
    }

    /// The group `topic` belongs to.
    fn route(&self, topic: &TopicName) -> Result<(u32, Group), BrokerError> {
        let id = self.shard_count()?.group_of(topic);
        self.group(id).map(|group| (id, group)).ok_or_else(|| {
            BrokerError::Unavailable(format!(
                "shard-{id} is not open on node {} yet; retry",
                self.consensus().node_id()
            ))
        })
    }

    /// The group that delivered a token's message; `field` names the token.
    fn group_of_token(&self, token: &AckToken, field: &str) -> Result<(u32, Group), BrokerError> {
        let id = token.group;
        if self.shard_count().is_ok_and(|shards| id > shards.count()) {
            let invalid = ValidationError::new(field, "not an ack token issued by this broker");
            return Err(invalid.into());
        }
        self.group(id).map(|group| (id, group)).ok_or_else(|| {
            BrokerError::Unavailable(format!(
                "group {id} of the ack token is not open on node {}; retry",
                self.consensus().node_id()
            ))
        })
    }

    pub(super) fn group(&self, id: u32) -> Option<Group> {
        if id == META_GROUP {
            return Some(self.inner.main.clone());
        }
        self.inner.shards.read().expect("shards lock").get(&id).cloned()
    }

    /// Group 0, then every shard open here.
    pub(super) fn groups(&self) -> Vec<Group> {
        let mut groups = vec![self.inner.main.clone()];
        groups.extend(self.inner.shards.read().expect("shards lock").values().cloned());
        groups
    }

    pub(super) fn main(&self) -> &Group {
        &self.inner.main
    }

    /// Publishes a batch, each message in its topic's group; the answers
    /// come in the order of `messages`.
    pub async fn publish(&self, messages: Vec<NewMessage>) -> Vec<Result<Published, BrokerError>> {
        let routed = messages
            .into_iter()
            .map(|message| self.route(&message.topic).map(|(id, group)| (id, group, message)))
            .collect();
        scatter(routed, "messages", |group, messages| async move {
            group.publish(messages).await
        })
        .await
    }

    /// Settles each token in the group of its message; one answer per
    /// token, in order (see `Group::settle`).
    pub async fn settle(
        &self,
        tokens: &[String],
        field: &str,
        settle: Settle,
    ) -> Vec<Result<(), BrokerError>> {
        if tokens.len() > MAX_SETTLE_BATCH {
            let e = BrokerError::ResourceExhausted(format!(
                "{field}: {} tokens, at most {MAX_SETTLE_BATCH} per request",
                tokens.len()
            ));
            return vec![Err(e); tokens.len()];
        }
        let routed = tokens
            .iter()
            .enumerate()
            .map(|(index, text)| {
                let named = format!("{field}[{index}]");
                let token = AckToken::decode(&named, text)?;
                let (id, group) = self.group_of_token(&token, &named)?;
                Ok((id, group, text.clone()))
            })
            .collect();
        scatter(routed, field, |group, tokens| async move {
            group.settle(&tokens, field, settle).await
        })
        .await
    }

    pub async fn create_topic(
        &self,
        name: TopicName,
        settings: TopicSettings,
    ) -> Result<TopicRecord, BrokerError> {
        self.route(&name)?.1.create_topic(name, settings).await
    }

    /// The topic's record in its group, with the messages the broker wrote
    /// to it in other groups (dead letters, events) counted in. A group
    /// this node holds no replica of is asked of its leader.
    pub async fn get_topic(&self, name: &TopicName) -> Result<TopicRecord, BrokerError> {
        let (home, _) = self.route(name)?;
        let asked = self.groups().into_iter().map(|group| async move {
            let id = group.consensus().group_id();
            (id, self.topic_in(&group, name).await)
        });
        let mut record = None;
        let mut copies = Vec::new();
        for (id, answer) in futures::future::join_all(asked).await {
            match answer {
                _ if id == home => record = Some(answer),
                Ok(copy) => copies.push(copy),
                Err(_) => {}
            }
        }
        let mut record = record.unwrap_or_else(|| Err(BrokerError::Internal("no home group".into())))?;
        for copy in copies {
            record.messages += copy.messages;
            record.bytes += copy.bytes;
        }
        Ok(record)
    }

    /// A group's record of `name`: read here when the placement puts a
    /// replica of the group on this node, else asked of its leader.
    async fn topic_in(&self, group: &Group, name: &TopicName) -> Result<TopicRecord, BrokerError> {
        let id = group.consensus().group_id();
        let me = self.consensus().node_id();
        let replicated_here = id == META_GROUP
            || self
                .consensus()
                .placement()
                .and_then(|record| record.placed.get(&id).map(|p| p.target.replicas.contains(&me)))
                .unwrap_or(true);
        if replicated_here {
            return group.get_topic(name);
        }
        let request = RelayRequest::Topic { name: name.clone() };
        let timeout = std::time::Duration::from_millis(PEER_CALL_TIMEOUT_MS);
        match group.consensus().relay(request, timeout).await? {
            RelayReply::Topic(answer) => answer,
            other => Err(BrokerError::Internal(format!(
                "unexpected answer to a topic read: {other:?}"
            ))),
        }
    }

    /// The topic's record as this node's replicas hold it.
    fn local_topic(&self, name: &TopicName) -> Result<TopicRecord, BrokerError> {
        let (home, group) = self.route(name)?;
        let mut record = group.get_topic(name)?;
        for other in self.groups() {
            if other.consensus().group_id() != home
                && let Ok(copy) = other.get_topic(name)
            {
                record.messages += copy.messages;
                record.bytes += copy.bytes;
            }
        }
        Ok(record)
    }

    /// Every topic any group replicated on this node holds, once each.
    pub fn list_topics(&self) -> Vec<TopicRecord> {
        let mut topics: BTreeMap<TopicName, TopicRecord> = BTreeMap::new();
        for group in self.groups() {
            for record in group.list_topics() {
                if topics.contains_key(&record.name) {
                    continue;
                }
                let name = record.name.clone();
                let record = self.local_topic(&name).unwrap_or(record);
                topics.insert(name, record);
            }
        }
        topics.into_values().collect()
    }

    /// Deletes the topic in its group and the broker's copies elsewhere.
    pub async fn delete_topic(&self, name: TopicName) -> Result<(), BrokerError> {
        let (home, group) = self.route(&name)?;
        group.delete_topic(name.clone()).await?;
        for other in self.groups() {
            let id = other.consensus().group_id();
            if id != home && other.get_topic(&name).is_ok() {
                match other.delete_topic(name.clone()).await {
                    Ok(()) | Err(BrokerError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Creates the subscription in group 0, then in every shard, so that
    /// once it is answered every topic it selects is captured.
    pub async fn create_subscription(
        &self,
        name: SubscriptionName,
        settings: SubscriptionSettings,
    ) -> Result<SubscriptionRecord, BrokerError> {
        let record = self
            .main()
            .create_subscription(name.clone(), settings.clone())
            .await?;
        for shard in self.shard_groups()? {
            shard.create_subscription(name.clone(), settings.clone()).await?;
        }
        Ok(record)
    }

    /// Deletes the subscription from group 0, then from every shard. A
    /// shard that misses the deletion is told again (`reconcile.rs`).
    pub async fn delete_subscription(&self, name: SubscriptionName) -> Result<(), BrokerError> {
        self.main().delete_subscription(name.clone()).await?;
        for shard in self.shard_groups()? {
            match shard.delete_subscription(name.clone()).await {
                Ok(()) | Err(BrokerError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Every shard group of the placement; an error while one is not open.
    pub(super) fn shard_groups(&self) -> Result<Vec<Group>, BrokerError> {
        (1..=self.shard_count()?.count())
            .map(|id| {
                self.group(id).ok_or_else(|| {
                    BrokerError::Unavailable(format!("shard-{id} is not open on this node yet; retry"))
                })
            })
            .collect()
    }

    pub async fn get_subscription(
        &self,
        name: &SubscriptionName,
    ) -> Result<(SubscriptionRecord, SubscriptionStats), BrokerError> {
        let record = self
            .main()
            .reader()
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
            .main()
            .reader()
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

    /// The subscription's counters summed over every group, as each
    /// group's leader counts them (a group whose leader cannot be asked
    /// counts nothing).
    async fn stats(&self, name: &SubscriptionName) -> SubscriptionStats {
        let asked = self.groups().into_iter().map(|group| async move {
            if group.consensus().is_leader() {
                let stats = group.stats(name).await;
                return (stats.backlog, stats.in_flight, stats.consumers);
            }
            let request = RelayRequest::Stats {
                subscription: name.clone(),
            };
            let timeout = std::time::Duration::from_millis(PEER_CALL_TIMEOUT_MS);
            match group.consensus().relay(request, timeout).await {
                Ok(RelayReply::Stats(Ok(stats))) => stats,
                _ => (0, 0, 0),
            }
        });
        let mut total = SubscriptionStats::default();
        for (backlog, in_flight, consumers) in futures::future::join_all(asked).await {
            total.backlog += backlog;
            total.in_flight += in_flight;
            total.consumers = total.consumers.max(consumers);
        }
        total
    }

    /// Opens an ephemeral subscription that buffers up to `credit` messages
    /// (at most `MAX_CONSUMER_CREDIT`); beyond that, live messages pass it by.
    /// It lives until the returned id is detached.
    pub fn listen(&self, pattern: Pattern, credit: u32) -> (u64, mpsc::Receiver<Delivery>) {
        let capacity = credit.clamp(1, MAX_CONSUMER_CREDIT);
        let (tx, rx) = mpsc::channel(capacity as usize);
        let id = self.inner.next_listener.fetch_add(1, Ordering::Relaxed);
        self.inner.live.add(id, pattern, tx);
        (id, rx)
    }

    pub fn unlisten(&self, id: u64) {
        self.inner.live.remove(id);
    }
}

/// Hands each routed item of a request to its group, one part per group,
/// all at once; the answers come in the items' order, and errors name an
/// item by its place in the whole request (`field[i]`).
async fn scatter<T, R, F, Fut>(
    routed: Vec<Result<(u32, Group, T), BrokerError>>,
    field: &str,
    handle: F,
) -> Vec<Result<R, BrokerError>>
where
    F: Fn(Group, Vec<T>) -> Fut,
    Fut: std::future::Future<Output = Vec<Result<R, BrokerError>>>,
{
    let mut results: Vec<Option<Result<R, BrokerError>>> = (0..routed.len()).map(|_| None).collect();
    let mut parts: BTreeMap<u32, (Group, Vec<usize>, Vec<T>)> = BTreeMap::new();
    for (index, item) in routed.into_iter().enumerate() {
        match item {
            Ok((id, group, item)) => {
                let part = parts.entry(id).or_insert_with(|| (group, Vec::new(), Vec::new()));
                part.1.push(index);
                part.2.push(item);
            }
            Err(e) => results[index] = Some(Err(e)),
        }
    }
    let answers = futures::future::join_all(parts.into_values().map(|(group, positions, items)| {
        let answer = handle(group, items);
        async move { (positions, answer.await) }
    }))
    .await;
    for (positions, outcomes) in answers {
        for (part_index, (position, outcome)) in positions.into_iter().zip(outcomes).enumerate() {
            results[position] = Some(outcome.map_err(|e| renumber(e, field, part_index, position)));
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(BrokerError::Internal("lost result".into()))))
        .collect()
}

/// `field[from]` becomes `field[to]` in an error about one item of a part
/// of a request.
fn renumber(error: BrokerError, field: &str, from: usize, to: usize) -> BrokerError {
    if from == to {
        return error;
    }
    error.renamed(&format!("{field}[{from}]"), &format!("{field}[{to}]"))
}

/// Offers at-most-once messages published on peers to this node's
/// listeners and to the dispatchers of their topics' groups.
async fn receive_live(broker: WeakBroker, mut batches: mpsc::Receiver<Vec<Message>>) {
    while let Some(batch) = batches.recv().await {
        let Some(broker) = broker.upgrade() else { return };
        for message in batch {
            match broker.route(&message.topic) {
                Ok((_, group)) => group.offer_live(message),
                Err(_) => broker.inner.live.offer(&Delivery::live(message)),
            }
        }
    }
}

/// Hands relay requests from peers to the engine of their group.
async fn serve_relay(broker: WeakBroker, mut calls: mpsc::Receiver<RelayCall>) {
    while let Some((id, request, reply)) = calls.recv().await {
        let Some(broker) = broker.upgrade() else { return };
        let Some(group) = broker.group(id) else {
            let missing = BrokerError::Unavailable(format!("group {id} is not open on this node; retry"));
            let _ = reply.send(RelayReply::refusal(&request, missing));
            continue;
        };
        group.clone().spawn(async move {
            let _ = reply.send(group.answer_relay(request).await);
        });
    }
}

//! One task per durable subscription: owns its delivery queue (pure rules in
//! `semantics/`), its consumers and their credit, and turns the queue's
//! decisions into deliveries and dead-letter commands.

mod paging;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::cluster::Consensus;
use crate::domain::limits::{MAX_DELIVERY_BATCH, MAX_DELIVERY_BATCH_BYTES};
use crate::domain::{MessageKey, Sequence, Settle, SubscriptionName, SubscriptionSettings, TopicName};
use crate::error::BrokerError;
use crate::semantics::{Claimed, ConsumerId, Lease, LeaseId, QueueConfig, SettleError, SubscriptionQueue};
use crate::state::{Command, Reader, StoredRef};

use super::clock::now_ms;
use super::delivery::Delivery;
use super::token::AckToken;
use super::window::Window;

/// Inputs a dispatcher may have waiting; a full inbox slows its senders.
pub const DISPATCHER_INBOX: usize = 4096;
/// The longest a dispatcher sleeps without checking its timers.
const MAX_IDLE_MS: u64 = 1_000;

/// What a dispatcher is told.
pub enum Input {
    Stored(StoredRef),
    /// An at-most-once message: one consumer gets it now, or nobody does.
    Live(Arc<Delivery>),
    Acked(MessageKey),
    Attach {
        consumer: ConsumerId,
        deliveries: mpsc::Sender<Vec<Delivery>>,
        credit: u32,
    },
    Detach(ConsumerId),
    Credit(ConsumerId, u32),
    Settle {
        key: MessageKey,
        lease_id: LeaseId,
        settle: Settle,
        reply: oneshot::Sender<Result<Option<Claimed>, BrokerError>>,
    },
    /// An ack of a lease granted before a restart or leader change.
    Claim {
        key: MessageKey,
        reply: oneshot::Sender<Result<Option<Claimed>, BrokerError>>,
    },
    /// An ack whose commit failed: the message is pending again.
    Restore(Claimed),
    /// The topic was deleted, its messages with it.
    TopicDeleted(TopicName),
    Info(oneshot::Sender<(usize, usize, usize)>),
    /// The subscription was deleted.
    Shutdown,
}

struct Consumer {
    deliveries: mpsc::Sender<Vec<Delivery>>,
    credit: u32,
}

/// The task's state.
pub struct Dispatcher {
    name: SubscriptionName,
    settings: SubscriptionSettings,
    queue: SubscriptionQueue,
    consumers: BTreeMap<ConsumerId, Consumer>,
    /// Round-robin position among consumers.
    next_consumer: ConsumerId,
    reader: Reader,
    consensus: Consensus,
    epoch: u64,
    /// Messages whose ack is being committed: a repeated ack of one is told
    /// to retry, since the first may still commit.
    committing: BTreeSet<MessageKey>,
    /// Messages whose dead-lettering is being committed.
    burying: BTreeSet<MessageKey>,
    /// Messages pending again after their ack failed to commit. The failed
    /// proposal may still have been committed (a leader that lost its quorum
    /// cannot know), so the client repeats the ack: the same lease's ack
    /// claims the message again until it is handed out anew.
    restored: BTreeSet<MessageKey>,
    /// Which pending messages are in memory and which are on disk.
    window: Window,
    /// Exactly-once messages stored before this dispatcher started (below
    /// each topic's sequence here) are not delivered before `hold_until_ms`:
    /// a consumer of the previous leader may still hold a valid lease.
    held: BTreeMap<TopicName, Sequence>,
    hold_until_ms: u64,
}

impl Dispatcher {
    /// Loads the subscription's pending messages and runs until the inbox
    /// closes. At most `window` pending messages per priority stay in memory.
    pub async fn run(
        name: SubscriptionName,
        settings: SubscriptionSettings,
        reader: Reader,
        consensus: Consensus,
        epoch: u64,
        window: usize,
        mut inbox: mpsc::Receiver<Input>,
    ) {
        let mut dispatcher = Dispatcher {
            queue: SubscriptionQueue::new(QueueConfig::from(&settings)),
            name,
            settings,
            consumers: BTreeMap::new(),
            next_consumer: 0,
            reader,
            consensus,
            epoch,
            committing: BTreeSet::new(),
            burying: BTreeSet::new(),
            restored: BTreeSet::new(),
            window: Window::new(window),
            held: BTreeMap::new(),
            hold_until_ms: 0,
        };
        if let Err(e) = dispatcher.recover() {
            tracing::error!(subscription = %dispatcher.name, "cannot load pending messages: {e}");
            return;
        }
        loop {
            let wait = dispatcher.sleep_ms();
            let input = tokio::time::timeout(Duration::from_millis(wait), inbox.recv()).await;
            match input {
                Ok(Some(Input::Shutdown)) | Ok(None) => break,
                Ok(Some(input)) => {
                    dispatcher.handle(input);
                    // Take everything already waiting before delivering, so
                    // acks applied meanwhile are seen first.
                    let mut stop = false;
                    while let Ok(more) = inbox.try_recv() {
                        if matches!(more, Input::Shutdown) {
                            stop = true;
                            break;
                        }
                        dispatcher.handle(more);
                    }
                    if stop {
                        break;
                    }
                }
                Err(_) => {}
            }
            dispatcher.queue.tick(now_ms());
            dispatcher.refill();
            dispatcher.pump();
            dispatcher.dead_letter_pending();
            dispatcher.report();
        }
    }

    fn sleep_ms(&self) -> u64 {
        let now = now_ms();
        match self.queue.next_wakeup_ms() {
            Some(at) => at.saturating_sub(now).clamp(1, MAX_IDLE_MS),
            None => MAX_IDLE_MS,
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Stored(stored) => self.stored(stored),
            Input::Live(delivery) => self.deliver_live(&delivery),
            Input::Acked(key) => self.acked(key),
            Input::Attach {
                consumer,
                deliveries,
                credit,
            } => {
                self.consumers.insert(consumer, Consumer { deliveries, credit });
            }
            Input::Detach(consumer) => self.detach(consumer),
            Input::Credit(consumer, credit) => {
                if let Some(c) = self.consumers.get_mut(&consumer) {
                    c.credit = c
                        .credit
                        .saturating_add(credit)
                        .min(crate::domain::limits::MAX_CONSUMER_CREDIT);
                }
            }
            Input::Settle {
                key,
                lease_id,
                settle,
                reply,
            } => {
                let _ = reply.send(self.settle(&key, lease_id, settle));
            }
            Input::Claim { key, reply } => {
                let claimed = self.queue.claim(&key).map_err(|e| self.refusal(&key, e));
                if let Ok(Some(_)) = claimed {
                    self.committing.insert(key);
                }
                let _ = reply.send(claimed);
            }
            Input::Restore(claimed) => {
                self.committing.remove(&claimed.entry.key);
                self.restored.insert(claimed.entry.key.clone());
                self.queue.push(claimed.entry, claimed.attempts);
            }
            Input::TopicDeleted(topic) => {
                self.window.forget_topic(&topic);
                self.queue.remove_pending_of(&topic);
            }
            Input::Info(reply) => {
                let _ = reply.send((self.backlog(), self.queue.in_flight(), self.consumers.len()));
            }
            Input::Shutdown => {}
        }
    }

    fn detach(&mut self, consumer: ConsumerId) {
        if self.consumers.remove(&consumer).is_some() {
            self.queue.release_consumer(consumer, now_ms());
        }
    }

    fn settle(
        &mut self,
        key: &MessageKey,
        lease_id: LeaseId,
        settle: Settle,
    ) -> Result<Option<Claimed>, BrokerError> {
        let now = now_ms();
        match settle {
            Settle::Ack => {
                let claimed = match self.queue.ack(key, lease_id) {
                    Ok(lease) => Claimed::from(lease),
                    Err(error) if self.restored.contains(key) => match self.queue.claim(key) {
                        Ok(Some(claimed)) => claimed,
                        _ => return Err(self.refusal(key, error)),
                    },
                    Err(error) => return Err(self.refusal(key, error)),
                };
                self.restored.remove(key);
                self.committing.insert(key.clone());
                Ok(Some(claimed))
            }
            Settle::Nack(delay) => {
                metrics::counter!(crate::metrics::NACKED).increment(1);
                self.queue
                    .nack(key, lease_id, delay, now)
                    .map(|_| None)
                    .map_err(stale)
            }
            Settle::Extend(extension) => self
                .queue
                .extend(key, lease_id, extension, now)
                .map(|_| None)
                .map_err(stale),
            Settle::Reject => {
                let dead = self.queue.reject(key, lease_id).map_err(stale)?;
                self.propose_dead_letter(dead);
                Ok(None)
            }
        }
    }

    /// Hands ready messages to consumers with credit, round robin.
    fn pump(&mut self) {
        // A leader cut off from its quorum may already have a successor
        // that redelivers these messages: it hands nothing out meanwhile.
        if !self.consensus.leads_with_quorum() {
            return;
        }
        let now = now_ms();
        let ids: Vec<ConsumerId> = self.consumers.keys().copied().collect();
        if ids.is_empty() {
            return;
        }
        let start = ids.iter().position(|id| *id >= self.next_consumer).unwrap_or(0);
        let mut idle_rounds = 0;
        let mut turn = start;
        while idle_rounds < ids.len() {
            let consumer = ids[turn % ids.len()];
            turn += 1;
            let batch = self.fill_batch(consumer, now);
            if batch.is_empty() {
                idle_rounds += 1;
                continue;
            }
            idle_rounds = 0;
            self.send(consumer, batch);
        }
        self.next_consumer = ids[turn % ids.len()];
    }

    fn fill_batch(&mut self, consumer: ConsumerId, now: u64) -> Vec<Delivery> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while batch.len() < MAX_DELIVERY_BATCH && bytes < MAX_DELIVERY_BATCH_BYTES {
            let Some(c) = self.consumers.get(&consumer) else {
                break;
            };
            if c.credit == 0 {
                break;
            }
            // A priority drained below half its window pages in before the
            // pick, so a lower one never goes first while it waits on disk.
            self.refill();
            let Some(lease) = self.queue.next(now, consumer) else {
                break;
            };
            // Handed out anew: an earlier lease's ack no longer claims it.
            self.restored.remove(&lease.key);
            match self.load(&lease) {
                Some(delivery) => {
                    if let Some(c) = self.consumers.get_mut(&consumer) {
                        c.credit -= 1;
                    }
                    bytes += delivery.message.payload.len();
                    batch.push(delivery);
                }
                // Gone (retention) or acked through another path: forget it.
                None => {
                    let _ = self.queue.ack(&lease.key, lease.lease_id);
                }
            }
        }
        batch
    }

    fn load(&self, lease: &Lease) -> Option<Delivery> {
        match self.reader.is_acked(&self.name, &lease.key) {
            Ok(false) => {}
            Ok(true) => return None,
            Err(e) => {
                tracing::error!(subscription = %self.name, "cannot read ack state: {e}");
                return None;
            }
        }
        let message = match self.reader.message(&lease.key) {
            Ok(m) => m?,
            Err(e) => {
                tracing::error!(subscription = %self.name, "cannot read message {:?}: {e}", lease.key);
                return None;
            }
        };
        if lease.attempt > 1 {
            metrics::counter!(crate::metrics::REDELIVERED).increment(1);
        }
        let token = AckToken {
            subscription: self.name.clone(),
            key: lease.key.clone(),
            lease_id: lease.lease_id,
            epoch: self.epoch,
            group: self.consensus.group_id(),
        };
        let delivery = message.delivery.weaker(self.settings.delivery);
        Some(Delivery {
            message: Arc::new(message),
            attempt: lease.attempt,
            ack_token: Some(token.encode()),
            delivery,
        })
    }

    fn send(&mut self, consumer: ConsumerId, batch: Vec<Delivery>) {
        let count = batch.len() as u64;
        let sent = self
            .consumers
            .get(&consumer)
            .map(|c| c.deliveries.try_send(batch).is_ok());
        if sent == Some(true) {
            metrics::counter!(crate::metrics::DELIVERED).increment(count);
        } else {
            // The stream is gone or not reading: its leases go back to the queue.
            self.detach(consumer);
        }
    }

    fn deliver_live(&mut self, delivery: &Delivery) {
        let chosen = self.consumers.iter_mut().find(|(_, c)| c.credit > 0);
        if let Some((_, consumer)) = chosen
            && consumer.deliveries.try_send(vec![delivery.clone()]).is_ok()
        {
            consumer.credit -= 1;
            metrics::counter!(crate::metrics::DELIVERED).increment(1);
        }
    }

    fn dead_letter_pending(&mut self) {
        for dead in self.queue.take_dead() {
            self.propose_dead_letter(dead);
        }
    }

    fn propose_dead_letter(&mut self, dead: crate::semantics::DeadLetter) {
        let metric = match dead.reason {
            crate::semantics::DeadReason::Expired => crate::metrics::EXPIRED,
            _ => crate::metrics::DEAD_LETTERED,
        };
        metrics::counter!(metric).increment(1);
        self.burying.insert(dead.key.clone());
        let command = Command::DeadLetter {
            subscription: self.name.clone(),
            key: dead.key,
            reason: dead.reason,
            attempts: dead.attempts,
            now_ms: now_ms(),
        };
        let consensus = self.consensus.clone();
        let name = self.name.clone();
        tokio::spawn(async move {
            if let Err(e) = consensus.propose(command).await {
                // The message stays unacked in storage and is found again on recovery.
                tracing::warn!(subscription = %name, "dead-lettering failed: {e}");
            }
        });
    }

    fn report(&self) {
        let labels = [("subscription", self.name.to_string())];
        metrics::gauge!(crate::metrics::BACKLOG, &labels).set(self.backlog() as f64);
        metrics::gauge!(crate::metrics::IN_FLIGHT, &labels).set(self.queue.in_flight() as f64);
    }
}

impl Dispatcher {
    /// An ack the queue refused: retryable while an earlier ack of the
    /// message is being committed (its outcome decides), else final.
    fn refusal(&self, key: &MessageKey, error: SettleError) -> BrokerError {
        if self.committing.contains(key) {
            return BrokerError::Unavailable(
                "ack_token: an ack of this message is being committed; retry to learn its outcome".into(),
            );
        }
        stale(error)
    }
}

/// A settle the queue refused: the token's lease is over.
fn stale(error: SettleError) -> BrokerError {
    BrokerError::FailedPrecondition(format!("ack_token: {error}"))
}

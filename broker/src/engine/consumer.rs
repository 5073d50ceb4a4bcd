//! A consumer's session on the node it is connected to. Deliveries come from
//! the subscription's dispatcher: attached here when this node leads, pulled
//! through the leader otherwise. The session follows leadership as it moves,
//! so a leader change does not end the consumer's stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use crate::cluster::{PEER_CALL_TIMEOUT_MS, RelayReply, RelayRequest, RelayedDelivery, RemoteConsumer};
use crate::domain::SubscriptionName;
use crate::domain::limits::MAX_CONSUMER_CREDIT;
use crate::error::BrokerError;

use super::{CONSUMER_BUFFER_BATCHES, Delivery, Group, Input, now_ms};

/// How long one pull through the leader waits for deliveries.
pub const PULL_WAIT_MS: u64 = 500;
/// Pause before looking for the dispatcher again after losing it.
const REATTACH_PAUSE_MS: u64 = 100;

/// A consumer of a durable subscription in one group, wherever the
/// group's dispatcher runs.
/// Dropping it ends the session; its unsettled deliveries are redelivered.
pub struct GroupConsumer {
    /// Batches of deliveries; an error ends the stream.
    pub deliveries: mpsc::Receiver<Result<Vec<Delivery>, BrokerError>>,
    pub credit: Arc<Credit>,
}

/// Credit granted by the consumer and not yet passed on to the dispatcher.
#[derive(Default)]
pub struct Credit {
    granted: AtomicU32,
    notify: Notify,
}

impl Credit {
    /// Allows `messages` more deliveries.
    pub fn grant(&self, messages: u32) {
        let _ = self
            .granted
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |g| {
                Some(g.saturating_add(messages).min(MAX_CONSUMER_CREDIT))
            });
        self.notify.notify_one();
    }

    fn take(&self) -> u32 {
        self.granted.swap(0, Ordering::Relaxed)
    }
}

/// Why one attachment to a dispatcher ended.
enum Ended {
    /// The consumer is gone (or was told why its stream ends).
    Consumer,
    /// The dispatcher is gone or unreachable: find it again.
    Source,
}

type Out = mpsc::Sender<Result<Vec<Delivery>, BrokerError>>;

/// The session's state across attachments.
struct Session {
    broker: Group,
    name: SubscriptionName,
    id: u64,
    credit: Arc<Credit>,
    /// Credit the consumer granted that no delivery has used yet; a new
    /// attachment starts with it.
    outstanding: u32,
    /// Credit not yet passed on to the leader; the next pull carries it.
    unsent: u32,
    out: Out,
}

impl Group {
    /// Starts a consumer session on `name` with `credit` deliveries allowed.
    pub fn consume(&self, name: &SubscriptionName, credit: u32) -> Result<GroupConsumer, BrokerError> {
        // A node that does not lead may not have applied a fresh
        // subscription yet: the leader answers for it.
        if !self.knows_subscription(name) && self.inner.consensus.is_leader() {
            return Err(BrokerError::NotFound(format!(
                "start.subscription: subscription {name} does not exist"
            )));
        }
        let (out, deliveries) = mpsc::channel(CONSUMER_BUFFER_BATCHES);
        let credit_cell = Arc::new(Credit::default());
        let session = Session {
            broker: self.clone(),
            name: name.clone(),
            id: self.next_id(),
            credit: credit_cell.clone(),
            outstanding: credit.min(MAX_CONSUMER_CREDIT),
            unsent: 0,
            out,
        };
        self.spawn(session.run());
        Ok(GroupConsumer {
            deliveries,
            credit: credit_cell,
        })
    }
}

impl Session {
    async fn run(mut self) {
        loop {
            let ended = if self.broker.inner.consensus.is_leader() {
                self.local().await
            } else {
                self.remote().await
            };
            if matches!(ended, Ended::Consumer) {
                return;
            }
            let pause = tokio::time::sleep(Duration::from_millis(REATTACH_PAUSE_MS));
            tokio::select! {
                _ = pause => {}
                _ = self.out.closed() => return,
            }
        }
    }

    /// Passes newly granted credit into `outstanding`; returns it.
    fn absorb_credit(&mut self) -> u32 {
        let granted = self.credit.take();
        self.outstanding = self.outstanding.saturating_add(granted).min(MAX_CONSUMER_CREDIT);
        granted
    }

    /// Sends a batch on; false when the consumer is gone.
    async fn deliver(&mut self, mut batch: Vec<Delivery>) -> bool {
        self.outstanding = self.outstanding.saturating_sub(batch.len() as u32);
        // A delivery may wait here, or at the leader for a pull that a
        // partition delays, past its message's expiry: it is never handed
        // out then. Its lease runs out and the queue expires it; the credit
        // it used is granted again.
        let now = now_ms();
        let before = batch.len();
        batch.retain(|d| !d.message.is_expired(now));
        let expired = (before - batch.len()) as u32;
        if expired > 0 {
            self.credit.grant(expired);
        }
        batch.is_empty() || self.out.send(Ok(batch)).await.is_ok()
    }

    /// Ends the stream with `error`, for errors a new attachment cannot fix.
    async fn fail(&self, error: BrokerError) -> Ended {
        let _ = self.out.send(Err(error)).await;
        Ended::Consumer
    }

    /// Attached to the dispatcher on this node, while it leads.
    async fn local(&mut self) -> Ended {
        self.absorb_credit();
        let mut attachment = match self.broker.attach(&self.name, self.outstanding).await {
            Ok(attachment) => attachment,
            Err(e @ BrokerError::NotFound(_)) => return self.fail(e).await,
            Err(_) => return Ended::Source,
        };
        let ended = loop {
            tokio::select! {
                batch = attachment.deliveries.recv() => match batch {
                    Some(batch) => if !self.deliver(batch).await { break Ended::Consumer },
                    None => break Ended::Source,
                },
                _ = self.credit.notify.notified() => {
                    let granted = self.absorb_credit();
                    let credit = Input::Credit(attachment.consumer, granted);
                    if granted > 0 && attachment.inbox.send(credit).await.is_err() {
                        break Ended::Source;
                    }
                }
                _ = self.out.closed() => break Ended::Consumer,
            }
        };
        let _ = attachment.inbox.send(Input::Detach(attachment.consumer)).await;
        ended
    }

    /// Pulling from the leader on another node, until that fails.
    async fn remote(&mut self) -> Ended {
        let consumer = RemoteConsumer {
            node: self.broker.inner.consensus.node_id(),
            session: self.id,
        };
        self.absorb_credit();
        // The first pull attaches the session with everything outstanding.
        self.unsent = self.outstanding;
        let ended = loop {
            let granted = self.absorb_credit();
            self.unsent = self.unsent.saturating_add(granted);
            let pulled = match self.pull_once(consumer).await {
                Some(pulled) => pulled,
                None => break Ended::Consumer,
            };
            match pulled {
                Ok(RelayReply::Pulled(Ok(deliveries))) => {
                    if !deliveries.is_empty() && !self.deliver(local_deliveries(deliveries)).await {
                        break Ended::Consumer;
                    }
                }
                Ok(RelayReply::Pulled(Err(e @ BrokerError::NotFound(_)))) => break self.fail(e).await,
                Ok(_) | Err(_) => break Ended::Source,
            }
            if self.broker.inner.consensus.is_leader() {
                break Ended::Source;
            }
        };
        let release = RelayRequest::Release {
            subscription: self.name.clone(),
            consumer,
        };
        let consensus = self.broker.inner.consensus.clone();
        tokio::spawn(async move {
            let timeout = Duration::from_millis(PEER_CALL_TIMEOUT_MS);
            let _ = consensus.relay(release, timeout).await;
        });
        ended
    }

    /// One pull; credit granted while it waits is passed on at once, so the
    /// waiting pull can use it. `None` when the consumer went away.
    async fn pull_once(&mut self, consumer: RemoteConsumer) -> Option<Result<RelayReply, BrokerError>> {
        let consensus = self.broker.inner.consensus.clone();
        let request = RelayRequest::Pull {
            subscription: self.name.clone(),
            consumer,
            credit: std::mem::take(&mut self.unsent),
            wait_ms: PULL_WAIT_MS,
        };
        let timeout = Duration::from_millis(PULL_WAIT_MS + PEER_CALL_TIMEOUT_MS);
        let pull = consensus.relay(request, timeout);
        tokio::pin!(pull);
        loop {
            tokio::select! {
                pulled = &mut pull => return Some(pulled),
                _ = self.credit.notify.notified() => {
                    let credit = self.absorb_credit();
                    if credit > 0 {
                        let request = RelayRequest::Credit { subscription: self.name.clone(), consumer, credit };
                        let timeout = Duration::from_millis(PEER_CALL_TIMEOUT_MS);
                        let sent = consensus.relay(request, timeout).await;
                        if !matches!(sent, Ok(RelayReply::Done(Ok(())))) {
                            // The next pull carries it instead.
                            self.unsent = self.unsent.saturating_add(credit);
                        }
                    }
                }
                _ = self.out.closed() => return None,
            }
        }
    }
}

fn local_deliveries(relayed: Vec<RelayedDelivery>) -> Vec<Delivery> {
    relayed
        .into_iter()
        .map(|d| Delivery {
            message: Arc::new(d.message),
            attempt: d.attempt,
            ack_token: d.ack_token,
            delivery: d.delivery,
        })
        .collect()
}

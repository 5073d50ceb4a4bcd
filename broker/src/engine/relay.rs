//! The leader's side of relayed consumers: a consumer connected to another
//! node is attached here like a local one, and its deliveries wait in the
//! attachment until that node pulls them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::cluster::{RelayReply, RelayRequest, RelayedDelivery, RemoteConsumer};
use crate::domain::SubscriptionName;
use crate::error::BrokerError;

use super::{Delivery, Group, Input};

/// The longest a pull may wait for deliveries before it answers empty.
pub const MAX_PULL_WAIT_MS: u64 = 2_000;
/// Most payload bytes one pull answers with; the rest wait for the next.
pub const MAX_PULL_BYTES: usize = 4 * 1024 * 1024;
/// A relayed consumer not heard from for this long is gone: its leases go
/// back to the queue. Far above a pull's wait, so only a lost node trips it.
pub const REMOTE_IDLE_MS: u64 = 10_000;
/// How often idle relayed consumers are looked for.
const REAP_EVERY_MS: u64 = 1_000;

type Key = (SubscriptionName, RemoteConsumer);
/// Deliveries waiting for a pull, and a batch that did not fit in the last answer.
type Pending = (mpsc::Receiver<Vec<Delivery>>, Option<Vec<Delivery>>);

/// One relayed consumer's attachment.
struct Remote {
    consumer: u64,
    inbox: mpsc::Sender<Input>,
    pending: tokio::sync::Mutex<Pending>,
    last_seen: Mutex<Instant>,
}

impl Remote {
    fn touch(&self) {
        *self.last_seen.lock().expect("last_seen lock") = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        self.last_seen.lock().expect("last_seen lock").elapsed()
    }
}

/// The relayed consumers attached on this node.
#[derive(Default)]
pub struct Remotes {
    attached: Mutex<HashMap<Key, Arc<Remote>>>,
}

impl Remotes {
    fn get(&self, key: &Key) -> Option<Arc<Remote>> {
        self.attached.lock().expect("remotes lock").get(key).cloned()
    }

    fn take(&self, key: &Key) -> Option<Arc<Remote>> {
        self.attached.lock().expect("remotes lock").remove(key)
    }

    /// Forgets every relayed consumer (their dispatchers stopped).
    pub fn clear(&self) {
        self.attached.lock().expect("remotes lock").clear();
    }

    fn take_idle(&self) -> Vec<Arc<Remote>> {
        let limit = Duration::from_millis(REMOTE_IDLE_MS);
        let mut attached = self.attached.lock().expect("remotes lock");
        let idle: Vec<Key> = attached
            .iter()
            .filter(|(_, remote)| remote.idle_for() > limit)
            .map(|(key, _)| key.clone())
            .collect();
        idle.iter().filter_map(|key| attached.remove(key)).collect()
    }
}

/// Releases relayed consumers whose node stopped pulling.
pub async fn reap(broker: Group) {
    let mut ticker = tokio::time::interval(Duration::from_millis(REAP_EVERY_MS));
    loop {
        ticker.tick().await;
        for remote in broker.inner.remotes.take_idle() {
            let _ = remote.inbox.send(Input::Detach(remote.consumer)).await;
        }
    }
}

impl Group {
    pub(super) async fn answer_relay(&self, request: RelayRequest) -> RelayReply {
        match request {
            RelayRequest::Pull {
                subscription,
                consumer,
                credit,
                wait_ms,
            } => RelayReply::Pulled(self.pull((subscription, consumer), credit, wait_ms).await),
            RelayRequest::Credit {
                subscription,
                consumer,
                credit,
            } => RelayReply::Done(
                self.grant_remote(&(subscription, consumer), credit)
                    .await
                    .map(|_| ()),
            ),
            RelayRequest::Release {
                subscription,
                consumer,
            } => {
                if let Some(remote) = self.inner.remotes.take(&(subscription, consumer)) {
                    let _ = remote.inbox.send(Input::Detach(remote.consumer)).await;
                }
                RelayReply::Done(Ok(()))
            }
            RelayRequest::Settle {
                tokens,
                field,
                settle,
            } => {
                // Settled here or refused: a relayed settle is never relayed again.
                if let Some(redirect) = self.redirect() {
                    return RelayReply::refusal(
                        &RelayRequest::Settle {
                            tokens,
                            field,
                            settle,
                        },
                        redirect,
                    );
                }
                RelayReply::Settled(self.settle_here(&tokens, &field, settle).await)
            }
            RelayRequest::Topic { name } => RelayReply::Topic(match self.redirect() {
                Some(redirect) => Err(redirect),
                None => self.get_topic(&name),
            }),
            RelayRequest::Stats { subscription } => RelayReply::Stats(match self.redirect() {
                Some(redirect) => Err(redirect),
                None => {
                    let stats = self.stats(&subscription).await;
                    Ok((stats.backlog, stats.in_flight, stats.consumers))
                }
            }),
        }
    }

    /// The relayed consumer `key`, attached now if it is new, with `credit` more.
    async fn grant_remote(&self, key: &Key, credit: u32) -> Result<Arc<Remote>, BrokerError> {
        let remote = match self.inner.remotes.get(key) {
            Some(remote) => remote,
            None => self.attach_remote(key).await?,
        };
        remote.touch();
        if credit > 0 {
            remote
                .inbox
                .send(Input::Credit(remote.consumer, credit))
                .await
                .map_err(|_| stopped())?;
        }
        Ok(remote)
    }

    async fn attach_remote(&self, key: &Key) -> Result<Arc<Remote>, BrokerError> {
        let attachment = self.attach(&key.0, 0).await?;
        let remote = Arc::new(Remote {
            consumer: attachment.consumer,
            inbox: attachment.inbox,
            pending: tokio::sync::Mutex::new((attachment.deliveries, None)),
            last_seen: Mutex::new(Instant::now()),
        });
        let mut attached = self.inner.remotes.attached.lock().expect("remotes lock");
        // Two first requests of one session may race: the first one wins.
        let winner = attached
            .entry(key.clone())
            .or_insert_with(|| remote.clone())
            .clone();
        if !Arc::ptr_eq(&winner, &remote) {
            let _ = remote.inbox.try_send(Input::Detach(remote.consumer));
        }
        Ok(winner)
    }

    async fn pull(&self, key: Key, credit: u32, wait_ms: u64) -> Result<Vec<RelayedDelivery>, BrokerError> {
        let remote = self.grant_remote(&key, credit).await?;
        let wait = Duration::from_millis(wait_ms.min(MAX_PULL_WAIT_MS));
        let mut pending = remote.pending.lock().await;
        let (deliveries, carried) = &mut *pending;
        let first = match carried.take() {
            Some(batch) => Some(batch),
            None => match tokio::time::timeout(wait, deliveries.recv()).await {
                Err(_) => None,
                Ok(Some(batch)) => Some(batch),
                Ok(None) => {
                    // The dispatcher stopped (leadership moved, or the
                    // subscription was deleted): the session starts over.
                    drop(pending);
                    self.inner.remotes.take(&key);
                    return Err(stopped());
                }
            },
        };
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut next = first;
        while let Some(batch) = next.take() {
            let size: usize = batch.iter().map(|d| d.message.payload.len()).sum();
            if !out.is_empty() && bytes + size > MAX_PULL_BYTES {
                *carried = Some(batch);
                break;
            }
            bytes += size;
            out.extend(batch.into_iter().map(relayed));
            next = deliveries.try_recv().ok();
        }
        remote.touch();
        Ok(out)
    }
}

fn relayed(delivery: Delivery) -> RelayedDelivery {
    RelayedDelivery {
        message: Arc::unwrap_or_clone(delivery.message),
        attempt: delivery.attempt,
        ack_token: delivery.ack_token,
        delivery: delivery.delivery,
    }
}

fn stopped() -> BrokerError {
    BrokerError::Unavailable("the subscription's dispatcher stopped on this node; attach again".into())
}

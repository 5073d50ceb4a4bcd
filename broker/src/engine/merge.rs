//! A consumer of a durable subscription across groups: one session per
//! group (group 0 for the broker's own topics, then every shard), their
//! deliveries merged into one stream. Credit applies per group, as if each
//! were the only one: each starts with the consumer's whole credit, and
//! credit granted again goes back to the groups whose deliveries used it,
//! so a consumer of one busy shard sees exactly the flow of a single group
//! (one spanning several busy shards may hold credit × shards deliveries).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::domain::SubscriptionName;
use crate::domain::limits::MAX_CONSUMER_CREDIT;
use crate::error::BrokerError;

use super::consumer::Credit;
use super::{Broker, CONSUMER_BUFFER_BATCHES, Delivery};

/// A consumer of a durable subscription, wherever its groups' dispatchers
/// run. Dropping it ends every session; unsettled deliveries are redelivered.
pub struct Consumer {
    /// Batches of deliveries; an error ends the stream.
    pub deliveries: mpsc::Receiver<Result<Vec<Delivery>, BrokerError>>,
    shares: Arc<Shares>,
}

/// Where granted credit goes.
struct Shares {
    credits: Vec<Arc<Credit>>,
    /// The group of each delivery whose credit is not yet granted again,
    /// oldest first; at most `MAX_CONSUMER_CREDIT` per group remembered.
    origins: Mutex<VecDeque<usize>>,
}

impl Consumer {
    /// Allows `messages` more deliveries: each goes back to the group of a
    /// delivery not yet paid back; beyond those, every group gets the rest
    /// (the consumer widened its window).
    pub fn grant(&self, messages: u32) {
        let mut per_group = vec![0u32; self.shares.credits.len()];
        let mut widened = 0;
        {
            let mut origins = self.shares.origins.lock().expect("origins lock");
            for _ in 0..messages.min(MAX_CONSUMER_CREDIT) {
                match origins.pop_front() {
                    Some(group) => per_group[group] += 1,
                    None => widened += 1,
                }
            }
        }
        for (credit, granted) in self.shares.credits.iter().zip(per_group) {
            if granted + widened > 0 {
                credit.grant(granted + widened);
            }
        }
    }
}

impl Broker {
    /// Starts a consumer of subscription `name` with `credit` deliveries allowed.
    pub fn consume(&self, name: &SubscriptionName, credit: u32) -> Result<Consumer, BrokerError> {
        let mut groups = vec![self.main().clone()];
        groups.extend(self.shard_groups()?);
        let mut credits = Vec::with_capacity(groups.len());
        let mut streams = Vec::with_capacity(groups.len());
        for (index, group) in groups.iter().enumerate() {
            let consumer = group.consume(name, credit)?;
            credits.push(consumer.credit);
            // Each stream ends with `None`, so the merge learns that a
            // session ended rather than carry on without it.
            let tagged = ReceiverStream::new(consumer.deliveries)
                .map(move |batch| Some((index, batch)))
                .chain(futures::stream::once(async { None }));
            streams.push(Box::pin(tagged));
        }
        let shares = Arc::new(Shares {
            origins: Mutex::new(VecDeque::new()),
            credits,
        });
        let (out, deliveries) = mpsc::channel(CONSUMER_BUFFER_BATCHES);
        self.spawn(merge(futures::stream::select_all(streams), shares.clone(), out));
        Ok(Consumer { deliveries, shares })
    }
}

type Tagged = Option<(usize, Result<Vec<Delivery>, BrokerError>)>;

async fn merge(
    mut streams: impl futures::Stream<Item = Tagged> + Unpin,
    shares: Arc<Shares>,
    out: mpsc::Sender<Result<Vec<Delivery>, BrokerError>>,
) {
    let limit = MAX_CONSUMER_CREDIT as usize * shares.credits.len();
    loop {
        let next = tokio::select! {
            next = streams.next() => next,
            _ = out.closed() => return,
        };
        let Some(Some((group, batch))) = next else { return };
        let batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                let _ = out.send(Err(e)).await;
                return;
            }
        };
        {
            let mut origins = shares.origins.lock().expect("origins lock");
            origins.extend(std::iter::repeat_n(group, batch.len()));
            let excess = origins.len().saturating_sub(limit);
            origins.drain(..excess);
        }
        if out.send(Ok(batch)).await.is_err() {
            return;
        }
    }
}

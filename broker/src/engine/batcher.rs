//! Group proposals: publishes that arrive while a proposal is in flight are
//! merged into the next `Command::Publish`, so one Raft entry and one fsync
//! serve them all. openraft appends and flushes one entry at a time, so
//! without this every concurrent publish would pay its own fsync.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::cluster::Consensus;
use crate::domain::NewMessage;
use crate::error::BrokerError;
use crate::state::{Command, CommandError, Published, Response};

/// Most messages merged into one proposal.
pub const MAX_PROPOSAL_MESSAGES: usize = 4096;
/// Most payload bytes merged into one proposal (a single request may exceed it alone).
pub const MAX_PROPOSAL_BYTES: usize = 8 * 1024 * 1024;
/// Proposals of merged publishes in flight at once.
pub const MAX_PROPOSALS_IN_FLIGHT: usize = 4;
/// Publish requests waiting to be merged; a full queue slows publishers down.
pub const PUBLISH_QUEUE: usize = 4096;

/// The outcome of one request's messages, in its order.
pub type Outcomes = Result<Vec<Result<Published, CommandError>>, BrokerError>;

struct Pending {
    messages: Vec<NewMessage>,
    now_ms: u64,
    reply: oneshot::Sender<Outcomes>,
}

/// The handle publishers use; cheap to clone.
#[derive(Clone)]
pub struct Batcher {
    queue: mpsc::Sender<Pending>,
}

impl Batcher {
    /// Starts merging; the task ends when every handle is dropped.
    pub fn start(consensus: Consensus, auto_create: bool) -> (Self, impl std::future::Future<Output = ()>) {
        let (queue, pending) = mpsc::channel(PUBLISH_QUEUE);
        (Self { queue }, run(consensus, auto_create, pending))
    }

    /// Orders `messages` (published at `now_ms`) and returns their outcomes.
    pub async fn publish(&self, messages: Vec<NewMessage>, now_ms: u64) -> Outcomes {
        let (reply, answer) = oneshot::channel();
        let stopped = || BrokerError::Unavailable("the broker is stopping; retry".into());
        self.queue
            .send(Pending {
                messages,
                now_ms,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(consensus: Consensus, auto_create: bool, mut pending: mpsc::Receiver<Pending>) {
    let in_flight = Arc::new(Semaphore::new(MAX_PROPOSALS_IN_FLIGHT));
    while let Some(first) = pending.recv().await {
        // Waiting for a free slot first lets the next group grow meanwhile.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let group = gather(first, &mut pending);
        let consensus = consensus.clone();
        tokio::spawn(async move {
            propose(&consensus, auto_create, group).await;
            drop(permit);
        });
    }
}

/// `first` and whatever else waits, within the proposal limits.
fn gather(first: Pending, pending: &mut mpsc::Receiver<Pending>) -> Vec<Pending> {
    let weight = |p: &Pending| p.messages.iter().map(|m| m.payload.len()).sum::<usize>();
    let (mut count, mut bytes) = (first.messages.len(), weight(&first));
    let mut group = vec![first];
    while count < MAX_PROPOSAL_MESSAGES && bytes < MAX_PROPOSAL_BYTES {
        match pending.try_recv() {
            Ok(next) => {
                count += next.messages.len();
                bytes += weight(&next);
                group.push(next);
            }
            Err(_) => break,
        }
    }
    group
}

async fn propose(consensus: &Consensus, auto_create: bool, group: Vec<Pending>) {
    // The latest clock of the group: no message is stamped before its request arrived.
    let now_ms = group.iter().map(|p| p.now_ms).max().unwrap_or(0);
    let mut sizes = Vec::with_capacity(group.len());
    let mut replies = Vec::with_capacity(group.len());
    let mut messages = Vec::new();
    for pending in group {
        sizes.push(pending.messages.len());
        messages.extend(pending.messages);
        replies.push(pending.reply);
    }
    let command = Command::Publish {
        messages,
        auto_create,
        now_ms,
    };
    match consensus.propose(command).await {
        Ok(Response::Published(outcomes)) => {
            let mut outcomes = outcomes.into_iter();
            for (size, reply) in sizes.into_iter().zip(replies) {
                let _ = reply.send(Ok(outcomes.by_ref().take(size).collect()));
            }
        }
        Ok(other) => {
            let error = BrokerError::Internal(format!("unexpected answer to publish: {other:?}"));
            replies.into_iter().for_each(|r| drop(r.send(Err(error.clone()))));
        }
        Err(error) => replies.into_iter().for_each(|r| drop(r.send(Err(error.clone())))),
    }
}

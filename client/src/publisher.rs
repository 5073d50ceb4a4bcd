//! Pipelined publishing over the PublishStream call: many messages in
//! flight, a bounded window for back-pressure, and retries that keep each
//! message's id. The streams themselves are `publish_task.rs`'s.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hermod_proto::v1 as pb;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::client::Client;
use crate::convert::prepare_message;
use crate::error::{Error, Result};
use crate::message::{OutgoingMessage, PublishReceipt};
use crate::publish_task::PublishTask;

/// Messages in flight on a publisher unless told otherwise.
pub const DEFAULT_PUBLISH_WINDOW: usize = 256;

/// A pipelined publisher.
///
/// [`send`](Self::send) waits only for room in the window (at most
/// `window` messages unanswered), then returns a [`PublishHandle`] that
/// resolves to the broker's receipt. Each message goes on a stream to its
/// topic's shard leader when the client knows it, else through the seed
/// connection. Retryable failures (a stream breaks, a message's own error
/// is retryable) are retried under the client's retry policy with the
/// message's original id.
///
/// ```no_run
/// # async fn run(client: hermod_client::Client) -> Result<(), hermod_client::Error> {
/// use hermod_client::OutgoingMessage;
///
/// let publisher = client.publisher();
/// let mut handles = Vec::new();
/// for i in 0..10_000 {
///     handles.push(publisher.send(OutgoingMessage::new("metrics.cpu", format!("{i}"))).await);
/// }
/// for handle in handles {
///     handle.await?;
/// }
/// publisher.close().await;
/// # Ok(()) }
/// ```
pub struct Publisher {
    jobs: mpsc::UnboundedSender<Job>,
    window: Arc<Semaphore>,
    size: u32,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("window", &self.size)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

/// Resolves to the receipt of one message sent through a [`Publisher`].
#[derive(Debug)]
#[must_use = "the publish may fail; await the handle to know"]
pub struct PublishHandle {
    reply: oneshot::Receiver<Result<PublishReceipt>>,
}

impl Future for PublishHandle {
    type Output = Result<PublishReceipt>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.reply).poll(cx).map(|answer| {
            answer.unwrap_or_else(|_| Err(Error::closed("the publisher stopped before the broker answered")))
        })
    }
}

impl Client {
    /// A pipelined publisher with a window of [`DEFAULT_PUBLISH_WINDOW`].
    pub fn publisher(&self) -> Publisher {
        self.publisher_with_window(DEFAULT_PUBLISH_WINDOW)
    }

    /// A pipelined publisher with at most `window` messages in flight.
    pub fn publisher_with_window(&self, window: usize) -> Publisher {
        let size = window.clamp(1, u32::MAX as usize).min(Semaphore::MAX_PERMITS) as u32;
        let (jobs, receiver) = mpsc::unbounded_channel();
        let task = PublishTask::new(self.clone(), receiver);
        Publisher {
            jobs,
            window: Arc::new(Semaphore::new(size as usize)),
            size,
            task: tokio::spawn(task.run()),
        }
    }
}

impl Publisher {
    /// Queues a message, waiting while the window is full. The id is fixed
    /// now (the caller's or a new UUIDv7) and kept across retries.
    pub async fn send(&self, message: OutgoingMessage) -> PublishHandle {
        let (reply, handle) = oneshot::channel();
        let Ok(permit) = self.window.clone().acquire_owned().await else {
            let _ = reply.send(Err(Error::closed("the publisher is closed")));
            return PublishHandle { reply: handle };
        };
        let job = Job {
            message: prepare_message(message),
            reply,
            _permit: permit,
            attempts: 0,
        };
        if let Err(mpsc::error::SendError(job)) = self.jobs.send(job) {
            let _ = job.reply.send(Err(Error::closed("the publisher is closed")));
        }
        PublishHandle { reply: handle }
    }

    /// Publishes and waits for the receipt.
    pub async fn publish(&self, message: OutgoingMessage) -> Result<PublishReceipt> {
        self.send(message).await.await
    }

    /// Messages sent and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.size as usize - self.window.available_permits()
    }

    /// Waits until every message sent so far is answered.
    pub async fn flush(&self) {
        // All permits free means nothing is in flight; give them back at once.
        let _ = self.window.acquire_many(self.size).await;
    }

    /// Waits for every message in flight to be answered, then closes the stream.
    pub async fn close(self) {
        let Publisher { jobs, task, .. } = self;
        drop(jobs);
        let _ = task.await;
    }
}

/// One message on its way. Holding the window permit here means the window
/// frees up exactly when the caller gets an answer.
pub(crate) struct Job {
    pub(crate) message: pb::PublishMessage,
    reply: oneshot::Sender<Result<PublishReceipt>>,
    _permit: OwnedSemaphorePermit,
    /// Times sent so far.
    pub(crate) attempts: u32,
}

impl Job {
    pub(crate) fn answer(self, outcome: Result<PublishReceipt>) {
        let _ = self.reply.send(outcome);
    }
}

//! Pipelined publishing over the PublishStream call: many messages in flight
//! on one stream, a bounded window for back-pressure, and retries that keep
//! each message's id.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hermod_proto::v1 as pb;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::client::Client;
use crate::convert::{prepare_message, receipt_from_pb};
use crate::error::{Error, Result, status_error};
use crate::message::{OutgoingMessage, PublishReceipt};
use crate::retry::Backoff;

/// Messages in flight on a publisher unless told otherwise.
pub const DEFAULT_PUBLISH_WINDOW: usize = 256;
/// Most messages sent in one request on the stream (the broker takes 1000).
const MAX_REQUEST_MESSAGES: usize = 256;
/// Payload bytes after which a request takes no further message; a larger
/// message goes alone.
const MAX_REQUEST_PAYLOAD_BYTES: usize = 1024 * 1024;

/// A pipelined publisher.
///
/// [`send`](Self::send) waits only for room in the window (at most
/// `window` messages unanswered), then returns a [`PublishHandle`] that
/// resolves to the broker's receipt. Retryable failures (the stream breaks,
/// a message's own error is retryable) are retried under the client's
/// retry policy with the message's original id.
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
        let task = PublishTask {
            client: self.clone(),
            jobs: receiver,
            accepting: true,
            stream: None,
            in_flight: HashMap::new(),
            waiting: VecDeque::new(),
            retry_at: None,
            backoff: Backoff::new(self.retry_policy()),
            next_correlation: 1,
        };
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
struct Job {
    message: pb::PublishMessage,
    reply: oneshot::Sender<Result<PublishReceipt>>,
    _permit: OwnedSemaphorePermit,
    /// Times sent so far.
    attempts: u32,
}

impl Job {
    fn answer(self, outcome: Result<PublishReceipt>) {
        let _ = self.reply.send(outcome);
    }
}

struct Stream {
    outbound: mpsc::UnboundedSender<pb::PublishStreamRequest>,
    inbound: tonic::Streaming<pb::PublishStreamResponse>,
    generation: u64,
}

struct PublishTask {
    client: Client,
    jobs: mpsc::UnboundedReceiver<Job>,
    /// False once the publisher is gone: finish what is in flight, then stop.
    accepting: bool,
    stream: Option<Stream>,
    in_flight: HashMap<u64, Job>,
    /// Jobs to (re)send when `retry_at` passes.
    waiting: VecDeque<Job>,
    retry_at: Option<Instant>,
    backoff: Backoff,
    next_correlation: u64,
}

async fn next_response(
    stream: Option<&mut Stream>,
) -> std::result::Result<Option<pb::PublishStreamResponse>, tonic::Status> {
    match stream {
        Some(stream) => stream.inbound.message().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl PublishTask {
    async fn run(mut self) {
        loop {
            if !self.accepting && self.in_flight.is_empty() && self.waiting.is_empty() {
                return;
            }
            let retry_at = self.retry_at;
            tokio::select! {
                job = self.jobs.recv(), if self.accepting => match job {
                    None => self.accepting = false,
                    Some(job) => {
                        let mut jobs = vec![job];
                        while let Ok(job) = self.jobs.try_recv() {
                            jobs.push(job);
                        }
                        if self.retry_at.is_some() {
                            // Keep the order: retries go first.
                            self.waiting.extend(jobs);
                        } else {
                            self.dispatch(jobs).await;
                        }
                    }
                },
                response = next_response(self.stream.as_mut()) => self.on_response(response),
                () = sleep_until(retry_at) => {
                    self.retry_at = None;
                    let jobs = self.waiting.drain(..).collect();
                    self.dispatch(jobs).await;
                }
            }
        }
        // Dropping the stream's outbound half ends the call.
    }

    fn max_attempts(&self) -> u32 {
        self.client.retry_policy().max_attempts
    }

    /// Sends jobs on the current stream, opening one if needed. The requests
    /// are queued before the call is made, since a broker may wait for the
    /// first request before it answers with headers.
    async fn dispatch(&mut self, jobs: Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        if let Some(stream) = &self.stream {
            let outbound = stream.outbound.clone();
            if let Err(unsent) = self.enqueue(&outbound, jobs) {
                self.waiting.extend(unsent);
                self.on_stream_failure(Error::Transport {
                    message: "the publish stream closed".into(),
                });
            }
            return;
        }
        let (outbound, requests) = mpsc::unbounded_channel();
        // The receiver is alive right here, so nothing comes back.
        if let Err(unsent) = self.enqueue(&outbound, jobs) {
            self.waiting.extend(unsent);
        }
        match self.open(requests).await {
            Ok((inbound, generation)) => {
                self.stream = Some(Stream {
                    outbound,
                    inbound,
                    generation,
                })
            }
            Err(error) => self.on_stream_failure(error),
        }
    }

    /// Sends the jobs in requests of at most [`MAX_REQUEST_MESSAGES`]
    /// messages and about [`MAX_REQUEST_PAYLOAD_BYTES`]; if the stream is
    /// gone, gives back every job not sent, in order.
    fn enqueue(
        &mut self,
        outbound: &mpsc::UnboundedSender<pb::PublishStreamRequest>,
        jobs: Vec<Job>,
    ) -> std::result::Result<(), Vec<Job>> {
        let mut jobs = jobs.into_iter().peekable();
        while jobs.peek().is_some() {
            let mut items = Vec::new();
            let mut sent = Vec::new();
            let mut bytes = 0;
            while let Some(job) = jobs.next_if(|job| {
                sent.is_empty()
                    || (sent.len() < MAX_REQUEST_MESSAGES
                        && bytes + job.message.payload.len() <= MAX_REQUEST_PAYLOAD_BYTES)
            }) {
                bytes += job.message.payload.len();
                let correlation_id = self.next_correlation;
                self.next_correlation += 1;
                items.push(pb::PublishStreamItem {
                    correlation_id,
                    message: Some(job.message.clone()),
                });
                sent.push((correlation_id, job));
            }
            if outbound.send(pb::PublishStreamRequest { items }).is_err() {
                let mut unsent: Vec<Job> = sent.into_iter().map(|(_, job)| job).collect();
                unsent.extend(jobs);
                return Err(unsent);
            }
            self.in_flight
                .extend(sent.into_iter().map(|(correlation_id, mut job)| {
                    job.attempts += 1;
                    (correlation_id, job)
                }));
        }
        Ok(())
    }

    async fn open(
        &self,
        requests: mpsc::UnboundedReceiver<pb::PublishStreamRequest>,
    ) -> Result<(tonic::Streaming<pb::PublishStreamResponse>, u64)> {
        let connection = &self.client.inner.connection;
        let lease = connection.get().await?;
        let timeout = self.client.options().request_timeout;
        let mut stub = lease.stub;
        let call = stub.publish_stream(UnboundedReceiverStream::new(requests));
        let error = match tokio::time::timeout(timeout, call).await {
            Ok(Ok(response)) => return Ok((response.into_inner(), lease.generation)),
            Ok(Err(status)) => status_error(status),
            Err(_) => Error::timeout(format!("publish stream not answered within {timeout:?}")),
        };
        connection.report(lease.generation, &error);
        Err(error)
    }

    fn on_response(
        &mut self,
        response: std::result::Result<Option<pb::PublishStreamResponse>, tonic::Status>,
    ) {
        let response = match response {
            Ok(Some(response)) => response,
            Ok(None) => {
                let message = "the broker ended the publish stream".to_owned();
                return self.on_stream_failure(Error::Unavailable {
                    message,
                    leader_hint: None,
                });
            }
            Err(status) => return self.on_stream_failure(status_error(status)),
        };
        for answer in response.answers {
            self.on_answer(answer);
        }
    }

    fn on_answer(&mut self, answer: pb::PublishStreamAnswer) {
        let Some(job) = self.in_flight.remove(&answer.correlation_id) else {
            tracing::warn!(
                correlation_id = answer.correlation_id,
                "answer for no message in flight"
            );
            return;
        };
        let outcome = match answer.result.and_then(|r| r.outcome) {
            Some(pb::publish_result::Outcome::Ack(mut ack)) => {
                // The stream's acks leave out what the job already knows.
                if ack.id.is_empty() {
                    ack.id.clone_from(&job.message.id);
                }
                if ack.topic.is_empty() {
                    ack.topic.clone_from(&job.message.topic);
                }
                Ok(receipt_from_pb(ack))
            }
            Some(pb::publish_result::Outcome::Error(item)) => Err(Error::from_item(&item)),
            None => Err(Error::protocol("publish answer with neither ack nor error")),
        };
        match outcome {
            Err(error) if error.is_retryable() && job.attempts < self.max_attempts() => {
                tracing::debug!(%error, id = %job.message.id, "publish failed; retrying");
                self.waiting.push_back(job);
                self.schedule_retry();
            }
            outcome => {
                if outcome.is_ok() {
                    self.backoff.reset();
                }
                job.answer(outcome);
            }
        }
    }

    /// The stream is gone: every message in flight is retried (in the order
    /// it was sent) if the failure is retryable and it has attempts left,
    /// and fails otherwise.
    fn on_stream_failure(&mut self, error: Error) {
        if let Some(stream) = self.stream.take() {
            self.client.inner.connection.report(stream.generation, &error);
        }
        let mut jobs: Vec<(u64, Job)> = self.in_flight.drain().collect();
        jobs.sort_by_key(|(correlation_id, _)| *correlation_id);
        let max_attempts = self.max_attempts();
        let mut retried = Vec::new();
        for (_, job) in jobs {
            if error.is_retryable() && job.attempts < max_attempts {
                retried.push(job);
            } else {
                job.answer(Err(error.clone()));
            }
        }
        if !retried.is_empty() {
            tracing::debug!(%error, messages = retried.len(), "publish stream failed; retrying");
        }
        // Retried jobs were sent before anything still waiting.
        for job in retried.into_iter().rev() {
            self.waiting.push_front(job);
        }
        if !self.waiting.is_empty() {
            self.schedule_retry();
        }
    }

    fn schedule_retry(&mut self) {
        if self.retry_at.is_none() {
            self.retry_at = Some(Instant::now() + self.backoff.next_delay());
        }
    }
}

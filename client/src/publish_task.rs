//! The task behind a [`Publisher`](crate::Publisher): one PublishStream
//! call per destination (each known shard leader, and the seed connection
//! for the rest), answers matched to messages by correlation id, and
//! retries that keep each message's id.

use std::collections::{HashMap, VecDeque};

use futures::stream::{BoxStream, SelectAll};
use futures::{StreamExt, stream};
use hermod_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::client::Client;
use crate::connection::broker_stub;
use crate::convert::receipt_from_pb;
use crate::error::{Error, Result, status_error};
use crate::publisher::Job;
use crate::retry::Backoff;

/// Most messages sent in one request on the stream (the broker takes 1000).
const MAX_REQUEST_MESSAGES: usize = 256;
/// Payload bytes after which a request takes no further message; a larger
/// message goes alone.
const MAX_REQUEST_PAYLOAD_BYTES: usize = 1024 * 1024;

/// Where a stream goes: a shard leader's address, or the seed connection.
type Destination = Option<String>;

/// What a stream's inbound half yields, tagged with the stream's id; `None`
/// once the broker ended it.
type Inbound = (
    u64,
    Option<std::result::Result<pb::PublishStreamResponse, tonic::Status>>,
);

struct Stream {
    id: u64,
    outbound: mpsc::UnboundedSender<pb::PublishStreamRequest>,
    /// The seed connection's generation, for a stream over it.
    generation: Option<u64>,
}

pub(crate) struct PublishTask {
    client: Client,
    jobs: mpsc::UnboundedReceiver<Job>,
    /// False once the publisher is gone: finish what is in flight, then stop.
    accepting: bool,
    streams: HashMap<Destination, Stream>,
    /// Every open stream's answers; a stream's items stop counting once it
    /// is dropped from `streams`.
    inbound: SelectAll<BoxStream<'static, Inbound>>,
    /// Correlation id → the stream it went on and the job.
    in_flight: HashMap<u64, (u64, Job)>,
    /// Jobs to (re)send when `retry_at` passes.
    waiting: VecDeque<Job>,
    retry_at: Option<Instant>,
    backoff: Backoff,
    next_correlation: u64,
    next_stream: u64,
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl PublishTask {
    pub(crate) fn new(client: Client, jobs: mpsc::UnboundedReceiver<Job>) -> Self {
        let backoff = Backoff::new(client.retry_policy());
        Self {
            client,
            jobs,
            accepting: true,
            streams: HashMap::new(),
            inbound: SelectAll::new(),
            in_flight: HashMap::new(),
            waiting: VecDeque::new(),
            retry_at: None,
            backoff,
            next_correlation: 1,
            next_stream: 1,
        }
    }

    pub(crate) async fn run(mut self) {
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
                Some((stream, response)) = self.inbound.next(), if !self.inbound.is_empty() => {
                    self.on_response(stream, response);
                }
                () = sleep_until(retry_at) => {
                    self.retry_at = None;
                    let jobs = self.waiting.drain(..).collect();
                    self.dispatch(jobs).await;
                }
            }
        }
        // Dropping the streams' outbound halves ends the calls.
    }

    fn max_attempts(&self) -> u32 {
        self.client.retry_policy().max_attempts
    }

    /// Sends each job on the stream to its topic's leader (or the seed's),
    /// keeping the jobs' order within each destination.
    async fn dispatch(&mut self, jobs: Vec<Job>) {
        self.client.refresh_routes();
        let parts = self.client.inner.router.split(jobs, |job| &job.message.topic);
        for (destination, jobs) in parts {
            self.dispatch_to(destination, jobs).await;
        }
    }

    /// Sends jobs on the stream to `destination`, opening one if needed.
    /// The requests are queued before the call is made, since a broker may
    /// wait for the first request before it answers with headers.
    async fn dispatch_to(&mut self, destination: Destination, jobs: Vec<Job>) {
        if let Some(stream) = self.streams.get(&destination) {
            let (id, outbound) = (stream.id, stream.outbound.clone());
            if let Err(unsent) = self.enqueue(id, &outbound, jobs) {
                self.waiting.extend(unsent);
                let error = Error::Transport {
                    message: "the publish stream closed".into(),
                };
                self.on_stream_failure(id, error);
            }
            return;
        }
        let id = self.next_stream;
        self.next_stream += 1;
        let (outbound, requests) = mpsc::unbounded_channel();
        // The receiver is alive right here, so nothing comes back.
        if let Err(unsent) = self.enqueue(id, &outbound, jobs) {
            self.waiting.extend(unsent);
        }
        let requests = UnboundedReceiverStream::new(requests);
        let opened = match &destination {
            Some(address) => open_routed(&self.client, address, requests).await,
            None => open_via_seed(&self.client, requests).await,
        };
        let failure = match opened {
            Ok((inbound, generation)) => {
                let tagged = inbound.map(move |response| (id, Some(response)));
                let ended = stream::once(async move { (id, None) });
                self.inbound.push(tagged.chain(ended).boxed());
                let stream = Stream {
                    id,
                    outbound,
                    generation,
                };
                self.streams.insert(destination, stream);
                return;
            }
            Err(error) => error,
        };
        if let Some(address) = &destination {
            self.client.inner.router.forget(address);
        }
        self.on_stream_failure(id, failure);
    }

    /// Sends the jobs in requests of at most [`MAX_REQUEST_MESSAGES`]
    /// messages and about [`MAX_REQUEST_PAYLOAD_BYTES`]; if the stream is
    /// gone, gives back every job not sent, in order.
    fn enqueue(
        &mut self,
        stream: u64,
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
                    (correlation_id, (stream, job))
                }));
        }
        Ok(())
    }

    fn on_response(
        &mut self,
        stream: u64,
        response: Option<std::result::Result<pb::PublishStreamResponse, tonic::Status>>,
    ) {
        if !self.streams.values().any(|s| s.id == stream) {
            // A stream already given up; its jobs were retried or failed.
            return;
        }
        let response = match response {
            Some(Ok(response)) => response,
            None => {
                let message = "the broker ended the publish stream".to_owned();
                let error = Error::Unavailable {
                    message,
                    leader_hint: None,
                };
                return self.on_stream_failure(stream, error);
            }
            Some(Err(status)) => return self.on_stream_failure(stream, status_error(status)),
        };
        for answer in response.answers {
            self.on_answer(answer);
        }
    }

    fn on_answer(&mut self, answer: pb::PublishStreamAnswer) {
        let Some((_, job)) = self.in_flight.remove(&answer.correlation_id) else {
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

    /// Stream `id` is gone: every message in flight on it is retried (in
    /// the order it was sent) if the failure is retryable and it has
    /// attempts left, and fails otherwise. A leader's stream that failed
    /// also drops that route, so the retries go through the seed.
    fn on_stream_failure(&mut self, id: u64, error: Error) {
        let destination = self
            .streams
            .iter()
            .find(|(_, stream)| stream.id == id)
            .map(|(destination, _)| destination.clone());
        if let Some(destination) = destination
            && let Some(stream) = self.streams.remove(&destination)
        {
            match (&destination, stream.generation) {
                (Some(address), _) => self.client.inner.router.forget(address),
                (None, Some(generation)) => self.client.inner.connection.report(generation, &error),
                (None, None) => {}
            }
        }
        let mut lost: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, (stream, _))| *stream == id)
            .map(|(correlation_id, _)| *correlation_id)
            .collect();
        lost.sort_unstable();
        let max_attempts = self.max_attempts();
        let mut retried = Vec::new();
        for correlation_id in lost {
            let Some((_, job)) = self.in_flight.remove(&correlation_id) else {
                continue;
            };
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

async fn open_via_seed(
    client: &Client,
    requests: UnboundedReceiverStream<pb::PublishStreamRequest>,
) -> Result<(tonic::Streaming<pb::PublishStreamResponse>, Option<u64>)> {
    let connection = &client.inner.connection;
    let lease = connection.get().await?;
    match open(client, lease.stub, requests).await {
        Ok(inbound) => Ok((inbound, Some(lease.generation))),
        Err(error) => {
            connection.report(lease.generation, &error);
            Err(error)
        }
    }
}

async fn open_routed(
    client: &Client,
    address: &str,
    requests: UnboundedReceiverStream<pb::PublishStreamRequest>,
) -> Result<(tonic::Streaming<pb::PublishStreamResponse>, Option<u64>)> {
    let channel = client.inner.router.channel(address)?;
    let stub = broker_stub(channel, client.options());
    Ok((open(client, stub, requests).await?, None))
}

async fn open(
    client: &Client,
    mut stub: crate::connection::Stub,
    requests: UnboundedReceiverStream<pb::PublishStreamRequest>,
) -> Result<tonic::Streaming<pb::PublishStreamResponse>> {
    let timeout = client.options().request_timeout;
    match tokio::time::timeout(timeout, stub.publish_stream(requests)).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(status_error(status)),
        Err(_) => Err(Error::timeout(format!(
            "publish stream not answered within {timeout:?}"
        ))),
    }
}

//! Consuming: a `Subscriber` stream backed by a task that owns the gRPC
//! Subscribe stream, grants credit as messages are consumed, sends
//! settlements in batches and reconnects durable subscriptions.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use futures::Stream;
use hermod_proto::v1 as pb;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::client::Client;
use crate::error::{Error, Result, status_error};
use crate::received::{ReceivedMessage, Settler};
use crate::retry::{Backoff, Idempotence, retry};

/// Deliveries the broker may send ahead of consumption, unless told otherwise.
pub const DEFAULT_PREFETCH: u32 = 256;
/// The most credit the broker grants one consumer.
const MAX_PREFETCH: u32 = 10_000;
/// The most tokens in one settle request (the broker's limit).
const MAX_SETTLE_BATCH: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Subscription(String),
    Pattern(String),
}

/// What to consume and how.
///
/// ```
/// use hermod_client::SubscribeOptions;
///
/// let durable = SubscribeOptions::subscription("billing").prefetch(64);
/// let live = SubscribeOptions::pattern("orders.>").limit(10);
/// assert!(durable.is_durable() && !live.is_durable());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeOptions {
    target: Target,
    prefetch: u32,
    limit: Option<u64>,
    max_reconnect_attempts: Option<u32>,
}

impl SubscribeOptions {
    /// Attach to the durable subscription `name` as one of its consumers.
    pub fn subscription(name: impl Into<String>) -> Self {
        Self::new(Target::Subscription(name.into()))
    }

    /// An ephemeral subscription on `pattern` (`*` one token, `>` the rest):
    /// live messages only, at most once, for as long as the stream is open.
    /// It is not reconnected: a failure ends the stream.
    pub fn pattern(pattern: impl Into<String>) -> Self {
        Self::new(Target::Pattern(pattern.into()))
    }

    fn new(target: Target) -> Self {
        Self {
            target,
            prefetch: DEFAULT_PREFETCH,
            limit: None,
            max_reconnect_attempts: None,
        }
    }

    /// Deliveries the broker may send before the client consumes them
    /// (default 256, at most 10 000). Credit is granted back in halves as
    /// the stream is read.
    pub fn prefetch(mut self, prefetch: u32) -> Self {
        self.prefetch = prefetch.clamp(1, MAX_PREFETCH);
        self
    }

    /// Ends the stream after `count` messages, and never grants the broker
    /// credit beyond them, so no extra message is leased only to be dropped.
    pub fn limit(mut self, count: u64) -> Self {
        self.limit = Some(count);
        self
    }

    /// Consecutive failed reconnects of a durable subscription before the
    /// stream gives up with the last error (default: never gives up).
    pub fn max_reconnect_attempts(mut self, attempts: u32) -> Self {
        self.max_reconnect_attempts = Some(attempts);
        self
    }

    /// Whether this attaches to a durable subscription (and so reconnects).
    pub fn is_durable(&self) -> bool {
        matches!(self.target, Target::Subscription(_))
    }

    fn start(&self, initial_credit: u32) -> pb::SubscribeRequest {
        use pb::subscribe_start::Target as PbTarget;
        let target = match &self.target {
            Target::Subscription(name) => PbTarget::Subscription(name.clone()),
            Target::Pattern(pattern) => PbTarget::Pattern(pattern.clone()),
        };
        let start = pb::SubscribeStart {
            target: Some(target),
            initial_credit,
        };
        pb::SubscribeRequest {
            request: Some(pb::subscribe_request::Request::Start(start)),
        }
    }
}

/// A settlement of one delivery, by its ack token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Settle {
    Ack(String),
    Nack(String, u64),
    Extend(String, u64),
    Reject(String),
}

/// What subscribers and messages tell the task.
#[derive(Debug)]
pub(crate) enum Control {
    Settle(Settle),
    /// The subscriber handed one message to the application.
    Consumed,
    /// Flush settlements, close the stream, then answer.
    Close(oneshot::Sender<()>),
}

/// A stream of messages from a subscription.
///
/// Yields `Err` once when the subscription fails for good (an ephemeral
/// stream breaks, the durable subscription is deleted, reconnects run out),
/// then ends. Call [`close`](Self::close) to flush pending settlements
/// before dropping it; merely dropping it leaves unsettled messages to be
/// redelivered.
pub struct Subscriber {
    deliveries: mpsc::UnboundedReceiver<Result<ReceivedMessage>>,
    settler: Arc<Settler>,
    limit: Option<u64>,
    yielded: u64,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("yielded", &self.yielded)
            .finish_non_exhaustive()
    }
}

impl Subscriber {
    /// Sends the settlements not yet sent, waits (up to the request timeout)
    /// for the broker to answer them, and closes the stream. Messages
    /// received but not settled are redelivered.
    pub async fn close(self) -> Result<()> {
        let (done, wait) = oneshot::channel();
        if self.settler.control.send(Control::Close(done)).is_ok() {
            // An error means the task has already stopped: nothing to flush.
            let _ = wait.await;
        }
        Ok(())
    }
}

impl Stream for Subscriber {
    type Item = Result<ReceivedMessage>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.limit.is_some_and(|limit| this.yielded >= limit) {
            return Poll::Ready(None);
        }
        let item = std::task::ready!(this.deliveries.poll_recv(cx));
        if let Some(Ok(_)) = &item {
            this.yielded += 1;
            // Consumption frees credit; the task grants it back in batches.
            let _ = this.settler.control.send(Control::Consumed);
        }
        Poll::Ready(item)
    }
}

impl Client {
    /// Opens a consumer. Errors from opening it (no such subscription, bad
    /// pattern) are returned here, after retrying retryable ones; later
    /// failures come through the stream.
    pub async fn subscribe(&self, options: SubscribeOptions) -> Result<Subscriber> {
        let (control, control_rx) = mpsc::unbounded_channel();
        let settler = Arc::new(Settler {
            control,
            client: self.clone(),
        });
        let (deliveries_tx, deliveries) = mpsc::unbounded_channel();
        let mut task = SubscribeTask {
            client: self.clone(),
            credit: Credit::new(options.prefetch, options.limit),
            options: options.clone(),
            settler: Arc::downgrade(&settler),
            deliveries: deliveries_tx,
            control: control_rx,
            unsent: Vec::new(),
            unanswered: 0,
            backoff: Backoff::new(self.retry_policy()),
            closers: Vec::new(),
        };
        let initial = task.credit.open_stream();
        let stream = retry(self.retry_policy(), Idempotence::Idempotent, |_| {
            task.open(initial)
        })
        .await?;
        tokio::spawn(task.run(stream));
        Ok(Subscriber {
            deliveries,
            settler,
            limit: options.limit,
            yielded: 0,
        })
    }
}

/// Credit bookkeeping, kept apart from the I/O so it can be tested.
///
/// The broker may send as many deliveries as it has been granted. The
/// client grants `prefetch` when a stream opens and then, each time half of
/// it has been consumed, grants that much again; so at most `prefetch`
/// messages wait in the client. With a limit, grants stop at the limit.
#[derive(Debug, Clone)]
pub(crate) struct Credit {
    prefetch: u32,
    limit: Option<u64>,
    /// Deliveries received on every stream so far.
    delivered: u64,
    /// Credit granted and not yet used on the current stream.
    outstanding: u64,
    /// Messages consumed since the last grant.
    consumed: u32,
}

impl Credit {
    pub(crate) fn new(prefetch: u32, limit: Option<u64>) -> Self {
        Self {
            prefetch: prefetch.clamp(1, MAX_PREFETCH),
            limit,
            delivered: 0,
            outstanding: 0,
            consumed: 0,
        }
    }

    /// Deliveries still wanted: unlimited, or the limit minus those received.
    fn wanted(&self) -> u64 {
        self.limit
            .map_or(u64::MAX, |limit| limit.saturating_sub(self.delivered))
    }

    /// Initial credit of a new stream (0: nothing more is wanted).
    pub(crate) fn open_stream(&mut self) -> u32 {
        let initial = u64::from(self.prefetch).min(self.wanted());
        self.outstanding = initial;
        self.consumed = 0;
        initial as u32
    }

    pub(crate) fn delivered(&mut self) {
        self.delivered += 1;
        self.outstanding = self.outstanding.saturating_sub(1);
    }

    /// Records a consumed message; returns credit to grant now, if any.
    pub(crate) fn consumed(&mut self) -> Option<u32> {
        self.consumed += 1;
        let threshold = (self.prefetch / 2).max(1);
        if self.consumed < threshold {
            return None;
        }
        let room = self.wanted().saturating_sub(self.outstanding);
        let grant = u64::from(self.consumed).min(room) as u32;
        self.consumed = 0;
        self.outstanding += u64::from(grant);
        (grant > 0).then_some(grant)
    }

    pub(crate) fn wants_more(&self) -> bool {
        self.wanted() > 0
    }
}

/// One open Subscribe stream.
struct Open {
    outbound: mpsc::UnboundedSender<pb::SubscribeRequest>,
    inbound: tonic::Streaming<pb::SubscribeResponse>,
    generation: u64,
}

/// Why serving a stream stopped.
enum Stop {
    /// Closed on purpose (by `close`, or everything was dropped).
    Closed,
    Failed(Error),
}

struct SubscribeTask {
    client: Client,
    options: SubscribeOptions,
    credit: Credit,
    /// Weak, so the task does not keep its own control channel open: when
    /// the subscriber and every message are dropped, the task ends.
    settler: Weak<Settler>,
    deliveries: mpsc::UnboundedSender<Result<ReceivedMessage>>,
    control: mpsc::UnboundedReceiver<Control>,
    /// Settlements that could not be sent (the stream broke); resent on the
    /// next stream.
    unsent: Vec<Settle>,
    /// Tokens settled on the current stream and not yet answered.
    unanswered: usize,
    backoff: Backoff,
    closers: Vec<oneshot::Sender<()>>,
}

impl SubscribeTask {
    /// Opens a stream: the start request is queued before the call, since a
    /// broker may wait for it before answering with headers.
    async fn open(&self, initial_credit: u32) -> Result<Open> {
        let connection = &self.client.inner.connection;
        let lease = connection.get().await?;
        let (outbound, requests) = mpsc::unbounded_channel();
        let _ = outbound.send(self.options.start(initial_credit));
        let timeout = self.client.options().request_timeout;
        let mut stub = lease.stub;
        let error =
            match tokio::time::timeout(timeout, stub.subscribe(UnboundedReceiverStream::new(requests))).await
            {
                Ok(Ok(response)) => {
                    return Ok(Open {
                        outbound,
                        inbound: response.into_inner(),
                        generation: lease.generation,
                    });
                }
                Ok(Err(status)) => status_error(status),
                Err(_) => Error::timeout(format!("subscribe not answered within {timeout:?}")),
            };
        connection.report(lease.generation, &error);
        Err(error)
    }

    async fn run(mut self, mut open: Open) {
        loop {
            let error = match self.serve(&mut open).await {
                Stop::Closed => break,
                Stop::Failed(error) => error,
            };
            if !self.credit.wants_more() {
                // Every wanted message has arrived: nothing to reconnect for.
                break;
            }
            if !self.options.is_durable() || !error.is_retryable() {
                let _ = self.deliveries.send(Err(error));
                break;
            }
            tracing::warn!(%error, "subscription stream failed; reconnecting");
            match self.reconnect(error).await {
                Some(next) => open = next,
                None => break,
            }
        }
        for closer in self.closers.drain(..) {
            let _ = closer.send(());
        }
    }

    /// Serves one stream until it fails or the subscriber closes.
    async fn serve(&mut self, open: &mut Open) -> Stop {
        if !self.unsent.is_empty() {
            let settles = std::mem::take(&mut self.unsent);
            if let Err(stop) = self.send_settles(open, settles) {
                return stop;
            }
        }
        loop {
            tokio::select! {
                control = self.control.recv() => {
                    let Some(control) = control else {
                        self.finish(open).await;
                        return Stop::Closed;
                    };
                    if let Err(stop) = self.on_controls(open, control) {
                        return stop;
                    }
                    if !self.closers.is_empty() {
                        self.finish(open).await;
                        return Stop::Closed;
                    }
                }
                response = open.inbound.message() => match response {
                    Ok(Some(response)) => {
                        self.backoff.reset();
                        self.on_response(response);
                    }
                    Ok(None) => {
                        return Stop::Failed(Error::Unavailable {
                            message: "the broker ended the subscription stream".into(),
                            leader_hint: None,
                        });
                    }
                    Err(status) => {
                        let error = status_error(status);
                        self.client.inner.connection.report(open.generation, &error);
                        return Stop::Failed(error);
                    }
                },
            }
        }
    }

    /// Handles one control and every other one already queued, so a burst of
    /// acks goes out as one request.
    fn on_controls(&mut self, open: &Open, first: Control) -> std::result::Result<(), Stop> {
        let mut settles = Vec::new();
        let mut grant = 0u32;
        let mut next = Some(first);
        while let Some(control) = next {
            match control {
                Control::Settle(settle) => settles.push(settle),
                Control::Consumed => grant += self.credit.consumed().unwrap_or(0),
                Control::Close(done) => self.closers.push(done),
            }
            next = if settles.len() < MAX_SETTLE_BATCH {
                self.control.try_recv().ok()
            } else {
                None
            };
        }
        if grant > 0 {
            let credit = pb::subscribe_request::Request::Credit(pb::Credit { messages: grant });
            if open
                .outbound
                .send(pb::SubscribeRequest {
                    request: Some(credit),
                })
                .is_err()
            {
                return Err(Stop::Failed(stream_gone()));
            }
        }
        self.send_settles(open, settles)
    }

    /// Sends settlements grouped by kind (and by delay), in requests of at
    /// most 1000 tokens. If the stream is gone they are kept for the next one.
    fn send_settles(&mut self, open: &Open, settles: Vec<Settle>) -> std::result::Result<(), Stop> {
        use pb::subscribe_request::Request;
        if settles.is_empty() {
            return Ok(());
        }
        let mut acks = Vec::new();
        let mut rejects = Vec::new();
        let mut nacks: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        let mut extends: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for settle in &settles {
            match settle.clone() {
                Settle::Ack(token) => acks.push(token),
                Settle::Reject(token) => rejects.push(token),
                Settle::Nack(token, delay_ms) => nacks.entry(delay_ms).or_default().push(token),
                Settle::Extend(token, ms) => extends.entry(ms).or_default().push(token),
            }
        }
        let mut requests = Vec::new();
        for chunk in acks.chunks(MAX_SETTLE_BATCH) {
            requests.push(Request::Ack(pb::AckTokens {
                ack_tokens: chunk.to_vec(),
            }));
        }
        for chunk in rejects.chunks(MAX_SETTLE_BATCH) {
            requests.push(Request::Reject(pb::RejectTokens {
                ack_tokens: chunk.to_vec(),
            }));
        }
        for (delay_ms, tokens) in nacks {
            for chunk in tokens.chunks(MAX_SETTLE_BATCH) {
                requests.push(Request::Nack(pb::NackTokens {
                    ack_tokens: chunk.to_vec(),
                    delay_ms,
                }));
            }
        }
        for (extension_ms, tokens) in extends {
            for chunk in tokens.chunks(MAX_SETTLE_BATCH) {
                requests.push(Request::Extend(pb::ExtendTokens {
                    ack_tokens: chunk.to_vec(),
                    extension_ms,
                }));
            }
        }
        for request in requests {
            if open
                .outbound
                .send(pb::SubscribeRequest {
                    request: Some(request),
                })
                .is_err()
            {
                self.unsent = settles;
                return Err(Stop::Failed(stream_gone()));
            }
        }
        self.unanswered += settles.len();
        Ok(())
    }

    fn on_response(&mut self, response: pb::SubscribeResponse) {
        use pb::subscribe_response::Response;
        match response.response {
            Some(Response::Deliveries(batch)) => {
                for message in batch.messages {
                    self.credit.delivered();
                    let Some(settler) = self.settler.upgrade() else {
                        return;
                    };
                    // A send error means the subscriber is gone; the message
                    // will be redelivered after its ack deadline.
                    let _ = self
                        .deliveries
                        .send(Ok(ReceivedMessage::from_pb(message, settler)));
                }
            }
            Some(Response::Settled(settled)) => {
                self.unanswered = self.unanswered.saturating_sub(settled.results.len());
                for result in settled.results {
                    if let Some(error) = result.error.filter(|e| e.code != 0) {
                        let error = Error::from_item(&error);
                        tracing::warn!(token = %result.ack_token, %error, "settlement refused");
                    }
                }
            }
            None => tracing::debug!("empty subscribe response"),
        }
    }

    /// Sends what is queued, half-closes the stream, and waits (up to the
    /// request timeout) until the broker has answered every settlement or
    /// ended the stream, so the settlements are not cancelled in flight.
    async fn finish(&mut self, open: &mut Open) {
        let mut settles = std::mem::take(&mut self.unsent);
        while let Ok(control) = self.control.try_recv() {
            match control {
                Control::Settle(settle) => settles.push(settle),
                Control::Consumed => {}
                Control::Close(done) => self.closers.push(done),
            }
        }
        if self.send_settles(open, settles).is_err() {
            return;
        }
        let (closed, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut open.outbound, closed));
        let deadline = tokio::time::Instant::now() + self.client.options().request_timeout;
        while self.unanswered > 0 {
            match tokio::time::timeout_at(deadline, open.inbound.message()).await {
                Ok(Ok(Some(response))) => self.on_response(response),
                Ok(Ok(None)) | Ok(Err(_)) => return,
                Err(_) => {
                    tracing::warn!(unanswered = self.unanswered, "settlements unanswered at close");
                    return;
                }
            }
        }
    }

    /// Reopens a durable subscription with backoff. `None`: closed meanwhile,
    /// or the reconnects failed (the error went to the subscriber).
    async fn reconnect(&mut self, mut error: Error) -> Option<Open> {
        let mut failures = 0u32;
        loop {
            if self
                .options
                .max_reconnect_attempts
                .is_some_and(|max| failures >= max)
            {
                let _ = self.deliveries.send(Err(error));
                return None;
            }
            let deadline = tokio::time::Instant::now() + self.backoff.next_delay();
            // Keep serving controls while waiting: a close must not wait for
            // the broker to come back.
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => break,
                    control = self.control.recv() => match control {
                        None => return None,
                        Some(Control::Close(done)) => {
                            self.closers.push(done);
                            return None;
                        }
                        Some(Control::Settle(settle)) => self.unsent.push(settle),
                        Some(Control::Consumed) => {}
                    },
                }
            }
            let initial = self.credit.open_stream();
            match self.open(initial).await {
                Ok(open) => {
                    self.unanswered = 0;
                    tracing::info!("subscription stream reconnected");
                    return Some(open);
                }
                Err(next) if next.is_retryable() => {
                    tracing::debug!(error = %next, "reconnect failed");
                    error = next;
                    failures += 1;
                }
                Err(next) => {
                    let _ = self.deliveries.send(Err(next));
                    return None;
                }
            }
        }
    }
}

fn stream_gone() -> Error {
    Error::Transport {
        message: "the subscription stream closed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_is_granted_back_in_halves() {
        let mut credit = Credit::new(4, None);
        assert_eq!(credit.open_stream(), 4);
        for _ in 0..4 {
            credit.delivered();
        }
        assert_eq!(credit.consumed(), None);
        assert_eq!(credit.consumed(), Some(2));
        assert_eq!(credit.consumed(), None);
        assert_eq!(credit.consumed(), Some(2));
        // A prefetch of 1 grants after every message.
        let mut credit = Credit::new(1, None);
        assert_eq!(credit.open_stream(), 1);
        credit.delivered();
        assert_eq!(credit.consumed(), Some(1));
    }

    #[test]
    fn a_limit_caps_the_credit() {
        let mut credit = Credit::new(256, Some(3));
        assert_eq!(credit.open_stream(), 3);
        credit.delivered();
        credit.delivered();
        // One is still outstanding and only one more is wanted: no grant.
        for _ in 0..200 {
            assert_eq!(credit.consumed(), None);
        }
        credit.delivered();
        assert!(!credit.wants_more());
        assert_eq!(credit.open_stream(), 0);

        let mut credit = Credit::new(2, Some(5));
        assert_eq!(credit.open_stream(), 2);
        credit.delivered();
        assert_eq!(credit.consumed(), Some(1));
        credit.delivered();
        credit.delivered();
        assert_eq!(credit.consumed(), Some(1));
        credit.delivered();
        assert_eq!(credit.consumed(), Some(1));
        credit.delivered();
        // Five delivered: nothing more is granted.
        assert_eq!(credit.consumed(), None);
        assert!(!credit.wants_more());
    }

    #[test]
    fn a_reconnect_starts_with_fresh_credit() {
        let mut credit = Credit::new(10, Some(25));
        assert_eq!(credit.open_stream(), 10);
        for _ in 0..10 {
            credit.delivered();
        }
        assert_eq!(credit.open_stream(), 10);
        for _ in 0..10 {
            credit.delivered();
        }
        assert_eq!(credit.open_stream(), 5);
    }

    #[test]
    fn options_clamp_prefetch_and_describe_the_target() {
        assert_eq!(SubscribeOptions::pattern("a.>").prefetch(0).prefetch, 1);
        assert_eq!(
            SubscribeOptions::pattern("a.>").prefetch(1_000_000).prefetch,
            MAX_PREFETCH
        );
        let start = SubscribeOptions::subscription("s").start(7);
        let Some(pb::subscribe_request::Request::Start(start)) = start.request else {
            panic!()
        };
        assert_eq!(start.initial_credit, 7);
        assert_eq!(
            start.target,
            Some(pb::subscribe_start::Target::Subscription("s".into()))
        );
    }
}

//! The task behind a `Subscriber`: it owns the gRPC Subscribe stream,
//! grants credit as messages are consumed, sends settlements in batches and
//! reconnects durable subscriptions.

use std::collections::BTreeMap;
use std::sync::Weak;

use hermod_proto::v1 as pb;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::client::Client;
use crate::credit::Credit;
use crate::error::{Error, Result, status_error};
use crate::received::{ReceivedMessage, Settler};
use crate::retry::{Backoff, Idempotence, retry};
use crate::subscriber::{Control, Settle, SubscribeOptions};

/// The most tokens in one settle request (the broker's limit).
const MAX_SETTLE_BATCH: usize = 1000;

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

/// Owns one consumer's Subscribe stream, from its first open to its end.
pub(crate) struct SubscribeTask {
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
    pub(crate) fn new(
        client: Client,
        options: SubscribeOptions,
        settler: Weak<Settler>,
        deliveries: mpsc::UnboundedSender<Result<ReceivedMessage>>,
        control: mpsc::UnboundedReceiver<Control>,
    ) -> Self {
        Self {
            backoff: Backoff::new(client.retry_policy()),
            credit: Credit::new(options.prefetch, options.limit),
            client,
            options,
            settler,
            deliveries,
            control,
            unsent: Vec::new(),
            unanswered: 0,
            closers: Vec::new(),
        }
    }

    /// Opens the first stream, retrying retryable failures, and runs the
    /// task on it in the background. An error here is the consumer's
    /// answer: it was never opened.
    pub(crate) async fn start(mut self) -> Result<()> {
        let initial = self.credit.open_stream();
        let policy = self.client.retry_policy();
        let stream = retry(policy, Idempotence::Idempotent, |_| self.open(initial)).await?;
        tokio::spawn(self.run(stream));
        Ok(())
    }

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

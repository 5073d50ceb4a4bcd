//! Consuming: what to subscribe to (`SubscribeOptions`) and the
//! `Subscriber` stream of messages, fed by its task (`subscribe_task.rs`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use hermod_proto::v1 as pb;
use tokio::sync::{mpsc, oneshot};

use crate::client::Client;
use crate::error::Result;
use crate::received::{ReceivedMessage, Settler};
use crate::subscribe_task::SubscribeTask;

/// Deliveries the broker may send ahead of consumption, unless told otherwise.
pub const DEFAULT_PREFETCH: u32 = 256;
/// The most credit the broker grants one consumer.
pub(crate) const MAX_PREFETCH: u32 = 10_000;

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
    pub(crate) prefetch: u32,
    pub(crate) limit: Option<u64>,
    pub(crate) max_reconnect_attempts: Option<u32>,
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

    pub(crate) fn start(&self, initial_credit: u32) -> pb::SubscribeRequest {
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
        SubscribeTask::new(
            self.clone(),
            options.clone(),
            Arc::downgrade(&settler),
            deliveries_tx,
            control_rx,
        )
        .start()
        .await?;
        Ok(Subscriber {
            deliveries,
            settler,
            limit: options.limit,
            yielded: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

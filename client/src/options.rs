//! How a client connects: endpoints, timeouts, keep-alive and the retry policy.

use std::time::Duration;

/// The port a broker serves gRPC on unless told otherwise.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:7400";

/// How often, and how patiently, a retryable failure is retried.
///
/// `max_attempts` counts the first attempt: 1 means "never retry". The wait
/// before retry *n* is `initial_backoff * 2^(n-1)`, capped at `max_backoff`,
/// then jittered down to between half and all of it so that many clients
/// failing together do not come back together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// A policy of `max_attempts` attempts with the given backoff bounds.
    pub fn new(max_attempts: u32, initial_backoff: Duration, max_backoff: Duration) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            initial_backoff,
            max_backoff: max_backoff.max(initial_backoff),
        }
    }

    /// One attempt, no retries.
    pub fn none() -> Self {
        Self::new(1, Duration::ZERO, Duration::ZERO)
    }
}

impl Default for RetryPolicy {
    /// 8 attempts, 100 ms doubling up to 2 s: about 7 s in all, enough to ride
    /// out a leader election ("within seconds") without hanging a caller long.
    fn default() -> Self {
        Self::new(8, Duration::from_millis(100), Duration::from_secs(2))
    }
}

/// Settings for [`Client::connect`](crate::Client::connect).
///
/// ```
/// use std::time::Duration;
/// use hermod_client::{ClientOptions, RetryPolicy};
///
/// let options = ClientOptions::new()
///     .endpoint("http://10.0.0.1:7400")
///     .endpoint("http://10.0.0.2:7400")
///     .connect_timeout(Duration::from_secs(2))
///     .request_timeout(Duration::from_secs(5))
///     .retry_policy(RetryPolicy::new(5, Duration::from_millis(50), Duration::from_secs(1)));
/// assert_eq!(options.endpoints.len(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Seed endpoints, tried in turn; empty means [`DEFAULT_ENDPOINT`].
    pub endpoints: Vec<String>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub keep_alive_interval: Duration,
    pub max_message_bytes: usize,
    pub retry: RetryPolicy,
    /// Whether publishes go straight to the leader of their topic's shard
    /// (learnt from the cluster's status) rather than through the seed.
    pub route_to_leaders: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            keep_alive_interval: Duration::from_secs(10),
            // Payloads may be 16 MiB and a delivery batch holds many of them.
            max_message_bytes: 256 * 1024 * 1024,
            retry: RetryPolicy::default(),
            route_to_leaders: true,
        }
    }
}

impl ClientOptions {
    /// Defaults and no endpoint ([`DEFAULT_ENDPOINT`] is used if none is added).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a seed endpoint, `http://host:port` (`host:port` means `http://`).
    /// The client tries them in turn and moves on when one fails.
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoints.push(url.into());
        self
    }

    /// Adds several seed endpoints.
    pub fn endpoints<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.endpoints.extend(urls.into_iter().map(Into::into));
        self
    }

    /// How long establishing one connection may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one attempt of a request may take before it fails with
    /// [`Error::Timeout`](crate::Error::Timeout) (default 30 s). It covers
    /// opening a stream, not the stream's life.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Interval of HTTP/2 pings that detect a dead broker on idle streams
    /// (default 10 s; a ping unanswered for twice that breaks the connection).
    pub fn keep_alive_interval(mut self, interval: Duration) -> Self {
        self.keep_alive_interval = interval;
        self
    }

    /// Largest gRPC message the client sends or accepts (default 256 MiB).
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// How retryable failures are retried.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Whether publishes go straight to their shard's leader (default on).
    /// Turn it off when the client can reach only the seed endpoints, not
    /// the addresses the nodes advertise (a load balancer in front of a
    /// private network): every request then goes to the seed, which
    /// forwards it. An advertised address that cannot be reached is also
    /// skipped for a while on its own.
    pub fn route_to_leaders(mut self, enabled: bool) -> Self {
        self.route_to_leaders = enabled;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builder_collects_endpoints_and_settings() {
        let options = ClientOptions::new()
            .endpoint("http://a:7400")
            .endpoints(["b:7400", "http://c:7400"])
            .connect_timeout(Duration::from_secs(1))
            .request_timeout(Duration::from_secs(2))
            .retry_policy(RetryPolicy::none())
            .route_to_leaders(false);
        assert_eq!(options.endpoints, ["http://a:7400", "b:7400", "http://c:7400"]);
        assert_eq!(options.connect_timeout, Duration::from_secs(1));
        assert_eq!(options.request_timeout, Duration::from_secs(2));
        assert_eq!(options.retry.max_attempts, 1);
        assert!(!options.route_to_leaders);
        assert!(ClientOptions::new().route_to_leaders);
    }

    #[test]
    fn retry_policies_are_sane_whatever_they_are_given() {
        let policy = RetryPolicy::new(0, Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(policy.max_attempts, 1);
        assert_eq!(policy.max_backoff, Duration::from_secs(2));
        assert!(RetryPolicy::default().max_attempts > 1);
    }
}

//! The `Client` handle and how one request attempt is made: timeout,
//! status mapping, and reporting failures so the connection fails over.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::connection::{Connection, Lease, Stub};
use crate::error::{Error, Result, status_error};
use crate::options::{ClientOptions, RetryPolicy};
use crate::retry::{Idempotence, retry};
use crate::routes::{ROUTES_LEARN_TIMEOUT_MS, Router};

/// A connection to a Hermod cluster.
///
/// Cheap to clone: clones share one connection. Requests go to one broker
/// at a time, the seed connection; when a retryable failure hits (the
/// broker is gone, has no quorum, or names a leader), the next attempt
/// reconnects, to the named leader or the next seed endpoint. Publishes go
/// straight to the leader of their topic's shard, learnt from the
/// cluster's status (see [`ClientOptions::route_to_leaders`]).
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) connection: Connection,
    pub(crate) router: Router,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.options().endpoints)
            .finish()
    }
}

impl Client {
    /// Connects to the first reachable endpoint, retrying retryable failures
    /// under the options' retry policy. Fails with `InvalidArgument` (field
    /// `endpoints[i]`) for a malformed endpoint.
    pub async fn connect(options: ClientOptions) -> Result<Client> {
        let policy = options.retry;
        let router = Router::new(options.clone());
        let connection = Connection::new(options)?;
        let client = Client {
            inner: Arc::new(Inner { connection, router }),
        };
        retry(policy, Idempotence::Idempotent, |_| client.inner.connection.get()).await?;
        // The first publishes already go to their leaders. A node slow to
        // answer does not hold up the connection: the table is then learnt
        // in the background on first use.
        if client.inner.router.begin_refresh() {
            let limit = Duration::from_millis(ROUTES_LEARN_TIMEOUT_MS).min(client.options().request_timeout);
            let _ = tokio::time::timeout(limit, client.learn_routes()).await;
        }
        Ok(client)
    }

    /// Connects to one endpoint with default options.
    pub async fn connect_to(endpoint: impl Into<String>) -> Result<Client> {
        Self::connect(ClientOptions::new().endpoint(endpoint)).await
    }

    /// The options the client was made with.
    pub fn options(&self) -> &ClientOptions {
        self.inner.connection.options()
    }

    /// Where publishes to `topic` go now: the address of its shard's leader
    /// as last learnt, or `None` when they go through the seed connection
    /// (the seed's node leads that shard, the leader is unknown or its
    /// address failed, or routing is off).
    pub fn leader_route(&self, topic: &str) -> Option<String> {
        self.inner.router.destination(topic)
    }

    pub(crate) fn retry_policy(&self) -> RetryPolicy {
        self.options().retry
    }

    /// One attempt of a unary call: sends `message` with the request timeout
    /// (as a client-side limit and as the gRPC deadline the broker sees),
    /// maps the failure, and reports it so the connection can fail over.
    pub(crate) async fn attempt<Req, Resp, F, Fut>(&self, message: Req, call: F) -> Result<Resp>
    where
        F: FnOnce(Stub, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<Resp>, tonic::Status>>,
    {
        self.attempt_on(|lease| lease.stub, message, call).await
    }

    /// One attempt of a unary call on the service that `stub` makes from
    /// the current connection.
    pub(crate) async fn attempt_on<S, Req, Resp, F, Fut>(
        &self,
        stub: impl FnOnce(Lease) -> S,
        message: Req,
        call: F,
    ) -> Result<Resp>
    where
        F: FnOnce(S, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let connection = &self.inner.connection;
        let lease = connection.get().await?;
        let generation = lease.generation;
        let timeout = self.options().request_timeout;
        let mut request = tonic::Request::new(message);
        request.set_timeout(timeout);
        let result = match tokio::time::timeout(timeout, call(stub(lease), request)).await {
            Ok(Ok(response)) => return Ok(response.into_inner()),
            Ok(Err(status)) => status_error(status),
            Err(_) => Error::timeout(format!("no answer within {timeout:?}")),
        };
        connection.report(generation, &result);
        Err(result)
    }

    /// A unary call retried under the retry policy; `message` is cloned for
    /// every attempt, so what is sent never changes between attempts.
    pub(crate) async fn call<Req, Resp, F, Fut>(
        &self,
        idempotence: Idempotence,
        message: Req,
        call: F,
    ) -> Result<Resp>
    where
        Req: Clone,
        F: Fn(Stub, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<Resp>, tonic::Status>>,
    {
        retry(self.retry_policy(), idempotence, |_| {
            self.attempt(message.clone(), &call)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connecting_to_nothing_fails_after_the_retries() {
        let options = ClientOptions::new()
            .endpoint("http://127.0.0.1:1")
            .endpoint("127.0.0.1:2")
            .connect_timeout(Duration::from_millis(200))
            .retry_policy(RetryPolicy::new(
                2,
                Duration::from_millis(1),
                Duration::from_millis(1),
            ));
        let err = Client::connect(options).await.unwrap_err();
        assert!(matches!(err, Error::Transport { .. }), "{err:?}");
        assert!(err.to_string().contains("127.0.0.1:2"), "{err}");
    }

    #[tokio::test]
    async fn malformed_endpoints_are_refused_before_connecting() {
        let err = Client::connect_to("http://no spaces allowed").await.unwrap_err();
        assert_eq!(err.field(), Some("endpoints[0]"));
    }
}

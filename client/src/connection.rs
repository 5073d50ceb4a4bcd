//! The seed connection: one live connection to some broker of the cluster,
//! replaced when it fails.
//!
//! Any node serves any request, so the client keeps a single channel and,
//! after a retryable failure, drops it and connects to the next endpoint (or
//! to the leader the broker named), rather than load-balancing: failover is
//! what several seeds are for. Publishes that know their shard's leader
//! take a direct channel instead (`routes.rs`).

use std::sync::Mutex;

use hermod_proto::v1::broker_client::BrokerClient;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};
use crate::options::{ClientOptions, DEFAULT_ENDPOINT};

/// The generated stub over the current channel.
pub(crate) type Stub = BrokerClient<Channel>;

/// A channel handed out, with the generation that identifies it when a
/// failure on it is reported.
pub(crate) struct Lease {
    pub(crate) stub: Stub,
    /// The channel under `stub`, for the other services of the same node.
    pub(crate) channel: Channel,
    pub(crate) generation: u64,
}

pub(crate) struct Connection {
    options: ClientOptions,
    endpoints: Vec<Endpoint>,
    state: Mutex<State>,
    /// Held while connecting, so concurrent callers wait for one connection
    /// instead of opening one each.
    connecting: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    current: Option<(Channel, u64)>,
    generation: u64,
    /// Index of the endpoint to try first next time.
    next: usize,
    /// A leader named by the broker, tried before the seeds.
    hint: Option<String>,
}

/// Builds a tonic endpoint from `http://host:port` or `host:port`.
pub(crate) fn make_endpoint(options: &ClientOptions, url: &str, field: &str) -> Result<Endpoint> {
    let url = if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    };
    let endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| Error::invalid(field, format!("{url:?} is not a valid endpoint URL: {e}")))?;
    let keep_alive = options.keep_alive_interval;
    Ok(endpoint
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(keep_alive)
        .keep_alive_timeout(keep_alive.saturating_mul(2))
        .keep_alive_while_idle(true))
}

/// The Broker service over `channel`, with the options' message limits.
pub(crate) fn broker_stub(channel: Channel, options: &ClientOptions) -> Stub {
    BrokerClient::new(channel)
        .max_decoding_message_size(options.max_message_bytes)
        .max_encoding_message_size(options.max_message_bytes)
}

impl Connection {
    /// Validates the endpoints; connects on first use.
    pub(crate) fn new(options: ClientOptions) -> Result<Self> {
        let urls: Vec<String> = if options.endpoints.is_empty() {
            vec![DEFAULT_ENDPOINT.to_owned()]
        } else {
            options.endpoints.clone()
        };
        let endpoints = urls
            .iter()
            .enumerate()
            .map(|(i, url)| make_endpoint(&options, url, &format!("endpoints[{i}]")))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            options,
            endpoints,
            state: Mutex::new(State::default()),
            connecting: tokio::sync::Mutex::new(()),
        })
    }

    pub(crate) fn options(&self) -> &ClientOptions {
        &self.options
    }

    fn current(&self) -> Option<Lease> {
        let state = self.state.lock().expect("connection state lock");
        state.current.as_ref().map(|(channel, generation)| Lease {
            stub: broker_stub(channel.clone(), &self.options),
            channel: channel.clone(),
            generation: *generation,
        })
    }

    /// The current channel, connecting first if there is none: the leader
    /// hint, then every seed in turn from where the last failure left off.
    pub(crate) async fn get(&self) -> Result<Lease> {
        if let Some(lease) = self.current() {
            return Ok(lease);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(lease) = self.current() {
            return Ok(lease);
        }
        let (start, hint) = {
            let mut state = self.state.lock().expect("connection state lock");
            (state.next, state.hint.take())
        };
        let mut candidates: Vec<(Option<usize>, Endpoint)> = Vec::new();
        if let Some(hint) = hint {
            match make_endpoint(&self.options, &hint, "leader_hint") {
                Ok(endpoint) => candidates.push((None, endpoint)),
                Err(error) => tracing::debug!(%error, "ignoring unusable leader hint"),
            }
        }
        let count = self.endpoints.len();
        for offset in 0..count {
            let index = (start + offset) % count;
            candidates.push((Some(index), self.endpoints[index].clone()));
        }
        let mut failures = Vec::new();
        for (index, endpoint) in candidates {
            let uri = endpoint.uri().to_string();
            // connect_timeout bounds the TCP connect; this also bounds name
            // resolution and the HTTP/2 handshake.
            let attempt = tokio::time::timeout(self.options.connect_timeout, endpoint.connect()).await;
            match attempt {
                Ok(Ok(channel)) => {
                    let mut state = self.state.lock().expect("connection state lock");
                    state.generation += 1;
                    state.current = Some((channel, state.generation));
                    if let Some(index) = index {
                        state.next = index;
                    }
                    tracing::debug!(endpoint = %uri, "connected");
                    drop(state);
                    return self
                        .current()
                        .ok_or_else(|| Error::protocol("connection vanished"));
                }
                Ok(Err(error)) => failures.push(format!("{uri}: {}", error_chain(&error))),
                Err(_) => failures.push(format!("{uri}: connect timed out")),
            }
        }
        Err(Error::Transport {
            message: format!("no broker reachable ({})", failures.join("; ")),
        })
    }

    /// Records a failure seen on the channel of `generation`: a retryable one
    /// drops that channel so the next call reconnects, starting with the next
    /// endpoint, or with the leader the broker named.
    pub(crate) fn report(&self, generation: u64, error: &Error) {
        if !error.is_retryable() {
            return;
        }
        let mut state = self.state.lock().expect("connection state lock");
        if let Error::Unavailable {
            leader_hint: Some(hint),
            ..
        } = error
        {
            state.hint = Some(hint.clone());
        }
        if matches!(state.current, Some((_, current)) if current == generation) {
            state.current = None;
            state.next = (state.next + 1) % self.endpoints.len();
        }
    }
}

/// An error and its causes on one line: tonic's own message is often just
/// "transport error", with the useful part in the source.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_validated_and_default_to_http() {
        let connection = Connection::new(ClientOptions::new().endpoint("127.0.0.1:7400")).unwrap();
        assert_eq!(
            connection.endpoints[0].uri().to_string(),
            "http://127.0.0.1:7400/"
        );
        let connection = Connection::new(ClientOptions::new()).unwrap();
        assert_eq!(connection.endpoints.len(), 1);
        let err = Connection::new(
            ClientOptions::new()
                .endpoint("http://ok:1")
                .endpoint("http://bad host"),
        )
        .err()
        .unwrap();
        assert_eq!(err.field(), Some("endpoints[1]"));
    }

    #[tokio::test]
    async fn unreachable_endpoints_fail_with_a_retryable_transport_error() {
        // Port 1 on localhost refuses connections.
        let options = ClientOptions::new()
            .endpoint("http://127.0.0.1:1")
            .connect_timeout(std::time::Duration::from_millis(500));
        let connection = Connection::new(options).unwrap();
        let err = connection.get().await.err().unwrap();
        assert!(matches!(err, Error::Transport { .. }), "{err:?}");
        assert!(err.is_retryable());
        assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    }
}

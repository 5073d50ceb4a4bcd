//! The broker's error type, and its one mapping to `tonic::Status`.

use crate::domain::ValidationError;

/// The gRPC metadata key that names the leader's address to a client.
pub const LEADER_HINT_METADATA: &str = "hermod-leader";
/// The gRPC metadata key of a successful answer from a node that did not
/// lead every group the request touched, so it forwarded part of it.
pub const NOT_LEADER_METADATA: &str = "hermod-not-leader";

/// Everything that can go wrong inside the broker. Serializable, because a
/// node that forwards a request to the leader passes the leader's error on.
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum BrokerError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Unavailable(String),
    /// This node cannot serve the request; `leader` is the gRPC address of
    /// the node that can, when known.
    #[error("this node does not lead{}; retry", leader.as_ref().map(|l| format!(" (the leader is at {l})")).unwrap_or_else(|| " and no leader is known yet".into()))]
    NotLeader { leader: Option<String> },
    #[error("configuration: {0}")]
    Config(String),
    #[error("storage: {0}")]
    Storage(String),
    #[error("data corruption: {0}")]
    Corruption(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl BrokerError {
    /// The same error with the field it names starting `to` instead of
    /// `from` (`messages[2]` → `messages[7]`): a part of a request handled
    /// on its own names its items by their place in the whole.
    pub fn renamed(self, from: &str, to: &str) -> Self {
        let rename = |text: String| match text.strip_prefix(from) {
            Some(rest) => format!("{to}{rest}"),
            None => text,
        };
        match self {
            BrokerError::Invalid(mut v) => {
                v.field = rename(v.field);
                BrokerError::Invalid(v)
            }
            BrokerError::NotFound(t) => BrokerError::NotFound(rename(t)),
            BrokerError::AlreadyExists(t) => BrokerError::AlreadyExists(rename(t)),
            BrokerError::FailedPrecondition(t) => BrokerError::FailedPrecondition(rename(t)),
            BrokerError::ResourceExhausted(t) => BrokerError::ResourceExhausted(rename(t)),
            other => other,
        }
    }
}

impl From<BrokerError> for tonic::Status {
    fn from(error: BrokerError) -> Self {
        use tonic::Code;
        let code = match &error {
            BrokerError::Invalid(_) => Code::InvalidArgument,
            BrokerError::NotFound(_) => Code::NotFound,
            BrokerError::AlreadyExists(_) => Code::AlreadyExists,
            BrokerError::FailedPrecondition(_) => Code::FailedPrecondition,
            BrokerError::ResourceExhausted(_) => Code::ResourceExhausted,
            BrokerError::Unavailable(_) | BrokerError::NotLeader { .. } => Code::Unavailable,
            BrokerError::Config(_) => Code::InvalidArgument,
            BrokerError::Storage(_) | BrokerError::Corruption(_) | BrokerError::Internal(_) => Code::Internal,
        };
        let mut status = tonic::Status::new(code, error.to_string());
        if let BrokerError::NotLeader { leader: Some(leader) } = &error
            && let Ok(value) = format!("http://{leader}").parse()
        {
            status.metadata_mut().insert(LEADER_HINT_METADATA, value);
        }
        status
    }
}

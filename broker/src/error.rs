//! The broker's error type, and its one mapping to `tonic::Status`.

use crate::domain::ValidationError;

/// Everything that can go wrong inside the broker.
#[derive(Debug, Clone, thiserror::Error)]
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
    #[error("configuration: {0}")]
    Config(String),
    #[error("storage: {0}")]
    Storage(String),
    #[error("data corruption: {0}")]
    Corruption(String),
    #[error("internal: {0}")]
    Internal(String),
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
            BrokerError::Unavailable(_) => Code::Unavailable,
            BrokerError::Config(_) => Code::InvalidArgument,
            BrokerError::Storage(_) | BrokerError::Corruption(_) | BrokerError::Internal(_) => Code::Internal,
        };
        tonic::Status::new(code, error.to_string())
    }
}

//! The client's typed errors, and how gRPC statuses and per-item errors map onto them.

use hermod_proto::v1 as pb;
use tonic::Code;

/// The result type of every fallible client operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// gRPC metadata key in which a broker that cannot serve a request (no quorum,
/// not the leader) may name the endpoint (`http://host:port`) to try instead.
/// The client goes there on its next attempt.
pub const LEADER_HINT_METADATA: &str = "hermod-leader";
/// The gRPC metadata key of an answer from a node that forwarded part of
/// the request, because it does not lead the group (a stale route).
pub(crate) const NOT_LEADER_METADATA: &str = "hermod-not-leader";

/// Everything a client call can fail with.
///
/// The broker names the offending request field (`messages[3].topic`,
/// `settings.ack_deadline_ms`); the variants that can be caused by the input
/// carry it in `field` (empty when the broker named none).
///
/// Which errors are retried is decided by [`Error::is_retryable`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request broke a rule (bad name, id, header, setting). Not retryable.
    #[error("invalid argument: {}", with_field(.field, .message))]
    InvalidArgument { field: String, message: String },
    /// The topic, subscription or ack token does not exist.
    #[error("not found: {}", with_field(.field, .message))]
    NotFound { field: String, message: String },
    /// The topic or subscription already exists.
    #[error("already exists: {}", with_field(.field, .message))]
    AlreadyExists { field: String, message: String },
    /// The request is well-formed but the broker's state refuses it (e.g. an
    /// ack for a lease that has expired).
    #[error("failed precondition: {}", with_field(.field, .message))]
    FailedPrecondition { field: String, message: String },
    /// A limit was hit: payload too large, too many headers, batch too big.
    ///
    /// Not retryable: the broker reports these permanent limits as
    /// `RESOURCE_EXHAUSTED` and reports overload (back-pressure, no quorum) as
    /// `UNAVAILABLE`, so resending the same request could never succeed.
    #[error("resource exhausted: {}", with_field(.field, .message))]
    ResourceExhausted { field: String, message: String },
    /// The broker cannot serve the request now (no quorum, leader change,
    /// shutting down, overloaded, or no endpoint reachable). Retryable.
    #[error("unavailable: {message}")]
    Unavailable {
        message: String,
        /// Where the broker says the request should go instead, if it said.
        leader_hint: Option<String>,
    },
    /// No answer within the request timeout (client side) or the deadline
    /// passed on the broker. Retryable: publishes keep their id, so a retry
    /// never stores a message twice.
    #[error("timed out: {message}")]
    Timeout { message: String },
    /// The connection failed or broke mid-request. Retryable.
    #[error("transport: {message}")]
    Transport { message: String },
    /// The broker answered something this client does not understand.
    #[error("protocol: {message}")]
    Protocol { message: String },
    /// The broker failed internally (storage error, bug).
    #[error("broker internal error: {message}")]
    Internal { message: String },
    /// The publisher or subscriber this call went through was closed.
    #[error("closed: {message}")]
    Closed { message: String },
    /// Any other gRPC status; `code` is its canonical name (e.g. `PERMISSION_DENIED`).
    #[error("{code}: {message}")]
    Other { code: String, message: String },
}

fn with_field(field: &str, message: &str) -> String {
    if field.is_empty() {
        message.to_owned()
    } else {
        format!("{field}: {message}")
    }
}

impl Error {
    /// Whether the same request may succeed if sent again: `Unavailable`,
    /// `Timeout` and `Transport`. Everything else is an answer about the
    /// request itself, which resending cannot change.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable { .. } | Error::Timeout { .. } | Error::Transport { .. }
        )
    }

    /// The request field the broker blamed, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::InvalidArgument { field, .. }
            | Error::NotFound { field, .. }
            | Error::AlreadyExists { field, .. }
            | Error::FailedPrecondition { field, .. }
            | Error::ResourceExhausted { field, .. }
                if !field.is_empty() =>
            {
                Some(field)
            }
            _ => None,
        }
    }

    /// The broker's (or the transport's) message, without the field.
    pub fn message(&self) -> &str {
        match self {
            Error::InvalidArgument { message, .. }
            | Error::NotFound { message, .. }
            | Error::AlreadyExists { message, .. }
            | Error::FailedPrecondition { message, .. }
            | Error::ResourceExhausted { message, .. }
            | Error::Unavailable { message, .. }
            | Error::Timeout { message }
            | Error::Transport { message }
            | Error::Protocol { message }
            | Error::Internal { message }
            | Error::Closed { message }
            | Error::Other { message, .. } => message,
        }
    }

    pub(crate) fn protocol(message: impl Into<String>) -> Self {
        Error::Protocol {
            message: message.into(),
        }
    }

    pub(crate) fn closed(message: impl Into<String>) -> Self {
        Error::Closed {
            message: message.into(),
        }
    }

    pub(crate) fn timeout(message: impl Into<String>) -> Self {
        Error::Timeout {
            message: message.into(),
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Maps a gRPC status. Statuses made by the client's own transport (they
    /// carry a source error) are connection failures whatever code tonic gave
    /// them; statuses from the broker keep their code's meaning.
    pub(crate) fn from_status(status: &tonic::Status) -> Self {
        let local = std::error::Error::source(status).is_some();
        let message = status.message().to_owned();
        match status.code() {
            Code::Unavailable => Error::Unavailable {
                leader_hint: status
                    .metadata()
                    .get(LEADER_HINT_METADATA)
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned),
                message,
            },
            Code::DeadlineExceeded => Error::Timeout { message },
            Code::Unknown | Code::Internal | Code::Cancelled if local => Error::Transport { message },
            // A broker cancelling a call is shutting down or dropping the
            // stream; the request can go elsewhere.
            Code::Cancelled => Error::Transport {
                message: format!("cancelled: {message}"),
            },
            code => from_code(code, String::new(), message),
        }
    }

    /// Maps a per-item error of a batch answer; the field comes separately.
    pub(crate) fn from_item(item: &pb::ItemError) -> Self {
        let code = Code::from_i32(item.code);
        if code == Code::Ok {
            return Error::protocol(format!("item error with code OK: {}", item.message));
        }
        if code == Code::Unavailable {
            return Error::Unavailable {
                message: item.message.clone(),
                leader_hint: None,
            };
        }
        if code == Code::DeadlineExceeded {
            return Error::Timeout {
                message: item.message.clone(),
            };
        }
        let (field, message) = if item.field.is_empty() {
            split_field(&item.message)
        } else {
            // Some brokers repeat the field in the message; say it once.
            let prefix = format!("{}: ", item.field);
            let message = item.message.strip_prefix(&prefix).unwrap_or(&item.message);
            (item.field.clone(), message.to_owned())
        };
        from_code(code, field, message)
    }
}

fn from_code(code: Code, field: String, message: String) -> Error {
    // A field is only carried by the codes that describe the request.
    let (field, message) = if field.is_empty() {
        split_field(&message)
    } else {
        (field, message)
    };
    match code {
        Code::InvalidArgument | Code::OutOfRange => Error::InvalidArgument { field, message },
        Code::NotFound => Error::NotFound { field, message },
        Code::AlreadyExists => Error::AlreadyExists { field, message },
        Code::FailedPrecondition => Error::FailedPrecondition { field, message },
        Code::ResourceExhausted => Error::ResourceExhausted { field, message },
        Code::Unavailable => Error::Unavailable {
            message: with_field(&field, &message),
            leader_hint: None,
        },
        Code::DeadlineExceeded => Error::Timeout {
            message: with_field(&field, &message),
        },
        Code::Internal | Code::DataLoss | Code::Unknown => Error::Internal {
            message: with_field(&field, &message),
        },
        other => Error::Other {
            code: code_name(other).to_owned(),
            message: with_field(&field, &message),
        },
    }
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Splits a broker message formatted `"<field>: <message>"`. The field is a
/// path such as `messages[2].headers["x y"]`: identifier characters, dots and
/// bracketed indexes or quoted keys. Anything else is not a field, and the
/// whole text stays the message.
pub(crate) fn split_field(text: &str) -> (String, String) {
    match field_len(text) {
        Some(len) => (text[..len].to_owned(), text[len + 2..].to_owned()),
        None => (String::new(), text.to_owned()),
    }
}

/// Byte length of a leading field path followed by `": "`, if there is one.
fn field_len(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut seen_name = false;
    while i < bytes.len() {
        match bytes[i] {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'$' | b'-' => {
                seen_name = true;
                i += 1;
            }
            b'.' if seen_name => i += 1,
            b'[' if seen_name => i = skip_brackets(bytes, i)?,
            b':' if seen_name && bytes.get(i + 1) == Some(&b' ') && bytes[i - 1] != b'.' => {
                return Some(i);
            }
            _ => return None,
        }
    }
    None
}

/// Index just past the `]` closing the bracket at `start`; quoted keys may
/// hold any character, with `\` escapes.
fn skip_brackets(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    let mut quoted = false;
    while i < bytes.len() {
        match (quoted, bytes[i]) {
            (true, b'\\') => i += 1,
            (true, b'"') => quoted = false,
            (false, b'"') => quoted = true,
            (false, b']') => return Some(i + 1),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Converts a failed RPC into an [`Error`].
pub(crate) fn status_error(status: tonic::Status) -> Error {
    Error::from_status(&status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_messages_split_into_field_and_message() {
        let cases = [
            ("topic: must not be empty", "topic", "must not be empty"),
            ("messages[3].topic: bad", "messages[3].topic", "bad"),
            (
                "messages[0].headers[\"a b: c\"]: header name must not contain whitespace",
                "messages[0].headers[\"a b: c\"]",
                "header name must not contain whitespace",
            ),
            (
                "settings.ack_deadline_ms: 1 ms is out of range",
                "settings.ack_deadline_ms",
                "1 ms is out of range",
            ),
            ("subscription \"x\" not found", "", "subscription \"x\" not found"),
            ("no field here", "", "no field here"),
            ("a.: b", "", "a.: b"),
            (": nothing", "", ": nothing"),
            ("name:no-space", "", "name:no-space"),
        ];
        for (text, field, message) in cases {
            assert_eq!(
                split_field(text),
                (field.to_owned(), message.to_owned()),
                "{text}"
            );
        }
    }

    #[test]
    fn broker_statuses_map_to_variants_with_their_field() {
        let err = Error::from_status(&tonic::Status::invalid_argument("messages[0].id: too long"));
        assert_eq!(err, Error::invalid("messages[0].id", "too long"));
        assert_eq!(err.field(), Some("messages[0].id"));
        assert_eq!(err.to_string(), "invalid argument: messages[0].id: too long");
        assert!(!err.is_retryable());

        let err = Error::from_status(&tonic::Status::not_found("subscription \"s\" does not exist"));
        assert!(matches!(&err, Error::NotFound { field, .. } if field.is_empty()));
        assert_eq!(err.field(), None);

        let err = Error::from_status(&tonic::Status::already_exists("name: topic exists"));
        assert!(matches!(err, Error::AlreadyExists { .. }));
        let err = Error::from_status(&tonic::Status::failed_precondition("lease expired"));
        assert!(matches!(err, Error::FailedPrecondition { .. }));
        let err = Error::from_status(&tonic::Status::resource_exhausted("payload: 2 MiB > 1 MiB"));
        assert_eq!(err.field(), Some("payload"));
        assert!(!err.is_retryable());
        let err = Error::from_status(&tonic::Status::internal("storage: disk full"));
        assert!(matches!(err, Error::Internal { .. }));
        assert!(!err.is_retryable());
        let err = Error::from_status(&tonic::Status::permission_denied("no"));
        assert_eq!(
            err,
            Error::Other {
                code: "PERMISSION_DENIED".into(),
                message: "no".into()
            }
        );
    }

    #[test]
    fn transient_statuses_are_retryable() {
        let mut status = tonic::Status::unavailable("no quorum for shard 3");
        status
            .metadata_mut()
            .insert(LEADER_HINT_METADATA, "http://10.0.0.2:7400".parse().unwrap());
        let err = Error::from_status(&status);
        assert_eq!(
            err,
            Error::Unavailable {
                message: "no quorum for shard 3".into(),
                leader_hint: Some("http://10.0.0.2:7400".into())
            }
        );
        assert!(err.is_retryable());
        assert!(Error::from_status(&tonic::Status::deadline_exceeded("slow")).is_retryable());
        assert!(Error::from_status(&tonic::Status::cancelled("shutting down")).is_retryable());
        // A status the transport made from an I/O error is a connection failure.
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let status = tonic::Status::from_error(Box::new(io));
        let err = Error::from_status(&status);
        assert!(matches!(err, Error::Transport { .. }), "{err:?}");
        assert!(err.is_retryable());
        assert!(!Error::protocol("x").is_retryable());
        assert!(!Error::closed("x").is_retryable());
    }

    #[test]
    fn item_errors_carry_their_field() {
        let item = pb::ItemError {
            code: Code::InvalidArgument as i32,
            message: "topic \"a b\": token may hold only A-Z a-z 0-9 _ -".into(),
            field: "messages[2].topic".into(),
        };
        let err = Error::from_item(&item);
        assert_eq!(err.field(), Some("messages[2].topic"));
        assert_eq!(
            err.message(),
            "topic \"a b\": token may hold only A-Z a-z 0-9 _ -"
        );

        // A message that repeats the field is not shown twice.
        let item = pb::ItemError {
            code: Code::ResourceExhausted as i32,
            message: "messages[0].payload: too big".into(),
            field: "messages[0].payload".into(),
        };
        assert_eq!(
            Error::from_item(&item).to_string(),
            "resource exhausted: messages[0].payload: too big"
        );

        let item = pb::ItemError {
            code: Code::Unavailable as i32,
            message: "no quorum".into(),
            field: String::new(),
        };
        assert!(Error::from_item(&item).is_retryable());
        let item = pb::ItemError {
            code: 0,
            message: String::new(),
            field: String::new(),
        };
        assert!(matches!(Error::from_item(&item), Error::Protocol { .. }));
    }
}

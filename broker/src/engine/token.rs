//! Ack tokens: opaque to clients, they name the subscription, the message,
//! the group that delivered it and the lease it was delivered under, with a
//! checksum against forgery by accident.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::domain::{MessageKey, SubscriptionName, TopicName, ValidationError};
use crate::semantics::LeaseId;
use crate::storage::{Cf, decode, encode};

/// Longest token accepted, in characters; real tokens are far shorter.
pub const MAX_TOKEN_CHARS: usize = 1024;

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckToken {
    pub subscription: SubscriptionName,
    pub key: MessageKey,
    pub lease_id: LeaseId,
    /// The incarnation of the delivering node's dispatcher; leases of an
    /// earlier one are no longer tracked.
    pub epoch: u64,
    /// The Raft group that holds the message: the broker's own messages
    /// (events, dead letters) live in the group that wrote them.
    pub group: u32,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    subscription: String,
    topic: String,
    sequence: u64,
    lease_id: u64,
    epoch: u64,
    group: u32,
}

/// A token of a node from before shards, which names no group: group 0.
#[derive(Serialize, Deserialize)]
struct WireWithoutGroup {
    subscription: String,
    topic: String,
    sequence: u64,
    lease_id: u64,
    epoch: u64,
}

impl AckToken {
    pub fn encode(&self) -> String {
        let wire = Wire {
            subscription: self.subscription.as_str().into(),
            topic: self.key.topic.as_str().into(),
            sequence: self.key.sequence,
            lease_id: self.lease_id,
            epoch: self.epoch,
            group: self.group,
        };
        URL_SAFE_NO_PAD.encode(encode(&wire))
    }

    /// Parses a client's token; `field` names it in the request.
    pub fn decode(field: &str, token: &str) -> Result<Self, ValidationError> {
        let invalid = || ValidationError::new(field, "not an ack token issued by this broker");
        if token.is_empty() || token.len() > MAX_TOKEN_CHARS {
            return Err(invalid());
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        let wire: Wire = match decode(Cf::Meta, &bytes) {
            Ok(wire) => wire,
            Err(_) => {
                let old: WireWithoutGroup = decode(Cf::Meta, &bytes).map_err(|_| invalid())?;
                Wire {
                    subscription: old.subscription,
                    topic: old.topic,
                    sequence: old.sequence,
                    lease_id: old.lease_id,
                    epoch: old.epoch,
                    group: 0,
                }
            }
        };
        Ok(Self {
            subscription: SubscriptionName::parse(field, &wire.subscription).map_err(|_| invalid())?,
            key: MessageKey {
                topic: TopicName::parse_any(field, &wire.topic).map_err(|_| invalid())?,
                sequence: wire.sequence,
            },
            lease_id: wire.lease_id,
            epoch: wire.epoch,
            group: wire.group,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let token = AckToken {
            subscription: SubscriptionName::parse("s", "workers").unwrap(),
            key: MessageKey {
                topic: TopicName::parse("t", "orders.eu").unwrap(),
                sequence: 42,
            },
            lease_id: 7,
            epoch: 99,
            group: 3,
        };
        let text = token.encode();
        assert_eq!(AckToken::decode("ack_tokens[0]", &text).unwrap(), token);
        // A token from before groups names group 0.
        let old = WireWithoutGroup {
            subscription: "workers".into(),
            topic: "orders.eu".into(),
            sequence: 42,
            lease_id: 7,
            epoch: 99,
        };
        let old = URL_SAFE_NO_PAD.encode(encode(&old));
        let decoded = AckToken::decode("ack_tokens[0]", &old).unwrap();
        assert_eq!((decoded.group, decoded.key.sequence), (0, 42));
        for bad in ["", "abc", "!!!!", &"A".repeat(MAX_TOKEN_CHARS + 1)] {
            let err = AckToken::decode("ack_tokens[0]", bad).unwrap_err();
            assert_eq!(err.field, "ack_tokens[0]");
        }
        let mut tampered = text.into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(AckToken::decode("t", std::str::from_utf8(&tampered).unwrap()).is_err());
    }
}

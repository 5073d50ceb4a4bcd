//! The values a subscription queue takes and hands out: its config, entries, leases, dead letters, errors.

use serde::{Deserialize, Serialize};

use crate::domain::limits::{
    DEFAULT_ACK_DEADLINE_MS, DEFAULT_BACKOFF_INITIAL_MS, DEFAULT_BACKOFF_MAX_MS, DEFAULT_MAX_DELIVERIES,
};
use crate::domain::{Message, MessageKey, Priority, PriorityPolicy, SubscriptionSettings};

/// Identifies one consumer (one open Subscribe stream) of a subscription.
pub type ConsumerId = u64;

/// Identifies one delivery attempt within one queue; never reused, so a
/// token from an earlier attempt can be told apart from the current one.
pub type LeaseId = u64;

/// The subscription settings the queue needs to decide deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    pub policy: PriorityPolicy,
    pub ack_deadline_ms: u64,
    /// A failed attempt whose number reaches this is dead-lettered.
    pub max_deliveries: u32,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            policy: PriorityPolicy::Strict,
            ack_deadline_ms: DEFAULT_ACK_DEADLINE_MS,
            max_deliveries: DEFAULT_MAX_DELIVERIES,
            backoff_initial_ms: DEFAULT_BACKOFF_INITIAL_MS,
            backoff_max_ms: DEFAULT_BACKOFF_MAX_MS,
        }
    }
}

impl From<&SubscriptionSettings> for QueueConfig {
    fn from(settings: &SubscriptionSettings) -> Self {
        Self {
            policy: settings.priority_policy,
            ack_deadline_ms: settings.ack_deadline_ms,
            max_deliveries: settings.max_deliveries,
            backoff_initial_ms: settings.backoff_initial_ms,
            backoff_max_ms: settings.backoff_max_ms,
        }
    }
}

/// A message as the queue sees it: just what ordering and timing need, so a
/// queued message costs a few dozen bytes, not its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: MessageKey,
    pub priority: Priority,
    /// Not delivered before this time; at or before `now` means ready.
    pub not_before_ms: u64,
    /// Expired once `now` reaches this time; `None` never expires.
    pub expires_at_ms: Option<u64>,
}

impl From<&Message> for Entry {
    fn from(message: &Message) -> Self {
        Self {
            key: message.key(),
            priority: message.priority,
            not_before_ms: message.not_before_ms,
            expires_at_ms: message.expires_at_ms,
        }
    }
}

/// A message taken out of the queue for an ack being committed, to be
/// pushed back (with its attempts) should the commit fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub entry: Entry,
    pub attempts: u32,
}

impl From<Lease> for Claimed {
    /// A lease knows no expiry: a restored lease is ready at once and its
    /// expiry is checked again when it is loaded for delivery.
    fn from(lease: Lease) -> Self {
        Self {
            entry: Entry {
                key: lease.key,
                priority: lease.priority,
                not_before_ms: 0,
                expires_at_ms: None,
            },
            attempts: lease.attempt,
        }
    }
}

/// One delivery attempt handed to a consumer. It stays valid until it is
/// settled (ack, nack, reject), its consumer is released, or its deadline is
/// processed by `tick`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub key: MessageKey,
    pub lease_id: LeaseId,
    /// 1 for the first delivery, then 2, 3, ...
    pub attempt: u32,
    pub consumer: ConsumerId,
    pub deadline_ms: u64,
    pub priority: Priority,
}

/// Why a message left the queue for the dead-letter topic. Serializable
/// because dead-lettering is itself a replicated command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DeadReason {
    /// Its last allowed delivery attempt failed.
    MaxDeliveries,
    /// A consumer rejected it.
    Rejected,
    /// It passed its `expires_at` before being acknowledged.
    Expired,
}

impl DeadReason {
    /// The reason as it appears in the dead letter's headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MaxDeliveries => "max_deliveries",
            Self::Rejected => "rejected",
            Self::Expired => "expired",
        }
    }
}

/// A message the queue gave up on; the caller publishes it to the
/// dead-letter topic (or drops it, with a metric, when there is none).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeadLetter {
    pub key: MessageKey,
    pub reason: DeadReason,
    /// Deliveries made before it was given up (0 if it expired unseen).
    pub attempts: u32,
}

/// Why a settle request (ack, nack, extend, reject) changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SettleError {
    /// The key is unknown, or it is not in flight under this lease id: it was
    /// settled already, its lease timed out and it was redelivered since, or
    /// the id was never handed out.
    #[error(
        "the message is not in flight under this lease: it was already settled, its lease \
         expired and it was redelivered, or the ack token is not valid"
    )]
    NotInFlight,
}

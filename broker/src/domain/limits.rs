//! Every limit the broker enforces, as named constants with their units.

/// Longest topic name or pattern, in bytes.
pub const MAX_TOPIC_NAME_BYTES: usize = 255;
/// Longest subscription name, in bytes.
pub const MAX_SUBSCRIPTION_NAME_BYTES: usize = 255;
/// Longest client-chosen message id, in bytes.
pub const MAX_MESSAGE_ID_BYTES: usize = 128;
/// Most headers on one message.
pub const MAX_HEADERS: usize = 64;
/// Longest header name, in bytes.
pub const MAX_HEADER_NAME_BYTES: usize = 256;
/// Longest header value, in bytes.
pub const MAX_HEADER_VALUE_BYTES: usize = 4096;
/// Payload limit of a topic that does not set its own.
pub const DEFAULT_MAX_PAYLOAD_BYTES: u64 = 1024 * 1024;
/// The largest per-topic payload limit an operator may set.
pub const MAX_PAYLOAD_BYTES: u64 = 16 * 1024 * 1024;
/// Most messages in one Publish request.
pub const MAX_PUBLISH_BATCH: usize = 1000;
/// Most ack tokens in one settle request.
pub const MAX_SETTLE_BATCH: usize = 1000;

/// Dedup window of a topic that does not set its own.
pub const DEFAULT_DEDUP_WINDOW_MS: u64 = 2 * 60 * 1000;
/// The longest dedup window: the index lives on disk, so days are fine.
pub const MAX_DEDUP_WINDOW_MS: u64 = 30 * 24 * 3600 * 1000;
/// Retention age of a `limits` topic that does not set its own.
pub const DEFAULT_MAX_AGE_MS: u64 = 7 * 24 * 3600 * 1000;
/// The longest retention age.
pub const MAX_MAX_AGE_MS: u64 = 10 * 365 * 24 * 3600 * 1000;
/// The longest TTL a message or topic may carry.
pub const MAX_TTL_MS: u64 = 365 * 24 * 3600 * 1000;
/// The longest delivery delay.
pub const MAX_DELAY_MS: u64 = 30 * 24 * 3600 * 1000;

/// Ack deadline of a subscription that does not set its own.
pub const DEFAULT_ACK_DEADLINE_MS: u64 = 30_000;
/// The shortest ack deadline; shorter ones cause redelivery storms.
pub const MIN_ACK_DEADLINE_MS: u64 = 100;
/// The longest ack deadline (and the longest `extend`).
pub const MAX_ACK_DEADLINE_MS: u64 = 12 * 3600 * 1000;
/// Delivery attempts before dead-lettering, when a subscription does not say.
pub const DEFAULT_MAX_DELIVERIES: u32 = 20;
/// The most delivery attempts a subscription may allow.
pub const MAX_MAX_DELIVERIES: u32 = 10_000;
/// First redelivery backoff, when a subscription does not say.
pub const DEFAULT_BACKOFF_INITIAL_MS: u64 = 1_000;
/// Backoff ceiling, when a subscription does not say.
pub const DEFAULT_BACKOFF_MAX_MS: u64 = 60_000;
/// The longest backoff an operator may configure.
pub const MAX_BACKOFF_MS: u64 = 3600 * 1000;

/// Pending messages per subscription and priority kept in memory unless
/// configured otherwise; the rest of a backlog waits on disk.
pub const DEFAULT_QUEUE_WINDOW: usize = 16_384;
/// The smallest queue window.
pub const MIN_QUEUE_WINDOW: usize = 16;
/// The largest queue window.
pub const MAX_QUEUE_WINDOW: usize = 1 << 20;

/// Deliveries in flight to one consumer before it grants more credit.
pub const MAX_CONSUMER_CREDIT: u32 = 10_000;
/// Deliveries sent in one streamed batch.
pub const MAX_DELIVERY_BATCH: usize = 256;
/// Payload bytes in one streamed batch, kept well under the gRPC message cap;
/// a single larger message still travels alone.
pub const MAX_DELIVERY_BATCH_BYTES: usize = 4 * 1024 * 1024;

//! Delivery rules as pure code on data: no I/O, no clocks; time is an argument.
//!
//! Contents:
//! - [`SubscriptionQueue`] (`queue.rs`): one durable subscription's pending
//!   and in-flight messages — priorities (strict or weighted), FIFO within a
//!   priority with redeliveries first, delay, TTL, leases with ack deadlines,
//!   nack/extend/reject, exponential redelivery backoff and dead-lettering.
//! - `store.rs`: the slots and ordered indexes behind the queue, which keep
//!   every operation O(log n) per message touched.
//! - `types.rs`: [`QueueConfig`], [`Entry`], [`Lease`], [`DeadLetter`],
//!   [`DeadReason`], [`SettleError`].
//! - [`backoff`] — [`redelivery_delay_ms`], the exponential redelivery backoff.
//! - [`weighted`] — [`WeightedRoundRobin`], the smooth 8:4:2:1 priority picker.
//!
//! How the caller drives a queue:
//! - Feed it: `push` every message the subscription must deliver.
//! - Serve consumers: `next(now, consumer)` as long as the consumer has
//!   credit; settle with `ack`, `nack`, `extend`, `reject`; call
//!   `release_consumer` when a stream closes.
//! - Keep time moving: call `tick(now)` at `next_wakeup_ms()` (and after
//!   pushes, since a push can bring that time forward), then publish
//!   `take_dead()` to the dead-letter topic.
//! - Every call is deterministic given its arguments, so the same sequence of
//!   calls with the same times yields the same state on every replica.
//!
//! After a restart (or a leader change) leases are not restored: rebuild the
//! queue and `push` each unacknowledged message with the number of
//! deliveries already made as `attempts_so_far`. To honour "a lease is never
//! broken early", push the messages that were in flight with `not_before_ms`
//! set to at least the restart time plus one ack deadline. Restore the lease
//! id high-water mark with `resume_lease_ids_after`, so tokens handed out
//! before the restart stay invalid.

pub mod backoff;
mod queue;
mod store;
mod types;
pub mod weighted;

#[cfg(test)]
mod tests;

pub use backoff::redelivery_delay_ms;
pub use queue::SubscriptionQueue;
pub use types::{
    Claimed, ConsumerId, DeadLetter, DeadReason, Entry, Lease, LeaseId, QueueConfig, SettleError,
};
pub use weighted::{WeightedRoundRobin, priority_weight};

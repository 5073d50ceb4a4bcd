//! `SubscriptionQueue`: one subscription's pending and in-flight messages and the rules that move them.

use super::backoff::redelivery_delay_ms;
use super::store::{Order, Slot, State, Store};
use super::types::{
    Claimed, ConsumerId, DeadLetter, DeadReason, Entry, Lease, LeaseId, QueueConfig, SettleError,
};
use super::weighted::WeightedRoundRobin;
use crate::domain::limits::{MAX_ACK_DEADLINE_MS, MAX_DELAY_MS};
use crate::domain::{MessageKey, Priority, PriorityPolicy, TopicName};

/// The delivery state of one durable subscription, as pure data.
///
/// Every method is deterministic: time comes in as `now_ms`, nothing is read
/// from a clock, and no hash-map iteration order leaks into results, so
/// replicas that apply the same calls end in the same state.
///
/// Time never runs backwards inside the queue: it remembers the latest
/// `now_ms` it was given and treats an earlier one as that latest time. A
/// clock step back (e.g. after a leader change) therefore cannot deliver a
/// delayed message early or revive an expired one.
///
/// Every method that takes `now_ms` first applies the timers due by then,
/// exactly as `tick(now_ms)` would, so the queue always answers for the
/// state at `now_ms`: a lease whose deadline has passed can no longer be
/// nacked or extended. `ack` and `reject` carry no time; they settle a lease
/// as long as its deadline has not been processed yet.
#[derive(Debug, Clone)]
pub struct SubscriptionQueue {
    config: QueueConfig,
    store: Store,
    picker: WeightedRoundRobin,
    next_lease_id: LeaseId,
    clock_ms: u64,
    dead: Vec<DeadLetter>,
}

impl SubscriptionQueue {
    pub fn new(config: QueueConfig) -> Self {
        Self {
            config,
            store: Store::default(),
            picker: WeightedRoundRobin::new(),
            next_lease_id: 1,
            clock_ms: 0,
            dead: Vec::new(),
        }
    }

    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// Applies new settings. Leases keep the deadline they were given; the new
    /// ack deadline, backoff and max deliveries apply from the next
    /// delivery or failure on.
    pub fn set_config(&mut self, config: QueueConfig) {
        if config.policy != self.config.policy {
            self.picker.reset();
        }
        self.config = config;
    }

    /// The id the next lease will get.
    pub fn next_lease_id(&self) -> LeaseId {
        self.next_lease_id
    }

    /// Makes every later lease id greater than `floor`. A queue rebuilt after a
    /// restart starts counting at 1 again; the caller restores the persisted
    /// high-water mark here so that ack tokens from before the restart can
    /// never settle a new delivery of the same message.
    pub fn resume_lease_ids_after(&mut self, floor: LeaseId) {
        self.next_lease_id = self.next_lease_id.max(floor.saturating_add(1));
    }

    /// Adds a message that is pending (new, or recovered after restart with
    /// `attempts_so_far` earlier deliveries). A key already queued or in
    /// flight is ignored (idempotent).
    ///
    /// A message with earlier deliveries counts as a redelivery, so it goes
    /// before new messages of its priority. An already expired message is
    /// dead-lettered by the next call that takes a time.
    pub fn push(&mut self, entry: Entry, attempts_so_far: u32) {
        if self.store.order_of(&entry.key).is_some() {
            return;
        }
        let state = pending_state(entry.not_before_ms, self.clock_ms);
        let Entry {
            key,
            priority,
            expires_at_ms,
            ..
        } = entry;
        self.store
            .insert(key, priority, expires_at_ms, attempts_so_far, state);
    }

    /// Next delivery for `consumer`, or None when nothing is ready. Expired
    /// entries met on the way are never returned: they go to the dead-letter
    /// output with reason Expired.
    pub fn next(&mut self, now_ms: u64, consumer: ConsumerId) -> Option<Lease> {
        let now = self.advance(now_ms);
        loop {
            let priority = self.pick_priority()?;
            let order = self.store.first_ready(priority)?;
            if self.store.slot(order).is_some_and(|slot| slot.is_expired(now)) {
                // `advance` has already removed everything expired by `now`;
                // this guard keeps the rule local all the same.
                self.bury(order, DeadReason::Expired);
                continue;
            }
            let lease_id = self.take_lease_id();
            let deadline_ms = now.saturating_add(self.config.ack_deadline_ms);
            let state = State::InFlight {
                lease_id,
                consumer,
                deadline_ms,
            };
            let slot = self.store.start_lease(order, state)?;
            return Some(Lease {
                key: slot.key.clone(),
                lease_id,
                attempt: slot.attempts,
                consumer,
                deadline_ms,
                priority: slot.priority,
            });
        }
    }

    /// Moves due timers: delayed entries become ready at not_before;
    /// backed-off redeliveries become ready; leases past their deadline fail
    /// (redelivery after backoff, or dead-letter MaxDeliveries when attempt >=
    /// max_deliveries); pending entries past expires_at are removed to the
    /// dead-letter output (reason Expired), wherever they sit in the queue.
    ///
    /// A lease is valid while `now < deadline_ms`; a delayed entry is ready
    /// once `not_before_ms <= now`; an entry is expired once
    /// `expires_at_ms <= now`. The work is O(log n) per item that changes.
    pub fn tick(&mut self, now_ms: u64) {
        self.advance(now_ms);
    }

    /// Settles a delivery for good; returns the lease it settled.
    pub fn ack(&mut self, key: &MessageKey, lease_id: LeaseId) -> Result<Lease, SettleError> {
        let (order, _) = self.leased(key, lease_id)?;
        let (slot, state) = self.store.remove(order).ok_or(SettleError::NotInFlight)?;
        lease_of(&slot, state).ok_or(SettleError::NotInFlight)
    }

    /// Settles a message on an ack whose lease this queue never granted (one
    /// granted before a restart or a leader change). While the message waits
    /// here the old lease may still be honoured; once it was handed out again
    /// under a lease of this queue, the old lease is over and the ack is
    /// refused, so a confirmed ack is never followed by a redelivery.
    /// `Ok(None)` when the message is not queued here at all.
    pub fn claim(&mut self, key: &MessageKey) -> Result<Option<Claimed>, SettleError> {
        let Some(order) = self.store.order_of(key) else {
            return Ok(None);
        };
        let due_ms = match self.store.state(order) {
            Some(State::Waiting { due_ms }) => due_ms,
            Some(State::Ready) => 0,
            Some(State::InFlight { .. }) | None => return Err(SettleError::NotInFlight),
        };
        let (slot, _) = self.store.remove(order).ok_or(SettleError::NotInFlight)?;
        let entry = Entry {
            key: slot.key,
            priority: slot.priority,
            not_before_ms: due_ms,
            expires_at_ms: slot.expires_at_ms,
        };
        Ok(Some(Claimed {
            entry,
            attempts: slot.attempts,
        }))
    }

    /// Failed attempt: redeliver after `delay_ms` if given (at most
    /// `MAX_DELAY_MS`), else after the exponential backoff; or dead-letter
    /// MaxDeliveries when the attempt count reached max_deliveries (Expired
    /// when the message has expired meanwhile).
    pub fn nack(
        &mut self,
        key: &MessageKey,
        lease_id: LeaseId,
        delay_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<(), SettleError> {
        let now = self.advance(now_ms);
        let (order, _) = self.leased(key, lease_id)?;
        self.fail_attempt(order, now, delay_ms.map(|d| d.min(MAX_DELAY_MS)));
        Ok(())
    }

    /// Renews the deadline to now + extension (or + ack_deadline when None;
    /// at most `MAX_ACK_DEADLINE_MS`); returns the new deadline. The lease id
    /// stays the same.
    pub fn extend(
        &mut self,
        key: &MessageKey,
        lease_id: LeaseId,
        extension_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<u64, SettleError> {
        let now = self.advance(now_ms);
        let (order, consumer) = self.leased(key, lease_id)?;
        let extension = extension_ms
            .unwrap_or(self.config.ack_deadline_ms)
            .min(MAX_ACK_DEADLINE_MS);
        let deadline_ms = now.saturating_add(extension);
        self.store.set_state(
            order,
            State::InFlight {
                lease_id,
                consumer,
                deadline_ms,
            },
        );
        Ok(deadline_ms)
    }

    /// Dead-letters at once with reason Rejected (returned, not put in the
    /// output buffer).
    pub fn reject(&mut self, key: &MessageKey, lease_id: LeaseId) -> Result<DeadLetter, SettleError> {
        let (order, _) = self.leased(key, lease_id)?;
        let (slot, _) = self.store.remove(order).ok_or(SettleError::NotInFlight)?;
        Ok(DeadLetter {
            key: slot.key,
            reason: DeadReason::Rejected,
            attempts: slot.attempts,
        })
    }

    /// A consumer disconnected: each of its leases is a failed attempt
    /// (backoff or MaxDeliveries), processed in push order.
    pub fn release_consumer(&mut self, consumer: ConsumerId, now_ms: u64) {
        let now = self.advance(now_ms);
        for order in self.store.leases_of(consumer) {
            self.fail_attempt(order, now, None);
        }
    }

    /// The message is gone (acked through another path, deleted by
    /// retention): forget it wherever it is. Returns whether it was here.
    pub fn remove(&mut self, key: &MessageKey) -> bool {
        self.store
            .order_of(key)
            .and_then(|order| self.store.remove(order))
            .is_some()
    }

    /// The topic is gone: forgets its pending messages. Those in flight stay
    /// until their lease ends, so a consumer's settle is still answered.
    /// Returns how many were forgotten.
    pub fn remove_pending_of(&mut self, topic: &TopicName) -> usize {
        let mut pending: Vec<Order> = self
            .store
            .orders_of(topic)
            .filter(|order| !matches!(self.store.state(*order), Some(State::InFlight { .. })))
            .collect();
        pending.sort_unstable();
        for order in &pending {
            self.store.remove(*order);
        }
        pending.len()
    }

    /// Dead letters produced by next/tick/nack/extend/release_consumer since
    /// the last call, in the order they were produced.
    pub fn take_dead(&mut self) -> Vec<DeadLetter> {
        std::mem::take(&mut self.dead)
    }

    /// The earliest time at which tick() would change something (delay,
    /// backoff, lease deadline, expiry), or None. A time at or before the
    /// latest `now_ms` seen means "tick now" (e.g. after pushing a message
    /// that had already expired).
    pub fn next_wakeup_ms(&self) -> Option<u64> {
        self.store.next_event_ms()
    }

    /// Pending entries, ready or waiting (delayed/backoff), not in flight.
    pub fn backlog(&self) -> usize {
        self.store.pending_len()
    }

    /// Pending entries of one priority, ready or waiting.
    pub fn pending_of(&self, priority: Priority) -> usize {
        self.store.pending_of(priority)
    }

    /// Pending entries that were deliverable at the latest time seen.
    pub fn ready_len(&self) -> usize {
        self.store.ready_len()
    }

    pub fn in_flight(&self) -> usize {
        self.store.in_flight_len()
    }

    /// Pending plus in-flight entries.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    pub fn is_empty(&self) -> bool {
        self.store.len() == 0
    }

    pub fn leases_of(&self, consumer: ConsumerId) -> usize {
        self.store.lease_count(consumer)
    }

    /// Whether the message is queued or in flight here.
    pub fn contains(&self, key: &MessageKey) -> bool {
        self.store.order_of(key).is_some()
    }

    /// The current lease of a message, if it is in flight.
    pub fn lease(&self, key: &MessageKey) -> Option<Lease> {
        let order = self.store.order_of(key)?;
        lease_of(self.store.slot(order)?, self.store.state(order)?)
    }

    /// Checks the internal indexes by brute force (tests only).
    #[cfg(test)]
    pub(super) fn check_consistency(&self) {
        self.store.check_consistency();
    }

    /// Takes `now_ms` into the queue's clock and applies every timer due by
    /// then; returns the time the queue now stands at.
    fn advance(&mut self, now_ms: u64) -> u64 {
        self.clock_ms = self.clock_ms.max(now_ms);
        let now = self.clock_ms;
        // Leases first: a failed lease may become ready or expire at this
        // very instant, and the two loops below then see it.
        while let Some(order) = self.store.due_deadline(now) {
            self.fail_attempt(order, now, None);
        }
        while let Some(order) = self.store.due_waiting(now) {
            self.store.set_state(order, State::Ready);
        }
        while let Some(order) = self.store.due_expiry(now) {
            self.bury(order, DeadReason::Expired);
        }
        now
    }

    fn pick_priority(&mut self) -> Option<Priority> {
        let store = &self.store;
        match self.config.policy {
            PriorityPolicy::Strict => Priority::DESCENDING.into_iter().find(|p| store.has_ready(*p)),
            PriorityPolicy::Weighted => self.picker.pick(|p| store.has_ready(p)),
        }
    }

    fn take_lease_id(&mut self) -> LeaseId {
        let id = self.next_lease_id;
        self.next_lease_id = self.next_lease_id.saturating_add(1);
        id
    }

    /// The order and holder of `key` when it is in flight under exactly
    /// `lease_id`; any other lease id, current or not, is refused.
    fn leased(&self, key: &MessageKey, lease_id: LeaseId) -> Result<(Order, ConsumerId), SettleError> {
        let order = self.store.order_of(key).ok_or(SettleError::NotInFlight)?;
        match self.store.state(order) {
            Some(State::InFlight {
                lease_id: current,
                consumer,
                ..
            }) if current == lease_id => Ok((order, consumer)),
            _ => Err(SettleError::NotInFlight),
        }
    }

    /// Ends an in-flight attempt that did not succeed: an expired message is
    /// dead-lettered as Expired (it must never be delivered again), one that
    /// used its last attempt as MaxDeliveries, and any other waits out
    /// `delay_ms` or the backoff before it is ready again.
    fn fail_attempt(&mut self, order: Order, now: u64, delay_ms: Option<u64>) {
        let Some(slot) = self.store.slot(order) else {
            return;
        };
        let attempts = slot.attempts;
        if slot.is_expired(now) {
            self.bury(order, DeadReason::Expired);
        } else if attempts >= self.config.max_deliveries {
            self.bury(order, DeadReason::MaxDeliveries);
        } else {
            let config = &self.config;
            let delay = delay_ms.unwrap_or_else(|| {
                redelivery_delay_ms(config.backoff_initial_ms, config.backoff_max_ms, attempts)
            });
            let state = pending_state(now.saturating_add(delay), now);
            self.store.set_state(order, state);
        }
    }

    /// Removes a message to the dead-letter output.
    fn bury(&mut self, order: Order, reason: DeadReason) {
        if let Some((slot, _)) = self.store.remove(order) {
            self.dead.push(DeadLetter {
                key: slot.key,
                reason,
                attempts: slot.attempts,
            });
        }
    }
}

/// Where a pending message goes when it may be delivered from `due_ms` on.
fn pending_state(due_ms: u64, now: u64) -> State {
    if due_ms <= now {
        State::Ready
    } else {
        State::Waiting { due_ms }
    }
}

/// The lease a slot is under, if it is in flight.
fn lease_of(slot: &Slot, state: State) -> Option<Lease> {
    match state {
        State::InFlight {
            lease_id,
            consumer,
            deadline_ms,
        } => Some(Lease {
            key: slot.key.clone(),
            lease_id,
            attempt: slot.attempts,
            consumer,
            deadline_ms,
            priority: slot.priority,
        }),
        _ => None,
    }
}

//! The queue's storage: one slot per message plus the ordered indexes that find any next item in O(log n).

use std::collections::{BTreeSet, HashMap};

use super::types::{ConsumerId, LeaseId};
use crate::domain::{MessageKey, Priority, TopicName};

/// Push order: a per-queue counter. It gives FIFO order within a priority and
/// is kept across redeliveries, so redeliveries go by their original order.
/// Indexes hold this 8-byte number rather than the key, which keeps them small.
pub(super) type Order = u64;

/// What the queue knows about one message. Kept to 56 bytes: millions of
/// these may be queued, and the lease details of the few in flight live in
/// a side map instead.
#[derive(Debug, Clone)]
pub(super) struct Slot {
    pub key: MessageKey,
    pub expires_at_ms: Option<u64>,
    /// The due time while waiting, the lease deadline while in flight.
    time_ms: u64,
    /// Deliveries made so far, those before a restart included.
    pub attempts: u32,
    pub priority: Priority,
    phase: Phase,
}

// The per-message cost is what makes a queue of millions workable; keep it from creeping up.
const _: () = assert!(std::mem::size_of::<Slot>() <= 56);

impl Slot {
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Waiting,
    Ready,
    InFlight,
}

/// Where a message is. Each state lives in exactly one index, so a message
/// can never be pending and in flight at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// Pending, but not before `due_ms` (a delay or a redelivery backoff).
    Waiting { due_ms: u64 },
    /// Pending and deliverable now.
    Ready,
    /// Leased to a consumer until `deadline_ms`.
    InFlight {
        lease_id: LeaseId,
        consumer: ConsumerId,
        deadline_ms: u64,
    },
}

/// The ready messages of one priority. Redeliveries are kept apart because
/// they go before new messages of the same priority.
#[derive(Debug, Clone, Default)]
struct Lane {
    redeliveries: BTreeSet<Order>,
    fresh: BTreeSet<Order>,
}

impl Lane {
    fn set_for(&mut self, attempts: u32) -> &mut BTreeSet<Order> {
        if attempts > 0 {
            &mut self.redeliveries
        } else {
            &mut self.fresh
        }
    }
}

/// Secondary indexes, kept apart from the slots so a slot can be read while
/// they change.
#[derive(Debug, Clone, Default)]
struct Indexes {
    /// Waiting messages by due time.
    waiting: BTreeSet<(u64, Order)>,
    /// Ready messages, indexed by `Priority::index`.
    lanes: [Lane; 4],
    /// In-flight messages by lease deadline.
    deadlines: BTreeSet<(u64, Order)>,
    /// The lease id and holder of each in-flight message.
    leases: HashMap<Order, (LeaseId, ConsumerId)>,
    /// In-flight messages per consumer, in push order so a release is
    /// processed in the same order on every replica.
    consumers: HashMap<ConsumerId, BTreeSet<Order>>,
    /// Pending (waiting or ready) messages that expire, by expiry time.
    /// In-flight ones are left out: they are not removed while a consumer
    /// holds them, and leaving them out keeps `tick` from walking over them
    /// again and again.
    expiries: BTreeSet<(u64, Order)>,
    /// Pending (waiting or ready) messages per `Priority::index`.
    pending: [usize; 4],
}

impl Indexes {
    fn add(&mut self, order: Order, slot: &Slot, state: State) {
        match state {
            State::Waiting { due_ms } => {
                self.waiting.insert((due_ms, order));
            }
            State::Ready => {
                let lane = &mut self.lanes[slot.priority.index()];
                lane.set_for(slot.attempts).insert(order);
            }
            State::InFlight {
                lease_id,
                consumer,
                deadline_ms,
            } => {
                self.deadlines.insert((deadline_ms, order));
                self.leases.insert(order, (lease_id, consumer));
                self.consumers.entry(consumer).or_default().insert(order);
            }
        }
        if let (Some(at), false) = (slot.expires_at_ms, is_in_flight(state)) {
            self.expiries.insert((at, order));
        }
        if !is_in_flight(state) {
            self.pending[slot.priority.index()] += 1;
        }
    }

    fn remove(&mut self, order: Order, slot: &Slot, state: State) {
        match state {
            State::Waiting { due_ms } => {
                self.waiting.remove(&(due_ms, order));
            }
            State::Ready => {
                let lane = &mut self.lanes[slot.priority.index()];
                lane.set_for(slot.attempts).remove(&order);
            }
            State::InFlight {
                consumer,
                deadline_ms,
                ..
            } => {
                self.deadlines.remove(&(deadline_ms, order));
                self.leases.remove(&order);
                if let Some(orders) = self.consumers.get_mut(&consumer) {
                    orders.remove(&order);
                    // Forget idle consumers so their ids do not pile up.
                    if orders.is_empty() {
                        self.consumers.remove(&consumer);
                    }
                }
            }
        }
        if let (Some(at), false) = (slot.expires_at_ms, is_in_flight(state)) {
            self.expiries.remove(&(at, order));
        }
        if !is_in_flight(state) {
            self.pending[slot.priority.index()] -= 1;
        }
    }

    /// The full state of a slot: its phase plus, in flight, the lease details.
    fn state(&self, order: Order, slot: &Slot) -> State {
        match slot.phase {
            Phase::Waiting => State::Waiting { due_ms: slot.time_ms },
            Phase::Ready => State::Ready,
            Phase::InFlight => {
                // The side map is written together with the phase, so the
                // fallback is never taken; it only avoids a panic path.
                let (lease_id, consumer) = self.leases.get(&order).copied().unwrap_or_default();
                State::InFlight {
                    lease_id,
                    consumer,
                    deadline_ms: slot.time_ms,
                }
            }
        }
    }
}

fn is_in_flight(state: State) -> bool {
    matches!(state, State::InFlight { .. })
}

/// Writes a state's phase and time into a slot (the lease details go to the index).
fn apply(slot: &mut Slot, state: State) {
    (slot.phase, slot.time_ms) = match state {
        State::Waiting { due_ms } => (Phase::Waiting, due_ms),
        State::Ready => (Phase::Ready, 0),
        State::InFlight { deadline_ms, .. } => (Phase::InFlight, deadline_ms),
    };
}

/// Returns the first `(time, order)` of `set` when its time is at or before `now_ms`.
fn first_due(set: &BTreeSet<(u64, Order)>, now_ms: u64) -> Option<Order> {
    set.first()
        .filter(|(at, _)| *at <= now_ms)
        .map(|(_, order)| *order)
}

/// Slots and indexes, changed only through methods that keep them in step.
#[derive(Debug, Clone, Default)]
pub(super) struct Store {
    orders: HashMap<MessageKey, Order>,
    slots: HashMap<Order, Slot>,
    next_order: Order,
    index: Indexes,
}

impl Store {
    pub fn order_of(&self, key: &MessageKey) -> Option<Order> {
        self.orders.get(key).copied()
    }

    /// The orders of every message of `topic` held here, in no set order.
    pub fn orders_of<'a>(&'a self, topic: &'a TopicName) -> impl Iterator<Item = Order> + 'a {
        self.orders
            .iter()
            .filter(move |(key, _)| key.topic == *topic)
            .map(|(_, order)| *order)
    }

    pub fn slot(&self, order: Order) -> Option<&Slot> {
        self.slots.get(&order)
    }

    pub fn state(&self, order: Order) -> Option<State> {
        let slot = self.slots.get(&order)?;
        Some(self.index.state(order, slot))
    }

    /// Adds a message the caller has checked is not stored yet.
    pub fn insert(
        &mut self,
        key: MessageKey,
        priority: Priority,
        expires_at_ms: Option<u64>,
        attempts: u32,
        state: State,
    ) -> Order {
        let order = self.next_order;
        self.next_order = self.next_order.saturating_add(1);
        let mut slot = Slot {
            key,
            expires_at_ms,
            time_ms: 0,
            attempts,
            priority,
            phase: Phase::Ready,
        };
        apply(&mut slot, state);
        self.index.add(order, &slot, state);
        self.orders.insert(slot.key.clone(), order);
        self.slots.insert(order, slot);
        order
    }

    /// Moves a message to another state, re-indexing it.
    pub fn set_state(&mut self, order: Order, state: State) {
        if let Some(slot) = self.slots.get_mut(&order) {
            let old = self.index.state(order, slot);
            self.index.remove(order, slot, old);
            apply(slot, state);
            self.index.add(order, slot, state);
        }
    }

    /// Leases a message, counting the delivery attempt; returns the slot as leased.
    pub fn start_lease(&mut self, order: Order, state: State) -> Option<&Slot> {
        let slot = self.slots.get_mut(&order)?;
        // The lane depends on the attempt count, so un-index before counting.
        let old = self.index.state(order, slot);
        self.index.remove(order, slot, old);
        slot.attempts = slot.attempts.saturating_add(1);
        apply(slot, state);
        self.index.add(order, slot, state);
        Some(slot)
    }

    /// Forgets a message wherever it is; returns it with the state it was in.
    pub fn remove(&mut self, order: Order) -> Option<(Slot, State)> {
        let slot = self.slots.remove(&order)?;
        let state = self.index.state(order, &slot);
        self.index.remove(order, &slot, state);
        self.orders.remove(&slot.key);
        Some((slot, state))
    }

    pub fn has_ready(&self, priority: Priority) -> bool {
        let lane = &self.index.lanes[priority.index()];
        !lane.redeliveries.is_empty() || !lane.fresh.is_empty()
    }

    /// The next ready message of `priority`: redeliveries first, each set in push order.
    pub fn first_ready(&self, priority: Priority) -> Option<Order> {
        let lane = &self.index.lanes[priority.index()];
        let first = lane.redeliveries.first();
        first.or_else(|| lane.fresh.first()).copied()
    }

    pub fn due_deadline(&self, now_ms: u64) -> Option<Order> {
        first_due(&self.index.deadlines, now_ms)
    }

    pub fn due_waiting(&self, now_ms: u64) -> Option<Order> {
        first_due(&self.index.waiting, now_ms)
    }

    pub fn due_expiry(&self, now_ms: u64) -> Option<Order> {
        first_due(&self.index.expiries, now_ms)
    }

    /// The earliest time any timer index has something due.
    pub fn next_event_ms(&self) -> Option<u64> {
        let index = &self.index;
        [&index.waiting, &index.deadlines, &index.expiries]
            .into_iter()
            .filter_map(|set| set.first().map(|(at, _)| *at))
            .min()
    }

    /// The messages leased to `consumer`, in push order.
    pub fn leases_of(&self, consumer: ConsumerId) -> Vec<Order> {
        let orders = self.index.consumers.get(&consumer);
        orders.map(|o| o.iter().copied().collect()).unwrap_or_default()
    }

    pub fn lease_count(&self, consumer: ConsumerId) -> usize {
        self.index.consumers.get(&consumer).map_or(0, BTreeSet::len)
    }

    pub fn ready_len(&self) -> usize {
        let lanes = self.index.lanes.iter();
        lanes.map(|lane| lane.redeliveries.len() + lane.fresh.len()).sum()
    }

    pub fn in_flight_len(&self) -> usize {
        self.index.deadlines.len()
    }

    pub fn pending_of(&self, priority: Priority) -> usize {
        self.index.pending[priority.index()]
    }

    pub fn pending_len(&self) -> usize {
        self.slots.len() - self.index.deadlines.len()
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Checks, by brute force, that every slot sits in exactly the index its
    /// state names and nowhere else. For tests only: it is O(n²).
    #[cfg(test)]
    pub fn check_consistency(&self) {
        let ix = &self.index;
        assert_eq!(self.orders.len(), self.slots.len(), "key map and slots differ");
        let mut counts = [0usize; 3];
        let mut expiring = 0;
        for (order, slot) in &self.slots {
            assert_eq!(
                self.orders.get(&slot.key),
                Some(order),
                "key map points elsewhere"
            );
            let lane = &ix.lanes[slot.priority.index()];
            let laned = |l: &Lane| l.redeliveries.contains(order) || l.fresh.contains(order);
            let in_any_lane = ix.lanes.iter().any(laned);
            let waiting = ix.waiting.iter().filter(|(_, o)| o == order).count();
            let leased = ix.deadlines.iter().filter(|(_, o)| o == order).count();
            let state = ix.state(*order, slot);
            match state {
                State::Waiting { due_ms } => {
                    counts[0] += 1;
                    assert!(ix.waiting.contains(&(due_ms, *order)) && waiting == 1);
                    assert!(!in_any_lane && leased == 0, "waiting slot misplaced");
                }
                State::Ready => {
                    counts[1] += 1;
                    assert!(waiting == 0 && leased == 0, "ready slot misplaced");
                    let set = if slot.attempts > 0 {
                        &lane.redeliveries
                    } else {
                        &lane.fresh
                    };
                    assert!(set.contains(order), "ready slot in the wrong lane");
                }
                State::InFlight {
                    consumer,
                    deadline_ms,
                    ..
                } => {
                    counts[2] += 1;
                    assert!(ix.deadlines.contains(&(deadline_ms, *order)) && leased == 1);
                    assert!(waiting == 0 && !in_any_lane, "in-flight slot is also pending");
                    assert!(ix.leases.contains_key(order), "in-flight slot without lease");
                    let held = ix.consumers.get(&consumer);
                    assert!(held.is_some_and(|s| s.contains(order)), "holder lost it");
                }
            }
            if let (Some(at), false) = (slot.expires_at_ms, is_in_flight(state)) {
                expiring += 1;
                assert!(ix.expiries.contains(&(at, *order)), "expiring slot not indexed");
            }
        }
        let laned: usize = self.ready_len();
        let indexed = [ix.waiting.len(), laned, ix.deadlines.len()];
        assert_eq!(indexed, counts, "stale index entries");
        assert_eq!(ix.expiries.len(), expiring, "stale expiry entries");
        let mut pending = [0; 4];
        for slot in self.slots.values() {
            if slot.phase != Phase::InFlight {
                pending[slot.priority.index()] += 1;
            }
        }
        assert_eq!(ix.pending, pending, "stale pending counts");
        assert_eq!(ix.leases.len(), ix.deadlines.len(), "stale lease entries");
        let per_consumer: usize = ix.consumers.values().map(BTreeSet::len).sum();
        assert_eq!(per_consumer, ix.deadlines.len(), "stale consumer entries");
        assert!(ix.consumers.values().all(|s| !s.is_empty()), "idle consumer kept");
    }
}

//! A brute-force reference model of the queue rules, for the randomized test to compare against.

use std::collections::BTreeMap;

use crate::domain::limits::{MAX_ACK_DEADLINE_MS, MAX_DELAY_MS};
use crate::domain::{MessageKey, Priority, PriorityPolicy};
use crate::semantics::{
    ConsumerId, DeadLetter, DeadReason, Entry, Lease, LeaseId, QueueConfig, SettleError, WeightedRoundRobin,
    redelivery_delay_ms,
};

#[derive(Debug, Clone, Copy)]
pub(super) enum ModelState {
    /// Deliverable once the clock reaches `due`.
    Pending { due: u64 },
    InFlight {
        lease_id: LeaseId,
        consumer: ConsumerId,
        deadline: u64,
    },
}

#[derive(Debug, Clone)]
pub(super) struct ModelEntry {
    pub(super) key: MessageKey,
    pub(super) priority: Priority,
    pub(super) expires: Option<u64>,
    pub(super) attempts: u32,
    pub(super) state: ModelState,
}

impl ModelEntry {
    pub(super) fn expired(&self, now: u64) -> bool {
        self.expires.is_some_and(|at| at <= now)
    }
}

/// The rules written as plainly as possible: linear scans over a map in push order.
#[derive(Clone)]
pub(super) struct Model {
    pub(super) config: QueueConfig,
    pub(super) entries: BTreeMap<u64, ModelEntry>,
    pub(super) next_order: u64,
    pub(super) clock: u64,
    pub(super) next_lease_id: LeaseId,
    pub(super) picker: WeightedRoundRobin,
    pub(super) dead: Vec<DeadLetter>,
}

impl Model {
    pub(super) fn new(config: QueueConfig) -> Self {
        Self {
            config,
            entries: BTreeMap::new(),
            next_order: 0,
            clock: 0,
            next_lease_id: 1,
            picker: WeightedRoundRobin::new(),
            dead: Vec::new(),
        }
    }

    pub(super) fn find(&self, key: &MessageKey) -> Option<u64> {
        self.entries
            .iter()
            .find(|(_, e)| &e.key == key)
            .map(|(order, _)| *order)
    }

    pub(super) fn leased(&self, key: &MessageKey, lease_id: LeaseId) -> Result<u64, SettleError> {
        let order = self.find(key).ok_or(SettleError::NotInFlight)?;
        match self.entries[&order].state {
            ModelState::InFlight { lease_id: id, .. } if id == lease_id => Ok(order),
            _ => Err(SettleError::NotInFlight),
        }
    }

    pub(super) fn bury(&mut self, order: u64, reason: DeadReason) {
        if let Some(e) = self.entries.remove(&order) {
            self.dead.push(DeadLetter {
                key: e.key,
                reason,
                attempts: e.attempts,
            });
        }
    }

    pub(super) fn fail(&mut self, order: u64, delay: Option<u64>) {
        let e = &self.entries[&order];
        if e.expired(self.clock) {
            self.bury(order, DeadReason::Expired);
        } else if e.attempts >= self.config.max_deliveries {
            self.bury(order, DeadReason::MaxDeliveries);
        } else {
            let c = &self.config;
            let wait = delay.unwrap_or(redelivery_delay_ms(
                c.backoff_initial_ms,
                c.backoff_max_ms,
                e.attempts,
            ));
            let due = self.clock.saturating_add(wait);
            self.entries.get_mut(&order).expect("present").state = ModelState::Pending { due };
        }
    }

    pub(super) fn advance(&mut self, now: u64) {
        self.clock = self.clock.max(now);
        loop {
            let due = self.entries.iter().filter_map(|(o, e)| match e.state {
                ModelState::InFlight { deadline, .. } if deadline <= self.clock => Some((deadline, *o)),
                _ => None,
            });
            let Some((_, order)) = due.min() else { break };
            self.fail(order, None);
        }
        let mut expired: Vec<(u64, u64)> = self
            .entries
            .iter()
            .filter(|(_, e)| matches!(e.state, ModelState::Pending { .. }) && e.expired(self.clock))
            .map(|(o, e)| (e.expires.unwrap_or_default(), *o))
            .collect();
        expired.sort();
        for (_, order) in expired {
            self.bury(order, DeadReason::Expired);
        }
    }

    pub(super) fn ready(&self) -> impl Iterator<Item = (&u64, &ModelEntry)> {
        self.entries
            .iter()
            .filter(|(_, e)| matches!(e.state, ModelState::Pending { due } if due <= self.clock))
    }

    pub(super) fn push(&mut self, entry: Entry, attempts: u32) -> bool {
        if self.find(&entry.key).is_some() {
            return false;
        }
        let state = ModelState::Pending {
            due: entry.not_before_ms,
        };
        let e = ModelEntry {
            key: entry.key,
            priority: entry.priority,
            expires: entry.expires_at_ms,
            attempts,
            state,
        };
        self.entries.insert(self.next_order, e);
        self.next_order += 1;
        true
    }

    pub(super) fn next(&mut self, now: u64, consumer: ConsumerId) -> Option<Lease> {
        self.advance(now);
        let has = |p: Priority| self.ready().any(|(_, e)| e.priority == p);
        let ready: Vec<Priority> = Priority::DESCENDING.into_iter().filter(|p| has(*p)).collect();
        let priority = match self.config.policy {
            PriorityPolicy::Strict => ready.first().copied(),
            PriorityPolicy::Weighted => self.picker.pick(|p| ready.contains(&p)),
        }?;
        let in_priority = || self.ready().filter(|(_, e)| e.priority == priority);
        let order = in_priority()
            .find(|(_, e)| e.attempts > 0)
            .or_else(|| in_priority().next())
            .map(|(o, _)| *o)?;
        let lease_id = self.next_lease_id;
        self.next_lease_id += 1;
        let deadline = self.clock.saturating_add(self.config.ack_deadline_ms);
        let e = self.entries.get_mut(&order).expect("present");
        e.attempts += 1;
        e.state = ModelState::InFlight {
            lease_id,
            consumer,
            deadline,
        };
        Some(Lease {
            key: e.key.clone(),
            lease_id,
            attempt: e.attempts,
            consumer,
            deadline_ms: deadline,
            priority,
        })
    }

    pub(super) fn ack(&mut self, key: &MessageKey, lease_id: LeaseId) -> Result<Lease, SettleError> {
        let order = self.leased(key, lease_id)?;
        let e = self.entries.remove(&order).expect("present");
        let ModelState::InFlight {
            consumer, deadline, ..
        } = e.state
        else {
            return Err(SettleError::NotInFlight);
        };
        Ok(Lease {
            key: e.key,
            lease_id,
            attempt: e.attempts,
            consumer,
            deadline_ms: deadline,
            priority: e.priority,
        })
    }

    pub(super) fn nack(
        &mut self,
        key: &MessageKey,
        id: LeaseId,
        delay: Option<u64>,
        now: u64,
    ) -> Result<(), SettleError> {
        self.advance(now);
        let order = self.leased(key, id)?;
        self.fail(order, delay.map(|d| d.min(MAX_DELAY_MS)));
        Ok(())
    }

    pub(super) fn extend(
        &mut self,
        key: &MessageKey,
        id: LeaseId,
        ext: Option<u64>,
        now: u64,
    ) -> Result<u64, SettleError> {
        self.advance(now);
        let order = self.leased(key, id)?;
        let new = self.clock.saturating_add(
            ext.unwrap_or(self.config.ack_deadline_ms)
                .min(MAX_ACK_DEADLINE_MS),
        );
        if let ModelState::InFlight { deadline, .. } =
            &mut self.entries.get_mut(&order).expect("present").state
        {
            *deadline = new;
        }
        Ok(new)
    }

    pub(super) fn reject(&mut self, key: &MessageKey, id: LeaseId) -> Result<DeadLetter, SettleError> {
        let order = self.leased(key, id)?;
        let e = self.entries.remove(&order).expect("present");
        Ok(DeadLetter {
            key: e.key,
            reason: DeadReason::Rejected,
            attempts: e.attempts,
        })
    }

    pub(super) fn release(&mut self, consumer: ConsumerId, now: u64) {
        self.advance(now);
        let orders: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, e)| matches!(e.state, ModelState::InFlight { consumer: c, .. } if c == consumer))
            .map(|(o, _)| *o)
            .collect();
        for order in orders {
            self.fail(order, None);
        }
    }

    pub(super) fn remove(&mut self, key: &MessageKey) -> bool {
        self.find(key)
            .and_then(|order| self.entries.remove(&order))
            .is_some()
    }

    pub(super) fn wakeup(&self) -> Option<u64> {
        let times = self.entries.values().flat_map(|e| match e.state {
            ModelState::Pending { due } => [(due > self.clock).then_some(due), e.expires],
            ModelState::InFlight { deadline, .. } => [Some(deadline), None],
        });
        times.flatten().min()
    }

    pub(super) fn count(&self, in_flight: bool) -> usize {
        self.entries
            .values()
            .filter(|e| matches!(e.state, ModelState::InFlight { .. }) == in_flight)
            .count()
    }
}

//! How a dispatcher's backlog reaches memory: counted at the start, new
//! messages admitted while their window has room, the rest paged in from
//! the priority index as the window drains.

use crate::domain::{DeliveryGuarantee, MessageKey, Priority, Sequence, TopicName};
use crate::error::BrokerError;
use crate::semantics::Entry;
use crate::state::{PendingMessage, StoredRef};

use super::super::clock::now_ms;
use super::super::window::{MAX_PAGES_PER_REFILL, PAGE_ENTRIES};
use super::Dispatcher;

impl Dispatcher {
    /// A newly stored message: into memory, or left on disk for a later page.
    pub(super) fn stored(&mut self, stored: StoredRef) {
        // Read by a page before its own notice came, and settled since.
        if self.settling(&stored.key) {
            return;
        }
        let resident = self.queue.pending_of(stored.priority);
        if self.window.admit(&stored.key, stored.priority, resident) {
            let entry = Entry {
                key: stored.key,
                priority: stored.priority,
                not_before_ms: stored.not_before_ms,
                expires_at_ms: stored.expires_at_ms,
            };
            self.queue.push(entry, 0);
        }
    }

    /// An ack or a dead-lettering was applied.
    pub(super) fn acked(&mut self, key: MessageKey) {
        self.restored.remove(&key);
        let settling = self.committing.remove(&key) | self.burying.remove(&key);
        let resident = self.queue.remove(&key);
        if !settling && !resident {
            self.settled_on_disk(&key);
        }
    }

    /// Whether an ack or dead-lettering of the message is being committed:
    /// it must not be queued again meanwhile.
    pub(super) fn settling(&self, key: &MessageKey) -> bool {
        self.committing.contains(key) || self.burying.contains(key)
    }

    /// Pending messages, in memory and on disk.
    pub(super) fn backlog(&self) -> usize {
        self.queue.backlog() + self.window.unloaded() as usize
    }

    /// Finds the subscription's pending messages in storage: every lane
    /// starts on disk and the first pages come in. Exactly-once messages
    /// stored before now wait out one ack deadline: a consumer of the
    /// previous incarnation may still hold a valid lease on any of them.
    pub(super) fn recover(&mut self) -> Result<(), BrokerError> {
        let topics: Vec<(TopicName, Sequence)> = {
            let catalog = self.reader.machine().catalog();
            catalog
                .topics
                .values()
                .filter(|t| self.settings.pattern.matches(&t.name))
                .map(|t| (t.name.clone(), t.next_sequence))
                .collect()
        };
        let exactly_once = self.settings.delivery == DeliveryGuarantee::ExactlyOnce;
        if exactly_once {
            self.hold_until_ms = now_ms() + self.settings.ack_deadline_ms;
        }
        for (topic, end) in topics {
            let from = self.reader.cursor(&self.name, &topic)?;
            for priority in Priority::DESCENDING {
                let count = self.reader.count_pending(&self.name, &topic, priority, from)?;
                self.window
                    .start_on_disk(topic.clone(), priority, from, count, end);
            }
            if exactly_once {
                self.held.insert(topic, end);
            }
        }
        self.refill();
        Ok(())
    }

    /// Pages messages in for every priority whose window fell below half
    /// while some of it is on disk. Returns whether any came in.
    pub(super) fn refill(&mut self) -> bool {
        let mut loaded = false;
        for priority in Priority::DESCENDING {
            if !self.window.wants(priority, self.queue.pending_of(priority)) {
                continue;
            }
            for (topic, from) in self.window.lanes_of(priority) {
                loaded |= self.refill_lane(&topic, priority, from);
            }
        }
        loaded
    }

    /// Reads pages of one lane until the priority's window is full, the lane
    /// is all in memory, or `MAX_PAGES_PER_REFILL` pages were read.
    fn refill_lane(&mut self, topic: &TopicName, priority: Priority, mut from: Sequence) -> bool {
        let mut loaded = false;
        for _ in 0..MAX_PAGES_PER_REFILL {
            let room = self
                .window
                .limit()
                .saturating_sub(self.queue.pending_of(priority));
            if room == 0 {
                break;
            }
            let limit = room.min(PAGE_ENTRIES);
            let page = match self.reader.pending_page(&self.name, topic, priority, from, limit) {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(subscription = %self.name, "cannot page in {topic}: {e}");
                    return loaded;
                }
            };
            for message in &page.messages {
                loaded |= self.push_paged(message);
            }
            self.window.paged(topic, priority, &page);
            match page.next {
                Some(next) => from = next,
                None => break,
            }
        }
        loaded
    }

    /// Queues a message read from disk, unless its settling is under way.
    fn push_paged(&mut self, pending: &PendingMessage) -> bool {
        if self.settling(&pending.key) {
            return false;
        }
        let held = self
            .held
            .get(&pending.key.topic)
            .is_some_and(|end| pending.key.sequence < *end);
        let not_before_ms = match held {
            true => pending.not_before_ms.max(self.hold_until_ms),
            false => pending.not_before_ms,
        };
        let entry = Entry {
            key: pending.key.clone(),
            priority: pending.priority,
            not_before_ms,
            expires_at_ms: pending.expires_at_ms,
        };
        self.queue.push(entry, 0);
        true
    }

    /// A message that never was in memory was settled (an ack of a lease of
    /// a previous leader): the backlog count forgets it.
    pub(super) fn settled_on_disk(&mut self, key: &MessageKey) {
        let candidates = self.window.on_disk_at(key);
        let priority = match candidates.as_slice() {
            [] => return,
            [only] => *only,
            // Several lanes of the topic could hold it: its record decides.
            _ => match self.reader.message(key) {
                Ok(Some(message)) => message.priority,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(subscription = %self.name, "cannot read {key:?}: {e}");
                    return;
                }
            },
        };
        self.window.settled_on_disk(key, priority);
    }
}

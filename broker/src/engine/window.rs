//! Which part of a subscription's backlog its dispatcher keeps in memory:
//! up to a window of pending messages per priority; the rest stays on disk,
//! in the priority index, and is paged in as the window drains.

use std::collections::BTreeMap;

use crate::domain::{MessageKey, Priority, Sequence, TopicName};
use crate::state::PendingPage;

/// Index entries read per page.
pub const PAGE_ENTRIES: usize = 1_024;
/// Pages read per lane in one refill, so one refill stays short.
pub const MAX_PAGES_PER_REFILL: usize = 16;

/// One topic and priority whose pending messages from `next` on are on
/// disk only. A lane that is not in the window's map is all in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Lane {
    /// The first sequence not read from disk yet.
    next: Sequence,
    /// Pending messages known to be on disk only, for the backlog count.
    unloaded: u64,
    /// Stored messages below this sequence are counted in `unloaded` already.
    counted_until: Sequence,
}

/// The lanes on disk, and how many pending messages a priority may keep in memory.
#[derive(Debug, Clone)]
pub struct Window {
    limit: usize,
    lanes: BTreeMap<(TopicName, usize), Lane>,
}

impl Window {
    /// A window of `limit` pending messages per priority (at least 2).
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(2),
            lanes: BTreeMap::new(),
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// At a start: `unloaded` pending messages of `topic` and `priority`,
    /// from `from` on, are on disk; messages stored from `end` on are new.
    pub fn start_on_disk(
        &mut self,
        topic: TopicName,
        priority: Priority,
        from: Sequence,
        unloaded: u64,
        end: Sequence,
    ) {
        if unloaded == 0 {
            return;
        }
        let lane = Lane {
            next: from,
            unloaded,
            counted_until: end,
        };
        self.lanes.insert(lane_id(&topic, priority), lane);
    }

    /// Whether a newly stored message goes into memory now. It does not once
    /// its priority's window is full, nor while older messages of its lane
    /// wait on disk: they are read in order, it among them.
    pub fn admit(&mut self, key: &MessageKey, priority: Priority, resident: usize) -> bool {
        let id = lane_id(&key.topic, priority);
        match self.lanes.get_mut(&id) {
            // Already passed by a page: the queue ignores a key it holds.
            Some(lane) if key.sequence < lane.next => true,
            Some(lane) => {
                if key.sequence >= lane.counted_until {
                    lane.unloaded += 1;
                    lane.counted_until = key.sequence + 1;
                }
                false
            }
            None if resident < self.limit => true,
            None => {
                let lane = Lane {
                    next: key.sequence,
                    unloaded: 1,
                    counted_until: key.sequence + 1,
                };
                self.lanes.insert(id, lane);
                false
            }
        }
    }

    /// Whether `priority` should be refilled: its resident messages fell
    /// below half the window and some of its lanes are on disk.
    pub fn wants(&self, priority: Priority, resident: usize) -> bool {
        resident < self.limit / 2 && self.lanes.keys().any(|(_, p)| *p == priority.index())
    }

    /// The on-disk lanes of `priority` and where each goes on.
    pub fn lanes_of(&self, priority: Priority) -> Vec<(TopicName, Sequence)> {
        self.lanes
            .iter()
            .filter(|((_, p), _)| *p == priority.index())
            .map(|((topic, _), lane)| (topic.clone(), lane.next))
            .collect()
    }

    /// A page of a lane was read and its messages went into memory. The
    /// lane is all in memory once the index has no more.
    pub fn paged(&mut self, topic: &TopicName, priority: Priority, page: &PendingPage) {
        let id = lane_id(topic, priority);
        let Some(lane) = self.lanes.get_mut(&id) else {
            return;
        };
        match page.next {
            Some(next) => {
                lane.next = lane.next.max(next);
                lane.unloaded = lane.unloaded.saturating_sub(page.messages.len() as u64);
            }
            None => {
                self.lanes.remove(&id);
            }
        }
    }

    /// Whether the message could be on disk only: its lane is on disk from
    /// at or before it.
    fn may_hold(&self, key: &MessageKey, priority: Priority) -> bool {
        let id = lane_id(&key.topic, priority);
        self.lanes.get(&id).is_some_and(|lane| lane.next <= key.sequence)
    }

    /// The priorities whose lanes of `topic` are on disk at or before `sequence`.
    pub fn on_disk_at(&self, key: &MessageKey) -> Vec<Priority> {
        Priority::DESCENDING
            .into_iter()
            .filter(|p| self.may_hold(key, *p))
            .collect()
    }

    /// A message on disk was settled without passing through memory.
    pub fn settled_on_disk(&mut self, key: &MessageKey, priority: Priority) {
        if let Some(lane) = self.lanes.get_mut(&lane_id(&key.topic, priority))
            && lane.next <= key.sequence
        {
            lane.unloaded = lane.unloaded.saturating_sub(1);
        }
    }

    /// The topic is gone, and its messages with it.
    pub fn forget_topic(&mut self, topic: &TopicName) {
        self.lanes.retain(|(t, _), _| t != topic);
    }

    /// Pending messages on disk only.
    pub fn unloaded(&self) -> u64 {
        self.lanes.values().map(|lane| lane.unloaded).sum()
    }
}

/// The map key of a topic's lane of one priority.
fn lane_id(topic: &TopicName, priority: Priority) -> (TopicName, usize) {
    (topic.clone(), priority.index())
}

#[cfg(test)]
#[path = "window_tests.rs"]
mod tests;

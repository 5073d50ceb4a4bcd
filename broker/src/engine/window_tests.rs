//! The window's bookkeeping: what goes to memory, what stays on disk, and the count of it.

use super::*;
use crate::state::PendingMessage;

fn topic(name: &str) -> TopicName {
    TopicName::parse_any("topic", name).unwrap()
}

fn key(sequence: Sequence) -> MessageKey {
    MessageKey {
        topic: topic("t"),
        sequence,
    }
}

fn page(sequences: &[Sequence], next: Option<Sequence>) -> PendingPage {
    let messages = sequences
        .iter()
        .map(|s| PendingMessage {
            key: key(*s),
            priority: Priority::Low,
            not_before_ms: 0,
            expires_at_ms: None,
        })
        .collect();
    PendingPage { messages, next }
}

#[test]
fn messages_go_to_memory_until_the_window_is_full_then_stay_on_disk_in_order() {
    let mut window = Window::new(4);
    assert!(window.admit(&key(1), Priority::Low, 3));
    assert!(!window.admit(&key(2), Priority::Low, 4), "the window is full");
    // Room again, but 2 waits on disk: 3 must come after it.
    assert!(!window.admit(&key(3), Priority::Low, 0));
    assert_eq!(window.lanes_of(Priority::Low), vec![(topic("t"), 2)]);
    assert_eq!(window.unloaded(), 2);
    // Other priorities are not held back by a full low one.
    assert!(window.admit(&key(4), Priority::High, 0));
    assert!(window.lanes_of(Priority::High).is_empty());
}

#[test]
fn a_page_moves_the_lane_on_and_the_last_page_brings_it_back_to_memory() {
    let mut window = Window::new(4);
    window.start_on_disk(topic("t"), Priority::Low, 1, 5, 6);
    assert!(window.wants(Priority::Low, 1));
    assert!(!window.wants(Priority::Low, 2), "half full is enough");
    assert!(!window.wants(Priority::High, 0), "nothing of it is on disk");
    window.paged(&topic("t"), Priority::Low, &page(&[1, 3], Some(4)));
    assert_eq!(window.lanes_of(Priority::Low), vec![(topic("t"), 4)]);
    assert_eq!(window.unloaded(), 3);
    // A message stored late that the page already passed goes to memory (the
    // queue ignores one it holds); one counted at the start is not counted again.
    assert!(window.admit(&key(3), Priority::Low, 4));
    assert!(!window.admit(&key(5), Priority::Low, 0));
    assert_eq!(window.unloaded(), 3);
    assert!(!window.admit(&key(6), Priority::Low, 0));
    assert_eq!(window.unloaded(), 4, "6 is new");
    window.paged(&topic("t"), Priority::Low, &page(&[4, 5, 6], None));
    assert!(window.lanes_of(Priority::Low).is_empty());
    assert_eq!(window.unloaded(), 0);
    assert!(window.admit(&key(7), Priority::Low, 0));
}

#[test]
fn an_empty_lane_at_a_start_is_in_memory() {
    let mut window = Window::new(4);
    window.start_on_disk(topic("t"), Priority::Low, 1, 0, 1);
    assert!(window.lanes_of(Priority::Low).is_empty());
    assert!(window.admit(&key(1), Priority::Low, 0));
}

#[test]
fn settling_a_message_on_disk_counts_only_inside_an_on_disk_lane() {
    let mut window = Window::new(4);
    window.start_on_disk(topic("t"), Priority::Low, 10, 3, 20);
    assert_eq!(window.on_disk_at(&key(9)), vec![]);
    assert_eq!(window.on_disk_at(&key(12)), vec![Priority::Low]);
    window.settled_on_disk(&key(9), Priority::Low);
    assert_eq!(window.unloaded(), 3, "9 was not on disk");
    window.settled_on_disk(&key(12), Priority::Low);
    assert_eq!(window.unloaded(), 2);
    window.forget_topic(&topic("t"));
    assert_eq!(window.unloaded(), 0);
    assert!(window.lanes_of(Priority::Low).is_empty());
}

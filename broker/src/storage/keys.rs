//! Key layouts. Names cannot contain a zero byte, so `name \0 suffix` keys
//! sort by name, then by suffix; numbers are big-endian so they sort too.

use crate::domain::Sequence;

pub const SEPARATOR: u8 = 0;
/// An upper bound above every key the broker writes (keys are under 1 KiB):
/// the end of a scan or a range over a whole family.
pub const KEY_CEILING: [u8; 1024] = [0xff; 1024];

/// `prefix` + `name` + separator.
pub fn named(prefix: &[u8], name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + name.len() + 1);
    key.extend_from_slice(prefix);
    key.extend_from_slice(name.as_bytes());
    key.push(SEPARATOR);
    key
}

/// `named(prefix, name)` + big-endian `n`.
pub fn named_u64(prefix: &[u8], name: &str, n: u64) -> Vec<u8> {
    let mut key = named(prefix, name);
    key.extend_from_slice(&n.to_be_bytes());
    key
}

/// The first key after every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![u8::MAX; prefix.len() + 1]
}

/// Reads the big-endian u64 at the end of a key.
pub fn trailing_u64(key: &[u8]) -> Option<u64> {
    let start = key.len().checked_sub(8)?;
    Some(u64::from_be_bytes(key[start..].try_into().ok()?))
}

/// A message: topic, sequence.
pub fn message(topic: &str, sequence: Sequence) -> Vec<u8> {
    named_u64(b"", topic, sequence)
}

/// An ack marker: subscription, topic, sequence.
pub fn ack(subscription: &str, topic: &str, sequence: Sequence) -> Vec<u8> {
    let mut key = named(b"", subscription);
    key.extend_from_slice(&named_u64(b"", topic, sequence));
    key
}

/// A priority index entry: topic, priority rank, sequence. Every entry of
/// one topic and rank is under [`priority_lane`]'s prefix, in sequence order.
pub fn priority_entry(topic: &str, rank: u8, sequence: Sequence) -> Vec<u8> {
    let mut key = priority_lane(topic, rank);
    key.extend_from_slice(&sequence.to_be_bytes());
    key
}

/// The prefix of a topic's priority index entries of one rank.
pub fn priority_lane(topic: &str, rank: u8) -> Vec<u8> {
    let mut key = named(b"", topic);
    key.push(rank);
    key
}

/// A dedup entry: topic, id.
pub fn dedup(topic: &str, id: &str) -> Vec<u8> {
    let mut key = named(b"", topic);
    key.extend_from_slice(id.as_bytes());
    key
}

/// A dedup expiry entry: expiry time first, so a sweep reads the oldest.
pub fn dedup_expiry(expires_at_ms: u64, topic: &str, id: &str) -> Vec<u8> {
    let mut key = expires_at_ms.to_be_bytes().to_vec();
    key.extend_from_slice(&dedup(topic, id));
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_keys_sort_by_topic_then_sequence() {
        let mut keys = vec![
            message("b", 1),
            message("a", 300),
            message("a", 2),
            message("a.b", 1),
        ];
        keys.sort();
        assert_eq!(
            keys,
            vec![
                message("a", 2),
                message("a", 300),
                message("a.b", 1),
                message("b", 1)
            ]
        );
        assert_eq!(trailing_u64(&message("a", 300)), Some(300));
    }

    #[test]
    fn priority_entries_sort_by_topic_then_rank_then_sequence() {
        let mut keys = vec![
            priority_entry("a", 1, 1),
            priority_entry("a", 0, 300),
            priority_entry("a", 0, 2),
            priority_entry("a.b", 0, 1),
        ];
        keys.sort();
        assert_eq!(
            keys,
            vec![
                priority_entry("a", 0, 2),
                priority_entry("a", 0, 300),
                priority_entry("a", 1, 1),
                priority_entry("a.b", 0, 1),
            ]
        );
        let lane = priority_lane("a", 0);
        assert!(priority_entry("a", 0, u64::MAX) < prefix_end(&lane));
        assert!(priority_entry("a", 1, 0) >= prefix_end(&lane));
        assert!(priority_entry("a", 3, 9).starts_with(&named(b"", "a")));
    }

    #[test]
    fn prefix_end_bounds_the_prefix() {
        let prefix = named(b"", "topic");
        let end = prefix_end(&prefix);
        assert!(message("topic", u64::MAX) < end);
        assert!(message("topic0", 0) >= end || !message("topic0", 0).starts_with(&prefix));
        assert_eq!(prefix_end(&[1, 255]), vec![2]);
    }
}

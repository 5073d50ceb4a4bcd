//! Where a topic lives: the metadata group (0) holds the broker's own `$`
//! topics; every other topic hashes to one of a fixed number of shard
//! groups (1..=count), chosen when the cluster is created. A cluster of
//! no shards keeps every topic in group 0, as data directories made before
//! shards existed do.

use serde::{Deserialize, Serialize};

use super::{TopicName, ValidationError};

/// The most shards a cluster may have.
pub const MAX_SHARDS: u32 = 256;
/// The metadata group: membership, subscriptions, placement, `$` topics.
pub const META_GROUP: u32 = 0;

/// The number of shard groups of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shards(u32);

impl Shards {
    /// No shard groups: every topic lives in group 0.
    pub const NONE: Shards = Shards(0);

    pub fn new(field: &str, count: u32) -> Result<Self, ValidationError> {
        if count > MAX_SHARDS {
            return Err(ValidationError::new(
                field,
                format!("{count} shards: at most {MAX_SHARDS} are allowed"),
            ));
        }
        Ok(Self(count))
    }

    pub fn count(self) -> u32 {
        self.0
    }

    /// The group that holds `topic`. A fixed hash (FNV-1a): every node, of
    /// every version, must agree on it.
    pub fn group_of(self, topic: &TopicName) -> u32 {
        if topic.is_reserved() || self.0 == 0 {
            return META_GROUP;
        }
        let hash = fnv1a(topic.as_str().as_bytes());
        1 + (hash % u64::from(self.0)) as u32
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> TopicName {
        TopicName::parse_any("topic", name).unwrap()
    }

    #[test]
    fn shard_counts_are_validated() {
        assert_eq!(Shards::new("shards", MAX_SHARDS + 1).unwrap_err().field, "shards");
        assert_eq!(Shards::new("shards", 0).unwrap(), Shards::NONE);
        assert_eq!(Shards::new("shards", 8).unwrap().count(), 8);
    }

    #[test]
    fn the_broker_topics_live_in_the_metadata_group_and_no_shards_means_group_0() {
        let shards = Shards::new("shards", 8).unwrap();
        assert_eq!(shards.group_of(&topic("$cluster.events")), META_GROUP);
        assert_ne!(shards.group_of(&topic("orders.eu")), META_GROUP);
        assert_eq!(Shards::NONE.group_of(&topic("orders.eu")), META_GROUP);
    }

    #[test]
    fn the_hash_is_fixed_and_spreads_topics() {
        // Known FNV-1a values: a change here moves topics between shards.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let shards = Shards::new("shards", 8).unwrap();
        let mut used = std::collections::BTreeSet::new();
        for n in 0..200 {
            let group = shards.group_of(&topic(&format!("orders.{n}")));
            assert!((1..=8).contains(&group));
            used.insert(group);
        }
        assert_eq!(used.len(), 8, "200 topics reach every shard");
    }
}

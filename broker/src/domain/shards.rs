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
pub const META_GROUP: u32 = hermod_proto::routing::META_GROUP;

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

    /// The group that holds `topic`: the wire contract's fixed hash, which
    /// clients route by too.
    pub fn group_of(self, topic: &TopicName) -> u32 {
        hermod_proto::routing::group_of(topic.as_str(), self.0)
    }
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
    fn topics_are_placed_by_the_wire_contracts_hash() {
        let shards = Shards::new("shards", 8).unwrap();
        for n in 0..50 {
            let name = format!("orders.{n}");
            assert_eq!(
                shards.group_of(&topic(&name)),
                hermod_proto::routing::group_of(&name, 8)
            );
        }
    }
}

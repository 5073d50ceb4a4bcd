//! Which Raft group holds a topic: part of the wire contract, because
//! brokers place topics by it and clients route publishes by it.

/// The metadata group, which holds the broker's own `$` topics and, in a
/// cluster of no shards, every topic.
pub const META_GROUP: u32 = 0;
/// The first character of the topics the broker keeps for itself.
pub const RESERVED_PREFIX: char = '$';

/// The group of `topic` in a cluster of `shards` shard groups (1..=shards):
/// FNV-1a of the name, so every node and client, of every version, agrees.
pub fn group_of(topic: &str, shards: u32) -> u32 {
    if topic.starts_with(RESERVED_PREFIX) || shards == 0 {
        return META_GROUP;
    }
    1 + (fnv1a(topic.as_bytes()) % u64::from(shards)) as u32
}

/// The name a group goes by in the cluster's status: `main-0` for the
/// metadata group, `shard-N` for the others.
pub fn group_name(group: u32) -> String {
    if group == META_GROUP {
        format!("main-{META_GROUP}")
    } else {
        format!("shard-{group}")
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

    #[test]
    fn the_hash_is_fixed() {
        // Known FNV-1a values: a change here moves topics between shards.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(group_of("a", 8), 1 + (0xaf63_dc4c_8601_ec8c_u64 % 8) as u32);
    }

    #[test]
    fn broker_topics_and_unsharded_clusters_use_the_metadata_group() {
        assert_eq!(group_of("$cluster.events", 8), META_GROUP);
        assert_eq!(group_of("orders.eu", 0), META_GROUP);
        assert_ne!(group_of("orders.eu", 8), META_GROUP);
    }

    #[test]
    fn groups_are_named_as_the_status_shows_them() {
        assert_eq!(group_name(META_GROUP), "main-0");
        assert_eq!(group_name(3), "shard-3");
    }

    #[test]
    fn topics_spread_over_every_shard() {
        let mut used = std::collections::BTreeSet::new();
        for n in 0..200 {
            let group = group_of(&format!("orders.{n}"), 8);
            assert!((1..=8).contains(&group));
            used.insert(group);
        }
        assert_eq!(used.len(), 8, "200 topics reach every shard");
    }
}

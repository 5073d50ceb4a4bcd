//! The shard placement record, kept by group 0: how many shard groups the
//! cluster has and its replication factor (both fixed when it is first
//! written), and each shard's target replicas and preferred leader.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::storage::{Cf, StorageError};

use super::machine::Applier;

/// Where the record is kept in `Cf::Meta`.
pub const PLACEMENT_KEY: &[u8] = b"placement";

/// Where one shard should live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardTarget {
    pub replicas: BTreeSet<u64>,
    /// The replica that should lead it.
    pub leader: u64,
}

/// One shard in the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecord {
    pub target: ShardTarget,
    /// The node that initialises the shard's Raft group, and the members it
    /// initialises it with: the shard's first target, never changed after.
    /// Only the founder ever initialises the group, so two groups of one
    /// shard can never be formed.
    pub founder: u64,
    pub founders: BTreeSet<u64>,
}

/// The cluster's shards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementRecord {
    pub shards: u32,
    pub factor: u32,
    pub placed: BTreeMap<u32, ShardRecord>,
    /// Counts the changes, so a node can tell an old record from a new one.
    pub version: u64,
}

impl PlacementRecord {
    /// The targets of every shard now.
    pub fn targets(&self) -> BTreeMap<u32, BTreeSet<u64>> {
        self.placed
            .iter()
            .map(|(shard, record)| (*shard, record.target.replicas.clone()))
            .collect()
    }
}

impl Applier<'_, '_> {
    /// Records new targets. The first record fixes the number of shards and
    /// the factor, and founds every shard; later ones change targets of
    /// existing shards only. Returns the record as it stands.
    pub(super) fn place(
        &mut self,
        shards: u32,
        factor: u32,
        targets: &BTreeMap<u32, ShardTarget>,
    ) -> Result<PlacementRecord, StorageError> {
        let record = match self.catalog.placement.take() {
            None => PlacementRecord {
                shards,
                factor,
                placed: (1..=shards)
                    .filter_map(|shard| {
                        let target = targets.get(&shard).filter(|t| !t.replicas.is_empty())?;
                        Some((shard, found(target.clone())))
                    })
                    .collect(),
                version: 1,
            },
            Some(mut record) => {
                let mut changed = false;
                for (shard, target) in targets {
                    if *shard == 0 || *shard > record.shards || target.replicas.is_empty() {
                        continue;
                    }
                    match record.placed.get_mut(shard) {
                        Some(existing) if existing.target == *target => {}
                        Some(existing) => {
                            existing.target = target.clone();
                            changed = true;
                        }
                        None => {
                            record.placed.insert(*shard, found(target.clone()));
                            changed = true;
                        }
                    }
                }
                if changed {
                    record.version += 1;
                }
                record
            }
        };
        self.txn.put(Cf::Meta, PLACEMENT_KEY.to_vec(), &record);
        self.catalog.placement = Some(record.clone());
        Ok(record)
    }
}

/// A shard's first record: its founder is the leader it was first given.
fn found(target: ShardTarget) -> ShardRecord {
    ShardRecord {
        founder: target.leader,
        founders: target.replicas.clone(),
        target,
    }
}

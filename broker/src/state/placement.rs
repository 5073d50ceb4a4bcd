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
    /// initialises it with: the shard's target until it is founded, never
    /// changed after. Only the founder ever initialises the group, so two
    /// groups of one shard can never be formed.
    pub founder: u64,
    pub founders: BTreeSet<u64>,
    /// The database the founder claimed the founding from (its
    /// incarnation), once it did; a node that lost its database and kept
    /// its id claims with another one and so never founds the shard again.
    pub founded: Option<u64>,
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
                        Some(existing) if existing.founded.is_none() => {
                            // Not founded yet: its founder follows the target,
                            // so a founder that left never holds the shard up.
                            *existing = found(target.clone());
                            changed = true;
                        }
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

    /// Claims the founding of `shard` for the founder's database
    /// `incarnation`. The first claim wins; the same claim again is granted
    /// again (the founder restarted before it founded the shard). Returns
    /// whether this claim holds.
    pub(super) fn claim_founding(&mut self, shard: u32, incarnation: u64) -> Result<bool, StorageError> {
        let Some(mut record) = self.catalog.placement.take() else {
            return Ok(false);
        };
        let granted = match record.placed.get_mut(&shard) {
            Some(placed) if placed.founded.is_none() => {
                placed.founded = Some(incarnation);
                record.version += 1;
                true
            }
            Some(placed) => placed.founded == Some(incarnation),
            None => false,
        };
        self.txn.put(Cf::Meta, PLACEMENT_KEY.to_vec(), &record);
        self.catalog.placement = Some(record);
        Ok(granted)
    }
}

/// A shard's record before it is founded: its founder is the leader of
/// its target, with the target's replicas.
fn found(target: ShardTarget) -> ShardRecord {
    ShardRecord {
        founder: target.leader,
        founders: target.replicas.clone(),
        founded: None,
        target,
    }
}

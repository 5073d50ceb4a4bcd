//! The in-memory engine: ordered maps behind a lock, for fast deterministic tests.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::RwLock;

use super::{Batch, Cf, Entry, Frozen, Op, StorageError, Store};

/// One column family: keys in order.
type Family = BTreeMap<Vec<u8>, Vec<u8>>;

/// Every column family as an ordered map. Nothing survives the process.
#[derive(Default)]
pub struct MemoryStore {
    families: RwLock<HashMap<Cf, Family>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

/// A frozen in-memory store is a deep copy: tests keep their data small.
struct FrozenMemory(HashMap<Cf, Family>);

impl Frozen for FrozenMemory {
    fn scan(&self, cf: Cf, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<Entry>, StorageError> {
        Ok(scan_family(self.0.get(&cf), from, to, limit))
    }
}

fn scan_family(family: Option<&Family>, from: &[u8], to: &[u8], limit: usize) -> Vec<Entry> {
    if from >= to {
        return Vec::new();
    }
    family
        .map(|m| {
            m.range(range(from, to))
                .take(limit)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn range(from: &[u8], to: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    (Bound::Included(from.to_vec()), Bound::Excluded(to.to_vec()))
}

impl Store for MemoryStore {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let families = self
            .families
            .read()
            .expect("no writer panics while holding the lock");
        Ok(families.get(&cf).and_then(|m| m.get(key).cloned()))
    }

    fn write(&self, batch: Batch, _sync: bool) -> Result<(), StorageError> {
        let mut families = self
            .families
            .write()
            .expect("no writer panics while holding the lock");
        for op in batch.ops {
            match op {
                Op::Put(cf, k, v) => {
                    families.entry(cf).or_default().insert(k, v);
                }
                Op::Delete(cf, k) => {
                    families.entry(cf).or_default().remove(&k);
                }
                Op::DeleteRange(cf, from, to) => {
                    if from < to {
                        let map = families.entry(cf).or_default();
                        let doomed: Vec<_> = map.range(range(&from, &to)).map(|(k, _)| k.clone()).collect();
                        for k in doomed {
                            map.remove(&k);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn write_unlogged(&self, batch: Batch) -> Result<(), StorageError> {
        // Nothing here outlives the process: logged or not is all one.
        self.write(batch, false)
    }

    fn persist_unlogged(&self) -> Result<(), StorageError> {
        Ok(())
    }

    fn scan(&self, cf: Cf, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<Entry>, StorageError> {
        let families = self
            .families
            .read()
            .expect("no writer panics while holding the lock");
        Ok(scan_family(families.get(&cf), from, to, limit))
    }

    fn freeze(&self) -> Result<Box<dyn Frozen>, StorageError> {
        let families = self
            .families
            .read()
            .expect("no writer panics while holding the lock");
        Ok(Box::new(FrozenMemory(families.clone())))
    }

    fn last(&self, cf: Cf, from: &[u8], to: &[u8]) -> Result<Option<Entry>, StorageError> {
        if from >= to {
            return Ok(None);
        }
        let families = self
            .families
            .read()
            .expect("no writer panics while holding the lock");
        Ok(families.get(&cf).and_then(|m| {
            m.range(range(from, to))
                .next_back()
                .map(|(k, v)| (k.clone(), v.clone()))
        }))
    }

    fn sync(&self) -> Result<(), StorageError> {
        Ok(())
    }
}

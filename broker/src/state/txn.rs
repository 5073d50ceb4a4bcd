//! A write transaction over a store: reads see the transaction's own writes,
//! so many commands can be applied into one atomic batch.

use std::collections::HashMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::storage::{Batch, Cf, Entry, StorageError, Store, decode, encode};

/// Buffered changes plus an overlay for reading them back.
pub struct Txn<'a> {
    store: &'a dyn Store,
    batch: Batch,
    overlay: HashMap<(Cf, Vec<u8>), Option<Vec<u8>>>,
    /// Ranges deleted by this transaction: committed keys inside them are gone.
    deleted: Vec<(Cf, Vec<u8>, Vec<u8>)>,
}

impl<'a> Txn<'a> {
    pub fn new(store: &'a dyn Store) -> Self {
        Self {
            store,
            batch: Batch::default(),
            overlay: HashMap::new(),
            deleted: Vec::new(),
        }
    }

    pub fn store(&self) -> &'a dyn Store {
        self.store
    }

    pub fn get_raw(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        match self.overlay.get(&(cf, key.to_vec())) {
            Some(value) => Ok(value.clone()),
            None if self.range_deleted(cf, key) => Ok(None),
            None => self.store.get(cf, key),
        }
    }

    fn range_deleted(&self, cf: Cf, key: &[u8]) -> bool {
        self.deleted
            .iter()
            .any(|(c, from, to)| *c == cf && key >= from.as_slice() && key < to.as_slice())
    }

    pub fn get<T: DeserializeOwned>(&self, cf: Cf, key: &[u8]) -> Result<Option<T>, StorageError> {
        self.get_raw(cf, key)?.map(|bytes| decode(cf, &bytes)).transpose()
    }

    pub fn contains(&self, cf: Cf, key: &[u8]) -> Result<bool, StorageError> {
        Ok(self.get_raw(cf, key)?.is_some())
    }

    pub fn put<T: Serialize>(&mut self, cf: Cf, key: Vec<u8>, value: &T) {
        let bytes = encode(value);
        self.overlay.insert((cf, key.clone()), Some(bytes.clone()));
        self.batch.put(cf, key, bytes);
    }

    pub fn delete(&mut self, cf: Cf, key: Vec<u8>) {
        self.overlay.insert((cf, key.clone()), None);
        self.batch.delete(cf, key);
    }

    /// Deletes `[from, to)`. Overlay entries in the range are dropped too, so
    /// later reads in this transaction do not see them.
    pub fn delete_range(&mut self, cf: Cf, from: Vec<u8>, to: Vec<u8>) {
        self.overlay
            .retain(|(c, k), _| *c != cf || k.as_slice() < from.as_slice() || k.as_slice() >= to.as_slice());
        self.deleted.push((cf, from.clone(), to.clone()));
        self.batch.delete_range(cf, from, to);
    }

    /// Up to `limit` entries in `[from, to)` as this transaction sees them:
    /// committed entries less those it deleted, plus those it wrote. May
    /// return fewer than `limit` when it deleted some; callers that sweep
    /// in bounded steps simply continue on their next run.
    pub fn scan(&self, cf: Cf, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<Entry>, StorageError> {
        let mut merged: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = self
            .store
            .scan(cf, from, to, limit)?
            .into_iter()
            .filter(|(k, _)| !self.range_deleted(cf, k) && !self.overlay.contains_key(&(cf, k.clone())))
            .collect();
        for ((c, key), value) in &self.overlay {
            if *c == cf
                && key.as_slice() >= from
                && key.as_slice() < to
                && let Some(value) = value
            {
                merged.insert(key.clone(), value.clone());
            }
        }
        Ok(merged.into_iter().take(limit).collect())
    }

    pub fn into_batch(self) -> Batch {
        self.batch
    }
}

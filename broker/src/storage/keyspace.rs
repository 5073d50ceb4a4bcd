//! A keyspace: one Raft group's share of a store. The groups of a node share
//! one database — one write-ahead log, so one fsync covers them all —
//! without seeing each other's keys.
//!
//! Group 0 keeps the layout of a node with one group, so a data directory
//! from before shard groups opens unchanged: its keys are unprefixed, and
//! none of them starts with `0xff` (keys begin with a UTF-8 name, which
//! never holds that byte, or with a big-endian index or time far below
//! 2^56). Every other group's keys start with `0xff` and the group's id,
//! above all of group 0's.

use std::borrow::Cow;
use std::sync::Arc;

use super::{Batch, Cf, Entry, Frozen, Op, StorageError, Store};

/// The first byte of every key of a group other than group 0.
pub const GROUP_KEYS: u8 = 0xff;

/// The keys of one group inside a shared store.
pub struct Keyspace {
    store: Arc<dyn Store>,
    /// Empty for group 0; `0xff` and the big-endian group id otherwise.
    prefix: Vec<u8>,
}

impl Keyspace {
    pub fn new(store: Arc<dyn Store>, group: u32) -> Arc<Self> {
        Arc::new(Self {
            store,
            prefix: prefix_of(group),
        })
    }
}

fn prefix_of(group: u32) -> Vec<u8> {
    if group == 0 {
        return Vec::new();
    }
    let mut prefix = vec![GROUP_KEYS];
    prefix.extend_from_slice(&group.to_be_bytes());
    prefix
}

/// Maps the keys of one group to the shared store's and back; shared by
/// the live keyspace and its frozen copies.
#[derive(Clone)]
struct Mapping<'a>(&'a [u8]);

impl Mapping<'_> {
    /// A key to write or read. Group 0 refuses keys of the other groups'
    /// range, so a bug cannot reach into them.
    fn key<'k>(&self, cf: Cf, key: &'k [u8]) -> Result<Cow<'k, [u8]>, StorageError> {
        if self.0.is_empty() {
            if key.first() == Some(&GROUP_KEYS) {
                return Err(StorageError::Engine(format!(
                    "a key of group 0 in {} starts with 0x{GROUP_KEYS:x}, which belongs to other groups",
                    cf.name()
                )));
            }
            return Ok(Cow::Borrowed(key));
        }
        Ok(Cow::Owned([self.0, key].concat()))
    }

    /// The end of a range: group 0's ends stop below the other groups' keys.
    fn end<'k>(&self, end: &'k [u8]) -> Cow<'k, [u8]> {
        if self.0.is_empty() {
            if end > [GROUP_KEYS].as_slice() {
                return Cow::Owned(vec![GROUP_KEYS]);
            }
            return Cow::Borrowed(end);
        }
        Cow::Owned([self.0, end].concat())
    }

    /// The start of a range; a start group 0 could not hold is its end.
    fn start<'k>(&self, start: &'k [u8]) -> Cow<'k, [u8]> {
        self.end(start)
    }

    fn strip(&self, entries: Vec<Entry>) -> Vec<Entry> {
        if self.0.is_empty() {
            return entries;
        }
        entries
            .into_iter()
            .map(|(mut key, value)| {
                key.drain(..self.0.len());
                (key, value)
            })
            .collect()
    }

    /// The batch in the shared store's keys, changed in place: group 0's
    /// keys (every publish's) are checked, not copied.
    fn batch(&self, mut batch: Batch) -> Result<Batch, StorageError> {
        for op in &mut batch.ops {
            match op {
                Op::Put(cf, key, _) | Op::Delete(cf, key) => {
                    let mapped = owned(self.key(*cf, key)?);
                    replace(key, mapped);
                }
                Op::DeleteRange(_, from, to) => {
                    let (start, end) = (owned(self.start(from)), owned(self.end(to)));
                    replace(from, start);
                    replace(to, end);
                }
            }
        }
        Ok(batch)
    }

    fn scan(
        &self,
        source: impl Fn(&[u8], &[u8]) -> Result<Vec<Entry>, StorageError>,
        from: &[u8],
        to: &[u8],
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self.strip(source(&self.start(from), &self.end(to))?))
    }
}

/// A mapped key when the mapping had to build one.
fn owned(key: Cow<'_, [u8]>) -> Option<Vec<u8>> {
    match key {
        Cow::Owned(key) => Some(key),
        Cow::Borrowed(_) => None,
    }
}

fn replace(key: &mut Vec<u8>, mapped: Option<Vec<u8>>) {
    if let Some(mapped) = mapped {
        *key = mapped;
    }
}

impl Keyspace {
    fn mapping(&self) -> Mapping<'_> {
        Mapping(&self.prefix)
    }
}

impl Store for Keyspace {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.store.get(cf, &self.mapping().key(cf, key)?)
    }

    fn write(&self, batch: Batch, sync: bool) -> Result<(), StorageError> {
        self.store.write(self.mapping().batch(batch)?, sync)
    }

    fn scan(&self, cf: Cf, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<Entry>, StorageError> {
        let source = |from: &[u8], to: &[u8]| self.store.scan(cf, from, to, limit);
        self.mapping().scan(source, from, to)
    }

    fn last(&self, cf: Cf, from: &[u8], to: &[u8]) -> Result<Option<Entry>, StorageError> {
        let source = |from: &[u8], to: &[u8]| Ok(self.store.last(cf, from, to)?.into_iter().collect());
        Ok(self.mapping().scan(source, from, to)?.pop())
    }

    fn sync(&self) -> Result<(), StorageError> {
        self.store.sync()
    }

    fn write_unlogged(&self, batch: Batch) -> Result<(), StorageError> {
        self.store.write_unlogged(self.mapping().batch(batch)?)
    }

    fn persist_unlogged(&self) -> Result<(), StorageError> {
        self.store.persist_unlogged()
    }

    fn freeze(&self) -> Result<Box<dyn Frozen>, StorageError> {
        Ok(Box::new(FrozenKeyspace {
            frozen: self.store.freeze()?,
            prefix: self.prefix.clone(),
        }))
    }
}

/// A frozen copy of one group's keys.
struct FrozenKeyspace {
    frozen: Box<dyn Frozen>,
    prefix: Vec<u8>,
}

impl Frozen for FrozenKeyspace {
    fn scan(&self, cf: Cf, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<Entry>, StorageError> {
        let source = |from: &[u8], to: &[u8]| self.frozen.scan(cf, from, to, limit);
        Mapping(&self.prefix).scan(source, from, to)
    }
}

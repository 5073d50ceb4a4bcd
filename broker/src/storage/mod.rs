//! Storage: one key-value interface with two engines, RocksDB (the real one)
//! and an in-memory map (for fast, deterministic tests). Only this folder
//! touches rocksdb. A `Keyspace` gives each Raft group of a node its own
//! share of one store.

mod codec;
pub mod keys;
mod keyspace;
mod memory;
mod rocks;
#[cfg(test)]
mod suite;

pub use codec::{decode, encode};
pub use keyspace::{GROUP_KEYS, Keyspace};
pub use memory::MemoryStore;
pub use rocks::{DEFAULT_CACHE_BYTES, MIN_CACHE_BYTES, RocksStore};

/// The kinds of data, each in its own column family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cf {
    /// Topics, subscriptions, cursors and the state machine's applied position.
    Meta,
    /// Stored messages by topic and sequence.
    Messages,
    /// The dedup index: topic and message id to first sequence.
    Dedup,
    /// Dedup entries by expiry time, so the window is swept without a scan.
    DedupExpiry,
    /// Acknowledged (or dead-lettered) messages per subscription.
    Acks,
    /// Each topic's messages by priority, then sequence, with their timing:
    /// what a subscription pages its backlog in from, a priority at a time.
    Priorities,
    /// Raft log entries by index.
    RaftLog,
    /// Raft vote, committed and purged positions.
    RaftMeta,
}

impl Cf {
    pub const ALL: [Cf; 8] = [
        Cf::Meta,
        Cf::Messages,
        Cf::Dedup,
        Cf::DedupExpiry,
        Cf::Acks,
        Cf::Priorities,
        Cf::RaftLog,
        Cf::RaftMeta,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Cf::Meta => "meta",
            Cf::Messages => "messages",
            Cf::Dedup => "dedup",
            Cf::DedupExpiry => "dedup_expiry",
            Cf::Acks => "acks",
            Cf::Priorities => "priorities",
            Cf::RaftLog => "raft_log",
            Cf::RaftMeta => "raft_meta",
        }
    }
}

/// Storage failures. Corruption is never silently skipped.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    #[error("storage engine: {0}")]
    Engine(String),
    #[error("corrupt record in {cf}: {reason}")]
    Corruption { cf: &'static str, reason: String },
}

impl From<StorageError> for crate::error::BrokerError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::Engine(e) => Self::Storage(e),
            e @ StorageError::Corruption { .. } => Self::Corruption(e.to_string()),
        }
    }
}

/// One change inside a [`Batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put(Cf, Vec<u8>, Vec<u8>),
    Delete(Cf, Vec<u8>),
    /// Deletes every key in `[from, to)`.
    DeleteRange(Cf, Vec<u8>, Vec<u8>),
}

/// Changes written atomically: all or none, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub ops: Vec<Op>,
}

impl Batch {
    pub fn put(&mut self, cf: Cf, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push(Op::Put(cf, key, value));
    }

    pub fn delete(&mut self, cf: Cf, key: Vec<u8>) {
        self.ops.push(Op::Delete(cf, key));
    }

    pub fn delete_range(&mut self, cf: Cf, from: Vec<u8>, to: Vec<u8>) {
        self.ops.push(Op::DeleteRange(cf, from, to));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn append(&mut self, other: Batch) {
        self.ops.extend(other.ops);
    }
}

/// A key and its value, as returned by scans.
pub type Entry = (Vec<u8>, Vec<u8>);

/// A read-only copy of a whole store as of one moment, readable while the
/// store goes on changing: what a snapshot of the state is built from.
pub trait Frozen: Send + Sync + 'static {
    /// Up to `limit` entries with keys in `[from, to)`, in key order.
    fn scan(&self, cf: Cf, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<Entry>, StorageError>;
}

/// A key-value store with column families, atomic batches and ordered scans.
/// Calls block (RocksDB does I/O): call them from blocking threads.
pub trait Store: Send + Sync + 'static {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Writes the batch atomically; with `sync`, returns only once it is on
    /// stable storage (fsync).
    fn write(&self, batch: Batch, sync: bool) -> Result<(), StorageError>;

    /// Up to `limit` entries with keys in `[from, to)`, in key order.
    fn scan(&self, cf: Cf, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<Entry>, StorageError>;

    /// The entry with the greatest key in `[from, to)`.
    fn last(&self, cf: Cf, from: &[u8], to: &[u8]) -> Result<Option<Entry>, StorageError>;

    /// Makes every write done so far durable (fsync of the write-ahead log).
    /// One call covers all earlier writes: this is what group commit uses.
    fn sync(&self) -> Result<(), StorageError>;

    /// Writes the batch atomically without the write-ahead log: visible at
    /// once, but a crash may lose it (never part of it) until
    /// [`Store::persist_unlogged`]. For data that can be rebuilt from data
    /// that was logged: the state machine's writes, replayed from the Raft
    /// log. Writing it once instead of twice halves the log's bytes.
    fn write_unlogged(&self, batch: Batch) -> Result<(), StorageError>;

    /// Makes every unlogged write done so far durable, atomically across
    /// column families: after a crash the unlogged data is the state of one
    /// moment, never a mix. Called before the data it was rebuilt from is
    /// thrown away.
    fn persist_unlogged(&self) -> Result<(), StorageError>;

    /// A copy of every family as of now, unlogged writes included. It costs
    /// little memory: RocksDB's copy shares its files through hard links.
    fn freeze(&self) -> Result<Box<dyn Frozen>, StorageError>;
}

//! The Raft log in RocksDB, with group commit: entries are written as they
//! come, and one fsync thread makes every write so far durable before it
//! tells openraft — never before.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::{Arc, Weak};
use std::thread;

use crossbeam::channel::{Receiver, Sender, bounded};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{RaftLogId, RaftLogReader};

use crate::storage::{Batch, Cf, Store, decode, encode};

use super::types::{Entry, LogId, StorageError, TypeConfig, Vote, read_error, write_error};

/// Flush callbacks waiting for the fsync thread; a full queue slows openraft down.
const MAX_PENDING_FLUSHES: usize = 4096;
/// Most callbacks answered by one fsync.
const MAX_GROUP_COMMIT: usize = 1024;

const VOTE_KEY: &[u8] = b"vote";
const COMMITTED_KEY: &[u8] = b"committed";
const PURGED_KEY: &[u8] = b"purged";

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// The log store; clones share the same log.
#[derive(Clone)]
pub struct LogStore {
    store: Arc<dyn Store>,
    flushes: Sender<LogFlushed<TypeConfig>>,
    fsync: bool,
}

impl LogStore {
    /// Opens the log on `store`. With `fsync` off, appends are acknowledged
    /// once written to the operating system (an operator's explicit choice).
    pub fn new(store: Arc<dyn Store>, fsync: bool) -> Self {
        let (flushes, pending) = bounded(MAX_PENDING_FLUSHES);
        // A weak handle: the thread must not keep the database open after
        // everything else let go of it (RocksDB aborts if a process exits
        // with a database still open).
        let syncer = Arc::downgrade(&store);
        thread::Builder::new()
            .name("hermod-log-fsync".into())
            .spawn(move || run_fsync(syncer, pending, fsync))
            .expect("the fsync thread starts");
        Self {
            store,
            flushes,
            fsync,
        }
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        let bytes = self.store.get(Cf::RaftMeta, key).map_err(read_error)?;
        bytes
            .map(|b| decode(Cf::RaftMeta, &b))
            .transpose()
            .map_err(read_error)
    }

    fn put_meta<T: serde::Serialize>(&self, key: &[u8], value: &T, sync: bool) -> Result<(), StorageError> {
        let mut batch = Batch::default();
        batch.put(Cf::RaftMeta, key.to_vec(), encode(value));
        self.store.write(batch, sync && self.fsync).map_err(write_error)
    }
}

/// The fsync thread: waits for flush requests, syncs once for all that are
/// waiting, then answers them all.
fn run_fsync(store: Weak<dyn Store>, pending: Receiver<LogFlushed<TypeConfig>>, fsync: bool) {
    while let Ok(first) = pending.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP_COMMIT {
            match pending.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let result = match store.upgrade() {
            Some(store) if fsync => store.sync(),
            Some(_) => Ok(()),
            None => Err(crate::storage::StorageError::Engine(
                "the database is closed".into(),
            )),
        };
        metrics::histogram!(crate::metrics::FSYNC_BATCH).record(group.len() as f64);
        for callback in group {
            let outcome = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            callback.log_io_completed(outcome);
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        use std::ops::Bound;
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => i.saturating_add(1),
            Bound::Excluded(i) => *i,
            Bound::Unbounded => u64::MAX,
        };
        let entries = self
            .store
            .scan(Cf::RaftLog, &index_key(start), &index_key(end), usize::MAX)
            .map_err(read_error)?;
        entries
            .iter()
            .map(|(_, v)| decode(Cf::RaftLog, v).map_err(read_error))
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let purged: Option<LogId> = self.get_meta(PURGED_KEY)?;
        let last = self
            .store
            .last(Cf::RaftLog, &index_key(0), &index_key(u64::MAX))
            .map_err(read_error)?;
        let last_log_id = match last {
            Some((_, v)) => Some(*decode::<Entry>(Cf::RaftLog, &v).map_err(read_error)?.get_log_id()),
            None => purged,
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        // A vote must survive a crash, or a node could vote twice in one term.
        self.put_meta(VOTE_KEY, vote, true)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_meta(VOTE_KEY)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.put_meta(COMMITTED_KEY, &committed, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>(COMMITTED_KEY)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut batch = Batch::default();
        for entry in entries {
            batch.put(
                Cf::RaftLog,
                index_key(entry.get_log_id().index).to_vec(),
                encode(&entry),
            );
        }
        // Written now (visible to readers), made durable by the fsync thread.
        self.store.write(batch, false).map_err(write_error)?;
        self.flushes
            .send(callback)
            .map_err(|_| write_error(std::io::Error::other("the fsync thread stopped")))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = Batch::default();
        batch.delete_range(
            Cf::RaftLog,
            index_key(log_id.index).to_vec(),
            index_key(u64::MAX).to_vec(),
        );
        self.store.write(batch, self.fsync).map_err(write_error)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The state machine writes without the write-ahead log: these
        // entries are what rebuilds its state after a crash, so they go only
        // once that state is on disk.
        self.store.persist_unlogged().map_err(write_error)?;
        // The purge marker is written before the entries go, so a crash in
        // between never leaves a log that looks unpurged but has holes.
        self.put_meta(PURGED_KEY, &log_id, true)?;
        let mut batch = Batch::default();
        batch.delete_range(
            Cf::RaftLog,
            index_key(0).to_vec(),
            index_key(log_id.index + 1).to_vec(),
        );
        self.store.write(batch, false).map_err(write_error)
    }
}

//! The RocksDB engine: one column family per kind of data, fsync on demand,
//! memory bounded by one cache.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rocksdb::checkpoint::Checkpoint;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, Direction, FlushOptions, IteratorMode, Options,
    ReadOptions, WriteBatch, WriteBufferManager, WriteOptions,
};

use super::{Batch, Cf, Entry, Frozen, Op, StorageError, Store};

/// The memory RocksDB may use for cached blocks and write buffers together,
/// unless configured otherwise, in bytes.
pub const DEFAULT_CACHE_BYTES: u64 = 256 * 1024 * 1024;
/// The smallest cache that leaves each column family a useful write buffer, in bytes.
pub const MIN_CACHE_BYTES: u64 = 16 * 1024 * 1024;
/// The largest write buffer of one column family, in bytes.
const MAX_WRITE_BUFFER_BYTES: u64 = 32 * 1024 * 1024;

/// RocksDB on a local directory.
pub struct RocksStore {
    db: DB,
    /// Dropped after `db` (fields drop in order), which tells
    /// [`RocksStore::on_close`] waiters that the database is closed.
    closing: tokio::sync::watch::Sender<()>,
    options: Options,
    /// Where frozen copies are made: beside the database, on its file system,
    /// so they hard-link its files instead of copying them.
    frozen_root: PathBuf,
    frozen_count: AtomicU64,
}

fn engine(e: rocksdb::Error) -> StorageError {
    StorageError::Engine(e.to_string())
}

fn io(what: &str, path: &Path, e: std::io::Error) -> StorageError {
    StorageError::Engine(format!("cannot {what} {}: {e}", path.display()))
}

/// Options that keep RocksDB's memory within `cache_bytes`: one block cache
/// shared by every family, holding index and filter blocks too, and write
/// buffers charged to that same cache.
fn options(cache_bytes: u64) -> Options {
    let cache = Cache::new_lru_cache(cache_bytes as usize);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&cache);
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    let buffers =
        WriteBufferManager::new_write_buffer_manager_with_cache((cache_bytes / 2) as usize, false, cache);
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    options.set_compression_type(rocksdb::DBCompressionType::Lz4);
    options.set_block_based_table_factory(&table);
    options.set_write_buffer_manager(&buffers);
    let per_family = (cache_bytes / 2 / Cf::ALL.len() as u64).min(MAX_WRITE_BUFFER_BYTES);
    options.set_write_buffer_size(per_family as usize);
    // Checksums on every read guard against silent corruption of SST blocks.
    options.set_paranoid_checks(true);
    // Some writes skip the write-ahead log (`write_unlogged`): flushing
    // every family at once keeps what a crash leaves of them consistent.
    options.set_atomic_flush(true);
    options
}

impl RocksStore {
    /// Opens (or creates) the database in `dir` with the default cache.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        Self::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// Opens (or creates) the database in `dir`; block cache and write
    /// buffers together stay within `cache_bytes`.
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
        let options = options(cache_bytes.max(MIN_CACHE_BYTES));
        let families = Cf::ALL
            .iter()
            .map(|cf| ColumnFamilyDescriptor::new(cf.name(), options.clone()));
        let db = DB::open_cf_descriptors(&options, dir, families).map_err(engine)?;
        let frozen_root = PathBuf::from(format!("{}.frozen", dir.display()));
        // Copies left by a crash are of no use to anyone.
        match std::fs::remove_dir_all(&frozen_root) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io("remove", &frozen_root, e)),
            _ => {}
        }
        Ok(Self {
            db,
            closing: tokio::sync::watch::Sender::new(()),
            options,
            frozen_root,
            frozen_count: AtomicU64::new(0),
        })
    }

    /// A receiver whose `changed()` ends once this store is dropped and its
    /// database closed, whichever thread drops it: only then may the
    /// directory be opened again.
    pub fn on_close(&self) -> tokio::sync::watch::Receiver<()> {
        self.closing.subscribe()
    }

    fn handle(&self, cf: Cf) -> &rocksdb::ColumnFamily {
        handle(&self.db, cf)
    }

    fn rocks_batch(&self, batch: Batch) -> WriteBatch {
        let mut write = WriteBatch::default();
        for op in batch.ops {
            match op {
                Op::Put(cf, k, v) => write.put_cf(self.handle(cf), k, v),
                Op::Delete(cf, k) => write.delete_cf(self.handle(cf), k),
                Op::DeleteRange(cf, from, to) => write.delete_range_cf(self.handle(cf), from, to),
            }
        }
        write
    }
}

fn handle(db: &DB, cf: Cf) -> &rocksdb::ColumnFamily {
    db.cf_handle(cf.name())
        .expect("every column family is created at open")
}

fn bounded(from: &[u8], to: &[u8]) -> ReadOptions {
    // Without an upper bound an iterator runs past the range.
    let mut read = ReadOptions::default();
    read.set_iterate_lower_bound(from.to_vec());
    read.set_iterate_upper_bound(to.to_vec());
    read
}

fn scan(db: &DB, cf: Cf, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<Entry>, StorageError> {
    if from >= to {
        return Ok(Vec::new());
    }
    let iter = db.iterator_cf_opt(
        handle(db, cf),
        bounded(from, to),
        IteratorMode::From(from, Direction::Forward),
    );
    let mut out = Vec::new();
    for item in iter.take(limit) {
        let (k, v) = item.map_err(engine)?;
        out.push((k.into_vec(), v.into_vec()));
    }
    Ok(out)
}

/// A checkpoint of the database opened read-only; removed when dropped.
struct FrozenRocks {
    db: Option<DB>,
    dir: PathBuf,
}

impl Frozen for FrozenRocks {
    fn scan(&self, cf: Cf, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<Entry>, StorageError> {
        let db = self.db.as_ref().expect("open until dropped");
        scan(db, cf, from, to, limit)
    }
}

impl Drop for FrozenRocks {
    fn drop(&mut self) {
        // The database closes before its files go.
        drop(self.db.take());
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!("cannot remove frozen copy {}: {e}", self.dir.display());
        }
    }
}

impl Store for RocksStore {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.db.get_cf(self.handle(cf), key).map_err(engine)
    }

    fn write(&self, batch: Batch, sync: bool) -> Result<(), StorageError> {
        let mut options = WriteOptions::default();
        options.set_sync(sync);
        self.db
            .write_opt(self.rocks_batch(batch), &options)
            .map_err(engine)
    }

    fn write_unlogged(&self, batch: Batch) -> Result<(), StorageError> {
        let mut options = WriteOptions::default();
        options.disable_wal(true);
        self.db
            .write_opt(self.rocks_batch(batch), &options)
            .map_err(engine)
    }

    fn persist_unlogged(&self) -> Result<(), StorageError> {
        // With atomic flush (set at open) the families are flushed together.
        let families: Vec<_> = Cf::ALL.iter().map(|cf| self.handle(*cf)).collect();
        let mut options = FlushOptions::default();
        options.set_wait(true);
        self.db.flush_cfs_opt(&families, &options).map_err(engine)
    }

    fn freeze(&self) -> Result<Box<dyn Frozen>, StorageError> {
        std::fs::create_dir_all(&self.frozen_root).map_err(|e| io("create", &self.frozen_root, e))?;
        let n = self.frozen_count.fetch_add(1, Ordering::Relaxed);
        let dir = self.frozen_root.join(n.to_string());
        // A checkpoint flushes the write buffers first, so unlogged writes
        // are in it too.
        Checkpoint::new(&self.db)
            .and_then(|checkpoint| checkpoint.create_checkpoint(&dir))
            .map_err(engine)?;
        let names = Cf::ALL.iter().map(|cf| cf.name());
        let db = DB::open_cf_for_read_only(&self.options, &dir, names, false).map_err(engine)?;
        Ok(Box::new(FrozenRocks { db: Some(db), dir }))
    }

    fn scan(&self, cf: Cf, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<Entry>, StorageError> {
        scan(&self.db, cf, from, to, limit)
    }

    fn last(&self, cf: Cf, from: &[u8], to: &[u8]) -> Result<Option<Entry>, StorageError> {
        if from >= to {
            return Ok(None);
        }
        let mut iter = self
            .db
            .iterator_cf_opt(self.handle(cf), bounded(from, to), IteratorMode::End);
        match iter.next() {
            Some(item) => {
                let (k, v) = item.map_err(engine)?;
                Ok(Some((k.into_vec(), v.into_vec())))
            }
            None => Ok(None),
        }
    }

    fn sync(&self) -> Result<(), StorageError> {
        self.db.flush_wal(true).map_err(engine)
    }
}

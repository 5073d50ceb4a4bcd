//! The RocksDB engine: one column family per kind of data, fsync on demand.

use std::path::Path;

use rocksdb::{
    ColumnFamilyDescriptor, DB, Direction, FlushOptions, IteratorMode, Options, ReadOptions, WriteBatch,
    WriteOptions,
};

use super::{Batch, Cf, Entry, Op, StorageError, Store};

/// Memory RocksDB may use for write buffers per column family, in bytes.
const WRITE_BUFFER_BYTES: usize = 32 * 1024 * 1024;

/// RocksDB on a local directory.
pub struct RocksStore {
    db: DB,
}

fn engine(e: rocksdb::Error) -> StorageError {
    StorageError::Engine(e.to_string())
}

impl RocksStore {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StorageError::Engine(format!("cannot create {}: {e}", dir.display())))?;
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        options.set_write_buffer_size(WRITE_BUFFER_BYTES);
        // Checksums on every read guard against silent corruption of SST blocks.
        options.set_paranoid_checks(true);
        // Some writes skip the write-ahead log (`write_unlogged`): flushing
        // every family at once keeps what a crash leaves of them consistent.
        options.set_atomic_flush(true);
        let families = Cf::ALL
            .iter()
            .map(|cf| ColumnFamilyDescriptor::new(cf.name(), options.clone()));
        let db = DB::open_cf_descriptors(&options, dir, families).map_err(engine)?;
        Ok(Self { db })
    }

    fn handle(&self, cf: Cf) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(cf.name())
            .expect("every column family is created at open")
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

    fn bounded(from: &[u8], to: &[u8]) -> ReadOptions {
        // Without an upper bound an iterator runs past the range.
        let mut read = ReadOptions::default();
        read.set_iterate_lower_bound(from.to_vec());
        read.set_iterate_upper_bound(to.to_vec());
        read
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

    fn scan(&self, cf: Cf, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<Entry>, StorageError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let iter = self.db.iterator_cf_opt(
            self.handle(cf),
            Self::bounded(from, to),
            IteratorMode::From(from, Direction::Forward),
        );
        let mut out = Vec::new();
        for item in iter.take(limit) {
            let (k, v) = item.map_err(engine)?;
            out.push((k.into_vec(), v.into_vec()));
        }
        Ok(out)
    }

    fn last(&self, cf: Cf, from: &[u8], to: &[u8]) -> Result<Option<Entry>, StorageError> {
        if from >= to {
            return Ok(None);
        }
        let mut iter = self
            .db
            .iterator_cf_opt(self.handle(cf), Self::bounded(from, to), IteratorMode::End);
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

//! Snapshot files on disk: built from a frozen copy of the state, installed
//! in bounded batches, and an install cut short by a crash finished at the
//! next start.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::snapshot_file;
use super::state_machine::{APPLIED_KEY, AppliedState};
use crate::state::FAMILIES;
use crate::storage::keys::KEY_CEILING;
use crate::storage::{Batch, Cf, Frozen, Store, decode, encode};

/// Present while an install is under way: which file, and the position it
/// brings the state to.
const INSTALLING_KEY: &[u8] = b"raft/installing";
/// The most record bytes an install writes in one batch.
const INSTALL_BATCH_BYTES: usize = 4 * 1024 * 1024;

#[derive(Serialize, Deserialize)]
struct InstallMarker {
    file: PathBuf,
    applied: AppliedState,
}

fn storage(e: crate::storage::StorageError) -> io::Error {
    io::Error::other(e)
}

/// The directory of this node's snapshot files.
pub struct SnapshotDir {
    dir: PathBuf,
    next: AtomicU64,
}

impl SnapshotDir {
    /// Opens `dir`, finishes an install a crash interrupted (returning the
    /// position it brought the state to) and removes every other file: a
    /// snapshot is rebuilt when one is needed.
    pub fn open(dir: &Path, store: &dyn Store) -> io::Result<(Self, Option<AppliedState>)> {
        std::fs::create_dir_all(dir)?;
        let finished = match store.get(Cf::Meta, INSTALLING_KEY).map_err(storage)? {
            Some(bytes) => {
                let marker: InstallMarker = decode(Cf::Meta, &bytes).map_err(storage)?;
                tracing::warn!(
                    "finishing the snapshot install a crash interrupted ({})",
                    marker.file.display()
                );
                install(store, &marker.file, &marker.applied)?;
                Some(marker.applied)
            }
            None => None,
        };
        // Folders are other groups' snapshot directories.
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if !entry.file_type()?.is_dir() {
                std::fs::remove_file(entry.path())?;
            }
        }
        let next = AtomicU64::new(0);
        let dir = dir.to_path_buf();
        Ok((Self { dir, next }, finished))
    }

    /// A path no other file of this directory has, named after `kind`.
    pub fn fresh(&self, kind: &str) -> PathBuf {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("{kind}-{n}"))
    }

    /// Makes the directory's entries (new and renamed files) durable.
    pub fn sync(&self) -> io::Result<()> {
        std::fs::File::open(&self.dir)?.sync_all()
    }
}

/// Writes the replicated families of `frozen` into a file at `path`, durably.
pub fn build(frozen: &dyn Frozen, dir: &SnapshotDir, path: &Path) -> io::Result<()> {
    snapshot_file::write(frozen, &FAMILIES, path)?;
    dir.sync()
}

/// Replaces the replicated state with the file's, at position `applied`.
/// The file is checked whole before anything changes. From the first write
/// on, a marker names the file, so a crash part-way leaves a state that the
/// next start completes rather than a mix of old and new.
pub fn install(store: &dyn Store, file: &Path, applied: &AppliedState) -> io::Result<()> {
    begin_install(store, file, applied)?;
    finish_install(store, file, applied)
}

/// Checks the file, then clears the state and leaves the marker, atomically.
fn begin_install(store: &dyn Store, file: &Path, applied: &AppliedState) -> io::Result<()> {
    snapshot_file::read(file, &FAMILIES, |_, _, _| Ok(()))?;
    let mut batch = Batch::default();
    for cf in FAMILIES {
        batch.delete_range(cf, Vec::new(), KEY_CEILING.to_vec());
    }
    let marker = InstallMarker {
        file: file.to_path_buf(),
        applied: applied.clone(),
    };
    batch.put(Cf::Meta, INSTALLING_KEY.to_vec(), encode(&marker));
    store.write(batch, true).map_err(storage)
}

/// Writes every record of the file, then the position, and removes the
/// marker. Writing a record twice changes nothing, so after a crash this
/// simply runs again from the start of the file.
fn finish_install(store: &dyn Store, file: &Path, applied: &AppliedState) -> io::Result<()> {
    let mut batch = Batch::default();
    let mut bytes = 0;
    snapshot_file::read(file, &FAMILIES, |cf, key, value| {
        bytes += key.len() + value.len();
        batch.put(cf, key, value);
        if bytes >= INSTALL_BATCH_BYTES {
            store.write(std::mem::take(&mut batch), false).map_err(storage)?;
            bytes = 0;
        }
        Ok(())
    })?;
    batch.put(Cf::Meta, APPLIED_KEY.to_vec(), encode(applied));
    batch.delete(Cf::Meta, INSTALLING_KEY.to_vec());
    store.write(batch, true).map_err(storage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{MemoryStore, RocksStore};

    fn put(store: &dyn Store, cf: Cf, key: &[u8], value: &[u8]) {
        let mut batch = Batch::default();
        batch.put(cf, key.to_vec(), value.to_vec());
        store.write(batch, true).unwrap();
    }

    #[test]
    fn an_install_cut_short_by_a_crash_is_finished_at_the_next_start() {
        let source = MemoryStore::new();
        put(&source, Cf::Messages, b"kept", b"from the snapshot");
        put(&source, Cf::Acks, b"ack", b"1");
        let dir = tempfile::tempdir().unwrap();
        let (snapshots, _) = SnapshotDir::open(&dir.path().join("snapshots"), &source).unwrap();
        let file = snapshots.fresh("snapshot");
        build(source.freeze().unwrap().as_ref(), &snapshots, &file).unwrap();
        let applied = AppliedState::default();
        {
            let target = RocksStore::open(&dir.path().join("db")).unwrap();
            put(&target, Cf::Messages, b"stale", b"not in the snapshot");
            // The crash comes after the state was cleared, before any record.
            begin_install(&target, &file, &applied).unwrap();
        }
        let target = RocksStore::open(&dir.path().join("db")).unwrap();
        let (_, finished) = SnapshotDir::open(&dir.path().join("snapshots"), &target).unwrap();
        assert!(finished.is_some(), "the interrupted install is reported");
        assert_eq!(target.get(Cf::Messages, b"stale").unwrap(), None);
        assert_eq!(
            target.get(Cf::Messages, b"kept").unwrap(),
            Some(b"from the snapshot".to_vec())
        );
        assert_eq!(target.get(Cf::Acks, b"ack").unwrap(), Some(b"1".to_vec()));
        assert_eq!(target.get(Cf::Meta, INSTALLING_KEY).unwrap(), None);
        assert!(target.get(Cf::Meta, APPLIED_KEY).unwrap().is_some());
        assert_eq!(
            std::fs::read_dir(dir.path().join("snapshots")).unwrap().count(),
            0
        );
    }

    #[test]
    fn a_damaged_file_changes_nothing() {
        let source = MemoryStore::new();
        put(&source, Cf::Messages, b"new", b"value");
        let dir = tempfile::tempdir().unwrap();
        let (snapshots, _) = SnapshotDir::open(dir.path(), &source).unwrap();
        let file = snapshots.fresh("snapshot");
        build(source.freeze().unwrap().as_ref(), &snapshots, &file).unwrap();
        let mut bytes = std::fs::read(&file).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&file, bytes).unwrap();
        let target = MemoryStore::new();
        put(&target, Cf::Messages, b"old", b"value");
        assert!(install(&target, &file, &AppliedState::default()).is_err());
        assert_eq!(target.get(Cf::Messages, b"old").unwrap(), Some(b"value".to_vec()));
        assert_eq!(target.get(Cf::Meta, INSTALLING_KEY).unwrap(), None);
    }
}

//! openraft's view of Hermod's state machine: applies committed entries in
//! one storage batch with the applied position, and builds and installs
//! snapshots as files (`snapshots.rs`), never as one buffer in memory.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, RaftLogId, RaftSnapshotBuilder, SnapshotMeta, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio::fs::File;
use tokio::io::AsyncSeekExt;
use tokio::sync::mpsc;

use crate::state::{Applied, Command, Response, StateMachine, Txn};
use crate::storage::{Cf, Frozen, decode, encode};

use super::snapshots::{self, SnapshotDir};
use super::types::{Entry, LogId, NodeId, StorageError, StoredMembership, TypeConfig};

pub(super) const APPLIED_KEY: &[u8] = b"raft/applied";

/// The last applied entry and membership, stored atomically with the data.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct AppliedState {
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

/// The openraft adapter around [`StateMachine`].
pub struct StateMachineStore {
    machine: StateMachine,
    applied: AppliedState,
    events: mpsc::Sender<Vec<Applied>>,
    snapshots: Arc<SnapshotDir>,
    current: Arc<Mutex<Option<CurrentSnapshot>>>,
    /// The file a snapshot from the leader is being received into.
    receiving: Option<PathBuf>,
    snapshot_counter: u64,
}

type Meta = SnapshotMeta<NodeId, openraft::BasicNode>;
type CurrentSnapshot = (Meta, PathBuf);

/// Builds a snapshot from a copy of the state frozen when it was asked for,
/// so the copy and its applied position agree even while applying goes on.
pub struct SnapshotBuilder {
    frozen: Option<Result<Box<dyn Frozen>, crate::storage::StorageError>>,
    applied: AppliedState,
    id: u64,
    snapshots: Arc<SnapshotDir>,
    current: Arc<Mutex<Option<CurrentSnapshot>>>,
}

fn sm_error(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

fn snapshot_error(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_snapshot(None, &e).into()
}

/// Makes `path` the current snapshot and removes the file it replaces (a
/// reader that has it open keeps reading it).
fn replace_current(current: &Mutex<Option<CurrentSnapshot>>, meta: Meta, path: PathBuf) {
    let old = current
        .lock()
        .expect("snapshot lock")
        .replace((meta, path.clone()));
    if let Some((_, old_path)) = old.filter(|(_, old_path)| *old_path != path)
        && let Err(e) = std::fs::remove_file(&old_path)
    {
        tracing::warn!("cannot remove snapshot {}: {e}", old_path.display());
    }
}

impl StateMachineStore {
    /// Wraps `machine`, keeping snapshot files in `snapshot_dir`; applied
    /// changes are sent to `events` for the delivery side.
    pub fn new(
        machine: StateMachine,
        events: mpsc::Sender<Vec<Applied>>,
        snapshot_dir: &Path,
    ) -> Result<Self, StorageError> {
        let (snapshots, finished) =
            SnapshotDir::open(snapshot_dir, machine.store().as_ref()).map_err(sm_error)?;
        if finished.is_some() {
            machine.reload().map_err(sm_error)?;
        }
        let applied = match machine.store().get(Cf::Meta, APPLIED_KEY).map_err(sm_error)? {
            Some(bytes) => decode(Cf::Meta, &bytes).map_err(sm_error)?,
            None => AppliedState::default(),
        };
        Ok(Self {
            machine,
            applied,
            events,
            snapshots: Arc::new(snapshots),
            current: Arc::default(),
            receiving: None,
            snapshot_counter: 0,
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let frozen = self
            .frozen
            .take()
            .ok_or_else(|| snapshot_error(std::io::Error::other("snapshot already built")))?
            .map_err(snapshot_error)?;
        let last = self.applied.last_applied;
        let snapshot_id = match last {
            Some(id) => format!("{}-{}-{}", id.leader_id, id.index, self.id),
            None => format!("empty-{}", self.id),
        };
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: self.applied.membership.clone(),
            snapshot_id,
        };
        let path = self.snapshots.fresh("snapshot");
        let (dir, target) = (self.snapshots.clone(), path.clone());
        // Writing gigabytes takes a while: off the async threads.
        tokio::task::spawn_blocking(move || snapshots::build(frozen.as_ref(), &dir, &target))
            .await
            .map_err(snapshot_error)?
            .map_err(snapshot_error)?;
        let file = File::open(&path).await.map_err(snapshot_error)?;
        replace_current(&self.current, meta.clone(), path);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.applied.last_applied, self.applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let Some(last) = entries.last() else {
            return Ok(Vec::new());
        };
        self.applied.last_applied = Some(*last.get_log_id());
        let mut commands: Vec<Option<&Command>> = Vec::with_capacity(entries.len());
        for entry in &entries {
            match &entry.payload {
                EntryPayload::Normal(command) => commands.push(Some(command)),
                EntryPayload::Membership(membership) => {
                    self.applied.membership = StoredMembership::new(Some(entry.log_id), membership.clone());
                    commands.push(None);
                }
                EntryPayload::Blank => commands.push(None),
            }
        }
        let store = self.machine.store().clone();
        let mut txn = Txn::new(store.as_ref());
        let mut out = Vec::new();
        let responses = self
            .machine
            .apply_all(&mut txn, commands, &mut out)
            .map_err(sm_error)?;
        let mut batch = txn.into_batch();
        batch.put(Cf::Meta, APPLIED_KEY.to_vec(), encode(&self.applied));
        // Not even the write-ahead log: the Raft log holds every command, so
        // what a crash loses of this is applied again from it. The log is
        // purged only once this is persisted (`LogStore::purge`).
        store.write_unlogged(batch).map_err(sm_error)?;
        if !out.is_empty() {
            // A closed receiver means the node is shutting down; nothing to tell.
            let _ = self.events.send(out).await;
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshot_counter += 1;
        SnapshotBuilder {
            frozen: Some(self.machine.store().freeze()),
            applied: self.applied.clone(),
            id: self.snapshot_counter,
            snapshots: self.snapshots.clone(),
            current: self.current.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<File>, StorageError> {
        let path = self.snapshots.fresh("incoming");
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(snapshot_error)?;
        if let Some(earlier) = self.receiving.replace(path) {
            let _ = std::fs::remove_file(earlier);
        }
        Ok(Box::new(file))
    }

    async fn install_snapshot(&mut self, meta: &Meta, mut snapshot: Box<File>) -> Result<(), StorageError> {
        // The handle may be any file holding the snapshot (openraft's own
        // suite hands over another node's): copy it into a file of ours.
        let path = self.snapshots.fresh("snapshot");
        let mut copy = File::create(&path).await.map_err(snapshot_error)?;
        snapshot.seek(SeekFrom::Start(0)).await.map_err(snapshot_error)?;
        tokio::io::copy(&mut *snapshot, &mut copy)
            .await
            .map_err(snapshot_error)?;
        copy.sync_all().await.map_err(snapshot_error)?;
        drop((snapshot, copy));
        if let Some(incoming) = self.receiving.take() {
            let _ = std::fs::remove_file(incoming);
        }
        self.snapshots.sync().map_err(snapshot_error)?;
        let applied = AppliedState {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        let (store, file, state) = (self.machine.store().clone(), path.clone(), applied.clone());
        tokio::task::spawn_blocking(move || snapshots::install(store.as_ref(), &file, &state))
            .await
            .map_err(sm_error)?
            .map_err(sm_error)?;
        self.applied = applied;
        self.machine.reload().map_err(sm_error)?;
        replace_current(&self.current, meta.clone(), path);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let current = self.current.lock().expect("snapshot lock").clone();
        match current {
            Some((meta, path)) => {
                let file = File::open(&path).await.map_err(snapshot_error)?;
                Ok(Some(Snapshot {
                    meta,
                    snapshot: Box::new(file),
                }))
            }
            None => Ok(None),
        }
    }
}

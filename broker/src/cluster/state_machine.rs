//! openraft's view of Hermod's state machine: applies committed entries in
//! one storage batch with the applied position, and builds and installs
//! snapshots of the replicated column families.

use std::io::Cursor;
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, RaftLogId, RaftSnapshotBuilder, SnapshotMeta, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::state::{Applied, Command, Response, StateMachine, Txn};
use crate::storage::{Batch, Cf, decode, encode};

use super::types::{Entry, LogId, NodeId, StorageError, StoredMembership, TypeConfig};

const APPLIED_KEY: &[u8] = b"raft/applied";
/// The column families that make up the replicated state.
const STATE_FAMILIES: [Cf; 5] = [Cf::Meta, Cf::Messages, Cf::Dedup, Cf::DedupExpiry, Cf::Acks];
/// An upper bound above every key the broker writes (keys are under 1 KiB).
const KEY_CEILING: [u8; 1024] = [0xff; 1024];

/// The last applied entry and membership, stored atomically with the data.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct AppliedState {
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

/// Every key and value of one column family, tagged by its place in `STATE_FAMILIES`.
type FamilyImage = (u8, Vec<(Vec<u8>, Vec<u8>)>);

/// A snapshot: the applied state and every key of the replicated families.
#[derive(Serialize, Deserialize)]
struct SnapshotImage {
    applied: AppliedState,
    families: Vec<FamilyImage>,
}

/// The openraft adapter around [`StateMachine`].
pub struct StateMachineStore {
    machine: StateMachine,
    applied: AppliedState,
    events: mpsc::Sender<Vec<Applied>>,
    current: Arc<Mutex<Option<CurrentSnapshot>>>,
    snapshot_counter: u64,
}

type CurrentSnapshot = (SnapshotMeta<NodeId, openraft::BasicNode>, Vec<u8>);

/// Builds a snapshot from an image taken when it was asked for, so the image
/// and its applied position agree even while applying goes on.
pub struct SnapshotBuilder {
    image: Result<Vec<u8>, StorageError>,
    applied: AppliedState,
    id: u64,
    current: Arc<Mutex<Option<CurrentSnapshot>>>,
}

fn sm_error(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

impl StateMachineStore {
    /// Wraps `machine`; applied changes are sent to `events` for the delivery side.
    pub fn new(machine: StateMachine, events: mpsc::Sender<Vec<Applied>>) -> Result<Self, StorageError> {
        let applied = match machine.store().get(Cf::Meta, APPLIED_KEY).map_err(sm_error)? {
            Some(bytes) => decode(Cf::Meta, &bytes).map_err(sm_error)?,
            None => AppliedState::default(),
        };
        Ok(Self {
            machine,
            applied,
            events,
            current: Arc::default(),
            snapshot_counter: 0,
        })
    }

    fn image(&self) -> Result<Vec<u8>, StorageError> {
        let store = self.machine.store();
        let mut families = Vec::new();
        for (index, cf) in STATE_FAMILIES.iter().enumerate() {
            let entries = store.scan(*cf, &[], &KEY_CEILING, usize::MAX).map_err(sm_error)?;
            families.push((index as u8, entries));
        }
        Ok(encode(&SnapshotImage {
            applied: self.applied.clone(),
            families,
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let data = std::mem::replace(&mut self.image, Ok(Vec::new()))?;
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
        *self.current.lock().expect("snapshot lock") = Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
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
            image: self.image(),
            applied: self.applied.clone(),
            id: self.snapshot_counter,
            current: self.current.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let image: SnapshotImage = decode(Cf::Meta, &data).map_err(sm_error)?;
        let mut batch = Batch::default();
        for cf in STATE_FAMILIES {
            batch.delete_range(cf, Vec::new(), KEY_CEILING.to_vec());
        }
        for (index, entries) in image.families {
            let cf = STATE_FAMILIES[usize::from(index).min(STATE_FAMILIES.len() - 1)];
            for (k, v) in entries {
                batch.put(cf, k, v);
            }
        }
        self.applied = AppliedState {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        batch.put(Cf::Meta, APPLIED_KEY.to_vec(), encode(&self.applied));
        self.machine.store().write(batch, true).map_err(sm_error)?;
        self.machine.reload().map_err(sm_error)?;
        *self.current.lock().expect("snapshot lock") = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let current = self.current.lock().expect("snapshot lock");
        Ok(current.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(data.clone())),
        }))
    }
}

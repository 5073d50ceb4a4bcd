//! openraft's own storage test suite, run on the RocksDB log store and state
//! machine: of group 0, and of a shard group sharing the database with it.

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};
use tokio::sync::mpsc;

use super::types::{StorageError, TypeConfig};
use super::{LogStore, StateMachineStore};
use crate::state::StateMachine;
use crate::storage::{Batch, Cf, Keyspace, RocksStore, Store};

/// Builds the stores of one group in a fresh database.
struct RocksBuilder {
    group: u32,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let db: Arc<dyn Store> = Arc::new(RocksStore::open(&dir.path().join("db")).expect("rocksdb opens"));
        if self.group != 0 {
            // Group 0 holds a log and state of its own beside the group under test.
            fill_group_zero(&db);
        }
        let store: Arc<dyn Store> = Keyspace::new(db, self.group);
        let machine = StateMachine::open(store.clone()).expect("state machine opens");
        let (events, mut drain) = mpsc::channel(1024);
        tokio::spawn(async move { while drain.recv().await.is_some() {} });
        let sm = StateMachineStore::new(machine, events, &dir.path().join("snapshots"))?;
        Ok((dir, LogStore::new(store, true), sm))
    }
}

/// Fills group 0's keyspace with what its log store and state machine keep
/// (votes, log entries, applied position, catalog), as bytes no reader can
/// decode: a read of the group under test that strayed into group 0 fails.
fn fill_group_zero(db: &Arc<dyn Store>) {
    let neighbour = Keyspace::new(db.clone(), 0);
    let garbage = b"group 0, not a record".to_vec();
    let mut batch = Batch::default();
    for key in [b"vote".as_slice(), b"committed", b"purged"] {
        batch.put(Cf::RaftMeta, key.to_vec(), garbage.clone());
    }
    for index in 0..64u64 {
        batch.put(Cf::RaftLog, index.to_be_bytes().to_vec(), garbage.clone());
    }
    for key in [
        b"raft/applied".as_slice(),
        b"raft/installing",
        b"t/orders\0",
        b"s/audit\0",
    ] {
        batch.put(Cf::Meta, key.to_vec(), garbage.clone());
    }
    neighbour.write(batch, true).expect("group 0 written");
}

#[test]
fn rocksdb_log_and_state_machine_pass_openraft_suite() {
    Suite::test_all(RocksBuilder { group: 0 }).expect("openraft storage suite");
}

#[test]
fn a_shard_groups_log_and_state_machine_pass_openraft_suite_beside_group_zero() {
    Suite::test_all(RocksBuilder { group: 3 }).expect("openraft storage suite");
}

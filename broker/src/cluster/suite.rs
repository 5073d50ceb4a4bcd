//! openraft's own storage test suite, run on the RocksDB log store and state machine.

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};
use tokio::sync::mpsc;

use super::types::{StorageError, TypeConfig};
use super::{LogStore, StateMachineStore};
use crate::state::StateMachine;
use crate::storage::{RocksStore, Store};

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn Store> =
            Arc::new(RocksStore::open(&dir.path().join("db")).expect("rocksdb opens"));
        let machine = StateMachine::open(store.clone()).expect("state machine opens");
        let (events, mut drain) = mpsc::channel(1024);
        tokio::spawn(async move { while drain.recv().await.is_some() {} });
        let sm = StateMachineStore::new(machine, events, &dir.path().join("snapshots"))?;
        Ok((dir, LogStore::new(store, true), sm))
    }
}

#[test]
fn rocksdb_log_and_state_machine_pass_openraft_suite() {
    Suite::test_all(RocksBuilder).expect("openraft storage suite");
}

//! One test suite for the `Store` contract, run on every engine.

use super::{Batch, Cf, MemoryStore, RocksStore, Store};

fn contract(store: &dyn Store) {
    // Empty reads.
    assert_eq!(store.get(Cf::Meta, b"k").unwrap(), None);
    assert!(store.scan(Cf::Meta, b"a", b"z", 10).unwrap().is_empty());
    assert_eq!(store.last(Cf::Meta, b"a", b"z").unwrap(), None);

    // Batches are atomic and ordered; families are separate.
    let mut batch = Batch::default();
    for k in [b"a1", b"a2", b"a3", b"b1"] {
        batch.put(Cf::Meta, k.to_vec(), k.to_vec());
    }
    batch.put(Cf::Messages, b"a1".to_vec(), b"other".to_vec());
    batch.delete(Cf::Meta, b"a3".to_vec());
    store.write(batch, true).unwrap();
    assert_eq!(store.get(Cf::Meta, b"a1").unwrap(), Some(b"a1".to_vec()));
    assert_eq!(store.get(Cf::Meta, b"a3").unwrap(), None);
    assert_eq!(store.get(Cf::Messages, b"a1").unwrap(), Some(b"other".to_vec()));

    // Scans are bounded on both ends and by count.
    let keys = |entries: Vec<(Vec<u8>, Vec<u8>)>| entries.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(
        keys(store.scan(Cf::Meta, b"a", b"b", 10).unwrap()),
        vec![b"a1".to_vec(), b"a2".to_vec()]
    );
    assert_eq!(
        keys(store.scan(Cf::Meta, b"a", b"c", 1).unwrap()),
        vec![b"a1".to_vec()]
    );
    assert!(store.scan(Cf::Meta, b"b", b"a", 10).unwrap().is_empty());
    assert_eq!(
        store.last(Cf::Meta, b"a", b"b").unwrap().unwrap().0,
        b"a2".to_vec()
    );
    assert_eq!(
        store.last(Cf::Meta, b"a", b"z").unwrap().unwrap().0,
        b"b1".to_vec()
    );

    // Range deletes are half-open.
    let mut batch = Batch::default();
    batch.delete_range(Cf::Meta, b"a1".to_vec(), b"a2".to_vec());
    store.write(batch, false).unwrap();
    assert_eq!(store.get(Cf::Meta, b"a1").unwrap(), None);
    assert_eq!(store.get(Cf::Meta, b"a2").unwrap(), Some(b"a2".to_vec()));

    // Unlogged writes are atomic and visible at once, like the others.
    let mut batch = Batch::default();
    batch.put(Cf::Acks, b"u1".to_vec(), b"unlogged".to_vec());
    batch.put(Cf::Messages, b"u1".to_vec(), b"unlogged too".to_vec());
    batch.delete(Cf::Meta, b"b1".to_vec());
    store.write_unlogged(batch).unwrap();
    assert_eq!(store.get(Cf::Acks, b"u1").unwrap(), Some(b"unlogged".to_vec()));
    assert_eq!(store.get(Cf::Meta, b"b1").unwrap(), None);
    store.persist_unlogged().unwrap();

    frozen_copies_keep_their_moment(store);
}

/// A frozen copy holds every write made before it, unlogged ones included,
/// and none made after.
fn frozen_copies_keep_their_moment(store: &dyn Store) {
    let mut batch = Batch::default();
    batch.put(Cf::Dedup, b"f1".to_vec(), b"before".to_vec());
    batch.put(Cf::Meta, b"fz".to_vec(), b"doomed".to_vec());
    store.write_unlogged(batch).unwrap();
    let frozen = store.freeze().unwrap();
    let mut batch = Batch::default();
    batch.put(Cf::Dedup, b"f1".to_vec(), b"after".to_vec());
    batch.put(Cf::Dedup, b"f2".to_vec(), b"after".to_vec());
    batch.delete(Cf::Meta, b"fz".to_vec());
    store.write(batch, false).unwrap();
    assert_eq!(
        frozen.scan(Cf::Dedup, b"f", b"g", 10).unwrap(),
        vec![(b"f1".to_vec(), b"before".to_vec())]
    );
    assert_eq!(
        frozen.scan(Cf::Meta, b"fz", b"g", 10).unwrap(),
        vec![(b"fz".to_vec(), b"doomed".to_vec())]
    );
    assert_eq!(store.get(Cf::Meta, b"fz").unwrap(), None);
    assert_eq!(store.get(Cf::Dedup, b"f1").unwrap(), Some(b"after".to_vec()));
    assert!(frozen.scan(Cf::Dedup, b"g", b"f", 10).unwrap().is_empty());
}

#[test]
fn memory_store_meets_the_contract() {
    contract(&MemoryStore::new());
}

#[test]
fn rocks_store_meets_the_contract_and_keeps_data_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = RocksStore::open(dir.path()).unwrap();
        contract(&store);
    }
    let store = RocksStore::open(dir.path()).unwrap();
    assert_eq!(store.get(Cf::Meta, b"a2").unwrap(), Some(b"a2".to_vec()));
    assert_eq!(store.get(Cf::Messages, b"a1").unwrap(), Some(b"other".to_vec()));
    assert_eq!(
        store.get(Cf::Messages, b"u1").unwrap(),
        Some(b"unlogged too".to_vec())
    );
    assert_eq!(store.get(Cf::Meta, b"b1").unwrap(), None);
}

#[test]
fn rocks_store_persists_unlogged_writes_before_the_logged_ones_that_follow() {
    // A logged write after an unlogged one, then persist: both survive, and
    // the logged one does not resurrect what the unlogged one changed.
    let dir = tempfile::tempdir().unwrap();
    {
        let store = RocksStore::open(dir.path()).unwrap();
        let mut logged = Batch::default();
        logged.put(Cf::Meta, b"k".to_vec(), b"logged".to_vec());
        store.write(logged, true).unwrap();
        let mut unlogged = Batch::default();
        unlogged.put(Cf::Meta, b"k".to_vec(), b"unlogged".to_vec());
        store.write_unlogged(unlogged).unwrap();
        store.persist_unlogged().unwrap();
        let mut after = Batch::default();
        after.put(Cf::RaftLog, b"entry".to_vec(), b"1".to_vec());
        store.write(after, true).unwrap();
    }
    let store = RocksStore::open(dir.path()).unwrap();
    assert_eq!(store.get(Cf::Meta, b"k").unwrap(), Some(b"unlogged".to_vec()));
    assert_eq!(store.get(Cf::RaftLog, b"entry").unwrap(), Some(b"1".to_vec()));
}

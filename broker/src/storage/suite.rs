//! One test suite for the `Store` contract, run on every engine.

use std::sync::Arc;

use super::keys::KEY_CEILING;
use super::{Batch, Cf, GROUP_KEYS, Keyspace, MemoryStore, RocksStore, Store};

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

#[test]
fn keyspaces_meet_the_contract_on_every_engine() {
    let dir = tempfile::tempdir().unwrap();
    let engines: [Arc<dyn Store>; 2] = [
        Arc::new(MemoryStore::new()),
        Arc::new(RocksStore::open(dir.path()).unwrap()),
    ];
    for store in engines {
        for group in [0, 1, 7, u32::MAX] {
            contract(Keyspace::new(store.clone(), group).as_ref());
        }
    }
}

/// Writes `key` = `value` in every family of `store`.
fn put_everywhere(store: &dyn Store, key: &[u8], value: &[u8]) {
    let mut batch = Batch::default();
    for cf in Cf::ALL {
        batch.put(cf, key.to_vec(), value.to_vec());
    }
    store.write(batch, false).unwrap();
}

fn whole(store: &dyn Store, cf: Cf) -> Vec<(Vec<u8>, Vec<u8>)> {
    store.scan(cf, &[], &KEY_CEILING, usize::MAX).unwrap()
}

fn groups_keep_to_their_own_keys(store: Arc<dyn Store>) {
    let groups: Vec<_> = [0, 1, 2, 256].map(|g| Keyspace::new(store.clone(), g)).into();
    for (n, group) in groups.iter().enumerate() {
        for key in [b"".as_slice(), b"a", b"\x00\x00", b"\xfe\xff"] {
            put_everywhere(group.as_ref(), key, format!("group {n}").as_bytes());
        }
    }
    for (n, group) in groups.iter().enumerate() {
        for cf in Cf::ALL {
            let seen = whole(group.as_ref(), cf);
            assert_eq!(seen.len(), 4, "group {n} sees its own keys only in {cf:?}");
            assert!(seen.iter().all(|(_, v)| v == format!("group {n}").as_bytes()));
            let last = group.last(cf, &[], &KEY_CEILING).unwrap().unwrap();
            assert_eq!(last.0, b"\xfe\xff".to_vec());
        }
        let frozen = group.freeze().unwrap();
        assert_eq!(frozen.scan(Cf::Acks, &[], &KEY_CEILING, 10).unwrap().len(), 4);
    }
    // A snapshot install clears its whole group: the others keep theirs.
    for victim in [0, 2] {
        let mut clear = Batch::default();
        for cf in Cf::ALL {
            clear.delete_range(cf, Vec::new(), KEY_CEILING.to_vec());
        }
        groups[victim].write(clear, false).unwrap();
        for (n, group) in groups.iter().enumerate() {
            let expected = if n == 0 || (n == 2 && victim == 2) { 0 } else { 4 };
            for cf in Cf::ALL {
                assert_eq!(
                    whole(group.as_ref(), cf).len(),
                    expected,
                    "group {n} after clearing {victim}"
                );
            }
        }
    }
    // Group 0 cannot write into the other groups' range.
    let mut stray = Batch::default();
    stray.put(Cf::Meta, vec![GROUP_KEYS, 0, 0, 0, 1, b'a'], b"x".to_vec());
    let refused = groups[0].write(stray, false).unwrap_err();
    assert!(refused.to_string().contains("group 0"), "{refused}");
    assert_eq!(groups[1].get(Cf::Meta, b"a").unwrap(), Some(b"group 1".to_vec()));
    assert!(groups[0].get(Cf::Meta, &[GROUP_KEYS, 0, 0, 0, 1, b'a']).is_err());
}

#[test]
fn groups_sharing_a_store_never_see_or_clear_each_others_keys() {
    groups_keep_to_their_own_keys(Arc::new(MemoryStore::new()));
    let dir = tempfile::tempdir().unwrap();
    groups_keep_to_their_own_keys(Arc::new(RocksStore::open(dir.path()).unwrap()));
}

#[test]
fn group_zero_is_the_layout_of_a_node_with_one_group() {
    // A data directory written before shard groups is group 0's, unchanged.
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    put_everywhere(store.as_ref(), b"orders\x00", b"old");
    let group = Keyspace::new(store.clone(), 0);
    assert_eq!(
        group.get(Cf::Messages, b"orders\x00").unwrap(),
        Some(b"old".to_vec())
    );
    put_everywhere(Keyspace::new(store.clone(), 3).as_ref(), b"orders\x00", b"shard");
    assert_eq!(
        whole(group.as_ref(), Cf::Messages),
        vec![(b"orders\x00".to_vec(), b"old".to_vec())]
    );
    let raw = whole(store.as_ref(), Cf::Messages);
    assert_eq!(raw[1].0, b"\xff\x00\x00\x00\x03orders\x00".to_vec());
}

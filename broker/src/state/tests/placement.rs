//! The placement record: the first one fixes shards and factor and founds
//! each shard; later ones move targets; it survives a reopen and snapshots.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

fn target(replicas: &[u64], leader: u64) -> ShardTarget {
    ShardTarget {
        replicas: replicas.iter().copied().collect(),
        leader,
    }
}

fn place(h: &Harness, shards: u32, factor: u32, targets: &[(u32, ShardTarget)]) -> PlacementRecord {
    let command = Command::Place {
        shards,
        factor,
        targets: targets.iter().cloned().collect::<BTreeMap<_, _>>(),
    };
    match h.apply(command).0 {
        Response::Placed(record) => record,
        other => panic!("place answered {other:?}"),
    }
}

#[test]
fn the_first_record_fixes_the_shape_and_founds_every_shard() {
    let h = Harness::memory();
    let first = place(&h, 2, 1, &[(1, target(&[1], 1)), (2, target(&[1], 1))]);
    assert_eq!((first.shards, first.factor, first.version), (2, 1, 1));
    assert_eq!(first.placed[&1].founder, 1);
    // A later record keeps the shape, moves targets and keeps the founders.
    let later = place(
        &h,
        16,
        3,
        &[
            (1, target(&[1, 2, 3], 2)),
            (2, target(&[1, 2, 3], 3)),
            (9, target(&[4], 4)),
        ],
    );
    assert_eq!((later.shards, later.factor, later.version), (2, 1, 2));
    assert_eq!(later.placed.len(), 2, "shard 9 does not exist");
    assert_eq!(later.placed[&1].target, target(&[1, 2, 3], 2));
    assert_eq!(later.placed[&1].founder, 1);
    assert_eq!(later.placed[&1].founders, BTreeSet::from([1]));
    // The same targets again change nothing.
    let same = place(&h, 2, 1, &[(1, target(&[1, 2, 3], 2))]);
    assert_eq!(same.version, 2);
    // A target without replicas is never taken.
    let empty = place(&h, 2, 1, &[(2, target(&[], 1))]);
    assert_eq!(empty.placed[&2].target, target(&[1, 2, 3], 3));
    assert_eq!(h.machine.catalog().placement.as_ref(), Some(&empty));
}

#[test]
fn the_record_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let record = {
        let h = Harness::on(Arc::new(RocksStore::open(dir.path()).unwrap()));
        place(&h, 4, 3, &[(1, target(&[1, 2], 1)), (3, target(&[2], 2))])
    };
    let h = Harness::on(Arc::new(RocksStore::open(dir.path()).unwrap()));
    assert_eq!(h.machine.catalog().placement.as_ref(), Some(&record));
    assert_eq!(record.placed.keys().copied().collect::<Vec<_>>(), [1, 3]);
}

//! The placement record: the first one fixes shards and factor and names
//! each shard's founder; later ones move targets (and the founder, until
//! the shard is founded); a founding is claimed once; it survives a reopen.

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
fn the_first_record_fixes_the_shape_and_names_every_founder() {
    let h = Harness::memory();
    let first = place(&h, 2, 1, &[(1, target(&[1], 1)), (2, target(&[1], 1))]);
    assert_eq!((first.shards, first.factor, first.version), (2, 1, 1));
    assert_eq!(first.placed[&1].founder, 1);
    // A later record keeps the shape, moves targets and keeps the
    // founders of a founded shard.
    assert!(claim(&h, 1, 5));
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
    assert_eq!((later.shards, later.factor, later.version), (2, 1, 3));
    assert_eq!(later.placed.len(), 2, "shard 9 does not exist");
    assert_eq!(later.placed[&1].target, target(&[1, 2, 3], 2));
    assert_eq!(later.placed[&1].founder, 1);
    assert_eq!(later.placed[&1].founders, BTreeSet::from([1]));
    // The same targets again change nothing.
    let same = place(&h, 2, 1, &[(1, target(&[1, 2, 3], 2))]);
    assert_eq!(same.version, 3);
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

fn claim(h: &Harness, shard: u32, incarnation: u64) -> bool {
    match h.apply(Command::ClaimFounding { shard, incarnation }).0 {
        Response::Claimed(granted) => granted,
        other => panic!("claim answered {other:?}"),
    }
}

#[test]
fn a_founding_is_claimed_once_and_fixes_the_founder() {
    let h = Harness::memory();
    place(&h, 2, 3, &[(1, target(&[1, 2], 1)), (2, target(&[1, 2], 2))]);
    // Until it is founded, a shard's founder follows its target.
    let moved = place(&h, 2, 3, &[(2, target(&[2, 3], 3))]);
    assert_eq!(
        (moved.placed[&2].founder, moved.placed[&2].founders.clone()),
        (3, BTreeSet::from([2, 3]))
    );
    assert!(claim(&h, 1, 77), "the first claim holds");
    assert!(claim(&h, 1, 77), "the same database may claim again");
    assert!(!claim(&h, 1, 78), "another database of the founder may not");
    assert!(!claim(&h, 9, 77), "no such shard");
    // Once founded, the founder stays whatever the target.
    let later = place(&h, 2, 3, &[(1, target(&[2, 3], 2))]);
    assert_eq!(later.placed[&1].founder, 1);
    assert_eq!(later.placed[&1].founded, Some(77));
    assert_eq!(later.placed[&1].target, target(&[2, 3], 2));
}

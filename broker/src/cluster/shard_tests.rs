//! Shard groups placed by group 0: founded once with leaders spread, raised
//! to the replication factor as nodes join, shrunk off a node that leaves,
//! with what they hold carried to every new replica.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::state::Response;
use crate::storage::{Cf, Keyspace, MemoryStore, Store, keys};

use super::shards::{GroupSource, ShardOptions, Shards};
use super::test_groups::{options, parts, publish};
use super::transport::MembershipChange;
use super::{Consensus, Faults, LocalNetwork, NodeInfo, PeerHandler};

const SHARDS: u32 = 4;
/// How long a test waits for placement, elections and catch-up to show.
const WAIT: Duration = Duration::from_secs(60);

struct TestNode {
    main: Consensus,
    shards: Shards,
    store: Arc<dyn Store>,
    _handler: Arc<PeerHandler>,
}

async fn start_node(id: u64, dir: &std::path::Path, network: &LocalNetwork) -> TestNode {
    start_node_with(id, dir, network, &Faults::default()).await
}

async fn start_node_with(
    id: u64,
    dir: &std::path::Path,
    network: &LocalNetwork,
    faults: &Faults,
) -> TestNode {
    start_on(Arc::new(MemoryStore::new()), id, dir, network, faults).await
}

/// Starts node `id` on `store`: a fresh one, or the store of a node that stopped.
async fn start_on(
    store: Arc<dyn Store>,
    id: u64,
    dir: &std::path::Path,
    network: &LocalNetwork,
    faults: &Faults,
) -> TestNode {
    let main_parts = parts(&store, 0);
    let main = Consensus::open(
        options(id, dir),
        main_parts.store,
        main_parts.machine.clone(),
        main_parts.events,
        Arc::new(network.clone()),
        faults.clone(),
    )
    .await
    .expect("group 0 opens");
    let shard_store = store.clone();
    let source: GroupSource = Arc::new(move |group| Ok(parts(&shard_store, group)));
    let options = ShardOptions {
        shards: SHARDS,
        replication_factor: None,
    };
    let shards = Shards::start(main.clone(), options, source);
    let (live, _) = mpsc::channel(1);
    let (relay, _) = mpsc::channel(1);
    let handler = main.handler(live, relay);
    network.register(&main.me().address, &handler);
    TestNode {
        main,
        shards,
        store,
        _handler: handler,
    }
}

/// Waits until `check` holds, failing with `what` after [`WAIT`].
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn voters(node: &TestNode, shard: u32) -> BTreeSet<u64> {
    node.shards
        .group(shard)
        .map(|g| g.voters().into_iter().collect())
        .unwrap_or_default()
}

/// The node that leads `shard`, as `node` sees it.
fn leader(node: &TestNode, shard: u32) -> Option<u64> {
    node.shards.group(shard).and_then(|g| g.leader())
}

/// Whether `node`'s replica of `shard` stores message 1 of `orders`.
fn holds(node: &TestNode, shard: u32) -> bool {
    let keyspace = Keyspace::new(node.store.clone(), shard);
    keyspace
        .get(Cf::Messages, &keys::message("orders", 1))
        .unwrap()
        .is_some()
}

/// Three nodes formed at once, once every shard is led and on all three.
async fn three_formed(dir: &std::path::Path, network: &LocalNetwork, faults: &Faults) -> Vec<TestNode> {
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start_node_with(id, dir, network, faults).await);
    }
    let members: Vec<NodeInfo> = nodes.iter().map(info).collect();
    super::formation::initialize(&nodes[0].main, members)
        .await
        .unwrap();
    until("every shard is founded with three replicas", || {
        (1..=SHARDS).all(|s| leader(&nodes[0], s).is_some() && voters(&nodes[0], s).len() == 3)
    })
    .await;
    nodes
}

fn info(node: &TestNode) -> NodeInfo {
    node.main.me().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growing_from_one_to_three_nodes_raises_every_shard_to_three_replicas_and_a_leave_shrinks_them() {
    let dir = tempfile::tempdir().unwrap();
    let network = LocalNetwork::default();
    let first = start_node(1, dir.path(), &network).await;
    super::formation::initialize(&first.main, vec![info(&first)])
        .await
        .unwrap();
    until("one node founds and leads every shard", || {
        (1..=SHARDS).all(|s| leader(&first, s) == Some(1) && voters(&first, s) == BTreeSet::from([1]))
    })
    .await;
    let record = first.shards.record().expect("placed");
    assert_eq!((record.shards, record.placed.len()), (SHARDS, SHARDS as usize));
    let shard = 2;
    let answer = first
        .shards
        .group(shard)
        .unwrap()
        .propose(publish("orders", "before-growth"))
        .await
        .unwrap();
    assert!(
        matches!(answer, Response::Published(ref r) if r[0].is_ok()),
        "{answer:?}"
    );

    let mut nodes = vec![first];
    for id in 2..=3 {
        let node = start_node(id, dir.path(), &network).await;
        nodes[0]
            .main
            .change_membership(MembershipChange::Join(info(&node)))
            .await
            .unwrap();
        nodes.push(node);
    }
    let all = BTreeSet::from([1, 2, 3]);
    until("every shard has three replicas", || {
        (1..=SHARDS).all(|s| voters(&nodes[0], s) == all)
    })
    .await;
    until("every shard is led by its target's leader", || {
        let record = nodes[0].shards.record().unwrap();
        record.placed.iter().all(|(shard, placed)| {
            let preferred = &nodes[placed.target.leader as usize - 1];
            leader(preferred, *shard) == Some(placed.target.leader)
        })
    })
    .await;
    // Each shard is led by its preferred leader, as that node sees it;
    // the preferred leaders cover every node.
    let record = nodes[0].shards.record().unwrap();
    let leaders: BTreeSet<u64> = record.placed.values().map(|p| p.target.leader).collect();
    assert_eq!(leaders, all, "leaderships moved to the new nodes");
    until("every replica holds what the shard held before", || {
        nodes.iter().all(|n| holds(n, shard))
    })
    .await;
    for node in &nodes {
        assert!(!holds(node, 1) && !holds(node, 3), "other shards hold nothing");
    }

    // Node 3 leaves the cluster: every shard is left with the two others.
    let leaving = nodes[2].main.node_id();
    nodes[0]
        .main
        .change_membership(MembershipChange::Leave(leaving))
        .await
        .unwrap();
    let rest = BTreeSet::from([1, 2]);
    until("every shard drops the node that left", || {
        (1..=SHARDS).all(|s| {
            let leads = leader(&nodes[0], s).unwrap_or(0);
            leads != 0 && leads != leaving && voters(&nodes[0], s) == rest
        })
    })
    .await;
    let later = nodes[1]
        .shards
        .group(shard)
        .unwrap()
        .propose(publish("orders", "after-leave"))
        .await;
    assert!(
        later.is_ok(),
        "the shard serves without the node that left: {later:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_formed_at_once_spreads_shard_leaders_and_a_leave_hands_them_over_first() {
    let dir = tempfile::tempdir().unwrap();
    let network = LocalNetwork::default();
    let nodes = three_formed(dir.path(), &network, &Faults::default()).await;
    let record = nodes[0].shards.record().unwrap();
    let leaders: BTreeSet<u64> = (1..=SHARDS).filter_map(|s| leader(&nodes[0], s)).collect();
    assert_eq!(leaders.len(), 3, "each node leads a shard: {leaders:?}");
    for (shard, placed) in &record.placed {
        assert_eq!(
            leader(&nodes[0], *shard),
            Some(placed.founder),
            "shard {shard} is led by its founder"
        );
    }

    // Node 3 leads a shard and leaves: the leave returns only once every
    // shard is led elsewhere and kept by the two others alone.
    nodes[0]
        .main
        .change_membership(MembershipChange::Leave(3))
        .await
        .unwrap();
    assert_eq!(nodes[0].main.voters(), [1, 2]);
    for shard in 1..=SHARDS {
        let led = nodes[..2].iter().find_map(|node| {
            let group = node.shards.group(shard)?;
            (group.leader() == Some(node.main.node_id())).then(|| group.voters())
        });
        assert_eq!(
            led,
            Some(vec![1, 2]),
            "shard {shard} is led by node 1 or 2, on them alone"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_leadership_is_handed_to_a_node_that_is_cut_off_and_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::default();
    let network = LocalNetwork::default();
    let nodes = three_formed(dir.path(), &network, &faults).await;
    let shard = 1;
    let led_by = leader(&nodes[0], shard).unwrap();
    let group = nodes[led_by as usize - 1].shards.group(shard).unwrap();
    let cut = if led_by == 3 { 2 } else { 3 };
    for other in [1, 2, 3].into_iter().filter(|n| *n != cut) {
        faults.partition(
            &nodes[cut as usize - 1].main.me().address,
            &nodes[other as usize - 1].main.me().address,
        );
    }
    until("the leader notices the cut", || !group.can_take_over(cut)).await;
    let refused = group.hand_over(cut).await;
    assert!(
        refused.is_err(),
        "no handover to a node that is down: {refused:?}"
    );
    let written = group.propose(publish("orders", "after-refused-handover")).await;
    assert!(written.is_ok(), "the shard takes writes at once: {written:?}");
    assert_eq!(
        leader(&nodes[led_by as usize - 1], shard),
        Some(led_by),
        "it still leads"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_reopens_its_shards_from_its_data_and_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let network = LocalNetwork::default();
    let mut nodes = three_formed(dir.path(), &network, &Faults::default()).await;
    let record = nodes[0].shards.record().unwrap();
    // A shard node 3 does not lead, so it keeps serving while node 3 is away.
    let shard = *record
        .placed
        .iter()
        .find(|(_, p)| p.target.leader != 3)
        .unwrap()
        .0;
    let incarnation = nodes[2].main.incarnation();

    let stopped = nodes.pop().unwrap();
    stopped.main.shutdown().await;
    let store = stopped.store.clone();
    drop(stopped);
    let writer = &nodes[record.placed[&shard].target.leader as usize - 1];
    let answer = writer
        .shards
        .group(shard)
        .unwrap()
        .propose(publish("orders", "while-away"))
        .await;
    assert!(answer.is_ok(), "two of three replicas serve: {answer:?}");

    let back = start_on(store, 3, dir.path(), &network, &Faults::default()).await;
    assert_eq!(
        back.main.incarnation(),
        incarnation,
        "the same database, so the same incarnation"
    );
    until("the restarted node reopens the shard and catches up", || {
        holds(&back, shard)
    })
    .await;
    until("it is a replica of every shard again", || {
        (1..=SHARDS).all(|s| back.shards.group(s).is_some_and(|g| g.voters().contains(&3)))
    })
    .await;
    let founded = back.shards.record().unwrap();
    assert!(
        founded.placed.values().all(|p| p.founded.is_some()),
        "every shard stays founded once"
    );
}

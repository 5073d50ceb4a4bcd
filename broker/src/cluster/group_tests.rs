//! Several Raft groups on the nodes of one cluster: each group elects its
//! own leader and commits on its own, on its own keyspace of each node's
//! store, and RPCs and forwarded commands reach the group they name.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::domain::{MessageKey, TopicName};
use crate::state::{Reader, Response};
use crate::storage::{MemoryStore, Store};

use super::test_groups::{options, parts, publish};
use super::transport::{PeerReply, PeerRequest, RaftRpc};
use super::{Consensus, Faults, LocalNetwork, NodeInfo, PeerHandler};

const GROUPS: [u32; 3] = [0, 1, 2];
/// How long a test waits for an election or a commit to show.
const WAIT: Duration = Duration::from_secs(20);

/// One node: its groups, their readers, and its handler for peers.
struct TestNode {
    me: NodeInfo,
    groups: BTreeMap<u32, (Consensus, Reader)>,
    handler: Arc<PeerHandler>,
}

async fn start_node(id: u64, dir: &std::path::Path, network: &LocalNetwork, faults: &Faults) -> TestNode {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut groups = BTreeMap::new();
    let main_parts = parts(&store, 0);
    let reader = Reader::new(main_parts.machine.clone());
    let main = Consensus::open(
        options(id, dir),
        main_parts.store,
        main_parts.machine,
        main_parts.events,
        Arc::new(network.clone()),
        faults.clone(),
    )
    .await
    .expect("group 0 opens");
    groups.insert(0, (main.clone(), reader));
    for group in &GROUPS[1..] {
        let group_parts = parts(&store, *group);
        let reader = Reader::new(group_parts.machine.clone());
        let consensus = main
            .open_group(*group, group_parts.store, group_parts.machine, group_parts.events)
            .await
            .expect("group opens");
        groups.insert(*group, (consensus, reader));
    }
    let (live, _) = mpsc::channel(1);
    let (relay, _) = mpsc::channel(1);
    let handler = main.handler(live, relay);
    network.register(&main.me().address, &handler);
    TestNode {
        me: main.me().clone(),
        groups,
        handler,
    }
}

/// Waits until a node of `nodes` (one of `among`) leads `group`, and returns it.
async fn leader_of(nodes: &[TestNode], among: &[usize], group: u32) -> usize {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        for n in among {
            if nodes[*n].groups[&group].0.is_leader() {
                return *n;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "group {group} elected no leader"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until node `n`'s replica of `group` holds `topic`'s message `sequence`.
async fn stored(node: &TestNode, group: u32, topic: &str, sequence: u64) -> bool {
    let key = MessageKey {
        topic: TopicName::parse("topic", topic).unwrap(),
        sequence,
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if node.groups[&group].1.message(&key).unwrap().is_some() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn sequence_of(response: Response) -> u64 {
    match response {
        Response::Published(mut results) => results.remove(0).expect("published").sequence,
        other => panic!("not a publish answer: {other:?}"),
    }
}

/// Three nodes, each with groups 0, 1 and 2, each group initialised by a
/// different node.
async fn three_nodes(dir: &std::path::Path, faults: &Faults) -> Vec<TestNode> {
    let network = LocalNetwork::default();
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start_node(id, dir, &network, faults).await);
    }
    let members: Vec<NodeInfo> = nodes.iter().map(|n| n.me.clone()).collect();
    for group in GROUPS {
        let initialiser = &nodes[group as usize].groups[&group].0;
        super::formation::initialize(initialiser, members.clone())
            .await
            .expect("group initialises");
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_group_commits_on_its_own_keyspace_and_forwards_reach_the_named_group() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = three_nodes(dir.path(), &Faults::default()).await;
    for group in GROUPS {
        leader_of(&nodes, &[0, 1, 2], group).await;
    }
    // Proposed on a node that does not lead group 1: forwarded to its leader.
    let leader = leader_of(&nodes, &[0, 1, 2], 1).await;
    let follower = (leader + 1) % 3;
    let sequence = sequence_of(
        nodes[follower].groups[&1]
            .0
            .propose(publish("orders", "m-1"))
            .await
            .unwrap(),
    );
    for node in &nodes {
        assert!(
            stored(node, 1, "orders", sequence).await,
            "node {} has it in group 1",
            node.me.id
        );
        for other in [0, 2] {
            let catalog = node.groups[&other].1.machine().catalog().topics.len();
            assert_eq!(catalog, 0, "group {other} of node {} knows no topic", node.me.id);
        }
    }
    let view = nodes[follower].groups[&0].0.local_status();
    let names: Vec<&str> = view.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["main-0", "shard-1", "shard-2"]);
    assert!(
        view.groups
            .iter()
            .all(|g| g.leader.is_some() && g.replicas.len() == 3)
    );

    // A group this node never opened is answered as such, not as another group.
    let rpc = RaftRpc::Vote(openraft::raft::VoteRequest::new(
        super::types::Vote::new(1, 1),
        None,
    ));
    let reply = nodes[0].handler.handle(PeerRequest::Raft { group: 9, rpc }).await;
    assert!(matches!(reply, PeerReply::NoSuchGroup(9)), "{reply:?}");
    let forward = PeerRequest::Forward {
        group: 9,
        command: publish("orders", "m-2"),
    };
    let PeerReply::Forward(Err(refused)) = nodes[0].handler.handle(forward).await else {
        panic!("a forward to a missing group is refused");
    };
    assert!(refused.to_string().contains("group 9"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_leader_of_one_group_is_replaced_while_the_other_groups_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::default();
    let nodes = three_nodes(dir.path(), &faults).await;
    let cut = leader_of(&nodes, &[0, 1, 2], 1).await;
    let rest: Vec<usize> = (0..3).filter(|n| *n != cut).collect();
    for n in &rest {
        faults.partition(&nodes[cut].me.address, &nodes[*n].me.address);
    }
    // The majority elects a leader of group 1 among itself and commits.
    let new_leader = leader_of(&nodes, &rest, 1).await;
    let sequence = sequence_of(
        nodes[new_leader].groups[&1]
            .0
            .propose(publish("orders", "after-cut"))
            .await
            .unwrap(),
    );
    // Group 2 serves the majority too, wherever its leader was.
    let group2 = leader_of(&nodes, &rest, 2).await;
    let in_2 = sequence_of(
        nodes[group2].groups[&2]
            .0
            .propose(publish("audit", "a-1"))
            .await
            .unwrap(),
    );
    // The cut-off node cannot commit in group 1.
    let refused = nodes[cut].groups[&1]
        .0
        .propose(publish("orders", "minority"))
        .await;
    assert!(refused.is_err(), "a minority commits nothing: {refused:?}");
    faults.heal();
    // Healed, the cut-off node catches up in both groups.
    assert!(stored(&nodes[cut], 1, "orders", sequence).await);
    assert!(stored(&nodes[cut], 2, "audit", in_2).await);
    let minority = MessageKey {
        topic: TopicName::parse("topic", "orders").unwrap(),
        sequence: sequence + 1,
    };
    for node in &nodes {
        assert!(
            node.groups[&1].1.message(&minority).unwrap().is_none(),
            "nothing from the minority"
        );
    }
}

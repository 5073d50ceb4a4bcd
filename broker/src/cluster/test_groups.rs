//! What the in-process tests of several Raft groups share: a test node's
//! options, a group's parts on a node's store, and a publish command.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::domain::{DeliveryGuarantee, MessageId, NewMessage, Priority, TopicName};
use crate::state::{Command, StateMachine};
use crate::storage::{Keyspace, Store};

use super::ClusterOptions;
use super::shards::GroupParts;

/// Options of node `id`: fast elections, no fsync, snapshots under `dir`.
pub fn options(id: u64, dir: &std::path::Path) -> ClusterOptions {
    ClusterOptions {
        node_id: id,
        advertise: format!("node-{id}:7400"),
        seeds: Vec::new(),
        discovery: None,
        expect_nodes: 0,
        heartbeat_interval_ms: 50,
        election_timeout_ms: 300,
        fsync: false,
        snapshot_dir: dir.join(format!("snapshots-{id}")),
        snapshot_every_entries: 10_000,
    }
}

/// A group's state machine on its keyspace of `store`, with its applied
/// changes drained.
pub fn parts(store: &Arc<dyn Store>, group: u32) -> GroupParts {
    let keyspace: Arc<dyn Store> = Keyspace::new(store.clone(), group);
    let machine = StateMachine::open(keyspace.clone()).expect("state machine opens");
    let (events, mut drain) = mpsc::channel(64);
    tokio::spawn(async move { while drain.recv().await.is_some() {} });
    GroupParts {
        store: keyspace,
        machine,
        events,
        started: Box::new(|_| {}),
    }
}

/// An at-least-once publish of one message `id` to `topic`.
pub fn publish(topic: &str, id: &str) -> Command {
    Command::Publish {
        messages: vec![NewMessage {
            id: MessageId::parse("id", id).unwrap(),
            topic: TopicName::parse("topic", topic).unwrap(),
            payload: bytes::Bytes::from_static(b"payload"),
            headers: Default::default(),
            priority: Priority::Normal,
            ttl_ms: None,
            delay_ms: 0,
            delivery: DeliveryGuarantee::AtLeastOnce,
        }],
        auto_create: true,
        now_ms: 1,
    }
}

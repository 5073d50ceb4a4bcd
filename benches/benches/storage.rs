//! Micro-benchmarks of the durable path: log appends with group commit on
//! RocksDB (one fsync for many appends, against one each), and the dedup
//! index as the state machine applies publishes with ids.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use hermod_broker::domain::{DeliveryGuarantee, Headers, MessageId, NewMessage, Priority, TopicName};
use hermod_broker::state::{Command, Response, StateMachine, Txn};
use hermod_broker::storage::{Batch, Cf, MemoryStore, RocksStore, Store};

/// Appends per measured group: what one fsync covers in the group-commit case.
const APPENDS: u64 = 64;
/// Bytes of one appended log entry.
const ENTRY_BYTES: usize = 1024;
/// Log keys cycle over this many indexes, so the database stays small
/// however long criterion measures.
const KEY_CYCLE: u64 = 4096;
/// Messages with ids in one publish command.
const PUBLISH_MESSAGES: usize = 1_000;

fn append(store: &RocksStore, index: &mut u64, entry: &[u8], sync: bool) {
    *index += 1;
    let mut batch = Batch::default();
    let key = (*index % KEY_CYCLE).to_be_bytes().to_vec();
    batch.put(Cf::RaftLog, key, entry.to_vec());
    store.write(batch, sync).expect("the append is written");
}

fn log_appends(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = RocksStore::open(dir.path()).expect("RocksDB opens");
    let entry = vec![7u8; ENTRY_BYTES];
    let mut index = 0;
    let mut group = c.benchmark_group("log_append");
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    group.bench_function("64x1k_one_fsync", |b| {
        b.iter(|| {
            for _ in 0..APPENDS {
                append(&store, &mut index, &entry, false);
            }
            store.sync().expect("fsync")
        })
    });
    group.bench_function("64x1k_fsync_each", |b| {
        b.iter(|| {
            for _ in 0..APPENDS {
                append(&store, &mut index, &entry, true);
            }
        })
    });
    group.finish();
}

fn messages_with_ids() -> Vec<NewMessage> {
    let topic = TopicName::parse("topic", "orders.eu").expect("valid topic");
    (0..PUBLISH_MESSAGES)
        .map(|i| NewMessage {
            id: MessageId::parse("id", &format!("order-{i}")).expect("valid id"),
            topic: topic.clone(),
            payload: Bytes::from(vec![7u8; 128]),
            headers: Headers::new(),
            priority: Priority::Normal,
            ttl_ms: None,
            delay_ms: 0,
            delivery: DeliveryGuarantee::ExactlyOnce,
        })
        .collect()
}

/// Applies one publish of `messages` and writes it; returns how many were duplicates.
fn publish(machine: &StateMachine, messages: Vec<NewMessage>) -> usize {
    let store = machine.store().clone();
    let command = Command::Publish {
        messages,
        auto_create: true,
        now_ms: 1,
    };
    let mut txn = Txn::new(store.as_ref());
    let mut out = Vec::new();
    let responses = machine
        .apply_all(&mut txn, [Some(&command)], &mut out)
        .expect("the publish applies");
    store
        .write(txn.into_batch(), false)
        .expect("the batch is written");
    match responses.first() {
        Some(Response::Published(results)) => results
            .iter()
            .filter(|r| r.as_ref().is_ok_and(|p| p.duplicate))
            .count(),
        _ => 0,
    }
}

fn fresh_machine() -> StateMachine {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    StateMachine::open(store).expect("the state machine opens")
}

fn dedup_index(c: &mut Criterion) {
    let messages = messages_with_ids();
    c.bench_function("dedup_1k_new_ids", |b| {
        b.iter_batched(
            || (fresh_machine(), messages.clone()),
            |(machine, batch)| publish(&machine, black_box(batch)),
            BatchSize::LargeInput,
        )
    });
    let machine = fresh_machine();
    assert_eq!(publish(&machine, messages.clone()), 0);
    c.bench_function("dedup_1k_duplicates", |b| {
        b.iter_batched(
            || messages.clone(),
            |batch| {
                let duplicates = publish(&machine, black_box(batch));
                assert_eq!(duplicates, PUBLISH_MESSAGES, "every id was published before");
                duplicates
            },
            BatchSize::LargeInput,
        )
    });
}

criterion_group!(storage, log_appends, dedup_index);
criterion_main!(storage);

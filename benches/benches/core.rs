//! Micro-benchmarks of the broker's pure core: pattern matching, priority
//! selection in the delivery queue, and record encoding.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use hermod_broker::domain::{
    DeliveryGuarantee, Headers, Message, MessageId, MessageKey, Pattern, Priority, TopicName,
};
use hermod_broker::semantics::{Entry, QueueConfig, SubscriptionQueue};
use hermod_broker::storage::{Cf, decode, encode};

fn topic(name: &str) -> TopicName {
    TopicName::parse("topic", name).expect("valid topic")
}

fn pattern_matching(c: &mut Criterion) {
    let patterns: Vec<Pattern> = ["orders.*.created", "orders.>", "*.eu.*", "payments.eu.refunded"]
        .iter()
        .map(|p| Pattern::parse("pattern", p).expect("valid pattern"))
        .collect();
    let topics = [
        topic("orders.eu.created"),
        topic("payments.us.settled"),
        topic("orders.us.shipped.late"),
    ];
    c.bench_function("pattern_match_4x3", |b| {
        b.iter(|| {
            let mut hits = 0;
            for p in &patterns {
                for t in &topics {
                    hits += usize::from(p.matches(black_box(t)));
                }
            }
            hits
        })
    });
}

fn priority_selection(c: &mut Criterion) {
    const MESSAGES: u64 = 10_000;
    let name = topic("bench.queue");
    c.bench_function("queue_push_next_ack_10k", |b| {
        b.iter(|| {
            let mut queue = SubscriptionQueue::new(QueueConfig::default());
            for sequence in 1..=MESSAGES {
                let priority = Priority::DESCENDING[(sequence % 4) as usize];
                let key = MessageKey {
                    topic: name.clone(),
                    sequence,
                };
                queue.push(
                    Entry {
                        key,
                        priority,
                        not_before_ms: 0,
                        expires_at_ms: None,
                    },
                    0,
                );
            }
            while let Some(lease) = queue.next(1, 1) {
                let _ = queue.ack(&lease.key, lease.lease_id);
            }
            queue.backlog()
        })
    });
}

fn record_encoding(c: &mut Criterion) {
    let message = Message {
        id: MessageId::generate(),
        topic: topic("orders.eu.created"),
        sequence: 42,
        payload: Bytes::from(vec![7u8; 128]),
        headers: Headers::from([("content-type".to_string(), "application/json".to_string())]),
        priority: Priority::High,
        publish_time_ms: 1_700_000_000_000,
        expires_at_ms: Some(1_700_000_060_000),
        not_before_ms: 1_700_000_000_000,
        delivery: DeliveryGuarantee::ExactlyOnce,
    };
    c.bench_function("message_encode_128b", |b| b.iter(|| encode(black_box(&message))));
    let bytes = encode(&message);
    c.bench_function("message_decode_128b", |b| {
        b.iter(|| decode::<Message>(Cf::Messages, black_box(&bytes)).expect("decodes"))
    });
}

criterion_group!(core, pattern_matching, priority_selection, record_encoding);
criterion_main!(core);

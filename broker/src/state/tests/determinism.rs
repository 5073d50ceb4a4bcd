//! Determinism: the same commands give the same answers and bytes, on both engines and batched.

use super::*;
use crate::domain::RetentionPolicy;

/// A history touching every command.
fn history() -> Vec<Command> {
    let mut dlq = sub_settings("orders.>", StartPosition::Earliest);
    dlq.dead_letter_topic = Some(topic("dead"));
    let interest = TopicSettings {
        retention: RetentionPolicy::Interest,
        dedup_window_ms: 1_000,
        ..TopicSettings::default()
    };
    let limited = TopicSettings {
        max_messages: 3,
        max_age_ms: 5_000,
        ..TopicSettings::default()
    };
    let mut priority = msg("orders.eu", "p", "urgent");
    priority.priority = Priority::Critical;
    priority.headers.insert("b".into(), "2".into());
    priority.headers.insert("a".into(), "1".into());
    priority.ttl_ms = Some(100);
    priority.delay_ms = 10;
    vec![
        Command::CreateTopic {
            name: topic("orders.eu"),
            settings: interest,
            now_ms: 1,
        },
        Command::CreateTopic {
            name: topic("logs"),
            settings: limited,
            now_ms: 2,
        },
        Command::CreateSubscription {
            name: sub("billing"),
            settings: dlq,
            now_ms: 3,
        },
        Command::CreateSubscription {
            name: sub("all"),
            settings: sub_settings(">", StartPosition::Time(0)),
            now_ms: 4,
        },
        Command::Publish {
            messages: vec![
                msg("orders.eu", "o1", "a"),
                msg("orders.eu", "o2", "b"),
                msg("orders.us", "o1", "c"),
                msg("orders.eu", "o1", "dup"),
                priority,
            ],
            auto_create: true,
            now_ms: 10,
        },
        Command::Publish {
            messages: (0..6).map(|i| msg("logs", &format!("l{i}"), "line")).collect(),
            auto_create: false,
            now_ms: 11,
        },
        Command::Publish {
            messages: vec![msg("nowhere", "x", "y")],
            auto_create: false,
            now_ms: 12,
        },
        Command::Ack {
            subscription: sub("billing"),
            keys: vec![key("orders.eu", 1), key("orders.us", 1)],
        },
        Command::Ack {
            subscription: sub("all"),
            keys: vec![key("orders.eu", 1), key("logs", 5)],
        },
        Command::DeadLetter {
            subscription: sub("billing"),
            key: key("orders.eu", 2),
            reason: DeadReason::MaxDeliveries,
            attempts: 20,
            now_ms: 13,
        },
        Command::DeadLetter {
            subscription: sub("all"),
            key: key("orders.eu", 2),
            reason: DeadReason::Expired,
            attempts: 2,
            now_ms: 14,
        },
        Command::Sweep { now_ms: 1_500 },
        Command::Publish {
            messages: vec![msg("orders.eu", "o1", "again")],
            auto_create: true,
            now_ms: 1_600,
        },
        Command::DeleteSubscription {
            name: sub("all"),
            now_ms: 1_700,
        },
        Command::Sweep { now_ms: 6_000 },
        Command::DeleteTopic {
            name: topic("orders.us"),
            now_ms: 6_100,
        },
        Command::CreateTopic {
            name: topic("logs"),
            settings: TopicSettings::default(),
            now_ms: 6_200,
        },
        Command::Ack {
            subscription: sub("billing"),
            keys: vec![key("orders.eu", 4)],
        },
        Command::Sweep { now_ms: 10_000 },
    ]
}

#[test]
fn the_same_commands_give_the_same_answers_and_the_same_bytes() {
    let run = || {
        let h = Harness::memory();
        let answers: Vec<(Response, Vec<Applied>)> = history().into_iter().map(|c| h.apply(c)).collect();
        (answers, dump(h.store()))
    };
    let (answers_a, bytes_a) = run();
    let (answers_b, bytes_b) = run();
    assert_eq!(answers_a, answers_b);
    assert_eq!(bytes_a, bytes_b);
    // The history really did something in every family the state machine owns.
    for cf in FAMILIES {
        let entries = &bytes_a.iter().find(|(c, _)| *c == cf).unwrap().1;
        assert!(!entries.is_empty(), "{cf:?} is empty");
    }
    // And the same bytes on RocksDB.
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::on(Arc::new(RocksStore::open(dir.path()).unwrap()));
    let answers: Vec<_> = history().into_iter().map(|c| h.apply(c)).collect();
    assert_eq!(answers, answers_a);
    assert_eq!(dump(h.store()), bytes_a);
}

#[test]
fn a_command_encodes_and_decodes_unchanged() {
    for command in history() {
        let bytes = crate::storage::encode(&command);
        let back: Command = decode(Cf::RaftLog, &bytes).unwrap();
        assert_eq!(back, command);
    }
}

/// Applies `commands` in one transaction, as the Raft state machine does
/// with a batch of log entries.
fn apply_batched(h: &Harness, commands: &[Command]) -> Vec<Response> {
    let mut txn = Txn::new(h.store());
    let mut out = Vec::new();
    let responses = h
        .machine
        .apply_all(&mut txn, commands.iter().map(Some), &mut out)
        .unwrap();
    h.store().write(txn.into_batch(), true).unwrap();
    responses
}

#[test]
fn batching_unrelated_commands_into_one_transaction_changes_nothing() {
    // Commands that neither range-delete nor sweep: batched == one by one.
    let commands: Vec<Command> = history()
        .into_iter()
        .filter(|c| {
            !matches!(
                c,
                Command::Sweep { .. } | Command::DeleteTopic { .. } | Command::DeleteSubscription { .. }
            )
        })
        .collect();
    let one_by_one = Harness::memory();
    let answers: Vec<Response> = commands.iter().map(|c| one_by_one.apply(c.clone()).0).collect();
    let batched = Harness::memory();
    assert_eq!(apply_batched(&batched, &commands), answers);
    assert_eq!(dump(batched.store()), dump(one_by_one.store()));
}

#[test]
fn a_republish_after_deleting_the_topic_in_the_same_batch_is_stored() {
    let h = Harness::memory();
    h.publish_one(msg("t", "id", "old"), 1);
    h.publish_one(msg("t", "other", "old"), 2);
    let responses = apply_batched(
        &h,
        &[
            Command::DeleteTopic {
                name: topic("t"),
                now_ms: 10,
            },
            Command::Publish {
                messages: vec![msg("t", "id", "new")],
                auto_create: true,
                now_ms: 11,
            },
        ],
    );
    let Response::Published(results) = &responses[1] else {
        panic!("{responses:?}")
    };
    let published = results[0].as_ref().unwrap();
    assert_eq!(
        (published.sequence, published.duplicate),
        (1, false),
        "{published:?}"
    );
    assert_eq!(h.message("t", 1).unwrap().payload, Bytes::from_static(b"new"));
}

#[test]
fn an_ack_after_recreating_the_subscription_in_the_same_batch_is_kept() {
    let h = Harness::memory();
    h.publish_one(msg("t", "m1", "x"), 1);
    let settings = sub_settings("t", StartPosition::Earliest);
    h.create_sub("s", settings.clone(), 2).unwrap();
    h.ack("s", vec![key("t", 1)]).0.unwrap();
    apply_batched(
        &h,
        &[
            Command::DeleteSubscription {
                name: sub("s"),
                now_ms: 10,
            },
            Command::CreateSubscription {
                name: sub("s"),
                settings,
                now_ms: 11,
            },
            Command::Ack {
                subscription: sub("s"),
                keys: vec![key("t", 1)],
            },
        ],
    );
    assert!(
        h.reader.is_acked(&sub("s"), &key("t", 1)).unwrap(),
        "a confirmed ack was lost"
    );
    assert_eq!(h.pending("s", "t"), Vec::<Sequence>::new());
}

#[test]
fn a_sweep_batched_after_a_publish_gives_the_same_state_as_applied_alone() {
    let commands = [
        Command::CreateTopic {
            name: topic("t"),
            settings: with_window(100),
            now_ms: 0,
        },
        Command::Publish {
            messages: vec![msg("t", "id", "x")],
            auto_create: false,
            now_ms: 1,
        },
        Command::Sweep { now_ms: 500 },
    ];
    let one_by_one = Harness::memory();
    for command in &commands {
        one_by_one.apply(command.clone());
    }
    let batched = Harness::memory();
    apply_batched(&batched, &commands);
    assert_eq!(one_by_one.count(Cf::Dedup), 0);
    assert_eq!(
        dump(batched.store()),
        dump(one_by_one.store()),
        "replicas diverge with batching"
    );
}

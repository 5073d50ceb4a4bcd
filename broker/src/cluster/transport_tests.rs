//! What crosses between nodes survives encoding, and injected faults stop
//! requests before they reach the transport.

use std::sync::Arc;
use std::time::Duration;

use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::{CommittedLeaderId, EntryPayload, LogId};

use crate::domain::{DeliveryGuarantee, MessageId, NewMessage, Priority, TopicName};
use crate::error::BrokerError;
use crate::state::{Command, Response};

use super::local::LocalNetwork;
use super::transport::{Faults, Mesh, NodeInfo, PeerReply, PeerRequest, RaftRpc, TransportError};
use super::types::{Entry, Vote};

fn publish_command() -> Command {
    Command::Publish {
        messages: vec![NewMessage {
            id: MessageId::parse("id", "m-1").unwrap(),
            topic: TopicName::parse("topic", "orders.eu").unwrap(),
            payload: bytes::Bytes::from_static(b"\x00\xffpayload"),
            headers: [("k".to_string(), "v".to_string())].into_iter().collect(),
            priority: Priority::High,
            ttl_ms: Some(5_000),
            delay_ms: 7,
            delivery: DeliveryGuarantee::ExactlyOnce,
        }],
        auto_create: true,
        now_ms: 42,
    }
}

#[test]
fn raft_rpcs_with_commands_survive_encoding() {
    let vote = Vote::new_committed(3, 7);
    let entry = Entry {
        log_id: LogId::new(CommittedLeaderId::new(3, 7), 11),
        payload: EntryPayload::Normal(publish_command()),
    };
    let request = PeerRequest::Raft {
        group: 0,
        rpc: RaftRpc::Append(AppendEntriesRequest {
            vote,
            prev_log_id: Some(LogId::new(CommittedLeaderId::new(3, 7), 10)),
            entries: vec![entry.clone()],
            leader_commit: None,
        }),
    };
    let decoded = PeerRequest::decode(&request.encode().unwrap()).unwrap();
    let PeerRequest::Raft {
        group: 0,
        rpc: RaftRpc::Append(append),
    } = decoded
    else {
        panic!("decoded into another request: {decoded:?}");
    };
    assert_eq!(append.vote, vote);
    assert_eq!(append.entries, vec![entry]);

    let vote_request = PeerRequest::Raft {
        group: 3,
        rpc: RaftRpc::Vote(VoteRequest::new(vote, None)),
    };
    let decoded = PeerRequest::decode(&vote_request.encode().unwrap()).unwrap();
    assert!(matches!(decoded, PeerRequest::Raft { group: 3, rpc: RaftRpc::Vote(v) } if v.vote == vote));
}

#[test]
fn forwarded_commands_and_their_errors_survive_encoding() {
    let request = PeerRequest::Forward {
        group: 0,
        command: publish_command(),
    };
    match PeerRequest::decode(&request.encode().unwrap()).unwrap() {
        PeerRequest::Forward { command, .. } => assert_eq!(command, publish_command()),
        other => panic!("{other:?}"),
    }
    let reply = PeerReply::Forward(Err(BrokerError::NotLeader {
        leader: Some("10.0.0.2:7400".into()),
    }));
    match PeerReply::decode(&reply.encode().unwrap()).unwrap() {
        PeerReply::Forward(Err(BrokerError::NotLeader { leader })) => {
            assert_eq!(leader.as_deref(), Some("10.0.0.2:7400"));
        }
        other => panic!("{other:?}"),
    }
    let reply = PeerReply::Forward(Ok(Response::Swept));
    assert!(matches!(
        PeerReply::decode(&reply.encode().unwrap()).unwrap(),
        PeerReply::Forward(Ok(Response::Swept))
    ));
}

#[test]
fn garbage_is_refused_not_panicked_on() {
    assert!(matches!(
        PeerRequest::decode(&[0xff, 0xff, 0xff]),
        Err(TransportError::Codec(_))
    ));
    assert!(matches!(PeerReply::decode(&[]), Err(TransportError::Codec(_))));
}

#[tokio::test]
async fn a_cut_link_drops_calls_until_they_time_out_and_healing_restores_it() {
    let faults = Faults::default();
    let mesh = Mesh::new("a:1".into(), Arc::new(LocalNetwork::default()), faults.clone());
    let hello = || {
        PeerRequest::Hello(NodeInfo {
            id: 1,
            address: "a:1".into(),
        })
    };
    faults.partition("a:1", "b:2");
    let cut = mesh
        .call("b:2", hello(), Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(matches!(cut, TransportError::Timeout(_, 50)), "{cut}");
    faults.heal();
    // Healed, the request reaches the transport, which has no node b.
    let absent = mesh
        .call("b:2", hello(), Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(absent.to_string().contains("no such node"), "{absent}");
}

#[tokio::test]
async fn a_delayed_link_runs_into_the_callers_timeout() {
    let faults = Faults::default();
    let mesh = Mesh::new("a:1".into(), Arc::new(LocalNetwork::default()), faults.clone());
    faults.delay("a:1", "b:2", Duration::from_millis(200));
    let slow = mesh
        .call("b:2", PeerRequest::Status, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(matches!(slow, TransportError::Timeout(_, 50)), "{slow}");
}

#[test]
fn messages_keep_their_place_so_nodes_of_two_versions_understand_each_other() {
    // postcard encodes an enum by the variant's position: a variant added
    // in the middle would make an older node read one message as another.
    let first_byte = |bytes: Vec<u8>| bytes[0];
    assert_eq!(first_byte(PeerRequest::Status.encode().unwrap()), 5);
    let forward = PeerRequest::Forward {
        group: 0,
        command: publish_command(),
    };
    assert_eq!(first_byte(forward.encode().unwrap()), 1);
    let hold = PeerRequest::HoldElections { group: 1, ms: 10 };
    assert_eq!(first_byte(hold.encode().unwrap()), 7);
    assert_eq!(
        first_byte(PeerReply::Forward(Ok(Response::Swept)).encode().unwrap()),
        1
    );
    assert_eq!(first_byte(PeerReply::Live.encode().unwrap()), 2);
    assert_eq!(first_byte(PeerReply::NoSuchGroup(3).encode().unwrap()), 7);
    assert_eq!(first_byte(PeerReply::Done.encode().unwrap()), 8);
}

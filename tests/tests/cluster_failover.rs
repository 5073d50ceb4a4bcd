//! Faults in an in-process cluster: the leader stops, a leader is cut off
//! in a minority, links heal. No acknowledged message is lost, a minority
//! never acknowledges a write, and there is never more than one leader.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use hermod_client::{Client, ClientOptions, Delivery, RetryPolicy, SubscriptionConfig};
use hermod_tests::cluster::{TestCluster, all_agree, consume_confirmed, exactly_once_job};

/// Exactly-once, with a short ack deadline: after a leader change, unacked
/// messages wait out one deadline before they are redelivered.
fn jobs_subscription() -> SubscriptionConfig {
    SubscriptionConfig::new("jobs.>")
        .delivery(Delivery::ExactlyOnce)
        .ack_deadline(Duration::from_secs(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_leader_takes_over_when_the_leader_stops_and_nothing_acknowledged_is_lost() -> anyhow::Result<()>
{
    let mut cluster = TestCluster::start(3).await?;
    let old = cluster.wait_for_leader().await?;
    let client = cluster.client(&[0, 1, 2]).await?;
    client.create_subscription("jobs", jobs_subscription()).await?;
    let mut acknowledged = BTreeSet::new();
    for n in 0..10 {
        let id = format!("before-{n}");
        client.publish(exactly_once_job(&id)).await?;
        acknowledged.insert(id);
    }
    cluster.stop(old).await;
    let stopped_at = Instant::now();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    let client = cluster.client(&survivors).await?;
    client.publish(exactly_once_job("after-0")).await?;
    eprintln!(
        "first publish after the leader stopped: {:?}",
        stopped_at.elapsed()
    );
    acknowledged.insert("after-0".into());
    let new = cluster.wait_for_leader().await?;
    assert_ne!(new, old, "a surviving node leads");
    for n in 1..10 {
        let id = format!("after-{n}");
        client.publish(exactly_once_job(&id)).await?;
        acknowledged.insert(id);
    }
    consume_confirmed(&client, "jobs", &acknowledged).await?;
    // The old leader comes back as a follower and catches up.
    cluster.restart(old).await?;
    cluster.wait_for(|views| all_agree(views, 3)).await?;
    cluster.wait_caught_up().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_cut_off_in_a_minority_refuses_writes_while_the_majority_serves() -> anyhow::Result<()> {
    let cluster = TestCluster::start(3).await?;
    let old = cluster.wait_for_leader().await?;
    let majority: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    let old_id = cluster.node(old).broker.consensus().node_id();
    cluster.isolate(old);
    // The cut-off leader notices within two election timeouts that no
    // majority answers it.
    cluster
        .wait_for(|views| views.iter().any(|(i, v)| *i == old && !v.quorum))
        .await?;

    // The cut-off leader must not acknowledge: it fails fast and retryably.
    let lonely = Client::connect(
        ClientOptions::new()
            .endpoint(cluster.endpoint(old))
            .request_timeout(Duration::from_secs(20))
            .retry_policy(RetryPolicy::none())
            .route_to_leaders(false),
    )
    .await?;
    let started = Instant::now();
    let refused = lonely.publish(exactly_once_job("minority")).await;
    let error = refused.expect_err("a minority must not acknowledge a write");
    assert!(error.is_retryable(), "the refusal is retryable: {error}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the refusal came after {:?}",
        started.elapsed()
    );

    // The majority elects a leader of its own and serves.
    cluster
        .wait_for(|views| {
            views.iter().any(|(i, v)| {
                majority.contains(i) && v.quorum && v.groups[0].leader.is_some_and(|l| l != old_id)
            })
        })
        .await?;
    let client = cluster.client(&majority).await?;
    client.create_subscription("jobs", jobs_subscription()).await?;
    let mut acknowledged = BTreeSet::new();
    for n in 0..10 {
        let id = format!("majority-{n}");
        client.publish(exactly_once_job(&id)).await?;
        acknowledged.insert(id);
    }

    // Healed, the old leader follows and catches up; the minority write never appears.
    cluster.heal();
    cluster.wait_for(|views| all_agree(views, 3)).await?;
    cluster.wait_caught_up().await?;
    let leaders: BTreeSet<u64> = cluster
        .views()
        .iter()
        .filter_map(|(_, v)| v.groups[0].leader)
        .collect();
    assert_eq!(leaders.len(), 1, "one leader after healing");
    consume_confirmed(&client, "jobs", &acknowledged).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_cut_off_from_its_leader_refuses_writes_without_waiting_out_a_timeout()
-> anyhow::Result<()> {
    let cluster = TestCluster::start(3).await?;
    let leader = cluster.wait_for_leader().await?;
    let follower = (leader + 1) % 3;
    cluster.isolate(follower);
    // The follower notices the silence of its leader (a cut link drops
    // what is sent: its heartbeats just stop arriving).
    cluster
        .wait_for(|views| views.iter().any(|(i, v)| *i == follower && !v.quorum))
        .await?;

    // A write through it would wait out the proposal timeout at the
    // leader's silent end; it is refused at once instead, retryably.
    let lonely = Client::connect(
        ClientOptions::new()
            .endpoint(cluster.endpoint(follower))
            .request_timeout(Duration::from_secs(20))
            .retry_policy(RetryPolicy::none())
            .route_to_leaders(false),
    )
    .await?;
    let started = Instant::now();
    let refused = lonely.publish(exactly_once_job("cut-off")).await;
    let error = refused.expect_err("a node cut off from its leader must not acknowledge");
    assert!(error.is_retryable(), "the refusal is retryable: {error}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the refusal came after {:?}",
        started.elapsed()
    );

    // The leader and the other follower go on serving meanwhile.
    let majority: Vec<usize> = (0..3).filter(|i| *i != follower).collect();
    let client = cluster.client(&majority).await?;
    client.create_subscription("jobs", jobs_subscription()).await?;
    client.publish(exactly_once_job("majority")).await?;
    assert_eq!(cluster.leader(), Some(leader), "the leader kept its place");

    cluster.heal();
    cluster.wait_for(|views| all_agree(views, 3)).await?;
    cluster.wait_caught_up().await?;
    consume_confirmed(&client, "jobs", &BTreeSet::from(["majority".to_string()])).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_waiting_on_a_leader_that_loses_its_quorum_fails_when_the_leader_knows() -> anyhow::Result<()>
{
    let cluster = TestCluster::start(3).await?;
    let leader = cluster.wait_for_leader().await?;
    let client = Client::connect(
        ClientOptions::new()
            .endpoint(cluster.endpoint(leader))
            .request_timeout(Duration::from_secs(20))
            .retry_policy(RetryPolicy::none())
            .route_to_leaders(false),
    )
    .await?;
    client.publish(exactly_once_job("before")).await?;
    // Cut off before the write: the leader accepts it, and its replication
    // goes nowhere. It must not wait out the proposal timeout (10 s).
    cluster.isolate(leader);
    let started = Instant::now();
    let refused = client.publish(exactly_once_job("in-flight")).await;
    let error = refused.expect_err("a minority must not acknowledge a write");
    assert!(error.is_retryable(), "the refusal is retryable: {error}");
    assert!(error.to_string().contains("no quorum"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "the refusal came after {:?}",
        started.elapsed()
    );
    Ok(())
}

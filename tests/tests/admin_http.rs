//! The admin HTTP endpoints: health, readiness and Prometheus metrics.

use hermod_client::{Client, OutgoingMessage};
use hermod_tests::{TestNode, http_get};

#[tokio::test]
async fn health_and_readiness_report_a_leading_node() -> anyhow::Result<()> {
    let node = TestNode::start().await?;
    let port = node.admin_addr().port();
    let (code, body) = tokio::task::spawn_blocking(move || http_get(port, "/health/live")).await??;
    assert_eq!(code, 200, "{body}");
    let (code, body) = tokio::task::spawn_blocking(move || http_get(port, "/health/ready")).await??;
    assert_eq!(code, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["role"], "leader");
    assert!(ready["node"].as_str().is_some_and(|n| !n.is_empty()));
    assert_eq!(ready["connected_nodes"], 1);
    let (code, _) = tokio::task::spawn_blocking(move || http_get(port, "/health")).await??;
    assert_eq!(code, 200);
    Ok(())
}

#[tokio::test]
async fn metrics_count_publishes_and_fsync_batches() -> anyhow::Result<()> {
    let node = TestNode::start().await?;
    let client = Client::connect_to(node.endpoint()).await?;
    for i in 0..5 {
        client
            .publish(OutgoingMessage::new("metrics.test", format!("m{i}")))
            .await?;
    }
    let port = node.admin_addr().port();
    let (code, body) = tokio::task::spawn_blocking(move || http_get(port, "/metrics")).await??;
    assert_eq!(code, 200);
    for name in [
        "hermod_messages_published_total",
        "hermod_publish_to_ack_seconds_bucket",
        "hermod_fsync_batch_entries_bucket",
    ] {
        assert!(body.contains(name), "/metrics lacks {name}:\n{body}");
    }
    let published: f64 = body
        .lines()
        .find(|l| l.starts_with("hermod_messages_published_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .expect("a published counter value");
    // Other tests in this process share the recorder, so at least ours are counted.
    assert!(published >= 5.0, "published = {published}");
    Ok(())
}

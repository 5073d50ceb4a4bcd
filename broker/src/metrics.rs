//! Metric names, and the one Prometheus recorder of the process.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const PUBLISHED: &str = "hermod_messages_published_total";
pub const DUPLICATES: &str = "hermod_publish_duplicates_total";
pub const DELIVERED: &str = "hermod_messages_delivered_total";
pub const REDELIVERED: &str = "hermod_messages_redelivered_total";
pub const ACKED: &str = "hermod_messages_acked_total";
pub const NACKED: &str = "hermod_messages_nacked_total";
pub const DEAD_LETTERED: &str = "hermod_messages_dead_lettered_total";
pub const DROPPED: &str = "hermod_messages_dropped_total";
pub const EXPIRED: &str = "hermod_messages_expired_total";
pub const IN_FLIGHT: &str = "hermod_subscription_in_flight";
pub const BACKLOG: &str = "hermod_subscription_backlog";
pub const PUBLISH_LATENCY: &str = "hermod_publish_to_ack_seconds";
pub const FSYNC_BATCH: &str = "hermod_fsync_batch_entries";
pub const FORWARDED: &str = "hermod_requests_forwarded_total";
pub const LIVE_DROPPED: &str = "hermod_live_batches_dropped_total";
pub const CLUSTER_SIZE: &str = "hermod_cluster_nodes";
pub const LEADER_CHANGES: &str = "hermod_leader_changes_total";
pub const REPLICATION_LAG: &str = "hermod_replication_lag_entries";

static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// Installs the process-wide recorder once (later calls share it) and returns
/// the handle that renders `/metrics`.
pub fn install() -> Result<PrometheusHandle, String> {
    HANDLE
        .get_or_init(|| {
            let latency_buckets = [
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ];
            let batch_buckets = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(PUBLISH_LATENCY.into()),
                    &latency_buckets,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        metrics_exporter_prometheus::Matcher::Full(FSYNC_BATCH.into()),
                        &batch_buckets,
                    )
                })
                .map_err(|e| e.to_string())?
                .install_recorder()
                .map_err(|e| e.to_string())
        })
        .clone()
}

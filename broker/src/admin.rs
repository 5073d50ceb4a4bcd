//! The admin HTTP server: health, readiness and Prometheus metrics.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cluster::{Consensus, NodeId};

/// What the admin endpoints read.
#[derive(Clone)]
pub struct AdminState {
    pub node_id: NodeId,
    pub consensus: Consensus,
    pub metrics: PrometheusHandle,
}

pub fn router(state: AdminState) -> axum::Router {
    axum::Router::new()
        .route("/health", get(ready))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

pub async fn serve(listener: TcpListener, state: AdminState, mut stopped: watch::Receiver<bool>) {
    let result = axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!("admin server failed: {e}");
    }
}

async fn live() -> impl IntoResponse {
    Json(json!({"status": "live"}))
}

/// Ready when this node's consensus group has a leader it can reach.
async fn ready(State(state): State<AdminState>) -> impl IntoResponse {
    let leader = state.consensus.leader();
    let is_ready = leader.is_some();
    let body = json!({
        "ready": is_ready,
        "node": state.node_id.to_string(),
        "role": if state.consensus.is_leader() { "leader" } else if is_ready { "follower" } else { "candidate" },
        "connected_nodes": state.consensus.voters().len(),
        "shard_leaders": { "metadata": leader.map(|l| l.to_string()) },
    });
    let code = if is_ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

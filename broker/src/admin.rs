//! The admin HTTP server: health, readiness, Prometheus metrics, and the
//! cluster API (`/api/cluster/status`, `join`, `leave`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cluster::{ClusterView, Consensus, MembershipChange, NodeId};
use crate::error::BrokerError;

/// What the admin endpoints read.
#[derive(Clone)]
pub struct AdminState {
    pub node_id: NodeId,
    pub consensus: Consensus,
    pub broker: crate::engine::Broker,
    pub metrics: PrometheusHandle,
}

pub fn router(state: AdminState) -> axum::Router {
    axum::Router::new()
        .route("/health", get(ready))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/cluster/status", get(cluster_status))
        .route("/api/cluster/join", post(cluster_join))
        .route("/api/cluster/leave", post(cluster_leave))
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

/// Ready when this node reaches a quorum of its cluster (a leader it hears
/// from, or, as leader, a quorum that answers it) and serves every shard.
async fn ready(State(state): State<AdminState>) -> impl IntoResponse {
    let view = state.consensus.local_status();
    let role = view
        .nodes
        .iter()
        .find(|n| n.id == view.node_id)
        .map_or("joining", |n| n.role.as_str());
    let leaders: serde_json::Map<String, serde_json::Value> = view
        .groups
        .iter()
        .map(|g| (g.name.clone(), json!(g.leader.map(|l| l.to_string()))))
        .collect();
    let ready = view.quorum && state.broker.shards_open();
    let body = json!({
        "ready": ready,
        "node": state.node_id.to_string(),
        "role": role,
        "connected_nodes": view.nodes.iter().filter(|n| n.up).count(),
        "shard_leaders": leaders,
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

/// The JSON form of a cluster view of a cluster of `shards` shard groups,
/// as `hermod cluster status --json` prints it.
pub fn cluster_json(view: &ClusterView, shards: u32) -> serde_json::Value {
    json!({
        "node_id": view.node_id,
        "quorum": view.quorum,
        "shards": shards,
        "nodes": view.nodes.iter().map(|n| json!({
            "id": n.id,
            "address": n.address,
            "up": n.up,
            "role": n.role.as_str(),
            "last_heartbeat_age_ms": n.heard_ago_ms,
        })).collect::<Vec<_>>(),
        "groups": view.groups.iter().map(|g| json!({
            "name": g.name,
            "leader": g.leader,
            "term": g.term,
            "replicas": g.replicas,
            "lag": g.lag,
            "last_log_index": g.last_log_index,
            "applied_index": g.applied_index,
        })).collect::<Vec<_>>(),
    })
}

async fn cluster_status(State(state): State<AdminState>) -> impl IntoResponse {
    let shards = state.broker.shard_count().map_or(0, |shards| shards.count());
    Json(cluster_json(&state.consensus.status().await, shards))
}

/// The body of `POST /api/cluster/join`.
#[derive(serde::Deserialize)]
struct JoinBody {
    node: String,
}

/// The body of `POST /api/cluster/leave`; without it, this node leaves.
#[derive(serde::Deserialize, Default)]
struct LeaveBody {
    node_id: Option<NodeId>,
}

async fn cluster_join(
    State(state): State<AdminState>,
    body: Option<Json<JoinBody>>,
) -> axum::response::Response {
    let Some(Json(body)) = body else {
        return error_response(BrokerError::Invalid(crate::domain::ValidationError::new(
            "node",
            "a JSON body {\"node\": \"host:port\"} is required",
        )));
    };
    match state.consensus.add_node_at(&body.node).await {
        Ok(id) => Json(json!({"joined": id})).into_response(),
        Err(e) => error_response(e),
    }
}

async fn cluster_leave(
    State(state): State<AdminState>,
    body: Option<Json<LeaveBody>>,
) -> axum::response::Response {
    let node = body
        .map(|b| b.0)
        .unwrap_or_default()
        .node_id
        .unwrap_or(state.node_id);
    match state
        .consensus
        .change_membership(MembershipChange::Leave(node))
        .await
    {
        Ok(()) => Json(json!({"left": node})).into_response(),
        Err(e) => error_response(e),
    }
}

/// An error as JSON with the HTTP status that matches its gRPC code.
fn error_response(error: BrokerError) -> axum::response::Response {
    let code = match tonic::Status::from(error.clone()).code() {
        tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::FailedPrecondition => StatusCode::CONFLICT,
        tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (code, Json(json!({"error": error.to_string()}))).into_response()
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

//! `hermod cluster status|join|leave`.

use hermod_client::ClusterStatus;
use serde_json::{Value, json};

use super::connect::ClientArgs;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ClusterCommand {
    /// Show every node, every Raft group's leader, term and lag, and quorum.
    Status(StatusArgs),
    /// Add the node listening at ADDRESS (host:port) to the cluster.
    Join(JoinArgs),
    /// Remove a node from the cluster (the connected node without --node-id).
    Leave(LeaveArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct JoinArgs {
    /// gRPC address of the node to add, e.g. 10.0.0.3:7400.
    pub address: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct LeaveArgs {
    /// The node to remove; the connected node when absent.
    #[arg(long)]
    pub node_id: Option<u64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn cluster(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Status(args) => {
            let status = args.client.connect().await?.cluster_status().await?;
            args.client
                .output()
                .emit(&status_json(&status), || status_human(&status))?;
        }
        ClusterCommand::Join(args) => {
            let id = args
                .client
                .connect()
                .await?
                .join_cluster(args.address.clone())
                .await?;
            let value = json!({"joined": id, "address": args.address});
            args.client
                .output()
                .emit(&value, || format!("node {id} at {} joined", args.address))?;
        }
        ClusterCommand::Leave(args) => {
            let client = args.client.connect().await?;
            let node = match args.node_id {
                Some(id) => id,
                None => client.cluster_status().await?.node_id,
            };
            client.leave_cluster(Some(node)).await?;
            let value = json!({"left": node});
            args.client
                .output()
                .emit(&value, || format!("node {node} left the cluster"))?;
        }
    }
    Ok(())
}

/// `{"node_id", "quorum", "shards", "nodes": [...], "groups": [...]}`.
pub fn status_json(status: &ClusterStatus) -> Value {
    json!({
        "node_id": status.node_id,
        "quorum": status.quorum,
        "shards": status.shards,
        "nodes": status.nodes.iter().map(|n| json!({
            "id": n.id,
            "address": n.address,
            "up": n.up,
            "role": n.role,
            "last_heartbeat_age_ms": n.last_heartbeat_age_ms,
        })).collect::<Vec<_>>(),
        "groups": status.groups.iter().map(|g| json!({
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

fn status_human(status: &ClusterStatus) -> String {
    let mut lines = vec![format!(
        "node {} — quorum: {}",
        status.node_id,
        if status.quorum { "yes" } else { "NO" }
    )];
    for n in &status.nodes {
        let heard = n
            .last_heartbeat_age_ms
            .map_or_else(|| "never heard".to_string(), |ms| format!("heard {ms} ms ago"));
        let up = if n.up { "up" } else { "DOWN" };
        lines.push(format!(
            "  node {:<20} {:<22} {:<9} {up:<4} {heard}",
            n.id, n.address, n.role
        ));
    }
    for g in &status.groups {
        let leader = g.leader.map_or_else(|| "none".to_string(), |l| l.to_string());
        lines.push(format!(
            "  group {} leader {leader} term {} replicas {:?} lag {} applied {}/{}",
            g.name, g.term, g.replicas, g.lag, g.applied_index, g.last_log_index
        ));
    }
    lines.join("\n")
}

//! The gRPC edge: `hermod.v1.Broker`, `hermod.v1.Cluster` and the standard
//! health service. Only
//! this folder (and the client's edge) sees prost types.

mod cluster;
mod convert;
mod publish_stream;
mod service;
mod subscribe;

pub use cluster::{ClusterService, status_message};
pub use service::BrokerService;

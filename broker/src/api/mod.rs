//! The gRPC edge: `hermod.v1.Broker` and the standard health service. Only
//! this folder (and the client's edge) sees prost types.

mod convert;
mod service;
mod subscribe;

pub use service::BrokerService;

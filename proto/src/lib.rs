//! Generated protobuf and gRPC code for Hermod's public API (`hermod.v1`) and
//! its node-to-node API (`hermod.internal.v1`), and the one rule of the wire
//! contract that is code rather than messages: [`routing::group_of`].
//!
//! Only the broker's `api/` layer and the client crate's edge use these types;
//! everything behind them works with Hermod's own domain types.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod routing;

/// The public API, package `hermod.v1`.
pub mod v1 {
    tonic::include_proto!("hermod.v1");
}

/// Node-to-node traffic, package `hermod.internal.v1`; only the broker's
/// cluster transport uses it.
pub mod internal {
    tonic::include_proto!("hermod.internal.v1");
}

//! Hermod, a distributed publish/subscribe broker: the table of contents.
//!
//! Layers, from the pure core outwards:
//! - [`domain`]: validated names, messages, settings, limits. Pure data.
//! - [`semantics`]: delivery rules (priorities, leases, redelivery, TTL,
//!   delay, dead-lettering) as pure code on data, unit-tested exhaustively.
//! - [`storage`]: the key-value interface; RocksDB and in-memory engines.
//! - [`state`]: the replicated state machine: commands applied to storage.
//! - [`cluster`]: consensus with openraft; orders commands before they apply.
//! - [`engine`]: a node's publish path, subscriptions' dispatchers, settlement.
//! - [`api`]: the gRPC edge; [`admin`]: health and metrics over HTTP.
//! - [`server`]: starts and stops a node; [`config`]: its configuration.
//! - [`cli`]: the `hermod` command line. [`error`], [`metrics`]: shared.

pub mod admin;
pub mod api;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod domain;
pub mod engine;
pub mod error;
pub mod metrics;
pub mod semantics;
pub mod server;
pub mod state;
pub mod storage;

//! Bad input at the edge: every rule for refusing bad input, one test per rule.
//!
//! The tests go through the raw gRPC client so we can send what the typed
//! client would refuse. Each test checks the gRPC code, that the error names
//! the offending field, that nothing changed (topics, their counts and
//! settings, subscriptions), and that the node still serves afterwards: a
//! good publish is stored and is the only message a catch-all subscription
//! delivers.

mod expect;
mod fixture;
mod request;

mod admin;
mod batches;
mod message_fields;
mod names;
mod settings;
mod settle;
mod subscribe_stream;
mod typed_client;

use std::time::Duration;

use tonic::Status;

/// The longest any single answer may take.
const WAIT: Duration = Duration::from_secs(10);
/// The catch-all subscription every fixture creates before the test runs.
const WATCH: &str = "watch";

const MIB: usize = 1024 * 1024;
const YEAR_MS: u64 = 365 * 24 * 3600 * 1000;
const DAY_MS: u64 = 24 * 3600 * 1000;
const HOUR_MS: u64 = 3600 * 1000;

async fn within<F: std::future::Future>(future: F) -> Result<F::Output, tokio::time::error::Elapsed> {
    tokio::time::timeout(WAIT, future).await
}

fn elapsed(_: tokio::time::error::Elapsed) -> Status {
    Status::deadline_exceeded(format!("no answer within {WAIT:?}"))
}

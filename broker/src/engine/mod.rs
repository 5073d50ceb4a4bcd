//! The node's engine: the publish path (at-most-once fast path, durable path
//! through consensus), the routing of applied changes to subscriptions, and
//! settlement of deliveries, in each Raft group the node hosts, and the
//! routing of requests between those groups. Protocol-free: `api/` speaks
//! gRPC in front of it.

mod batcher;
mod broker;
mod clock;
mod consumer;
mod delivery;
mod dispatcher;
mod group;
mod leadership;
mod live;
mod merge;
mod publish;
mod reconcile;
mod relay;
mod router;
mod settle;
mod token;
mod window;

pub use crate::domain::Settle;
pub use broker::{Broker, WeakBroker};
pub use clock::now_ms;
pub use delivery::Delivery;
pub use dispatcher::Input;
pub use group::{Attachment, CONSUMER_BUFFER_BATCHES, GroupSetup, SWEEP_INTERVAL_MS, SubscriptionStats};
pub use merge::Consumer;
pub use token::AckToken;

use group::Group;

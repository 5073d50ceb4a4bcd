//! The in-memory copy of every topic and subscription record: small, read
//! often, changed only by the state machine.

use std::collections::BTreeMap;

use crate::domain::{SubscriptionName, TopicName};
use crate::storage::{Cf, StorageError, Store, decode, keys};

use super::placement::{PLACEMENT_KEY, PlacementRecord};
use super::records::{SubscriptionRecord, TopicRecord};

pub const TOPIC_PREFIX: &[u8] = b"t/";
pub const SUBSCRIPTION_PREFIX: &[u8] = b"s/";
pub const CURSOR_PREFIX: &[u8] = b"c/";
/// Most records loaded per scan while opening.
const LOAD_CHUNK: usize = 1024;

/// Topics and subscriptions by name.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    pub topics: BTreeMap<TopicName, TopicRecord>,
    pub subscriptions: BTreeMap<SubscriptionName, SubscriptionRecord>,
    /// Where the shards live; group 0 only, once the cluster placed them.
    pub placement: Option<PlacementRecord>,
}

impl Catalog {
    /// Reads every record from the store.
    pub fn load(store: &dyn Store) -> Result<Self, StorageError> {
        let mut catalog = Catalog::default();
        for record in load_all::<TopicRecord>(store, TOPIC_PREFIX)? {
            catalog.topics.insert(record.name.clone(), record);
        }
        for record in load_all::<SubscriptionRecord>(store, SUBSCRIPTION_PREFIX)? {
            catalog.subscriptions.insert(record.name.clone(), record);
        }
        catalog.placement = match store.get(Cf::Meta, PLACEMENT_KEY)? {
            Some(bytes) => Some(decode(Cf::Meta, &bytes)?),
            None => None,
        };
        Ok(catalog)
    }

    /// Subscriptions whose pattern selects `topic`.
    pub fn subscriptions_of<'a>(
        &'a self,
        topic: &'a TopicName,
    ) -> impl Iterator<Item = &'a SubscriptionRecord> {
        self.subscriptions
            .values()
            .filter(move |s| s.settings.pattern.matches(topic))
    }

    /// Topics selected by a subscription's pattern.
    pub fn topics_of<'a>(
        &'a self,
        subscription: &'a SubscriptionRecord,
    ) -> impl Iterator<Item = &'a TopicRecord> {
        self.topics
            .values()
            .filter(move |t| subscription.settings.pattern.matches(&t.name))
    }
}

fn load_all<T: serde::de::DeserializeOwned>(
    store: &dyn Store,
    prefix: &[u8],
) -> Result<Vec<T>, StorageError> {
    let end = keys::prefix_end(prefix);
    let mut from = prefix.to_vec();
    let mut out = Vec::new();
    loop {
        let chunk = store.scan(Cf::Meta, &from, &end, LOAD_CHUNK)?;
        let done = chunk.len() < LOAD_CHUNK;
        for (key, value) in &chunk {
            out.push(decode(Cf::Meta, value)?);
            from = key.clone();
            from.push(0);
        }
        if done {
            return Ok(out);
        }
    }
}

pub fn topic_key(name: &TopicName) -> Vec<u8> {
    keys::named(TOPIC_PREFIX, name.as_str())
}

pub fn subscription_key(name: &SubscriptionName) -> Vec<u8> {
    keys::named(SUBSCRIPTION_PREFIX, name.as_str())
}

/// Where a subscription starts reading a topic.
pub fn cursor_key(subscription: &SubscriptionName, topic: &TopicName) -> Vec<u8> {
    let mut key = keys::named(CURSOR_PREFIX, subscription.as_str());
    key.extend_from_slice(topic.as_str().as_bytes());
    key.push(keys::SEPARATOR);
    key
}

/// The prefix of every cursor of a subscription.
pub fn cursor_prefix(subscription: &SubscriptionName) -> Vec<u8> {
    keys::named(CURSOR_PREFIX, subscription.as_str())
}

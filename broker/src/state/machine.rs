//! Applies commands to storage and the catalog, batch by batch.

use std::sync::{Arc, RwLock, RwLockReadGuard};

use crate::domain::META_GROUP;
use crate::storage::{StorageError, Store};

use super::catalog::Catalog;
use super::command::{Applied, Command, Response};
use super::events::Event;
use super::txn::Txn;

/// The state machine: storage plus the catalog of topics and subscriptions.
/// Cheap to clone; clones share the same state.
#[derive(Clone)]
pub struct StateMachine {
    store: Arc<dyn Store>,
    catalog: Arc<RwLock<Catalog>>,
    /// The Raft group whose commands this machine applies.
    group: u32,
}

/// Applies commands inside one transaction.
pub(super) struct Applier<'a, 'b> {
    pub catalog: &'a mut Catalog,
    pub txn: &'a mut Txn<'b>,
    pub out: &'a mut Vec<Applied>,
    /// The group applying: it is part of every event's id, since several
    /// groups write `$cluster.events` and number their copies on their own.
    pub group: u32,
}

impl StateMachine {
    /// The state machine of group 0, the metadata group.
    pub fn open(store: Arc<dyn Store>) -> Result<Self, StorageError> {
        Self::open_group(store, META_GROUP)
    }

    /// The state machine of group `group`: the metadata group or a shard.
    pub fn open_group(store: Arc<dyn Store>, group: u32) -> Result<Self, StorageError> {
        super::reindex::ensure_priority_index(store.as_ref())?;
        let catalog = Catalog::load(store.as_ref())?;
        Ok(Self {
            store,
            catalog: Arc::new(RwLock::new(catalog)),
            group,
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// A read view of the catalog; hold it briefly.
    pub fn catalog(&self) -> RwLockReadGuard<'_, Catalog> {
        self.catalog
            .read()
            .expect("the catalog lock is never poisoned: apply does not panic")
    }

    /// Reloads the catalog from storage (after a snapshot was installed).
    pub fn reload(&self) -> Result<(), StorageError> {
        // A snapshot from a node that predates the index carries none.
        super::reindex::ensure_priority_index(self.store.as_ref())?;
        let fresh = Catalog::load(self.store.as_ref())?;
        *self.catalog.write().expect("catalog lock") = fresh;
        Ok(())
    }

    /// Applies commands in order into `txn` (the caller writes the batch,
    /// with whatever else must be atomic with it). Returns one response per
    /// command; `out` collects what changed.
    pub fn apply_all<'c>(
        &self,
        txn: &mut Txn<'_>,
        commands: impl IntoIterator<Item = Option<&'c Command>>,
        out: &mut Vec<Applied>,
    ) -> Result<Vec<Response>, StorageError> {
        let mut catalog = self.catalog.write().expect("the catalog lock is never poisoned");
        // Applied in place: a storage error is fatal to consensus, which stops
        // the node, and a restart reloads the catalog from what is on disk.
        // (A copy per batch would cost every publish a clone of the catalog.)
        let mut applier = Applier {
            catalog: &mut catalog,
            txn,
            out,
            group: self.group,
        };
        let mut responses = Vec::new();
        for command in commands {
            responses.push(match command {
                Some(command) => applier.apply(command)?,
                None => Response::Empty,
            });
        }
        Ok(responses)
    }

    /// Applies one command and writes it (for tests and tools).
    pub fn apply_one(&self, command: &Command, sync: bool) -> Result<(Response, Vec<Applied>), StorageError> {
        let mut txn = Txn::new(self.store.as_ref());
        let mut out = Vec::new();
        let mut responses = self.apply_all(&mut txn, [Some(command)], &mut out)?;
        self.store.write(txn.into_batch(), sync)?;
        Ok((responses.pop().unwrap_or(Response::Empty), out))
    }
}

impl Applier<'_, '_> {
    /// Whether this group records subscription events: group 0 does, and
    /// the shards, whose copies of every subscription follow group 0's, do
    /// not repeat them.
    pub(super) fn records_subscription_events(&self) -> bool {
        self.group == META_GROUP
    }

    fn apply(&mut self, command: &Command) -> Result<Response, StorageError> {
        match command {
            Command::CreateTopic {
                name,
                settings,
                now_ms,
            } => Ok(Response::Topic(self.create_topic(name, settings, *now_ms)?)),
            Command::DeleteTopic { name, now_ms } => Ok(Response::Deleted(self.delete_topic(name, *now_ms)?)),
            Command::CreateSubscription {
                name,
                settings,
                now_ms,
            } => Ok(Response::Subscription(
                self.create_subscription(name, settings, *now_ms)?,
            )),
            Command::DeleteSubscription { name, now_ms } => {
                Ok(Response::Deleted(self.delete_subscription(name, *now_ms)?))
            }
            Command::Publish {
                messages,
                auto_create,
                now_ms,
            } => Ok(Response::Published(self.publish(
                messages,
                *auto_create,
                *now_ms,
            )?)),
            Command::Ack { subscription, keys } => Ok(Response::Acked(self.ack(subscription, keys)?)),
            Command::DeadLetter {
                subscription,
                key,
                reason,
                attempts,
                now_ms,
            } => Ok(Response::DeadLettered(self.dead_letter(
                subscription,
                key,
                *reason,
                *attempts,
                *now_ms,
            )?)),
            Command::Sweep { now_ms } => {
                self.sweep(*now_ms)?;
                Ok(Response::Swept)
            }
            Command::Cluster { event, now_ms } => {
                self.append_event(Event::from(event), *now_ms)?;
                Ok(Response::Recorded)
            }
            Command::Place {
                shards,
                factor,
                targets,
            } => Ok(Response::Placed(self.place(*shards, *factor, targets)?)),
            Command::ClaimFounding { shard, incarnation } => {
                Ok(Response::Claimed(self.claim_founding(*shard, *incarnation)?))
            }
        }
    }
}

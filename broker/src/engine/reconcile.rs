//! Keeps every shard's subscriptions equal to group 0's, which is their
//! authority. Creating or deleting a subscription tells every shard at once
//! (`broker.rs`); this catches up a shard that missed it (it was without a
//! quorum then, or the node handling the request stopped midway).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::domain::{SubscriptionName, SubscriptionSettings};
use crate::error::BrokerError;

use super::group::Group;
use super::{Broker, WeakBroker};

/// How often group 0's leader compares the shards' subscriptions with its own.
pub const RECONCILE_INTERVAL_MS: u64 = 1_000;

/// Runs until the engine is dropped.
pub async fn run(broker: WeakBroker) {
    let mut ticker = tokio::time::interval(Duration::from_millis(RECONCILE_INTERVAL_MS));
    loop {
        ticker.tick().await;
        let Some(broker) = broker.upgrade() else { return };
        if let Err(e) = reconcile(&broker).await {
            tracing::debug!("reconciling the shards' subscriptions: {e}");
        }
    }
}

type Wanted = BTreeMap<SubscriptionName, SubscriptionSettings>;

fn subscriptions(group: &Group) -> Wanted {
    let catalog = group.reader().machine().catalog();
    catalog
        .subscriptions
        .values()
        .map(|record| (record.name.clone(), record.settings.clone()))
        .collect()
}

/// On group 0's leader: tells each shard replicated here what it lacks or
/// keeps in excess.
async fn reconcile(broker: &Broker) -> Result<(), BrokerError> {
    let main = broker.main();
    if !main.consensus().leads_with_quorum() || broker.shard_count()?.count() == 0 {
        return Ok(());
    }
    let shards = broker.shard_groups()?;
    // Everything committed to group 0 is applied here before it is read:
    // a subscription missing from a stale catalog must not be deleted.
    main.consensus().read_barrier().await?;
    let wanted = subscriptions(main);
    let me = main.consensus().node_id();
    for shard in shards {
        // A shard this node does not replicate has no catalog here to compare.
        if !shard.consensus().voters().contains(&me) {
            continue;
        }
        let have = subscriptions(&shard);
        for (name, settings) in &wanted {
            match have.get(name) {
                Some(kept) if kept == settings => continue,
                Some(_) => drop_subscription(&shard, name).await?,
                None => {}
            }
            tracing::info!(
                "creating subscription {name} in shard-{}",
                shard.consensus().group_id()
            );
            shard.create_subscription(name.clone(), settings.clone()).await?;
        }
        for name in have.keys().filter(|name| !wanted.contains_key(*name)) {
            tracing::info!(
                "deleting subscription {name} from shard-{}",
                shard.consensus().group_id()
            );
            drop_subscription(&shard, name).await?;
        }
    }
    Ok(())
}

async fn drop_subscription(shard: &Group, name: &SubscriptionName) -> Result<(), BrokerError> {
    match shard.delete_subscription(name.clone()).await {
        Ok(()) | Err(BrokerError::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

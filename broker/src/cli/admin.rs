//! `hermod topic ...` and `hermod subscription ...`.

use std::time::Duration;

use hermod_client::{StartPosition, SubscriptionConfig, TopicConfig};
use serde_json::json;

use super::connect::ClientArgs;
use super::output::{subscription_human, subscription_json, topic_human, topic_json};
use super::parse::{self, PriorityPolicyArg, RetentionArg, SubscriptionDeliveryArg};

/// A command that names one topic or subscription.
#[derive(Debug, Clone, clap::Args)]
pub struct NameArgs {
    pub name: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// A command that lists.
#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum TopicCommand {
    /// Create a topic (unset settings take the broker's defaults).
    Create(TopicCreateArgs),
    /// Show a topic's settings and counters.
    Get(NameArgs),
    /// List every topic.
    List(ListArgs),
    /// Delete a topic and its messages.
    Delete(NameArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct TopicCreateArgs {
    pub name: String,
    /// Default time to live of messages that set none, e.g. 1h.
    #[arg(long, value_parser = parse::duration)]
    pub ttl: Option<Duration>,
    /// How long message ids are remembered for deduplication, e.g. 2m or 7d.
    #[arg(long, value_parser = parse::duration)]
    pub dedup_window: Option<Duration>,
    #[arg(long, value_enum)]
    pub retention: Option<RetentionArg>,
    /// Delete messages older than this, e.g. 7d.
    #[arg(long, value_parser = parse::duration)]
    pub max_age: Option<Duration>,
    /// Keep at most this many messages.
    #[arg(long)]
    pub max_messages: Option<u64>,
    /// Keep at most this many bytes, e.g. 10GiB.
    #[arg(long, value_parser = parse::bytes)]
    pub max_bytes: Option<u64>,
    /// Largest payload accepted, e.g. 4MiB (at most 16MiB).
    #[arg(long, value_parser = parse::bytes)]
    pub max_message_bytes: Option<u64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

impl TopicCreateArgs {
    pub fn config(&self) -> TopicConfig {
        TopicConfig {
            retention: self.retention.map(Into::into),
            max_age: self.max_age,
            max_messages: self.max_messages,
            max_bytes: self.max_bytes,
            default_ttl: self.ttl,
            dedup_window: self.dedup_window,
            max_message_bytes: self.max_message_bytes,
        }
    }
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum SubscriptionCommand {
    /// Create a durable subscription on a pattern.
    Create(SubscriptionCreateArgs),
    /// Show a subscription's settings and counters.
    Get(NameArgs),
    /// List every durable subscription.
    List(ListArgs),
    /// Delete a subscription and its cursor.
    Delete(NameArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct SubscriptionCreateArgs {
    pub name: String,
    /// Topics to read (`*` one token, `>` the rest).
    pub pattern: String,
    #[arg(long, value_enum)]
    pub delivery: Option<SubscriptionDeliveryArg>,
    /// Time a consumer has to settle a delivery, e.g. 30s.
    #[arg(long, value_parser = parse::duration)]
    pub ack_deadline: Option<Duration>,
    /// Delivery attempts before a message is dead-lettered.
    #[arg(long)]
    pub max_deliveries: Option<u32>,
    /// Topic receiving dead-lettered messages.
    #[arg(long, value_name = "TOPIC")]
    pub dead_letter: Option<String>,
    /// Where to start: new, earliest, seq:N or time:RFC3339.
    #[arg(long, value_parser = parse::start)]
    pub start: Option<StartPosition>,
    #[arg(long, value_enum)]
    pub priority_policy: Option<PriorityPolicyArg>,
    /// First redelivery backoff, e.g. 1s.
    #[arg(long, value_parser = parse::duration)]
    pub backoff_initial: Option<Duration>,
    /// Longest redelivery backoff, e.g. 1m.
    #[arg(long, value_parser = parse::duration)]
    pub backoff_max: Option<Duration>,
    #[command(flatten)]
    pub client: ClientArgs,
}

impl SubscriptionCreateArgs {
    pub fn config(&self) -> SubscriptionConfig {
        SubscriptionConfig {
            pattern: self.pattern.clone(),
            delivery: self.delivery.map(Into::into),
            ack_deadline: self.ack_deadline,
            max_deliveries: self.max_deliveries,
            dead_letter_topic: self.dead_letter.clone(),
            start: self.start,
            priority_policy: self.priority_policy.map(Into::into),
            backoff_initial: self.backoff_initial,
            backoff_max: self.backoff_max,
        }
    }
}

pub async fn topic(command: TopicCommand) -> anyhow::Result<()> {
    match command {
        TopicCommand::Create(args) => {
            let client = args.client.connect().await?;
            let info = client.create_topic(args.name.clone(), args.config()).await?;
            args.client
                .output()
                .emit(&topic_json(&info), || format!("created {}", topic_human(&info)))?;
        }
        TopicCommand::Get(args) => {
            let info = args.client.connect().await?.get_topic(args.name).await?;
            args.client
                .output()
                .emit(&topic_json(&info), || topic_human(&info))?;
        }
        TopicCommand::List(args) => {
            let output = args.client.output();
            for info in args.client.connect().await?.list_topics().await? {
                output.emit(&topic_json(&info), || topic_human(&info))?;
            }
        }
        TopicCommand::Delete(args) => {
            args.client
                .connect()
                .await?
                .delete_topic(args.name.clone())
                .await?;
            let value = json!({"name": args.name, "deleted": true});
            args.client
                .output()
                .emit(&value, || format!("deleted topic {}", args.name))?;
        }
    }
    Ok(())
}

pub async fn subscription(command: SubscriptionCommand) -> anyhow::Result<()> {
    match command {
        SubscriptionCommand::Create(args) => {
            let client = args.client.connect().await?;
            let info = client
                .create_subscription(args.name.clone(), args.config())
                .await?;
            let output = args.client.output();
            output.emit(&subscription_json(&info), || {
                format!("created {}", subscription_human(&info))
            })?;
        }
        SubscriptionCommand::Get(args) => {
            let info = args.client.connect().await?.get_subscription(args.name).await?;
            args.client
                .output()
                .emit(&subscription_json(&info), || subscription_human(&info))?;
        }
        SubscriptionCommand::List(args) => {
            let output = args.client.output();
            for info in args.client.connect().await?.list_subscriptions().await? {
                output.emit(&subscription_json(&info), || subscription_human(&info))?;
            }
        }
        SubscriptionCommand::Delete(args) => {
            args.client
                .connect()
                .await?
                .delete_subscription(args.name.clone())
                .await?;
            let value = json!({"name": args.name, "deleted": true});
            args.client
                .output()
                .emit(&value, || format!("deleted subscription {}", args.name))?;
        }
    }
    Ok(())
}

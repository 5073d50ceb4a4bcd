//! `hermod pub` and `hermod sub`.

use std::io::Read;
use std::time::Duration;

use futures::StreamExt;
use hermod_client::{Delivery, OutgoingMessage, SubscribeOptions};

use super::UsageError;
use super::connect::ClientArgs;
use super::output::{MessageView, message_human, message_json, receipt_human, receipt_json};
use super::parse::{self, DeliveryArg, PriorityArg};

/// Flags of `hermod pub`.
#[derive(Debug, Clone, clap::Args)]
pub struct PubArgs {
    /// Topic to publish to.
    pub topic: String,
    /// The payload; `-` or nothing reads it from standard input.
    pub payload: Option<String>,
    #[arg(long, value_enum, default_value = "normal")]
    pub priority: PriorityArg,
    /// Time to live, e.g. 30s (default: the topic's).
    #[arg(long, value_parser = parse::duration)]
    pub ttl: Option<Duration>,
    /// Deliver no sooner than this after publishing, e.g. 5s.
    #[arg(long, value_parser = parse::duration)]
    pub delay: Option<Duration>,
    /// Idempotency key (default: a new UUIDv7).
    #[arg(long)]
    pub id: Option<String>,
    #[arg(long, value_enum, default_value = "at-least-once")]
    pub delivery: DeliveryArg,
    /// A header as name=value; repeatable.
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = parse::header)]
    pub headers: Vec<(String, String)>,
    #[command(flatten)]
    pub client: ClientArgs,
}

impl PubArgs {
    /// The message these flags describe, given the payload.
    pub fn message(&self, payload: Vec<u8>) -> OutgoingMessage {
        let mut message = OutgoingMessage::new(self.topic.clone(), payload)
            .priority(self.priority.into())
            .delivery(self.delivery.into());
        message.id = self.id.clone();
        message.ttl = self.ttl;
        message.delay = self.delay;
        message.headers.extend(self.headers.iter().cloned());
        message
    }
}

pub async fn publish(args: PubArgs) -> anyhow::Result<()> {
    let payload = match args.payload.as_deref() {
        None | Some("-") => {
            let mut payload = Vec::new();
            std::io::stdin().read_to_end(&mut payload)?;
            payload
        }
        Some(text) => text.as_bytes().to_vec(),
    };
    let client = args.client.connect().await?;
    let receipt = client.publish(args.message(payload)).await?;
    args.client
        .output()
        .emit(&receipt_json(&receipt), || receipt_human(&receipt))?;
    Ok(())
}

/// Flags of `hermod sub`.
///
/// Without `--subscription`, PATTERN opens an ephemeral subscription (live
/// messages only, at most once). With it, the command attaches to that
/// durable subscription; PATTERN may then be left out, and if given it must
/// equal the subscription's pattern, so a typo does not silently read
/// something else.
#[derive(Debug, Clone, clap::Args)]
pub struct SubArgs {
    /// Topic pattern (`*` one token, `>` the rest); optional with --subscription.
    #[arg(required_unless_present = "subscription")]
    pub pattern: Option<String>,
    /// Attach to this durable subscription instead of an ephemeral one.
    #[arg(long)]
    pub subscription: Option<String>,
    /// Exit after this many messages.
    #[arg(long)]
    pub count: Option<u64>,
    /// Exit when no message arrives for this long, e.g. 10s (default: wait forever).
    #[arg(long, value_parser = parse::duration)]
    pub timeout: Option<Duration>,
    /// Leave messages unacknowledged (they are redelivered).
    #[arg(long)]
    pub no_ack: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

impl SubArgs {
    fn options(&self) -> SubscribeOptions {
        let mut options = match (&self.subscription, &self.pattern) {
            (Some(name), _) => SubscribeOptions::subscription(name.clone()),
            (None, Some(pattern)) => SubscribeOptions::pattern(pattern.clone()),
            (None, None) => unreachable!("clap requires a pattern without --subscription"),
        };
        if let Some(count) = self.count {
            // No more credit than messages wanted: extra leases would only
            // be released again, and redelivered with a higher attempt.
            let prefetch = count.clamp(1, u64::from(hermod_client::DEFAULT_PREFETCH)) as u32;
            options = options.prefetch(prefetch).limit(count);
        }
        options
    }
}

pub async fn subscribe(args: SubArgs) -> anyhow::Result<()> {
    if args.count == Some(0) {
        return Ok(());
    }
    let client = args.client.connect().await?;
    if let (Some(name), Some(pattern)) = (&args.subscription, &args.pattern) {
        let info = client.get_subscription(name.clone()).await?;
        if &info.config.pattern != pattern {
            return Err(UsageError(format!(
                "pattern: {pattern:?} is not the pattern of subscription {name:?} ({:?}); leave it out or match it",
                info.config.pattern
            ))
            .into());
        }
    }
    let output = args.client.output();
    let mut subscriber = client.subscribe(args.options()).await?;
    loop {
        let next = match args.timeout {
            Some(timeout) => match tokio::time::timeout(timeout, subscriber.next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
            None => subscriber.next().await,
        };
        let Some(message) = next else { break };
        let message = message?;
        let view = MessageView::from(&message);
        output.emit(&message_json(&view), || message_human(&view))?;
        if !args.no_ack {
            if message.delivery == Delivery::ExactlyOnce {
                message.ack_confirmed().await?;
            } else {
                message.ack().await?;
            }
        }
    }
    // Sends the acks still queued and waits for the broker to take them.
    subscriber.close().await?;
    Ok(())
}

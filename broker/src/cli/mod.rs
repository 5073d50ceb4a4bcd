//! The `hermod` command line: `serve` (the default) and the client commands.
//!
//! Exit codes: 0 on success, 2 for a usage error or an argument the broker
//! refused as invalid (the message names the field), 1 for anything else.

mod admin;
mod cluster;
mod connect;
mod output;
mod parse;
mod pubsub;

use std::ffi::OsString;

use clap::Parser;

use crate::config::ServeArgs;
use admin::{SubscriptionCommand, TopicCommand};
use cluster::ClusterCommand;
use pubsub::{PubArgs, SubArgs};

/// Hermod, a distributed publish/subscribe message broker.
#[derive(Debug, clap::Parser)]
#[command(name = "hermod", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run a broker node (the default when no command is given).
    Serve {
        #[command(flatten)]
        args: ServeArgs,
    },
    /// Publish one message.
    Pub(PubArgs),
    /// Print messages of a durable subscription or of a pattern.
    Sub(SubArgs),
    /// Create, show, list and delete topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Create, show, list and delete durable subscriptions.
    #[command(subcommand)]
    Subscription(SubscriptionCommand),
    /// Show the cluster, add a node, remove a node.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Run the load generator (`hermod-bench`, installed beside `hermod`);
    /// `hermod bench --help` lists its options.
    #[command(disable_help_flag = true)]
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

/// A mistake in how the command was called, found after parsing.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Runs the command line; returns the process exit code.
pub async fn main() -> i32 {
    run(std::env::args_os()).await
}

/// Runs the command line on `args` (the program name first).
pub async fn run<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let command = match parse_command(args) {
        Ok(command) => command,
        Err(error) => {
            // Help and version are "errors" with exit code 0.
            let _ = error.print();
            return error.exit_code();
        }
    };
    match execute(command).await {
        Ok(()) => 0,
        Err(error) => {
            let code = exit_code(&error);
            if code != 0 {
                eprintln!("error: {error:#}");
            }
            code
        }
    }
}

/// Parses the arguments; no command means `serve`, with its flags taken
/// from the environment as `hermod serve` would.
fn parse_command<I, T>(args: I) -> Result<Command, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    if let Some(command) = Cli::try_parse_from(&args)?.command {
        return Ok(command);
    }
    args.truncate(1);
    args.push("serve".into());
    Ok(Cli::try_parse_from(&args)?.command.expect("serve was given"))
}

async fn execute(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { args } => crate::server::run(args).await,
        Command::Pub(args) => pubsub::publish(args).await,
        Command::Sub(args) => pubsub::subscribe(args).await,
        Command::Topic(command) => admin::topic(command).await,
        Command::Subscription(command) => admin::subscription(command).await,
        Command::Cluster(command) => cluster::cluster(command).await,
        Command::Bench { args } => bench(args),
    }
}

/// Runs `hermod-bench` from the directory of this executable with `args`,
/// and fails with its exit status.
fn bench(args: Vec<OsString>) -> anyhow::Result<()> {
    let program = std::env::current_exe()?.with_file_name("hermod-bench");
    if !program.exists() {
        anyhow::bail!(
            "{} is missing; build it with `cargo build --release -p hermod-bench` or run scripts/bench.sh",
            program.display()
        );
    }
    let status = std::process::Command::new(&program).args(args).status()?;
    if !status.success() {
        anyhow::bail!("hermod-bench exited with {status}");
    }
    Ok(())
}

/// 2 for usage and invalid-argument errors, 0 for a closed stdout (`| head`
/// is not a failure), 1 otherwise.
fn exit_code(error: &anyhow::Error) -> i32 {
    if error.downcast_ref::<UsageError>().is_some() {
        return 2;
    }
    if let Some(hermod_client::Error::InvalidArgument { .. }) = error.downcast_ref::<hermod_client::Error>() {
        return 2;
    }
    if error
        .downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    {
        return 0;
    }
    1
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::error::ErrorKind;
    use hermod_client::{Delivery, Priority, PriorityPolicy, Retention, StartPosition};

    use super::parse::{DeliveryArg, PriorityArg};
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        parse_command(std::iter::once("hermod").chain(args.iter().copied()))
    }

    #[test]
    fn no_command_means_serve() {
        assert!(matches!(parse(&[]).unwrap(), Command::Serve { .. }));
        let Command::Serve { args } = parse(&["serve", "--listen", "127.0.0.1:9000"]).unwrap() else {
            panic!()
        };
        assert_eq!(args.listen, Some("127.0.0.1:9000".parse().unwrap()));
    }

    #[test]
    fn pub_takes_every_message_setting() {
        let command = parse(&[
            "pub",
            "orders.eu",
            "hello",
            "--priority",
            "critical",
            "--ttl",
            "30s",
            "--delay",
            "250ms",
            "--id",
            "order-1",
            "--delivery",
            "exactly-once",
            "--header",
            "k=v",
            "--header",
            "trace=a=b",
            "--json",
            "--server",
            "http://a:7400,http://b:7400",
        ])
        .unwrap();
        let Command::Pub(args) = command else { panic!() };
        assert_eq!(args.priority, PriorityArg::Critical);
        assert_eq!(args.delivery, DeliveryArg::ExactlyOnce);
        assert!(args.client.json);
        assert_eq!(args.client.server, ["http://a:7400", "http://b:7400"]);
        let message = args.message(b"hello".to_vec());
        assert_eq!(message.topic, "orders.eu");
        assert_eq!(message.id.as_deref(), Some("order-1"));
        assert_eq!(message.priority, Priority::Critical);
        assert_eq!(message.delivery, Delivery::ExactlyOnce);
        assert_eq!(message.ttl, Some(Duration::from_secs(30)));
        assert_eq!(message.delay, Some(Duration::from_millis(250)));
        assert_eq!(message.headers["trace"], "a=b");
    }

    #[test]
    fn pub_defaults_and_stdin() {
        let Command::Pub(args) = parse(&["pub", "t"]).unwrap() else {
            panic!()
        };
        assert_eq!(args.payload, None);
        assert!(!args.client.json);
        let message = args.message(Vec::new());
        assert_eq!(message.priority, Priority::Normal);
        assert_eq!(message.delivery, Delivery::AtLeastOnce);
        assert_eq!(message.id, None);
        let Command::Pub(args) = parse(&["pub", "t", "-"]).unwrap() else {
            panic!()
        };
        assert_eq!(args.payload.as_deref(), Some("-"));
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["pub", "t", "x", "--priority", "urgent"][..],
            &["pub", "t", "x", "--ttl", "soon"],
            &["pub", "t", "x", "--header", "novalue"],
            &["pub"],
            &["sub"],
            &["sub", "a.>", "--timeout", "10"],
            &["subscription", "create", "s", "a.>", "--delivery", "at-most-once"],
            &["subscription", "create", "s", "a.>", "--start", "yesterday"],
            &["topic", "create", "t", "--max-bytes", "lots"],
        ] {
            let error = parse(args).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{args:?}");
            assert_ne!(error.kind(), ErrorKind::DisplayHelp, "{args:?}");
        }
    }

    #[test]
    fn sub_takes_a_pattern_or_a_subscription() {
        let Command::Sub(args) =
            parse(&["sub", "orders.>", "--count", "5", "--timeout", "10s", "--no-ack"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(args.pattern.as_deref(), Some("orders.>"));
        assert_eq!(args.count, Some(5));
        assert_eq!(args.timeout, Some(Duration::from_secs(10)));
        assert!(args.no_ack);
        let Command::Sub(args) = parse(&["sub", "--subscription", "billing"]).unwrap() else {
            panic!()
        };
        assert_eq!(args.subscription.as_deref(), Some("billing"));
        assert_eq!(args.pattern, None);
    }

    #[test]
    fn subscription_create_takes_every_setting() {
        let command = parse(&[
            "subscription",
            "create",
            "billing",
            "orders.>",
            "--delivery",
            "exactly-once",
            "--ack-deadline",
            "10s",
            "--max-deliveries",
            "5",
            "--dead-letter",
            "dead.orders",
            "--start",
            "seq:42",
            "--priority-policy",
            "weighted",
        ])
        .unwrap();
        let Command::Subscription(SubscriptionCommand::Create(args)) = command else {
            panic!()
        };
        let config = args.config();
        assert_eq!(config.pattern, "orders.>");
        assert_eq!(config.delivery, Some(Delivery::ExactlyOnce));
        assert_eq!(config.ack_deadline, Some(Duration::from_secs(10)));
        assert_eq!(config.max_deliveries, Some(5));
        assert_eq!(config.dead_letter_topic.as_deref(), Some("dead.orders"));
        assert_eq!(config.start, Some(StartPosition::Sequence(42)));
        assert_eq!(config.priority_policy, Some(PriorityPolicy::Weighted));
        for (args, name) in [
            (&["subscription", "get", "billing"][..], "billing"),
            (&["subscription", "delete", "old"], "old"),
        ] {
            match parse(args).unwrap() {
                Command::Subscription(SubscriptionCommand::Get(a) | SubscriptionCommand::Delete(a)) => {
                    assert_eq!(a.name, name)
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            parse(&["subscription", "list", "--json"]).unwrap(),
            Command::Subscription(SubscriptionCommand::List(_))
        ));
    }

    #[test]
    fn topic_create_takes_every_setting() {
        let command = parse(&[
            "topic",
            "create",
            "orders",
            "--ttl",
            "1h",
            "--dedup-window",
            "7d",
            "--retention",
            "interest",
            "--max-age",
            "30d",
            "--max-messages",
            "1000",
            "--max-bytes",
            "10GiB",
            "--max-message-bytes",
            "4MiB",
        ])
        .unwrap();
        let Command::Topic(TopicCommand::Create(args)) = command else {
            panic!()
        };
        let config = args.config();
        assert_eq!(config.default_ttl, Some(Duration::from_secs(3600)));
        assert_eq!(config.dedup_window, Some(Duration::from_secs(7 * 86400)));
        assert_eq!(config.retention, Some(Retention::Interest));
        assert_eq!(config.max_age, Some(Duration::from_secs(30 * 86400)));
        assert_eq!(config.max_messages, Some(1000));
        assert_eq!(config.max_bytes, Some(10 << 30));
        assert_eq!(config.max_message_bytes, Some(4 << 20));
        assert!(matches!(
            parse(&["topic", "list"]).unwrap(),
            Command::Topic(TopicCommand::List(_))
        ));
        assert!(matches!(
            parse(&["topic", "get", "t"]).unwrap(),
            Command::Topic(TopicCommand::Get(_))
        ));
        assert!(matches!(
            parse(&["topic", "delete", "t"]).unwrap(),
            Command::Topic(TopicCommand::Delete(_))
        ));
    }

    #[test]
    fn exit_codes_follow_the_error() {
        let invalid = hermod_client::Error::InvalidArgument {
            field: "topic".into(),
            message: "bad".into(),
        };
        assert_eq!(exit_code(&invalid.into()), 2);
        assert_eq!(exit_code(&UsageError("pattern: mismatch".into()).into()), 2);
        let missing = hermod_client::Error::NotFound {
            field: String::new(),
            message: "no such topic".into(),
        };
        assert_eq!(exit_code(&missing.into()), 1);
        assert_eq!(exit_code(&anyhow::anyhow!("boom")), 1);
        let pipe = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "closed");
        assert_eq!(exit_code(&pipe.into()), 0);
    }

    #[tokio::test]
    async fn an_unreachable_server_fails_with_code_1() {
        let code = run(["hermod", "topic", "list", "--server", "http://127.0.0.1:1"]).await;
        assert_eq!(code, 1);
    }

    #[tokio::test]
    async fn a_usage_error_exits_with_code_2() {
        assert_eq!(run(["hermod", "pub"]).await, 2);
    }
}

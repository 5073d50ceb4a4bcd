//! The flags every client command shares, and connecting with them.

use std::time::Duration;

use hermod_client::{Client, ClientOptions, DEFAULT_ENDPOINT, RetryPolicy};

use super::output::Output;

/// `--server` and `--json`.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// Broker gRPC address(es), comma-separated; tried in turn.
    #[arg(long, env = "HERMOD_SERVER", default_value = DEFAULT_ENDPOINT, value_delimiter = ',')]
    pub server: Vec<String>,
    /// Print one JSON object per line.
    #[arg(long)]
    pub json: bool,
}

impl ClientArgs {
    pub fn output(&self) -> Output {
        Output { json: self.json }
    }

    /// Connects, failing within seconds when no broker answers: a command
    /// line should say so rather than wait out a long retry policy.
    pub async fn connect(&self) -> Result<Client, hermod_client::Error> {
        let options = ClientOptions::new()
            .endpoints(self.server.iter().map(|s| s.trim()).filter(|s| !s.is_empty()))
            .connect_timeout(Duration::from_secs(5))
            .request_timeout(Duration::from_secs(30))
            .retry_policy(RetryPolicy::new(
                4,
                Duration::from_millis(100),
                Duration::from_secs(1),
            ));
        Client::connect(options).await
    }
}

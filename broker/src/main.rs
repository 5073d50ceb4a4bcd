//! The `hermod` binary: the broker server and its command-line client.

#[tokio::main]
async fn main() {
    std::process::exit(hermod_broker::cli::main().await);
}

//! The `hermod-bench` binary: parses the options and runs the load generator.

use std::process::ExitCode;

use clap::Parser;
use hermod_bench::Options;

#[tokio::main]
async fn main() -> ExitCode {
    let options = Options::parse();
    match hermod_bench::run(options).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("hermod-bench: at least one scenario failed; see the table and report");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("hermod-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

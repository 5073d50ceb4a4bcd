//! The `hermod-bench` binary: parses the options and runs the load generator.

use std::process::ExitCode;

use clap::Parser;
use hermod_bench::Options;

/// The load generator allocates like the broker does: glibc's malloc was a
/// large share of its CPU, which the broker under test shares on a small
/// machine. Both systems' clients run in this process alike.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

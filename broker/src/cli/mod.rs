//! The `hermod` command line: `serve` (the default) and the client commands.

/// Runs the command line; returns the process exit code.
pub async fn main() -> i32 {
    0
}

//! The `hermod` binary: the broker server and its command-line client.

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("hermod")
        .build()
        .expect("the tokio runtime starts");
    let code = runtime.block_on(hermod_broker::cli::main());
    // Dropping the runtime drops every task, and with them the last handles
    // on the database, so RocksDB closes before the process exits.
    drop(runtime);
    std::process::exit(code);
}

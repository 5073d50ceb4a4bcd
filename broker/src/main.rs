//! The `hermod` binary: the broker server and its command-line client.

/// mimalloc: under load, glibc's malloc and free took about a third of the
/// broker's CPU (many threads allocating small, short-lived buffers).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

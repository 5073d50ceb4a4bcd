//! Hermod's benchmark harness: the `hermod-bench` load generator and its scenarios.
//!
//! The load generator starts a fresh broker process per scenario (Hermod,
//! and with `--compare nats` a `nats-server` with JetStream), drives it
//! through its own client crate, records latencies in HDR histograms and
//! reports a table and `report.json`. The criterion micro-benchmarks of the
//! core live in `benches/` (`cargo bench -p hermod-bench`). See README.md
//! beside this crate.

pub mod cli;
pub mod hermod;
pub mod measure;
pub mod nats;
pub mod process;
pub mod report;
pub mod scenario;

pub use cli::Options;
pub use scenario::run;

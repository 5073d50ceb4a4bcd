//! Hermod's benchmark harness: the `hermod-bench` load generator and its scenarios.
//!
//! The load generator starts fresh broker processes per scenario (Hermod,
//! and with `--compare nats` `nats-server` with JetStream; three of each for
//! the cluster scenarios), drives them through their own client crates,
//! records latencies in HDR histograms and reports a table, `report.json`
//! and PNG charts. The criterion micro-benchmarks of the core live in
//! `benches/` (`cargo bench -p hermod-bench`). See README.md beside this crate.

pub mod bar;
pub mod charts;
pub mod cli;
pub mod deploy;
pub mod failover;
pub mod flow;
pub mod font;
pub mod hermod;
pub mod load;
pub mod machine;
pub mod measure;
pub mod memory;
pub mod nats;
pub mod outcome;
pub mod process;
pub mod report;
pub mod run;
pub mod scenario;
pub mod table;

pub use cli::Options;
pub use run::run;

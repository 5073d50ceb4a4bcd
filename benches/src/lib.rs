//! Hermod's benchmark harness. The micro-benchmarks live in `benches/`
//! (`cargo bench -p hermod-bench`); see README.md beside this file.

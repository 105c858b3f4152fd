//! Shared pieces of the benchmark binaries (`notifier-bench`, `loadgen`): latency
//! summaries from HDR histograms, the open-loop schedule, `/proc` readings, the machine
//! description, loopback-only address checks and a small Prometheus text reader.
//!
//! Everything here is pure or reads local files only; the network lives in the binaries.

pub mod ceilings;
pub mod loopback;
pub mod machine;
pub mod notifier_bench;
pub mod plots;
pub mod procfs;
pub mod procs;
pub mod prom;
pub mod schedule;
pub mod shop;
pub mod stats;

//! `notifier-bench`: the notifier's throughput, send latency and peak memory, measured
//! on the release binary run as its own process, against ceilings measured in the same
//! run (SMTP server alone, MongoDB server alone).
//!
//! The bench lives in the library ([`benchmarks::notifier_bench`]); this is its command.

use benchmarks::notifier_bench::{self, Args};
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    notifier_bench::run(Args::parse()).await
}

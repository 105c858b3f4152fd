//! `dead-letters`: the operator's view of the dead-letter topic.
//!
//! ```text
//! dead-letters list                       # every dead letter, one JSON object a line
//! dead-letters replay [--source-topic T]  # send them back to their source topics
//! ```
//! Kafka is found through `KAFKA_BROKERS` and `KAFKA_TOPIC_PREFIX`, as for the services.

use clap::{Parser, Subcommand};
use shared_events::kafka::{dead_letter_tools, KafkaSettings};
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "dead-letters",
    about = "List and replay the saga's dead letters"
)]
struct Cli {
    #[command(flatten)]
    kafka: KafkaSettings,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print every dead letter as a JSON line: source, consumer, reason, key, payload.
    List {
        /// Give up reading after this many seconds.
        #[arg(long, default_value_t = 10)]
        timeout_secs: u64,
    },
    /// Publish dead letters back to their source topics (each at most once).
    Replay {
        /// Only letters from this topic.
        #[arg(long)]
        source_topic: Option<String>,
        /// At most this many letters.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::List { timeout_secs } => {
            let kafka = cli.kafka.clone();
            let letters = tokio::task::spawn_blocking(move || {
                dead_letter_tools::read_all(&kafka, Duration::from_secs(timeout_secs))
            })
            .await??;
            for letter in &letters {
                println!("{}", dead_letter_tools::to_json(letter));
            }
            eprintln!("{} dead letter(s)", letters.len());
        }
        Command::Replay {
            source_topic,
            limit,
        } => {
            let replayed = dead_letter_tools::replay(
                &cli.kafka,
                source_topic.as_deref(),
                limit,
                Duration::from_secs(3),
            )
            .await?;
            eprintln!("{replayed} dead letter(s) replayed");
        }
    }
    Ok(())
}

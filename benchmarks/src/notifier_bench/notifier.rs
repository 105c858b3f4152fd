//! The notifier under test: the release binary as a process of its own, on the run's
//! topics, consumer group and database, with its HTTP port for `/readyz` and
//! `/metrics`.

use super::Args;
use crate::loopback;
use crate::procs::{free_ports, Spawned};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Where one run's notifier reads and writes: names of its own, so runs never share
/// data.
pub struct RunNames {
    /// `KAFKA_TOPIC_PREFIX`.
    pub prefix: String,
    pub group: String,
    pub database: String,
}

impl RunNames {
    pub fn new() -> Self {
        let run_id = uuid::Uuid::now_v7().simple().to_string();
        Self {
            prefix: format!("bench-{}.", &run_id[run_id.len() - 12..]),
            group: format!("notifier-bench-{run_id}"),
            database: format!("notifier_bench_{run_id}"),
        }
    }
}

/// A started notifier and the client that talks to its HTTP port.
pub struct RunningNotifier {
    pub process: Spawned,
    pub log: PathBuf,
    http: reqwest::Client,
    base: String,
}

impl RunningNotifier {
    /// Starts `bin` against the SMTP server on `smtp_port` and waits until `/readyz`
    /// answers 200; `name` (the SMTP target) names its log.
    pub async fn start(
        args: &Args,
        bin: &Path,
        log_dir: &Path,
        name: &str,
        names: &RunNames,
        smtp_port: u16,
    ) -> Result<Self> {
        let http_port = free_ports(1)?[0];
        let cmd = command(args, bin, names, smtp_port, http_port);
        let log = log_dir.join(format!("notifier-{name}.log"));
        eprintln!(
            "[{name}] starting {} (topics {}*, database {}, log {})…",
            bin.display(),
            names.prefix,
            names.database,
            log.display()
        );
        let process = Spawned::start("notifier", cmd, &log)?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()?;
        let mut notifier = Self {
            process,
            log,
            http,
            base: format!("http://{}:{http_port}", loopback::HOST),
        };
        notifier.wait_ready().await?;
        Ok(notifier)
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// An error naming the log if the process has exited; `during` completes "the
    /// notifier exited…".
    pub fn check_running(&mut self, during: &str) -> Result<()> {
        if let Some(status) = self.process.exited() {
            bail!(
                "the notifier exited{during} ({status}); see {}",
                self.log.display()
            );
        }
        Ok(())
    }

    /// Its `/metrics` text; `None` when it does not answer.
    pub async fn metrics(&self) -> Option<String> {
        http_get(&self.http, &format!("{}/metrics", self.base))
            .await
            .map(|(_, text)| text)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let ready_deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some((200, _)) = http_get(&self.http, &format!("{}/readyz", self.base)).await {
                return Ok(());
            }
            self.check_running(" during start-up")?;
            if Instant::now() > ready_deadline {
                bail!("the notifier was not ready within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The notifier's command line: everything through its environment, logging warnings
/// only (its logs are not what is measured).
fn command(args: &Args, bin: &Path, names: &RunNames, smtp_port: u16, http_port: u16) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env("KAFKA_BROKERS", &args.kafka_brokers)
        .env("KAFKA_TOPIC_PREFIX", &names.prefix)
        .env("KAFKA_PARTITIONS", args.partitions.to_string())
        .env("NOTIFIER_CONSUMER_GROUP", &names.group)
        .env("MONGODB_URI", &args.mongodb_uri)
        .env("NOTIFIER_MONGODB_DATABASE", &names.database)
        .env("SMTP_HOST", loopback::HOST)
        .env("SMTP_PORT", smtp_port.to_string())
        .env("NOTIFIER_HOST", loopback::HOST)
        .env("NOTIFIER_PORT", http_port.to_string())
        // The history API refuses to start without a token; the bench never calls it.
        .env("NOTIFIER_API_TOKEN", "notifier-bench")
        .env("NOTIFIER_SMTP_POOL_SIZE", args.pool_size.to_string())
        .env("NOTIFIER_MAX_IN_FLIGHT", args.max_in_flight.to_string())
        .env("NOTIFIER_SHUTDOWN_TIMEOUT_SECS", "10")
        .env("RUST_LOG", "warn");
    if let Some(max) = args.notifier_batch_max {
        cmd.env("NOTIFIER_MONGODB_BATCH_MAX", max.to_string());
    }
    if let Some(window) = args.notifier_batch_window_ms {
        cmd.env("NOTIFIER_MONGODB_BATCH_WINDOW_MS", window.to_string());
    }
    cmd
}

async fn http_get(client: &reqwest::Client, url: &str) -> Option<(u16, String)> {
    let response = client.get(url).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

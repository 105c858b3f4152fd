//! Configuration, read from the command line or the environment (`notifier --help`).
//!
//! | env var | default | meaning |
//! |---|---|---|
//! | `NOTIFIER_HOST` | `127.0.0.1` | address the history API binds to |
//! | `NOTIFIER_PORT` | `8083` | port of the history API (`0`: a random free port) |
//! | `KAFKA_BROKERS` | `127.0.0.1:9092` | Kafka bootstrap servers |
//! | `KAFKA_TOPIC_PREFIX` | `""` | prefix of every topic name |
//! | `KAFKA_PARTITIONS` | `12` | partitions of the topics created when missing |
//! | `NOTIFIER_CONSUMER_GROUP` | `notifier` | Kafka consumer group |
//! | `MONGODB_URI` | `mongodb://127.0.0.1:27017` | MongoDB connection string |
//! | `NOTIFIER_MONGODB_DATABASE` | `notifier` | database holding the `notifications` collection |
//! | `SMTP_HOST` | `127.0.0.1` | SMTP relay (plain SMTP, no TLS, no auth) |
//! | `SMTP_PORT` | `2525` | SMTP relay port |
//! | `MAIL_FROM` | `Saga Shop <shop@example.com>` | `From` of every mail; its domain ends the Message-IDs |
//! | `NOTIFIER_API_TOKEN` | (none: required) | Bearer token of `GET /notifications…`. Without it the notifier refuses to start; the local stack (`infra/stack`) and the tests set their own |
//! | `NOTIFIER_MAX_IN_FLIGHT` | `64` | messages fetched from Kafka and not yet finished; fetching pauses at this limit |
//! | `NOTIFIER_MAX_UNCOMMITTED` | `10000` | offsets fetched but not yet stored (finished work waiting behind an unfinished one in its partition); fetching pauses at this limit |
//! | `NOTIFIER_SMTP_POOL_SIZE` | `16` | SMTP connections: at most this many sessions at once, kept open between mails |
//! | `NOTIFIER_SMTP_TIMEOUT_SECS` | `10` | bound of one delivery attempt (connecting and the whole SMTP dialogue) |
//! | `NOTIFIER_MAIL_MAX_ATTEMPTS` | `0` | delivery attempts of one mail before a transient failure records it `FAILED`; 0: never (only a 5xx fails a mail) |
//! | `NOTIFIER_MAIL_RETRY_INITIAL_MS` | `500` | wait before the 2nd attempt; doubles each attempt (with jitter) |
//! | `NOTIFIER_MAIL_RETRY_MAX_MS` | `5000` | cap of the wait between attempts (how soon after an SMTP outage every waiting mail is tried again) |
//! | `NOTIFIER_SHUTDOWN_TIMEOUT_SECS` | `20` | how long shutdown waits for in-flight mails before abandoning them (their offsets are then not committed and they come again) |
//! | `NOTIFIER_HTTP_WORKERS` | `2` | actix-web worker threads of the history API |
//! | `NOTIFIER_MONGODB_BATCH_MAX` | `128` | history writes (claims, outcomes) sent to MongoDB in one command at most |
//! | `NOTIFIER_MONGODB_BATCH_WINDOW_MS` | `1` | how long a history write waits for others to share its command (0: only those already queued) |

use secrecy::SecretString;
use shared_events::kafka::KafkaSettings;
use std::convert::Infallible;
use std::time::Duration;

/// The notifier's settings. Every field has a default, so
/// `Settings::parse_from(["notifier"])` gives the local stack's configuration.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "notifier",
    about = "Consumes the saga's order and payment events, mails the shopper and keeps the mail history in MongoDB.",
    // The notifier sets these limits of the shared Kafka settings with its own options.
    mut_arg("kafka_max_in_flight", |arg| arg
        .help("Not read by the notifier: --max-in-flight (NOTIFIER_MAX_IN_FLIGHT) bounds the mails handled at once")
        .long_help(None::<&str>)),
    mut_arg("kafka_max_uncommitted", |arg| arg
        .help("Not read by the notifier: see --max-uncommitted (NOTIFIER_MAX_UNCOMMITTED)")
        .long_help(None::<&str>)),
    mut_arg("kafka_drain_timeout_secs", |arg| arg
        .help("Not read by the notifier: see --shutdown-timeout-secs (NOTIFIER_SHUTDOWN_TIMEOUT_SECS)")
        .long_help(None::<&str>)),
)]
pub struct Settings {
    /// Address the mail-history API listens on (0.0.0.0: every interface).
    #[arg(long, env = "NOTIFIER_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port of the mail-history API (0: any free port).
    #[arg(long, env = "NOTIFIER_PORT", default_value_t = 8083)]
    pub port: u16,
    #[command(flatten)]
    pub kafka: KafkaSettings,
    /// Kafka consumer group of the notifier; every instance uses the same one.
    #[arg(long, env = "NOTIFIER_CONSUMER_GROUP", default_value = "notifier")]
    pub consumer_group: String,
    /// MongoDB connection string (`mongodb://…`) of the mail history (secret: it may hold
    /// the password).
    #[arg(
        long,
        env = "MONGODB_URI",
        default_value = "mongodb://127.0.0.1:27017",
        hide_env_values = true
    )]
    pub mongodb_uri: String,
    /// MongoDB database holding the `notifications` collection.
    #[arg(long, env = "NOTIFIER_MONGODB_DATABASE", default_value = "notifier")]
    pub mongodb_database: String,
    #[command(flatten)]
    pub mail: MailSettings,
    /// Mails handled at once (messages fetched from Kafka and not yet finished); the
    /// notifier's own name for the engine's in-flight bound (KAFKA_MAX_IN_FLIGHT is not
    /// read by the notifier).
    #[arg(long, env = "NOTIFIER_MAX_IN_FLIGHT", default_value_t = 64)]
    pub max_in_flight: usize,
    /// Offsets of one partition fetched and not yet stored (finished work waiting behind
    /// an unfinished mail of its partition) before that partition is paused.
    #[arg(long, env = "NOTIFIER_MAX_UNCOMMITTED", default_value_t = 10_000)]
    pub max_uncommitted: usize,
    /// SMTP connections: at most this many sessions at once, kept open between mails.
    #[arg(long, env = "NOTIFIER_SMTP_POOL_SIZE", default_value_t = 16)]
    pub smtp_pool_size: u32,
    /// Bound of one delivery attempt (connecting and the SMTP dialogue), in seconds.
    #[arg(long, env = "NOTIFIER_SMTP_TIMEOUT_SECS", default_value_t = 10)]
    pub smtp_timeout_secs: u64,
    /// Delivery attempts of one mail before a transient failure is recorded FAILED; 0
    /// (the default): never — a mail waits for the SMTP server as long as it is down,
    /// and only a permanent refusal (5xx) fails it.
    #[arg(long, env = "NOTIFIER_MAIL_MAX_ATTEMPTS", default_value_t = 0)]
    pub mail_max_attempts: u32,
    /// Wait before the second delivery attempt, in ms; doubles each attempt (with jitter).
    #[arg(long, env = "NOTIFIER_MAIL_RETRY_INITIAL_MS", default_value_t = 500)]
    pub mail_retry_initial_ms: u64,
    /// Cap of the wait between delivery attempts, in ms.
    #[arg(long, env = "NOTIFIER_MAIL_RETRY_MAX_MS", default_value_t = 5_000)]
    pub mail_retry_max_ms: u64,
    /// How long shutdown and a partition revoke wait for mails being sent, in seconds,
    /// before cancelling them (their offsets are then not committed, so they come again
    /// to the next owner).
    #[arg(long, env = "NOTIFIER_SHUTDOWN_TIMEOUT_SECS", default_value_t = 20)]
    pub shutdown_timeout_secs: u64,
    /// actix-web worker threads of the history API.
    #[arg(long, env = "NOTIFIER_HTTP_WORKERS", default_value_t = 2)]
    pub http_workers: usize,
    /// History writes (claims, outcomes) sent to MongoDB in one command at most.
    #[arg(long, env = "NOTIFIER_MONGODB_BATCH_MAX", default_value_t = 128)]
    pub mongodb_batch_max: usize,
    /// How long a history write waits for others to share its MongoDB command, in ms
    /// (0: only the writes already queued share it).
    #[arg(long, env = "NOTIFIER_MONGODB_BATCH_WINDOW_MS", default_value_t = 1)]
    pub mongodb_batch_window_ms: u64,
}

/// Where mails go, whom they are from, and who may read their history: the options
/// the Tokio notifier and the blocking mail service (`mailer-blocking`) share, under the
/// same names.
#[derive(clap::Args, Debug, Clone)]
pub struct MailSettings {
    /// SMTP relay host (plain SMTP: no TLS, no authentication).
    #[arg(long, env = "SMTP_HOST", default_value = "127.0.0.1")]
    pub smtp_host: String,
    /// SMTP relay port.
    #[arg(long, env = "SMTP_PORT", default_value_t = 2525)]
    pub smtp_port: u16,
    /// `From` of every mail; its domain also ends the Message-IDs.
    #[arg(
        long,
        env = "MAIL_FROM",
        default_value = "Saga Shop <shop@example.com>"
    )]
    pub mail_from: String,
    /// Bearer token clients must send to read `GET /notifications…` (secret; required:
    /// without it the service refuses to start).
    #[arg(
        long,
        env = "NOTIFIER_API_TOKEN",
        hide_env_values = true,
        value_parser = parse_secret
    )]
    pub api_token: Option<SecretString>,
}

impl MailSettings {
    /// The SMTP pool's settings, with the service's own timeout and pool size.
    pub fn smtp(&self, timeout: Duration, pool_size: u32) -> crate::transport::SmtpSettings {
        crate::transport::SmtpSettings {
            host: self.smtp_host.clone(),
            port: self.smtp_port,
            timeout,
            pool_size: pool_size.max(1),
            from: self.mail_from.clone(),
        }
    }
}

/// A secret option's value, kept out of `Debug` and logs.
pub fn parse_secret(value: &str) -> Result<SecretString, Infallible> {
    Ok(SecretString::from(value))
}

impl Settings {
    pub fn smtp_timeout(&self) -> Duration {
        Duration::from_secs(self.smtp_timeout_secs.max(1))
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }

    pub fn mongodb_batching(&self) -> crate::store::BatchConfig {
        crate::store::BatchConfig {
            max: self.mongodb_batch_max.max(1),
            window: Duration::from_millis(self.mongodb_batch_window_ms),
        }
    }

    /// The consumer engine's limits: the notifier's own in-flight and unstored bounds,
    /// its shutdown timeout as the drain timeout, the mail retry waits as backoff.
    pub fn engine_config(&self) -> shared_events::kafka::EngineConfig {
        shared_events::kafka::EngineConfig {
            max_in_flight: self.max_in_flight,
            max_uncommitted: self.max_uncommitted,
            drain_timeout: self.shutdown_timeout(),
            backoff: self.delivery_policy().backoff(),
        }
    }

    pub fn delivery_policy(&self) -> crate::service::DeliveryPolicy {
        crate::service::DeliveryPolicy {
            // 0: no limit (a transient failure is never final).
            max_attempts: match self.mail_max_attempts {
                0 => u32::MAX,
                n => n,
            },
            initial_backoff: Duration::from_millis(self.mail_retry_initial_ms),
            max_backoff: Duration::from_millis(
                self.mail_retry_max_ms.max(self.mail_retry_initial_ms),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use secrecy::ExposeSecret;

    #[test]
    fn every_setting_but_the_api_token_has_a_default() {
        let settings = Settings::parse_from(["notifier", "--api-token", "a-token-of-mine"]);
        assert_eq!(settings.port, 8083);
        assert_eq!(settings.consumer_group, "notifier");
        assert_eq!(settings.mail.smtp_port, 2525);
        let token = settings.mail.api_token.as_ref().expect("given");
        assert_eq!(token.expose_secret(), "a-token-of-mine");
        assert!(!format!("{settings:?}").contains("a-token-of-mine"));
        // The default is the one clap would show: there is none.
        use clap::CommandFactory;
        let arg = Settings::command()
            .get_arguments()
            .find(|arg| arg.get_id() == "api_token")
            .map(|arg| arg.get_default_values().len());
        assert_eq!(arg, Some(0), "NOTIFIER_API_TOKEN has no default");
    }

    #[test]
    fn every_option_is_described() {
        use clap::CommandFactory;
        shared_events::cli::assert_every_option_is_described(Settings::command());
    }

    #[test]
    fn help_names_every_env_var() {
        use clap::CommandFactory;
        let help = Settings::command().render_long_help().to_string();
        for var in [
            "NOTIFIER_HOST",
            "NOTIFIER_PORT",
            "KAFKA_BROKERS",
            "KAFKA_TOPIC_PREFIX",
            "KAFKA_PARTITIONS",
            "NOTIFIER_CONSUMER_GROUP",
            "MONGODB_URI",
            "NOTIFIER_MONGODB_DATABASE",
            "SMTP_HOST",
            "SMTP_PORT",
            "MAIL_FROM",
            "NOTIFIER_API_TOKEN",
            "NOTIFIER_MAX_IN_FLIGHT",
            "NOTIFIER_MAX_UNCOMMITTED",
            "NOTIFIER_SMTP_POOL_SIZE",
            "NOTIFIER_SMTP_TIMEOUT_SECS",
            "NOTIFIER_MAIL_MAX_ATTEMPTS",
            "NOTIFIER_MAIL_RETRY_INITIAL_MS",
            "NOTIFIER_MAIL_RETRY_MAX_MS",
            "NOTIFIER_SHUTDOWN_TIMEOUT_SECS",
            "NOTIFIER_HTTP_WORKERS",
            "NOTIFIER_MONGODB_BATCH_MAX",
            "NOTIFIER_MONGODB_BATCH_WINDOW_MS",
        ] {
            assert!(help.contains(var), "--help does not mention {var}");
        }
    }
}

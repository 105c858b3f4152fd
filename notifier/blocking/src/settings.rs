//! The blocking mail service's configuration (`mailer-blocking --help`).
//!
//! | env var | default | meaning |
//! |---|---|---|
//! | `SAGA_CASE` | `2` | `1`: events arrive over HTTP (`POST /internal/events`), no Kafka; `2`: consumed from Kafka |
//! | `MAILER_HOST` | `127.0.0.1` | address the HTTP API binds to |
//! | `MAILER_PORT` | `8083` | port of the HTTP API (`0`: a random free port); it stands where the notifier would |
//! | `MAILER_DATABASE_URL` | `postgres://postgres@127.0.0.1:5432/mail` | PostgreSQL holding the mail history (secret) |
//! | `MAILER_DB_POOL_SIZE` | `10` | r2d2 pool size; one connection per mail being sent |
//! | `MAILER_CONSUMERS` | `1` | Kafka consumers in the group (case 2); each handles up to `MAILER_SMTP_POOL_SIZE` mails at once (different orders), each on a blocking thread |
//! | `MAILER_CONSUMER_GROUP` | `mailer` | Kafka consumer group (case 2) |
//! | `KAFKA_BROKERS`, `KAFKA_TOPIC_PREFIX`, `KAFKA_PARTITIONS` | | see `shared_events::kafka` (case 2) |
//! | `SMTP_HOST` / `SMTP_PORT` | `127.0.0.1` / `2525` | SMTP relay (plain SMTP) |
//! | `MAIL_FROM` | `Saga Shop <shop@example.com>` | `From` of every mail; its domain ends the Message-IDs |
//! | `NOTIFIER_API_TOKEN` | (none: required) | bearer token of `GET /notifications…` (the notifier's); without it the service refuses to start |
//! | `MAILER_SMTP_POOL_SIZE` | `8` | lettre's pool of blocking SMTP connections |
//! | `MAILER_SMTP_TIMEOUT_SECS` | `10` | timeout of one SMTP connection and dialogue step |
//! | `MAILER_MAIL_MAX_ATTEMPTS` | `0` | delivery attempts before a transient failure is recorded `FAILED`; 0: never (only a 5xx fails a mail) |
//! | `MAILER_MAIL_RETRY_INITIAL_MS` | `500` | wait before the 2nd attempt; doubles (with jitter) |
//! | `MAILER_MAIL_RETRY_MAX_MS` | `5000` | cap of the wait between attempts |
//! | `MAILER_HTTP_WORKERS` | `2` | actix-web worker threads |

use notifier::settings::parse_secret;
use secrecy::SecretString;
use shared_events::kafka::KafkaSettings;
use shared_events::Case;
use std::time::Duration;

#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "mailer-blocking",
    about = "The blocking mail service of cases 1 and 2: synchronous SMTP on a thread pool, history in PostgreSQL.",
    // Mails at once are bounded by the SMTP pool, not by the shared Kafka setting.
    mut_arg("kafka_max_in_flight", |arg| arg
        .help("Not read by mailer-blocking: each consumer sends up to --smtp-pool-size (MAILER_SMTP_POOL_SIZE) mails at once")
        .long_help(None::<&str>)),
)]
pub struct MailerSettings {
    /// Which of the seed's cases this runs as: 1 (events over HTTP) or 2 (Kafka).
    #[arg(long, env = "SAGA_CASE", default_value = "2")]
    pub case: Case,
    /// Address the HTTP API listens on (0.0.0.0: every interface).
    #[arg(long, env = "MAILER_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port of the HTTP API (0: any free port); it stands where the notifier's would.
    #[arg(long, env = "MAILER_PORT", default_value_t = 8083)]
    pub port: u16,
    /// PostgreSQL database holding the mail history, as a `postgres://` URL (secret: it
    /// may hold the password).
    #[arg(
        long,
        env = "MAILER_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/mail",
        hide_env_values = true,
        value_parser = parse_secret
    )]
    pub database_url: SecretString,
    /// Connections of the database pool; each mail being sent holds one.
    #[arg(long, env = "MAILER_DB_POOL_SIZE", default_value_t = 10)]
    pub db_pool_size: u32,
    /// Case 2: Kafka consumers in the group; each sends up to `MAILER_SMTP_POOL_SIZE`
    /// mails at once, each on a blocking thread.
    #[arg(long, env = "MAILER_CONSUMERS", default_value_t = 1)]
    pub consumers: usize,
    /// Case 2: Kafka consumer group of the mail service.
    #[arg(long, env = "MAILER_CONSUMER_GROUP", default_value = "mailer")]
    pub consumer_group: String,
    #[command(flatten)]
    pub kafka: KafkaSettings,
    #[command(flatten)]
    pub mail: notifier::settings::MailSettings,
    /// Case 1: the secret order and payment sign `POST /internal/events` with
    /// (HMAC-SHA256; secret). Required in case 1, unused in case 2; no default.
    #[arg(long, env = "INTERNAL_EVENTS_SECRET", hide_env_values = true)]
    pub internal_events_secret: Option<SecretString>,
    /// Blocking SMTP connections kept open between mails; also the mails each Kafka
    /// consumer sends at once.
    #[arg(long, env = "MAILER_SMTP_POOL_SIZE", default_value_t = 8)]
    pub smtp_pool_size: u32,
    /// Timeout of connecting and of each step of the SMTP dialogue, in seconds.
    #[arg(long, env = "MAILER_SMTP_TIMEOUT_SECS", default_value_t = 10)]
    pub smtp_timeout_secs: u64,
    /// Delivery attempts of one mail before a transient failure is recorded FAILED; 0
    /// (the default): never, only a permanent refusal (5xx) fails a mail.
    #[arg(long, env = "MAILER_MAIL_MAX_ATTEMPTS", default_value_t = 0)]
    pub mail_max_attempts: u32,
    /// Wait before the second delivery attempt, in ms; doubles each attempt (with jitter).
    #[arg(long, env = "MAILER_MAIL_RETRY_INITIAL_MS", default_value_t = 500)]
    pub mail_retry_initial_ms: u64,
    /// Cap of the wait between delivery attempts, in ms.
    #[arg(long, env = "MAILER_MAIL_RETRY_MAX_MS", default_value_t = 5_000)]
    pub mail_retry_max_ms: u64,
    /// Worker threads of the HTTP server.
    #[arg(long, env = "MAILER_HTTP_WORKERS", default_value_t = 2)]
    pub http_workers: usize,
}

impl MailerSettings {
    pub fn delivery_policy(&self) -> notifier::service::DeliveryPolicy {
        notifier::service::DeliveryPolicy {
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

    pub fn smtp(&self) -> notifier::transport::SmtpSettings {
        let timeout = Duration::from_secs(self.smtp_timeout_secs.max(1));
        self.mail.smtp(timeout, self.smtp_pool_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[test]
    fn every_option_is_described() {
        shared_events::cli::assert_every_option_is_described(MailerSettings::command());
    }

    #[test]
    fn every_setting_has_a_default_and_help_names_every_env_var() {
        let settings = MailerSettings::parse_from(["mailer-blocking"]);
        // The default itself, not the parsed value: `infra/stack` exports SAGA_CASE=3.
        let case = MailerSettings::command()
            .get_arguments()
            .find(|arg| arg.get_id() == "case")
            .map(|arg| arg.get_default_values().to_vec())
            .expect("a case setting");
        assert_eq!(case, ["2"]);
        assert_eq!(settings.port, 8083);
        assert!(!format!("{settings:?}").contains("local-dev-token"));
        assert!(!format!("{settings:?}").contains("postgres://"));
        let help = MailerSettings::command().render_long_help().to_string();
        for var in [
            "SAGA_CASE",
            "MAILER_HOST",
            "MAILER_PORT",
            "MAILER_DATABASE_URL",
            "MAILER_DB_POOL_SIZE",
            "MAILER_CONSUMERS",
            "MAILER_CONSUMER_GROUP",
            "KAFKA_BROKERS",
            "SMTP_HOST",
            "SMTP_PORT",
            "MAIL_FROM",
            "NOTIFIER_API_TOKEN",
            "MAILER_SMTP_POOL_SIZE",
            "MAILER_SMTP_TIMEOUT_SECS",
            "MAILER_MAIL_MAX_ATTEMPTS",
            "MAILER_MAIL_RETRY_INITIAL_MS",
            "MAILER_MAIL_RETRY_MAX_MS",
            "MAILER_HTTP_WORKERS",
        ] {
            assert!(help.contains(var), "--help does not mention {var}");
        }
    }
}

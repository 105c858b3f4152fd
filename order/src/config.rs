//! order-service settings: defaults, overridden by environment variables, overridden by
//! flags (`order --help` lists them all).
//!
//! | env var | default | meaning |
//! |---|---|---|
//! | `ORDER_HOST` | `127.0.0.1` | address to listen on |
//! | `ORDER_PORT` | `8081` | port (0 = any free port) |
//! | `ORDER_DATABASE_URL` | `postgres://postgres@127.0.0.1:5432/orders` | PostgreSQL (secret) |
//! | `ORDER_DB_POOL_SIZE` | `10` | r2d2 pool size (in case 4: migrations, outbox relay, deadline sweep, gauges) |
//! | `ORDER_ASYNC_DB_POOL_SIZE` | `10` | case 4 only: size of the async (diesel-async + deadpool) pool of the request and event paths |
//! | `SAGA_CASE` | `3` | which of the seed's cases this runs as (`shared_events::Case`): `1` delivers events over synchronous HTTP instead of Kafka, `4` runs the request and event paths on the async driver |
//! | `ORDER_HTTP_WORKERS` | `2` | actix-web worker threads |
//! | `ORDER_MAX_BLOCKING_THREADS` | `0` | blocking threads (database work) of the service's runtime and of each HTTP worker; 0: one per pooled connection and 4 spare (`shared_events::db::blocking_threads`) |
//! | `ORDER_CONSUMER_GROUP` | `order-service` | Kafka consumer group |
//! | `ORDER_PAYMENT_DEADLINE_SECS` | `900` | an unpaid order is cancelled after this (the tid's lifetime) |
//! | `ORDER_DEADLINE_CHECK_MS` | `1000` | how often overdue orders are looked for |
//! | `ORDER_METRICS_REFRESH_MS` | `10000` | how often the orders-by-status gauges are read from the database |
//! | `ORDER_MAX_WAIT_SECS` | `30` | longest wait a client may ask of `GET /orders/{id}` (`Prefer: wait=N`, `?wait=N`); more is a 400 |
//! | `ORDER_MAX_OPEN_WAITS` | `10000` | waiting requests (long polls and `/orders/{id}/events` streams) per instance; beyond it a 503 with `Retry-After` |
//! | `ORDER_EVENTS_MAX_SECS` | `300` | longest life of one `/orders/{id}/events` stream (the client reconnects) |
//! | `ORDER_EVENTS_KEEPALIVE_SECS` | `15` | a `: keep-alive` comment on each `/orders/{id}/events` stream this often; also how soon a stream whose client left is noticed and its wait given back |
//! | `ORDER_ALLOW_CUSTOM_ITEMS` | `false` | accept free-form order lines priced by the client (`name` + `unit_price`); the local stack, tests and benchmarks set it, nothing else should |
//! | `ORDER_IDEMPOTENCY_KEY_TTL_SECS` | `86400` | how long an `Idempotency-Key` of `POST /orders` is remembered |
//! | `ORDER_MAIL_HISTORY_URL` | `http://127.0.0.1:8083` | the mail service, whose history (`GET /notifications`) the order page shows |
//! | `ORDER_MAIL_HISTORY_TOKEN` | (none) | the mail service's `NOTIFIER_API_TOKEN` (secret); without it `GET /orders/{id}/mails` answers 503 |
//! | `KAFKA_BROKERS`, `KAFKA_TOPIC_PREFIX`, `KAFKA_PARTITIONS` | | see `shared_events::kafka` (cases 2–4) |
//! | `ORDER_PAYMENT_URL` | `http://127.0.0.1:8082` | case 1: payment-service, which receives order events at `POST /internal/events` |
//! | `ORDER_MAILER_URL` | `http://127.0.0.1:8083` | case 1: the mail service, which receives order events at `POST /internal/events` |

use secrecy::SecretString;
use shared_events::kafka::KafkaSettings;
use shared_events::Case;
use url::Url;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "order",
    about = "order-service: storefront API and the order side of the saga"
)]
pub struct Settings {
    /// Address the storefront API listens on (0.0.0.0: every interface).
    #[arg(long, env = "ORDER_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port the storefront API listens on (0: any free port).
    #[arg(long, env = "ORDER_PORT", default_value_t = 8081)]
    pub port: u16,
    /// PostgreSQL database of the orders, as a `postgres://` URL (secret: it may hold
    /// the password).
    #[arg(
        long,
        env = "ORDER_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/orders",
        hide_default_value = false,
        hide_env_values = true
    )]
    pub database_url: SecretString,
    /// Connections of the blocking database pool (in case 4 only migrations, the outbox
    /// relay, the deadline sweep and the gauges use it).
    #[arg(long, env = "ORDER_DB_POOL_SIZE", default_value_t = 10)]
    pub db_pool_size: u32,
    /// Case 4 only: connections of the async database pool that serves requests and
    /// events.
    #[arg(long, env = "ORDER_ASYNC_DB_POOL_SIZE", default_value_t = 10)]
    pub async_db_pool_size: usize,
    /// Worker threads of the HTTP server.
    #[arg(long, env = "ORDER_HTTP_WORKERS", default_value_t = 2)]
    pub http_workers: usize,
    /// Threads for database work, in the service's runtime and in each HTTP worker (0:
    /// one per pooled connection and 4 spare).
    #[arg(long, env = "ORDER_MAX_BLOCKING_THREADS", default_value_t = 0)]
    pub max_blocking_threads: usize,
    /// Kafka consumer group of the order service (cases 2–4); every instance uses the
    /// same one.
    #[arg(long, env = "ORDER_CONSUMER_GROUP", default_value = "order-service")]
    pub consumer_group: String,
    /// Seconds an order may wait for its payment before it is cancelled (Kakao Pay's tid
    /// lives 15 minutes).
    #[arg(long, env = "ORDER_PAYMENT_DEADLINE_SECS", default_value_t = 900)]
    pub payment_deadline_secs: u64,
    /// How often overdue unpaid orders are looked for, in ms.
    #[arg(long, env = "ORDER_DEADLINE_CHECK_MS", default_value_t = 1000)]
    pub deadline_check_ms: u64,
    /// How often the orders-by-status gauges of `/metrics` are read from the database,
    /// in ms.
    #[arg(long, env = "ORDER_METRICS_REFRESH_MS", default_value_t = 10_000)]
    pub metrics_refresh_ms: u64,
    /// Longest wait, in seconds, a client may ask of `GET /orders/{id}` (`Prefer: wait=N`
    /// or `?wait=N`); a longer one is answered 400.
    #[arg(long, env = "ORDER_MAX_WAIT_SECS", default_value_t = 30)]
    pub max_wait_secs: u64,
    /// Waiting requests (long polls and `/orders/{id}/events` streams) one instance holds
    /// at once; beyond it clients get 503 with `Retry-After`.
    #[arg(long, env = "ORDER_MAX_OPEN_WAITS", default_value_t = 10_000)]
    pub max_open_waits: usize,
    /// Longest life of one `/orders/{id}/events` stream, in seconds; the client then
    /// reconnects.
    #[arg(long, env = "ORDER_EVENTS_MAX_SECS", default_value_t = 300)]
    pub events_max_secs: u64,
    /// Seconds between keep-alive comments on each `/orders/{id}/events` stream; also how
    /// soon a stream whose client left is noticed and freed.
    #[arg(long, env = "ORDER_EVENTS_KEEPALIVE_SECS", default_value_t = 15)]
    pub events_keepalive_secs: u64,
    /// Accept free-form order lines whose price the client sets (`name` + `unit_price`)
    /// besides catalog products: for the local stack, the tests and the load generators
    /// only — a shop must not let its customers set prices.
    #[arg(
        long,
        env = "ORDER_ALLOW_CUSTOM_ITEMS",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    pub allow_custom_items: bool,
    /// Seconds an `Idempotency-Key` of `POST /orders` is remembered (a retry with it
    /// within this time gets the first order).
    #[arg(long, env = "ORDER_IDEMPOTENCY_KEY_TTL_SECS", default_value_t = 86_400)]
    pub idempotency_key_ttl_secs: u64,
    /// Base URL of the mail service (notifier or mailer-blocking), whose history
    /// (`GET /notifications`) the order page shows the shopper.
    #[arg(
        long,
        env = "ORDER_MAIL_HISTORY_URL",
        default_value = "http://127.0.0.1:8083"
    )]
    pub mail_history_url: Url,
    /// The mail service's API token (its `NOTIFIER_API_TOKEN`), for the order page's mail
    /// status; without it `GET /orders/{id}/mails` answers 503.
    #[arg(long, env = "ORDER_MAIL_HISTORY_TOKEN", hide_env_values = true)]
    pub mail_history_token: Option<SecretString>,
    /// Which architecture to run as (1–4): 1 sends events over synchronous HTTP instead of
    /// Kafka, 4 serves requests and events on the async database driver.
    #[arg(long, env = "SAGA_CASE", default_value = "3")]
    pub case: Case,
    #[command(flatten)]
    pub kafka: KafkaSettings,
    /// Case 1 only: base URL of payment-service, which receives order events at `POST
    /// /internal/events`.
    #[arg(
        long,
        env = "ORDER_PAYMENT_URL",
        default_value = "http://127.0.0.1:8082"
    )]
    pub payment_url: Url,
    /// Case 1 only: base URL of the mail service, which receives order events at `POST
    /// /internal/events`.
    #[arg(
        long,
        env = "ORDER_MAILER_URL",
        default_value = "http://127.0.0.1:8083"
    )]
    pub mailer_url: Url,
    /// Case 1: the secret the services share to sign and check `POST /internal/events`
    /// (HMAC-SHA256, at least 16 characters). Required in case 1, unused otherwise; no
    /// default, so a case-1 service without it refuses to start.
    #[arg(long, env = "INTERNAL_EVENTS_SECRET", hide_env_values = true)]
    pub internal_events_secret: Option<SecretString>,
}

impl Settings {
    /// Who may price an order line.
    pub fn pricing(&self) -> crate::domain::Pricing {
        if self.allow_custom_items {
            crate::domain::Pricing::CustomItemsAllowed
        } else {
            crate::domain::Pricing::CatalogOnly
        }
    }

    /// Blocking threads of the runtime and of each HTTP worker: the setting, or by
    /// default one per pooled connection and a few spare.
    pub fn blocking_threads(&self) -> usize {
        match self.max_blocking_threads {
            0 => shared_events::db::blocking_threads(self.db_pool_size),
            n => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Settings;
    use clap::CommandFactory;

    #[test]
    fn every_option_is_described() {
        shared_events::cli::assert_every_option_is_described(Settings::command());
    }
}

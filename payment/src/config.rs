//! payment-service settings: defaults, overridden by environment variables, overridden by
//! flags (`payment --help` lists them all).
//!
//! | env var | default | meaning |
//! |---|---|---|
//! | `PAYMENT_HOST` | `127.0.0.1` | address to listen on |
//! | `PAYMENT_PORT` | `8082` | port (0 = any free port) |
//! | `PAYMENT_PUBLIC_URL` | `http://127.0.0.1:8082` | base of the callback URLs Kakao Pay sends the shopper to |
//! | `PAYMENT_STOREFRONT_URL` | `http://127.0.0.1:8081` | the storefront (order service) a browser is sent on to from a callback (`/shop/orders/{id}`) |
//! | `PAYMENT_DATABASE_URL` | `postgres://postgres@127.0.0.1:5432/payments` | PostgreSQL (secret) |
//! | `PAYMENT_DB_POOL_SIZE` | `10` | r2d2 pool size (in case 4: migrations, outbox relay, gauges) |
//! | `PAYMENT_ASYNC_DB_POOL_SIZE` | `10` | case 4 only: size of the async (diesel-async + deadpool) pool of the request and event paths |
//! | `SAGA_CASE` | `3` | which of the seed's cases this runs as (`shared_events::Case`): `1` delivers events over synchronous HTTP instead of Kafka, `4` runs the request and event paths on the async driver |
//! | `PAYMENT_HTTP_WORKERS` | `2` | actix-web worker threads |
//! | `PAYMENT_MAX_BLOCKING_THREADS` | `0` | blocking threads (database work) of the service's runtime and of each HTTP worker; 0: one per pooled connection and 4 spare (`shared_events::db::blocking_threads`) |
//! | `PAYMENT_CONSUMER_GROUP` | `payment-service` | Kafka consumer group |
//! | `PAYMENT_GATEWAY_MAX_ATTEMPTS` | `4` | tries of a gateway call that fails transiently |
//! | `PAYMENT_GATEWAY_BACKOFF_MS` | `200` | first wait between tries (doubles, with jitter) |
//! | `PAYMENT_METRICS_REFRESH_MS` | `10000` | how often the payments-by-status gauges are read from the database |
//! | `PAYMENT_RECONCILE_MS` | `5000` | how often the reconciler settles payments stuck `APPROVING`/`REFUNDING` (and unclear, half-closed or to-refund ones) by Kakao Pay's record; also the first wait before a payment it could not settle is checked again |
//! | `PAYMENT_RECONCILE_MAX_BACKOFF_MS` | `300000` | the longest a payment the reconciler could not settle waits before it is checked again (the wait doubles per check, with jitter) |
//! | `KAKAOPAY_BASE_URL` | `http://127.0.0.1:8089` | Kakao Pay API (the simulator locally) |
//! | `KAKAOPAY_SECRET_KEY` | — (required) | Kakao Pay secret key (secret) |
//! | `PAYMENT_API_TOKEN` | — (required) | bearer token of the operators' look-ups `GET /payments` and `GET /payments/{id}` (secret) |
//! | `KAKAOPAY_CID` | `TC0ONETIME` | merchant id |
//! | `KAKAOPAY_TIMEOUT_MS` | `12000` | whole-request timeout (Kakao's platform gives up at 11 s) |
//! | `KAFKA_BROKERS`, `KAFKA_TOPIC_PREFIX`, `KAFKA_PARTITIONS` | | see `shared_events::kafka` (cases 2–4) |
//! | `PAYMENT_ORDER_URL` | `http://127.0.0.1:8081` | case 1: order-service, which receives payment events at `POST /internal/events` |
//! | `PAYMENT_MAILER_URL` | `http://127.0.0.1:8083` | case 1: the mail service, which receives payment events at `POST /internal/events` |

use secrecy::SecretString;
use shared_events::kafka::KafkaSettings;
use shared_events::Case;
use url::Url;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "payment",
    about = "payment-service: the payment side of the saga, through Kakao Pay"
)]
pub struct Settings {
    /// Address the payment API listens on (0.0.0.0: every interface).
    #[arg(long, env = "PAYMENT_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port the payment API listens on (0: any free port).
    #[arg(long, env = "PAYMENT_PORT", default_value_t = 8082)]
    pub port: u16,
    /// Base URL of this service as the shopper's browser reaches it: Kakao Pay sends the
    /// shopper back to its approve, cancel and fail callbacks.
    #[arg(
        long,
        env = "PAYMENT_PUBLIC_URL",
        default_value = "http://127.0.0.1:8082"
    )]
    pub public_url: Url,
    /// Base URL of the storefront (the order service) as the shopper's browser reaches
    /// it: a browser coming back from Kakao Pay is sent on to its order's page there.
    #[arg(
        long,
        env = "PAYMENT_STOREFRONT_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    pub storefront_url: Url,
    /// PostgreSQL database of the payments, as a `postgres://` URL (secret: it may hold
    /// the password).
    #[arg(
        long,
        env = "PAYMENT_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/payments",
        hide_env_values = true
    )]
    pub database_url: SecretString,
    /// Connections of the blocking database pool (in case 4 only migrations, the outbox
    /// relay and the gauges use it).
    #[arg(long, env = "PAYMENT_DB_POOL_SIZE", default_value_t = 10)]
    pub db_pool_size: u32,
    /// Case 4 only: connections of the async database pool that serves requests and
    /// events.
    #[arg(long, env = "PAYMENT_ASYNC_DB_POOL_SIZE", default_value_t = 10)]
    pub async_db_pool_size: usize,
    /// Worker threads of the HTTP server.
    #[arg(long, env = "PAYMENT_HTTP_WORKERS", default_value_t = 2)]
    pub http_workers: usize,
    /// Threads for database work, in the service's runtime and in each HTTP worker (0:
    /// one per pooled connection and 4 spare).
    #[arg(long, env = "PAYMENT_MAX_BLOCKING_THREADS", default_value_t = 0)]
    pub max_blocking_threads: usize,
    /// Kafka consumer group of the payment service (cases 2–4); every instance uses the
    /// same one.
    #[arg(
        long,
        env = "PAYMENT_CONSUMER_GROUP",
        default_value = "payment-service"
    )]
    pub consumer_group: String,
    /// Tries of a Kakao Pay call that fails transiently (timeout, connection or server
    /// error) before giving up.
    #[arg(long, env = "PAYMENT_GATEWAY_MAX_ATTEMPTS", default_value_t = 4)]
    pub gateway_max_attempts: u32,
    /// First wait between tries of a Kakao Pay call, in ms; it doubles each try (with
    /// jitter).
    #[arg(long, env = "PAYMENT_GATEWAY_BACKOFF_MS", default_value_t = 200)]
    pub gateway_backoff_ms: u64,
    /// How often the payments-by-status gauges of `/metrics` are read from the database,
    /// in ms.
    #[arg(long, env = "PAYMENT_METRICS_REFRESH_MS", default_value_t = 10_000)]
    pub metrics_refresh_ms: u64,
    /// How often, in ms, the reconciler settles stuck payments (approving, refunding,
    /// unclear) by Kakao Pay's record; also its first wait before checking one again.
    #[arg(long, env = "PAYMENT_RECONCILE_MS", default_value_t = 5_000)]
    pub reconcile_ms: u64,
    /// Longest wait, in ms, before the reconciler checks again a payment it could not
    /// settle (the wait doubles per check, with jitter).
    #[arg(
        long,
        env = "PAYMENT_RECONCILE_MAX_BACKOFF_MS",
        default_value_t = 300_000
    )]
    pub reconcile_max_backoff_ms: u64,
    /// Base URL of the Kakao Pay API (locally: the simulator, `kakaopay-sim`).
    #[arg(
        long,
        env = "KAKAOPAY_BASE_URL",
        default_value = "http://127.0.0.1:8089"
    )]
    pub kakaopay_base_url: Url,
    /// Kakao Pay secret key, sent as `Authorization: SECRET_KEY <key>` (secret; required,
    /// no default).
    #[arg(long, env = "KAKAOPAY_SECRET_KEY", hide_env_values = true)]
    pub kakaopay_secret_key: SecretString,
    /// Merchant id (cid) of the shop at Kakao Pay; the default is Kakao's test merchant.
    #[arg(long, env = "KAKAOPAY_CID", default_value = kakaopay::TEST_CID)]
    pub kakaopay_cid: String,
    /// Timeout of one whole Kakao Pay request, in ms (Kakao's platform gives up at 11 s).
    #[arg(long, env = "KAKAOPAY_TIMEOUT_MS", default_value_t = 12_000)]
    pub kakaopay_timeout_ms: u64,
    /// Which architecture to run as (1–4): 1 sends events over synchronous HTTP instead of
    /// Kafka, 4 serves requests and events on the async database driver.
    #[arg(long, env = "SAGA_CASE", default_value = "3")]
    pub case: Case,
    #[command(flatten)]
    pub kafka: KafkaSettings,
    /// Case 1 only: base URL of order-service, which receives payment events at `POST
    /// /internal/events`.
    #[arg(
        long,
        env = "PAYMENT_ORDER_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    pub order_url: Url,
    /// Case 1 only: base URL of the mail service, which receives payment events at `POST
    /// /internal/events`.
    #[arg(
        long,
        env = "PAYMENT_MAILER_URL",
        default_value = "http://127.0.0.1:8083"
    )]
    pub mailer_url: Url,
    /// Bearer token the operators' look-ups (`GET /payments`, `GET /payments/{id}`) need
    /// (secret; required, no default: without it the service refuses to start).
    #[arg(long, env = "PAYMENT_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<SecretString>,
    /// Case 1: the secret the services share to sign and check `POST /internal/events`
    /// (HMAC-SHA256, at least 16 characters). Required in case 1, unused otherwise; no
    /// default, so a case-1 service without it refuses to start.
    #[arg(long, env = "INTERNAL_EVENTS_SECRET", hide_env_values = true)]
    pub internal_events_secret: Option<SecretString>,
}

impl Settings {
    /// Blocking threads of the runtime and of each HTTP worker: the setting, or by
    /// default one per pooled connection and a few spare.
    pub fn blocking_threads(&self) -> usize {
        match self.max_blocking_threads {
            0 => shared_events::db::blocking_threads(self.db_pool_size),
            n => n,
        }
    }

    /// How long an approve or refund can legitimately be in flight: every attempt timing
    /// out, plus the backoffs between them, plus slack. The reconciler waits longer.
    pub fn longest_gateway_call(&self) -> std::time::Duration {
        let attempts = self.gateway_max_attempts.max(1);
        let timeouts = self.kakaopay_timeout_ms * u64::from(attempts);
        let backoffs = self.gateway_backoff_ms * 16 * u64::from(attempts);
        std::time::Duration::from_millis(timeouts + backoffs + 5_000)
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

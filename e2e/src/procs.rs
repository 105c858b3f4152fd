//! The fault-injection harness: the whole shop as real OS processes.
//!
//! [`ProcStack::start`] runs, on free loopback ports chosen up front and with every file
//! in a temp folder of its own:
//!
//! * private dependency servers: tansu (Kafka protocol, durable SQLite storage, so a
//!   broker restart keeps the data), nx-27017 (MongoDB protocol) and the SMTP sink
//!   (`infra/smtp_sink.py`, Maildir) — the same commands as `infra/lib/deps.sh`;
//! * fresh PostgreSQL databases `orders_<id>` and `payments_<id>` on the shared server
//!   (`POSTGRES_URL`), dropped at the end;
//! * the four binaries from the cargo target folder (built once per test binary run,
//!   see [`binaries`]): `kakaopay-sim`, `payment`, `order`, `notifier`, with their topics
//!   under a unique `KAFKA_TOPIC_PREFIX`.
//!
//! Any part ([`Part`]) can be stopped (SIGTERM, then SIGKILL after a deadline), killed
//! with SIGKILL ([`ProcStack::kill9`]) and started again on the same port with the same
//! data. Every child is killed when the stack is dropped, also on panic; only the PIDs
//! this stack started are ever signalled. Each process logs to `<dir>/logs/<part>.log`;
//! the folder is removed when the test passed and kept (its path printed) when it failed.
//!
//! [`Shopper`] drives a load of orders with a mix of shopper actions, retrying through
//! outages; [`verify`] checks the invariants every scenario ends with.
//!
//! The modules: `parts` (what a stack is made of), `lifecycle` (starting, stopping and
//! killing parts), `spec` (each part's command line and environment), `api` (the
//! services' and the simulator's HTTP APIs), `kafka` (the stack's topics), `child` and
//! `postgres` (one process; a private PostgreSQL server), `build`, `shopper`,
//! `invariants`, `mailbox`, `audit` and `report`.
//!
//! Environment: `POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432`),
//! `TANSU_BIN` (default `~/.cargo/bin/tansu`), `SAGA_CACHE_DIR` (default
//! `~/.cache/saga-shop`, holding the Python `venv`), `FAULT_RESULTS` (see [`record`]),
//! `FAULT_TANSU_STORAGE` and `FAULT_TANSU_LOG` (tansu's storage engine and `RUST_LOG`),
//! `FAULT_KAFKA_DEBUG` (the services' `KAFKA_DEBUG`).

mod api;
mod audit;
mod build;
mod child;
mod invariants;
mod kafka;
mod lifecycle;
mod mailbox;
mod parts;
mod postgres;
mod report;
mod shopper;
mod spec;

pub use audit::{audit_args, saga_audit};
pub use build::binaries;
pub use invariants::{verify, Check, Expect, Verdict};
pub use mailbox::MailIndex;
pub use parts::{Db, Part, Ports};
pub use postgres::PrivatePostgres;
pub use report::record;
pub use shopper::{Intent, Load, LoadOutcome, LoadPlan, Mix, Placed, Shopper};

use crate::Maildir;
use child::Child;
use shared_events::kafka::KafkaSettings;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Partitions of every topic (`KAFKA_PARTITIONS`).
pub const PARTITIONS: i32 = shared_events::kafka::DEFAULT_PARTITIONS;
/// How long a (re)started process may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a SIGTERM is given before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// The simulator's secret (the services send it as `KAKAOPAY_SECRET_KEY`).
const SIM_SECRET: &str = "FAULTS-sim-secret";

/// The shop and its servers, as processes this test owns.
pub struct ProcStack {
    /// Short unique id: database names, topic prefix, consumer groups, mail addresses.
    pub id: String,
    /// The temp folder: `logs/`, `tansu/`, `mongodb/`, `mail/`.
    pub dir: PathBuf,
    pub ports: Ports,
    pub http: reqwest::Client,
    pub notifier_token: String,
    /// The operators' token of payment's look-ups (`PAYMENT_API_TOKEN`).
    pub payment_token: String,
    postgres_url: String,
    bins: PathBuf,
    /// Bumped by [`ProcStack::replay_with_new_groups`]: new consumer groups.
    generation: u32,
    /// Extra environment per part, applied at the next (re)start.
    extra_env: BTreeMap<Part, Vec<(String, String)>>,
    kafka_storage: String,
    children: BTreeMap<Part, Child>,
    /// The stack's own PostgreSQL servers, one per database
    /// ([`Options::private_postgres`]); empty: both on the shared server at
    /// `POSTGRES_URL`.
    postgres: BTreeMap<Db, PrivatePostgres>,
    started_at: Instant,
}

/// How to start a [`ProcStack`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Extra environment variables per part (they win over the stack's).
    pub extra_env: BTreeMap<Part, Vec<(String, String)>>,
    /// tansu's `--storage-engine`: `sqlite://tansu.db` (durable, relative to its data
    /// folder; the default, as `infra/stack`) or `memory://tansu/`.
    /// `FAULT_TANSU_STORAGE` overrides the default.
    pub kafka_storage: String,
    /// Run a PostgreSQL server of the stack's own per database (see
    /// [`PrivatePostgres`]) instead of using the shared one, so the scenario can take
    /// either database away and bring it back.
    pub private_postgres: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            extra_env: BTreeMap::new(),
            kafka_storage: std::env::var("FAULT_TANSU_STORAGE")
                .unwrap_or_else(|_| "sqlite://tansu.db".to_owned()),
            private_postgres: false,
        }
    }
}

/// Where things are and what they are called; the rest of `impl ProcStack` is in
/// `lifecycle`, `spec`, `api` and `kafka`.
impl ProcStack {
    /// `http://127.0.0.1:<port>` of an HTTP part.
    pub fn url(&self, part: Part) -> String {
        format!("http://127.0.0.1:{}", self.ports.of(part))
    }

    pub fn kafka_brokers(&self) -> String {
        format!("127.0.0.1:{}", self.ports.kafka)
    }

    pub fn kafka(&self) -> KafkaSettings {
        let mut settings = KafkaSettings::local(&self.kafka_brokers(), &self.topic_prefix());
        settings.partitions = PARTITIONS;
        settings
    }

    pub fn topic_prefix(&self) -> String {
        format!("f{}.", self.id)
    }

    /// Consumer group of a service in the current generation.
    pub fn group(&self, part: Part) -> String {
        format!("{}-{}-g{}", part.name(), self.id, self.generation)
    }

    /// The URL of the stack's database `name` (`orders` or `payments`).
    pub fn database_url(&self, name: &str) -> String {
        let db = if name == "orders" {
            Db::Orders
        } else {
            Db::Payments
        };
        format!("{}/{name}_{}", self.server_url(db), self.id)
    }

    /// The PostgreSQL server holding `db`.
    fn server_url(&self, db: Db) -> String {
        match self.postgres.get(&db) {
            Some(pg) => pg.url(),
            None => self.postgres_url.clone(),
        }
    }

    /// The SMTP sink's Maildir.
    pub fn maildir(&self) -> Maildir {
        Maildir::new(self.maildir_path())
    }

    pub fn maildir_path(&self) -> PathBuf {
        self.dir.join("mail")
    }

    pub fn log_path(&self, part: Part) -> PathBuf {
        self.dir.join("logs").join(format!("{}.log", part.name()))
    }

    /// A shopper that places orders against this stack's order-service.
    pub fn shopper(&self) -> Shopper {
        Shopper::new(self.url(Part::Order), self.http.clone(), &self.id)
    }

    /// Time since the stack started.
    pub fn uptime(&self) -> Duration {
        self.started_at.elapsed()
    }

    /// Sets an environment variable of `part` for its next (re)start.
    pub fn set_env(&mut self, part: Part, name: &str, value: &str) {
        let vars = self.extra_env.entry(part).or_default();
        vars.retain(|(n, _)| n != name);
        vars.push((name.to_owned(), value.to_owned()));
    }

    /// The name of this stack's copy of `database` (`orders`, `payments`).
    pub fn database_name(&self, database: &str) -> String {
        format!("{database}_{}", self.id)
    }

    // ----- faults that are not process control -----

    /// Terminates every PostgreSQL session of the stack's two databases (the services'
    /// pooled connections); returns how many were terminated.
    pub fn terminate_db_sessions(&self) -> anyhow::Result<usize> {
        use diesel::{Connection, RunQueryDsl};
        let mut servers: Vec<String> = Db::ALL.iter().map(|&db| self.server_url(db)).collect();
        servers.dedup();
        let mut terminated = 0;
        for server in servers {
            let mut conn = diesel::PgConnection::establish(&format!("{server}/postgres"))?;
            let sql = format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname IN ('orders_{id}', 'payments_{id}') AND pid <> pg_backend_pid()",
                id = self.id
            );
            terminated += diesel::sql_query(sql).execute(&mut conn)?;
        }
        Ok(terminated)
    }

    // ----- diagnostics -----

    /// The last `lines` lines of a part's log.
    pub fn log_tail(&self, part: Part, lines: usize) -> String {
        child::tail(&self.log_path(part), lines)
    }

    /// Where everything is, and the tail of every log: for failure messages.
    pub fn diagnostics(&self) -> String {
        let mut out = format!(
            "stack {} — folder {} (kept), logs in {}\n",
            self.id,
            self.dir.display(),
            self.dir.join("logs").display()
        );
        for db in self.postgres.keys() {
            let log = self
                .dir
                .join("logs")
                .join(format!("postgres-{}.log", db.name()));
            out.push_str(&format!(
                "----- private postgres of {} ({}) -----\n{}\n",
                db.name(),
                log.display(),
                child::tail(&log, 15)
            ));
        }
        for part in Part::ALL {
            out.push_str(&format!(
                "----- {} ({}) -----\n{}\n",
                part.name(),
                self.log_path(part).display(),
                self.log_tail(part, 15)
            ));
        }
        out
    }
}

impl Drop for ProcStack {
    fn drop(&mut self) {
        // Services first, then the servers they use.
        for part in Part::ALL.iter().rev() {
            if let Some(child) = self.children.get_mut(part) {
                child.kill9();
            }
        }
        if self.postgres.is_empty() {
            drop_databases(&self.postgres_url, &self.id);
        }
        // Private servers: their data folders go with the stack's.
        for pg in self.postgres.values_mut() {
            pg.kill();
        }
        if std::thread::panicking() || std::env::var_os("FAULT_KEEP").is_some() {
            eprintln!(
                "fault stack {}: processes killed; folder kept for inspection: {} (logs: {})",
                self.id,
                self.dir.display(),
                self.dir.join("logs").display()
            );
        } else if let Err(error) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("could not remove {}: {error}", self.dir.display());
        }
    }
}

fn drop_databases(postgres_url: &str, id: &str) {
    use diesel::{Connection, RunQueryDsl};
    let Ok(mut conn) = diesel::PgConnection::establish(&format!("{postgres_url}/postgres")) else {
        eprintln!("could not connect to PostgreSQL to drop the databases of stack {id}");
        return;
    };
    for database in ["orders", "payments"] {
        let sql = format!("DROP DATABASE IF EXISTS \"{database}_{id}\" WITH (FORCE)");
        if let Err(error) = diesel::sql_query(sql).execute(&mut conn) {
            eprintln!("could not drop {database}_{id}: {error}");
        }
    }
}

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e lives in the workspace")
        .to_path_buf()
}

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
//! Environment: `POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432`),
//! `TANSU_BIN` (default `~/.cargo/bin/tansu`), `SAGA_CACHE_DIR` (default
//! `~/.cache/saga-shop`, holding the Python `venv`), `FAULT_RESULTS` (see [`record`]),
//! `FAULT_TANSU_STORAGE` and `FAULT_TANSU_LOG` (tansu's storage engine and `RUST_LOG`),
//! `FAULT_KAFKA_DEBUG` (the services' `KAFKA_DEBUG`).

mod audit;
mod build;
mod child;
mod invariants;
mod mailbox;
mod postgres;
mod report;
mod shopper;

pub use audit::{audit_args, saga_audit};
pub use build::binaries;
pub use invariants::{verify, Check, Expect, Verdict};
pub use mailbox::MailIndex;
pub use postgres::PrivatePostgres;
pub use report::record;
pub use shopper::{Intent, Load, LoadOutcome, LoadPlan, Mix, Placed, Shopper};

use crate::Maildir;
use anyhow::{bail, Context};
use child::{Child, Spec};
use kakaopay::sim::Ledger;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;
use shared_events::kafka::{dead_letter_tools, DeadLetter, KafkaSettings};
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Partitions of every topic (`KAFKA_PARTITIONS`).
pub const PARTITIONS: i32 = shared_events::kafka::DEFAULT_PARTITIONS;
/// How long a (re)started process may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a SIGTERM is given before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// The simulator's secret (the services send it as `KAKAOPAY_SECRET_KEY`).
const SIM_SECRET: &str = "FAULTS-sim-secret";

/// One process of the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    Kafka,
    Mongo,
    Smtp,
    KakaoPay,
    Payment,
    Order,
    Notifier,
    /// More notifier instances in the same consumer group (not started by default).
    Notifier2,
    Notifier3,
}

impl Part {
    pub const ALL: [Part; 9] = [
        Part::Kafka,
        Part::Mongo,
        Part::Smtp,
        Part::KakaoPay,
        Part::Payment,
        Part::Order,
        Part::Notifier,
        Part::Notifier2,
        Part::Notifier3,
    ];
    pub const SERVICES: [Part; 3] = [Part::Payment, Part::Order, Part::Notifier];

    pub fn name(self) -> &'static str {
        match self {
            Part::Kafka => "tansu",
            Part::Mongo => "nx-27017",
            Part::Smtp => "smtp-sink",
            Part::KakaoPay => "kakaopay-sim",
            Part::Payment => "payment",
            Part::Order => "order",
            Part::Notifier => "notifier",
            Part::Notifier2 => "notifier-2",
            Part::Notifier3 => "notifier-3",
        }
    }

    /// Serves HTTP with `/readyz` (or `/healthz` for the simulator).
    fn is_http(self) -> bool {
        matches!(
            self,
            Part::KakaoPay
                | Part::Payment
                | Part::Order
                | Part::Notifier
                | Part::Notifier2
                | Part::Notifier3
        )
    }
}

/// The ports, fixed for the stack's life so URLs handed out survive restarts.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub kafka: u16,
    pub mongo: u16,
    pub smtp: u16,
    pub kakaopay: u16,
    pub payment: u16,
    pub order: u16,
    pub notifier: u16,
    pub notifier2: u16,
    pub notifier3: u16,
    /// The private PostgreSQL servers' ([`Options::private_postgres`]).
    pub postgres_orders: u16,
    pub postgres_payments: u16,
}

impl Ports {
    fn pick() -> anyhow::Result<Self> {
        // Hold every listener until all are chosen, so no two parts get the same port.
        let listeners: Vec<TcpListener> = (0..11)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<_, _>>()?;
        let port = |n: usize| -> anyhow::Result<u16> { Ok(listeners[n].local_addr()?.port()) };
        Ok(Self {
            kafka: port(0)?,
            mongo: port(1)?,
            smtp: port(2)?,
            kakaopay: port(3)?,
            payment: port(4)?,
            order: port(5)?,
            notifier: port(6)?,
            postgres_orders: port(7)?,
            postgres_payments: port(8)?,
            notifier2: port(9)?,
            notifier3: port(10)?,
        })
    }

    pub fn of(&self, part: Part) -> u16 {
        match part {
            Part::Kafka => self.kafka,
            Part::Mongo => self.mongo,
            Part::Smtp => self.smtp,
            Part::KakaoPay => self.kakaopay,
            Part::Payment => self.payment,
            Part::Order => self.order,
            Part::Notifier => self.notifier,
            Part::Notifier2 => self.notifier2,
            Part::Notifier3 => self.notifier3,
        }
    }
}

/// The services' two databases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Db {
    Orders,
    Payments,
}

impl Db {
    pub const ALL: [Db; 2] = [Db::Orders, Db::Payments];

    pub fn name(self) -> &'static str {
        match self {
            Db::Orders => "orders",
            Db::Payments => "payments",
        }
    }
}

/// The shop and its servers, as processes this test owns.
pub struct ProcStack {
    /// Short unique id: database names, topic prefix, consumer groups, mail addresses.
    pub id: String,
    /// The temp folder: `logs/`, `tansu/`, `mongodb/`, `mail/`.
    pub dir: PathBuf,
    pub ports: Ports,
    pub http: reqwest::Client,
    pub notifier_token: String,
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

impl ProcStack {
    /// Builds the binaries if needed, then starts everything and waits until it is ready.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(Options::default()).await
    }

    /// Like [`ProcStack::start`], with other options.
    pub async fn start_with(options: Options) -> anyhow::Result<Self> {
        let Options {
            extra_env,
            kafka_storage,
            private_postgres,
        } = options;
        let bins = tokio::task::spawn_blocking(|| binaries().to_path_buf()).await?;
        let id = Uuid::new_v4().simple().to_string()[..12].to_owned();
        let dir = std::env::temp_dir().join(format!("saga-faults-{id}"));
        for sub in ["logs", "tansu", "mongodb", "mail"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        let ports = Ports::pick()?;
        let mut postgres = BTreeMap::new();
        if private_postgres {
            for (db, port) in [
                (Db::Orders, ports.postgres_orders),
                (Db::Payments, ports.postgres_payments),
            ] {
                let data = dir.join(format!("pg-{}", db.name()));
                let log = dir.join("logs").join(format!("postgres-{}.log", db.name()));
                let pg = tokio::task::spawn_blocking(move || {
                    let mut pg = PrivatePostgres::init(data, log, port)?;
                    pg.start()?;
                    anyhow::Ok(pg)
                })
                .await??;
                postgres.insert(db, pg);
            }
        }
        let postgres_url = std::env::var("POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(30))
            .build()?;
        let mut stack = Self {
            notifier_token: format!("token-{id}"),
            ports,
            id,
            dir,
            http,
            postgres_url,
            bins,
            generation: 0,
            extra_env,
            kafka_storage,
            children: BTreeMap::new(),
            postgres,
            started_at: Instant::now(),
        };
        for db in Db::ALL {
            let name = format!("{}_{}", db.name(), stack.id);
            shared_events::db::create_database(
                &format!("{}/postgres", stack.server_url(db)),
                &name,
            )
            .with_context(|| format!("creating database {name}"))?;
        }
        // The servers first, then the simulator, then the services (in parallel).
        for part in [Part::Kafka, Part::Mongo, Part::Smtp, Part::KakaoPay] {
            stack.spawn(part)?;
        }
        for part in [Part::Kafka, Part::Mongo, Part::Smtp, Part::KakaoPay] {
            stack.wait_ready(part).await?;
        }
        for part in Part::SERVICES {
            stack.spawn(part)?;
        }
        for part in Part::SERVICES {
            stack.wait_ready(part).await?;
        }
        tracing::info!(id = %stack.id, dir = %stack.dir.display(), "Process stack ready.");
        Ok(stack)
    }

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

    // ----- process control -----

    pub fn is_running(&mut self, part: Part) -> bool {
        self.children.get_mut(&part).is_some_and(Child::is_running)
    }

    pub fn pid(&self, part: Part) -> Option<u32> {
        self.children.get(&part).and_then(Child::pid)
    }

    /// Starts `part` (on its port, with its data) without waiting for it to be ready.
    pub fn launch(&mut self, part: Part) -> anyhow::Result<()> {
        self.spawn(part)
    }

    /// The name of this stack's copy of `database` (`orders`, `payments`).
    pub fn database_name(&self, database: &str) -> String {
        format!("{database}_{}", self.id)
    }

    /// Starts `part` (on its port, with its data) and waits until it is ready.
    pub async fn start_part(&mut self, part: Part) -> anyhow::Result<()> {
        self.spawn(part)?;
        self.wait_ready(part).await
    }

    /// SIGTERM, then SIGKILL if it has not exited within 30 s.
    pub async fn stop(&mut self, part: Part) {
        if let Some(child) = self.children.get_mut(&part) {
            child.stop(STOP_TIMEOUT).await;
        }
    }

    /// SIGKILL: no shutdown code runs.
    pub async fn kill9(&mut self, part: Part) {
        if let Some(child) = self.children.get_mut(&part) {
            child.kill9();
        }
    }

    /// Stops the private PostgreSQL holding `db` (a fast shutdown, by its PID): that
    /// database is unreachable until [`ProcStack::start_postgres`].
    pub async fn stop_postgres(&mut self, db: Db) -> anyhow::Result<()> {
        match self.postgres.get_mut(&db) {
            Some(pg) => pg.stop().await,
            None => bail!("this stack uses the shared PostgreSQL, which is never stopped"),
        }
    }

    /// Starts the private PostgreSQL holding `db` again, on its port with its data.
    pub async fn start_postgres(&mut self, db: Db) -> anyhow::Result<()> {
        let Some(mut pg) = self.postgres.remove(&db) else {
            bail!("this stack has no private PostgreSQL");
        };
        let (pg, started) = tokio::task::spawn_blocking(move || {
            let started = pg.start();
            (pg, started)
        })
        .await?;
        self.postgres.insert(db, pg);
        started
    }

    /// The postmaster PID of the private PostgreSQL holding `db`, while it runs.
    pub fn postgres_pid(&self, db: Db) -> Option<u32> {
        self.postgres.get(&db).and_then(PrivatePostgres::pid)
    }

    /// Graceful stop, then start on the same port with the same data.
    pub async fn restart(&mut self, part: Part) -> anyhow::Result<()> {
        self.stop(part).await;
        self.start_part(part).await
    }

    /// Stops the three services, then starts them in new consumer groups: they read every
    /// topic again from offset 0 (the groups have no committed offsets).
    pub async fn replay_with_new_groups(&mut self) -> anyhow::Result<()> {
        for part in [Part::Notifier, Part::Order, Part::Payment] {
            self.stop(part).await;
        }
        self.generation += 1;
        for part in Part::SERVICES {
            self.spawn(part)?;
        }
        for part in Part::SERVICES {
            self.wait_ready(part).await?;
        }
        Ok(())
    }

    fn spawn(&mut self, part: Part) -> anyhow::Result<()> {
        let spec = self.spec(part);
        let log = self.log_path(part);
        let child = self
            .children
            .entry(part)
            .or_insert_with(|| Child::new(part.name(), log));
        if child.is_running() {
            bail!("{} is already running", part.name());
        }
        child.spawn(&spec)
    }

    /// Waits until `part` accepts connections (servers) or answers `/readyz` with 200
    /// (services); fails early, with its log, if it exits.
    pub async fn wait_ready(&mut self, part: Part) -> anyhow::Result<()> {
        let started = Instant::now();
        let path = if part == Part::KakaoPay {
            "/healthz"
        } else {
            "/readyz"
        };
        loop {
            let ready = if part.is_http() {
                let url = format!("{}{path}", self.url(part));
                matches!(self.http.get(url).timeout(Duration::from_secs(2)).send().await,
                    Ok(response) if response.status().is_success())
            } else {
                tokio::net::TcpStream::connect(("127.0.0.1", self.ports.of(part)))
                    .await
                    .is_ok()
            };
            if ready {
                return Ok(());
            }
            if !self.is_running(part) {
                bail!(
                    "{} exited before it was ready:\n{}",
                    part.name(),
                    self.log_tail(part, 40)
                );
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "{} not ready after {READY_TIMEOUT:?}:\n{}",
                    part.name(),
                    self.log_tail(part, 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The command line and environment of `part`. The environment is cleared first: the
    /// processes see only what is set here (never the shared stack's settings).
    fn spec(&self, part: Part) -> Spec {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".to_owned());
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
            ("HOME".into(), home.clone()),
            ("RUST_BACKTRACE".into(), "1".into()),
            ("NO_COLOR".into(), "1".into()),
        ];
        let mut set = |name: &str, value: String| env.push((name.to_owned(), value));
        let kafka = self.kafka_brokers();
        let services = |set: &mut dyn FnMut(&str, String)| {
            set("RUST_LOG", "info".into());
            set("KAFKA_BROKERS", kafka.clone());
            set("KAFKA_TOPIC_PREFIX", self.topic_prefix());
            set("KAFKA_PARTITIONS", PARTITIONS.to_string());
            // One process per part: a stable instance name lets a restarted service take
            // back its partitions at once (see KafkaSettings::group_instance_id).
            set("KAFKA_GROUP_INSTANCE_ID", format!("{}-1", part.name()));
            if let Ok(debug) = std::env::var("FAULT_KAFKA_DEBUG") {
                set("KAFKA_DEBUG", debug);
            }
        };
        let database = |name: &str| self.database_url(name);
        let (program, args, cwd): (PathBuf, Vec<String>, PathBuf) = match part {
            Part::Kafka => {
                // As infra/lib/deps.sh: the sqlite path is relative to the working folder.
                // FAULT_TANSU_LOG (e.g. `warn,tansu_broker::coordinator=debug`) shows the
                // broker's group coordination when a scenario needs explaining.
                set(
                    "RUST_LOG",
                    std::env::var("FAULT_TANSU_LOG").unwrap_or_else(|_| "warn".to_owned()),
                );
                let listener = format!("tcp://127.0.0.1:{}", self.ports.kafka);
                (
                    tansu_bin(&home),
                    [
                        "broker",
                        "--cluster-id",
                        &format!("faults-{}", self.id),
                        "--listener-url",
                        &listener,
                        "--advertised-listener-url",
                        &listener,
                        "--storage-engine",
                        &self.kafka_storage,
                    ]
                    .map(str::to_owned)
                    .to_vec(),
                    self.dir.join("tansu"),
                )
            }
            Part::Mongo => {
                let dir = self.dir.join("mongodb");
                (
                    venv(&home).join("bin/nx-27017"),
                    vec![
                        "--host".into(),
                        "127.0.0.1".into(),
                        "--port".into(),
                        self.ports.mongo.to_string(),
                        "--data-dir".into(),
                        dir.join("db").display().to_string(),
                        "--log-file".into(),
                        "/dev/null".into(),
                        "--pid-file".into(),
                        dir.join("nx-27017.pid").display().to_string(),
                    ],
                    dir,
                )
            }
            Part::Smtp => (
                venv(&home).join("bin/python"),
                vec![
                    workspace_root()
                        .join("infra/smtp_sink.py")
                        .display()
                        .to_string(),
                    "--host".into(),
                    "127.0.0.1".into(),
                    "--port".into(),
                    self.ports.smtp.to_string(),
                    "--maildir".into(),
                    self.maildir_path().display().to_string(),
                ],
                self.dir.clone(),
            ),
            Part::KakaoPay => {
                set("RUST_LOG", "warn".into());
                set("KAKAOPAY_SIM_HOST", "127.0.0.1".into());
                set("KAKAOPAY_SIM_PORT", self.ports.kakaopay.to_string());
                set("KAKAOPAY_SIM_SECRET_KEY", SIM_SECRET.into());
                set("KAKAOPAY_SIM_MODE", "auto".into());
                (self.bins.join("kakaopay-sim"), vec![], self.dir.clone())
            }
            Part::Payment => {
                services(&mut set);
                set("PAYMENT_HOST", "127.0.0.1".into());
                set("PAYMENT_PORT", self.ports.payment.to_string());
                set("PAYMENT_PUBLIC_URL", self.url(Part::Payment));
                set("PAYMENT_DATABASE_URL", database("payments"));
                set("PAYMENT_CONSUMER_GROUP", self.group(Part::Payment));
                set("KAKAOPAY_BASE_URL", self.url(Part::KakaoPay));
                set("KAKAOPAY_SECRET_KEY", SIM_SECRET.into());
                (self.bins.join("payment"), vec![], self.dir.clone())
            }
            Part::Order => {
                services(&mut set);
                set("ORDER_HOST", "127.0.0.1".into());
                set("ORDER_PORT", self.ports.order.to_string());
                set("ORDER_DATABASE_URL", database("orders"));
                set("ORDER_CONSUMER_GROUP", self.group(Part::Order));
                (self.bins.join("order"), vec![], self.dir.clone())
            }
            Part::Notifier | Part::Notifier2 | Part::Notifier3 => {
                services(&mut set);
                set("NOTIFIER_HOST", "127.0.0.1".into());
                set("NOTIFIER_PORT", self.ports.of(part).to_string());
                // One group: the instances share the partitions.
                set("NOTIFIER_CONSUMER_GROUP", self.group(Part::Notifier));
                set(
                    "MONGODB_URI",
                    format!("mongodb://127.0.0.1:{}", self.ports.mongo),
                );
                set("NOTIFIER_MONGODB_DATABASE", format!("notifier_{}", self.id));
                set("SMTP_HOST", "127.0.0.1".into());
                set("SMTP_PORT", self.ports.smtp.to_string());
                set("NOTIFIER_API_TOKEN", self.notifier_token.clone());
                // Mail retries, drain and shutdown: the shipped defaults (a mail waits
                // for SMTP as long as it is down).
                (self.bins.join("notifier"), vec![], self.dir.clone())
            }
        };
        for (name, value) in self.extra_env.get(&part).into_iter().flatten() {
            env.retain(|(n, _)| n != name);
            env.push((name.clone(), value.clone()));
        }
        Spec {
            program,
            args,
            env,
            cwd,
        }
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

    /// `PUT /__sim/faults` with `patch` (only the fields present change).
    pub async fn sim_faults(&self, patch: Value) -> anyhow::Result<Value> {
        let response = self
            .http
            .put(format!("{}/__sim/faults", self.url(Part::KakaoPay)))
            .json(&patch)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        anyhow::ensure!(status.is_success(), "PUT /__sim/faults: {status} {body}");
        Ok(body)
    }

    /// The simulator's ledger (`GET /__sim/ledger`).
    pub async fn ledger(&self) -> anyhow::Result<Ledger> {
        Ok(self
            .http
            .get(format!("{}/__sim/ledger", self.url(Part::KakaoPay)))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    // ----- reading the services -----

    /// The sum of every series of Prometheus metric `name` at `part`'s `/metrics` (0 when
    /// absent): proof that a fault reached the service (retries, errors). `name` may name
    /// labels the series must carry: `payment_gateway_requests_total{outcome="unknown"}`.
    pub async fn metric(&self, part: Part, name: &str) -> anyhow::Result<f64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.url(part)))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(metric_sum(&text, name))
    }

    /// `GET {url}` as JSON, retried for a few seconds through connection errors and 5xx.
    pub async fn get_json(&self, url: &str) -> anyhow::Result<Value> {
        get_json(&self.http, url, None).await
    }

    pub async fn get_order(&self, id: Uuid) -> anyhow::Result<Value> {
        self.get_json(&format!("{}/orders/{id}", self.url(Part::Order)))
            .await
    }

    /// The order's saga timeline, as its shopper sees it (with the order's token).
    pub async fn timeline(&self, order: &Placed) -> anyhow::Result<Value> {
        let url = format!("{}/orders/{}/timeline", self.url(Part::Order), order.id);
        get_json(&self.http, &url, Some(&order.token)).await
    }

    /// Long-polls order `id` (see [`crate::watch::OrderWatch`]) until `check` finds what
    /// it looks for; an error after [`crate::DEADLINE`] or when order-service refuses.
    pub async fn watch_order<T>(
        &self,
        id: Uuid,
        check: impl Fn(&Value) -> Option<T>,
    ) -> anyhow::Result<T> {
        use crate::watch::{OrderWatch, WatchError};
        let mut watch = OrderWatch::new(&self.url(Part::Order), id);
        let started = Instant::now();
        loop {
            let last = match watch.next(&self.http).await {
                Ok(order) => match check(&order) {
                    Some(found) => return Ok(found),
                    None => order.to_string(),
                },
                Err(WatchError::Retry(after, error)) => {
                    tokio::time::sleep(after).await;
                    error
                }
                Err(WatchError::Refused(status, body)) => bail!("order {id}: {status} {body}"),
            };
            if started.elapsed() > crate::DEADLINE {
                bail!(
                    "order {id}: not there after {:?} (last: {last})",
                    crate::DEADLINE
                );
            }
        }
    }

    /// The payment rows of an order (`GET /payments?order_id=`).
    pub async fn payments_of(&self, order_id: Uuid) -> anyhow::Result<Value> {
        self.get_json(&format!(
            "{}/payments?order_id={order_id}",
            self.url(Part::Payment)
        ))
        .await
    }

    /// One payment with its `gateway_calls`.
    pub async fn payment(&self, payment_id: &str) -> anyhow::Result<Value> {
        self.get_json(&format!(
            "{}/payments/{payment_id}",
            self.url(Part::Payment)
        ))
        .await
    }

    /// Every history record of an order (all pages of `GET /notifications?order_id=`).
    /// Asked of a running notifier instance (a scenario may have stopped the first).
    pub async fn notifications(&self, order_id: Uuid) -> anyhow::Result<Vec<Value>> {
        let notifier = [Part::Notifier, Part::Notifier2, Part::Notifier3]
            .into_iter()
            .find(|&part| self.pid(part).is_some())
            .unwrap_or(Part::Notifier);
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!(
                "{}/notifications?order_id={order_id}&limit=200",
                self.url(notifier)
            );
            if let Some(cursor) = &cursor {
                url.push_str(&format!("&cursor={cursor}"));
            }
            let page = get_json(&self.http, &url, Some(&self.notifier_token)).await?;
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(next) if !next.is_empty() => cursor = Some(next.to_owned()),
                _ => return Ok(items),
            }
        }
    }

    // ----- Kafka -----

    /// High watermark of every partition of `topic`.
    pub fn high_watermarks(&self, topic: &str) -> anyhow::Result<Vec<i64>> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.kafka_brokers())
            .create()?;
        (0..PARTITIONS)
            .map(|partition| {
                Ok(consumer
                    .fetch_watermarks(topic, partition, Duration::from_secs(5))?
                    .1)
            })
            .collect()
    }

    /// True when `group` has committed every partition of `topic` up to its high
    /// watermark (it has consumed everything there is).
    pub fn caught_up(&self, group: &str, topic: &str) -> bool {
        let Ok(consumer) = ClientConfig::new()
            .set("bootstrap.servers", self.kafka_brokers())
            .set("group.id", group)
            .create::<BaseConsumer>()
        else {
            return false;
        };
        let mut partitions = TopicPartitionList::new();
        for partition in 0..PARTITIONS {
            partitions.add_partition(topic, partition);
        }
        let Ok(committed) = consumer.committed_offsets(partitions, Duration::from_secs(5)) else {
            return false;
        };
        committed.elements().iter().all(|element| {
            let Ok((_, high)) =
                consumer.fetch_watermarks(topic, element.partition(), Duration::from_secs(5))
            else {
                return false;
            };
            match element.offset() {
                Offset::Offset(offset) => offset >= high,
                _ => high == 0,
            }
        })
    }

    /// Publishes `count` messages no consumer can use on `topic` (unparseable JSON, an
    /// unknown event type, an unknown schema version, in turn).
    pub async fn inject_poison(&self, topic: &str, count: usize) -> anyhow::Result<()> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", self.kafka_brokers())
            .set("linger.ms", "1")
            .create()?;
        for n in 0..count {
            let key = Uuid::new_v4().to_string();
            let payload = match n % 3 {
                0 => format!("{{not json {n}"),
                1 => format!(r#"{{"event_id":"{key}","event_type":"OrderTeleported"}}"#),
                _ => format!(
                    r#"{{"event_id":"{key}","event_type":"OrderPlaced","schema_version":99,"occurred_at":"2026-01-01T00:00:00Z","order_id":"{key}","payload":{{}}}}"#
                ),
            };
            producer
                .send(
                    FutureRecord::to(topic).key(&key).payload(&payload),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(error, _)| error)
                .context("publishing a poison message")?;
        }
        Ok(())
    }

    /// Every dead letter on the stack's dead-letter topic.
    pub async fn dead_letters(&self) -> anyhow::Result<Vec<DeadLetter>> {
        let kafka = self.kafka();
        Ok(tokio::task::spawn_blocking(move || {
            dead_letter_tools::read_all(&kafka, Duration::from_secs(15))
        })
        .await??)
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

/// `GET url` as JSON: retries connection errors and 5xx for up to 10 s (a service being
/// restarted), fails at once on 4xx.
pub(crate) async fn get_json(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> anyhow::Result<Value> {
    let started = Instant::now();
    let mut wait = Duration::from_millis(50);
    loop {
        let mut request = http.get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let error = match request.send().await {
            Ok(response) if response.status().is_success() => match response.json().await {
                Ok(value) => return Ok(value),
                Err(error) => anyhow::anyhow!("GET {url}: {error}"),
            },
            Ok(response) if response.status().is_client_error() => {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                bail!("GET {url}: {status} {body}");
            }
            Ok(response) => anyhow::anyhow!("GET {url}: {}", response.status()),
            Err(error) => anyhow::anyhow!("GET {url}: {error}"),
        };
        if started.elapsed() > Duration::from_secs(10) {
            return Err(error);
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(1));
    }
}

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e lives in the workspace")
        .to_path_buf()
}

fn tansu_bin(home: &str) -> PathBuf {
    match std::env::var_os("TANSU_BIN") {
        Some(bin) => bin.into(),
        None => {
            let cargo_home = std::env::var_os("CARGO_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(home).join(".cargo"));
            cargo_home.join("bin/tansu")
        }
    }
}

fn venv(home: &str) -> PathBuf {
    std::env::var_os("SAGA_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(home).join(".cache/saga-shop"))
        .join("venv")
}

/// The sum of the series of `selector` (`name` or `name{label="value",…}`) in a
/// Prometheus text exposition.
fn metric_sum(exposition: &str, selector: &str) -> f64 {
    let (name, labels) = match selector.split_once('{') {
        Some((name, labels)) => (name, labels.trim_end_matches('}')),
        None => (selector, ""),
    };
    let wanted: Vec<&str> = labels.split(',').filter(|l| !l.is_empty()).collect();
    exposition
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (series, value) = rest.rsplit_once(' ')?;
            let series = series.trim();
            let carries = |label: &&str| {
                series
                    .trim_start_matches('{')
                    .trim_end_matches('}')
                    .split(',')
                    .any(|l| l == *label)
            };
            let named = series.is_empty() || series.starts_with('{');
            (named && wanted.iter().all(carries)).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

#[cfg(test)]
mod metric_tests {
    use super::metric_sum;

    const TEXT: &str = "# TYPE t counter\n\
        t{endpoint=\"approve\",outcome=\"unknown\"} 2\n\
        t{endpoint=\"cancel\",outcome=\"unknown\"} 3\n\
        t{endpoint=\"approve\",outcome=\"ok\"} 5\n\
        t_other 7\n\
        u 11\n";

    #[test]
    fn a_selector_sums_the_series_carrying_its_labels() {
        assert_eq!(metric_sum(TEXT, "t"), 10.0);
        assert_eq!(metric_sum(TEXT, "t{outcome=\"unknown\"}"), 5.0);
        assert_eq!(
            metric_sum(TEXT, "t{endpoint=\"approve\",outcome=\"ok\"}"),
            5.0
        );
        assert_eq!(metric_sum(TEXT, "u"), 11.0);
        assert_eq!(metric_sum(TEXT, "absent"), 0.0);
    }
}

//! Starting the stack, and the process control a scenario injects its faults with:
//! start, stop (SIGTERM, then SIGKILL), kill -9 and restart any part on its port with
//! its data; stop and start the private PostgreSQL servers; replay every topic with new
//! consumer groups.

use super::child::Child;
use super::{
    binaries, Db, Options, Part, Ports, PrivatePostgres, ProcStack, READY_TIMEOUT, STOP_TIMEOUT,
};
use anyhow::{bail, Context};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The servers and the simulator: started (in parallel) before the services.
const SERVERS: [Part; 4] = [Part::Kafka, Part::Mongo, Part::Smtp, Part::KakaoPay];

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
        let dir = make_folders(&id)?;
        let ports = Ports::pick()?;
        let postgres = if private_postgres {
            start_private_postgres(&dir, &ports).await?
        } else {
            BTreeMap::new()
        };
        let postgres_url = std::env::var("POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(30))
            .build()?;
        // From here on a failure drops the stack: its Drop stops whatever was started.
        let mut stack = Self {
            notifier_token: format!("token-{id}"),
            payment_token: format!("payment-token-{id}"),
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
        stack.create_databases()?;
        stack.start_all().await?;
        tracing::info!(id = %stack.id, dir = %stack.dir.display(), "Process stack ready.");
        Ok(stack)
    }

    /// The stack's `orders_<id>` and `payments_<id>`, each on its server.
    fn create_databases(&self) -> anyhow::Result<()> {
        for db in Db::ALL {
            let name = format!("{}_{}", db.name(), self.id);
            shared_events::db::create_database(&format!("{}/postgres", self.server_url(db)), &name)
                .with_context(|| format!("creating database {name}"))?;
        }
        Ok(())
    }

    /// The servers first, then the simulator, then the services (in parallel).
    async fn start_all(&mut self) -> anyhow::Result<()> {
        for part in SERVERS {
            self.spawn(part)?;
        }
        for part in SERVERS {
            self.wait_ready(part).await?;
        }
        self.start_services().await
    }

    /// Starts the three services together, then waits until each is ready.
    async fn start_services(&mut self) -> anyhow::Result<()> {
        for part in Part::SERVICES {
            self.spawn(part)?;
        }
        for part in Part::SERVICES {
            self.wait_ready(part).await?;
        }
        Ok(())
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
        self.start_services().await
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
        loop {
            if self.answers(part).await {
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

    /// One readiness probe: `/readyz` (`/healthz` for the simulator) answers with a
    /// success, or the port accepts a connection for the servers without HTTP.
    async fn answers(&self, part: Part) -> bool {
        if !part.is_http() {
            return tokio::net::TcpStream::connect(("127.0.0.1", self.ports.of(part)))
                .await
                .is_ok();
        }
        let path = if part == Part::KakaoPay {
            "/healthz"
        } else {
            "/readyz"
        };
        let url = format!("{}{path}", self.url(part));
        matches!(self.http.get(url).timeout(Duration::from_secs(2)).send().await,
            Ok(response) if response.status().is_success())
    }
}

/// The stack's temp folder `saga-faults-<id>` with its `logs/`, `tansu/`, `mongodb/` and
/// `mail/`.
fn make_folders(id: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("saga-faults-{id}"));
    for sub in ["logs", "tansu", "mongodb", "mail"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("creating {}", dir.join(sub).display()))?;
    }
    Ok(dir)
}

/// A private PostgreSQL server per database, initialised in the stack's folder and
/// started (see [`PrivatePostgres`]).
async fn start_private_postgres(
    dir: &Path,
    ports: &Ports,
) -> anyhow::Result<BTreeMap<Db, PrivatePostgres>> {
    let mut postgres = BTreeMap::new();
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
    Ok(postgres)
}

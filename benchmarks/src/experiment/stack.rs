//! A private stack per run: `infra/stack up --case N` with its own state folder, free
//! ports, fresh databases and servers; torn down afterwards.

use crate::cli::{Args, Plan, RunSpec, ScenarioName};
use crate::stored::{MailStore, Stores};
use crate::{log, one_line, short_id, API_TOKEN};
use anyhow::{bail, Result};
use benchmarks::{ceilings, procfs, procs, stats};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub struct RunContext<'a> {
    pub args: &'a Args,
    pub plan: &'a Plan,
    pub profile: &'a str,
    pub workspace: &'a Path,
    pub scratch: &'a Path,
    pub out_dir: &'a Path,
}

/// A private stack: its state folder, ports and databases, and the environment that
/// makes `infra/stack` use them.
pub struct Stack {
    pub id: String,
    pub state: PathBuf,
    pub ports: BTreeMap<&'static str, u16>,
    /// Ports of every payment and notifier instance (the first is PAYMENT_PORT /
    /// NOTIFIER_PORT).
    pub payment_ports: Vec<u16>,
    pub notifier_ports: Vec<u16>,
    pub case: u8,
    postgres_url: String,
    env: Vec<(String, String)>,
    workspace: PathBuf,
}

const PORT_NAMES: [&str; 8] = [
    "KAFKA_PORT",
    "MONGODB_PORT",
    "SMTP_PORT",
    "KAKAOPAY_SIM_PORT",
    "PAYMENT_PORT",
    "ORDER_PORT",
    "NOTIFIER_PORT",
    "PROMETHEUS_PORT",
];

fn joined(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

impl Stack {
    pub fn new(ctx: &RunContext<'_>, spec: &RunSpec) -> Result<Self> {
        let id = short_id();
        let variant = if spec.instances.is_default() {
            ""
        } else {
            "-x"
        };
        let state = ctx.scratch.join(format!(
            "c{}{variant}-{}-{id}",
            spec.case,
            spec.scenario.as_str()
        ));
        std::fs::create_dir_all(&state)?;
        let extra = usize::from(spec.instances.payment + spec.instances.notifier - 2);
        let mut picked = procs::free_ports(PORT_NAMES.len() + extra)?;
        let more = picked.split_off(PORT_NAMES.len());
        let ports: BTreeMap<&'static str, u16> = PORT_NAMES.into_iter().zip(picked).collect();
        let (more_payment, more_notifier) = more.split_at(usize::from(spec.instances.payment - 1));
        let payment_ports = [&[ports["PAYMENT_PORT"]][..], more_payment].concat();
        let notifier_ports = [&[ports["NOTIFIER_PORT"]][..], more_notifier].concat();
        let mut stack = Self {
            id,
            state,
            ports,
            payment_ports,
            notifier_ports,
            case: spec.case,
            postgres_url: ctx.args.postgres_url.trim_end_matches('/').to_owned(),
            env: Vec::new(),
            workspace: ctx.workspace.to_path_buf(),
        };
        stack.env = stack.environment(ctx.profile, spec);
        Ok(stack)
    }

    fn environment(&self, profile: &str, spec: &RunSpec) -> Vec<(String, String)> {
        let (pg, id) = (&self.postgres_url, &self.id);
        let url = |k: &str| self.url(k);
        let mut env: Vec<(String, String)> = self
            .ports
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_string()))
            .collect();
        let pairs = [
            ("STACK_STATE_DIR", self.state.display().to_string()),
            ("STACK_PROFILE", profile.to_owned()),
            ("STACK_SKIP_BUILD", "1".to_owned()),
            ("STACK_REUSE_FOREIGN", "0".to_owned()),
            ("SAGA_CASE", spec.case.to_string()),
            ("PAYMENT_INSTANCES", spec.instances.payment.to_string()),
            ("NOTIFIER_INSTANCES", spec.instances.notifier.to_string()),
            ("PAYMENT_PORTS", joined(&self.payment_ports)),
            ("NOTIFIER_PORTS", joined(&self.notifier_ports)),
            ("POSTGRES_URL", pg.clone()),
            ("ORDER_DATABASE_URL", format!("{pg}/exp_{id}_orders")),
            ("PAYMENT_DATABASE_URL", format!("{pg}/exp_{id}_payments")),
            // Cases 1-2: `infra/stack up --case N` starts `mailer-blocking` (pid file
            // `mailer-blocking.pid`) in the notifier's place; it reads MAILER_*. Every
            // derived address is set here: `infra/stack experiment` exports the shared
            // stack's defaults (8083, …/mail, …), which this process passes on.
            ("MAILER_DATABASE_URL", self.mail_db()),
            ("MAILER_HOST", "127.0.0.1".to_owned()),
            ("MAILER_PORT", self.ports["NOTIFIER_PORT"].to_string()),
            // Case 1: where each service POSTs its events.
            ("ORDER_PAYMENT_URL", url("PAYMENT_PORT")),
            ("ORDER_MAILER_URL", url("NOTIFIER_PORT")),
            ("PAYMENT_ORDER_URL", url("ORDER_PORT")),
            ("PAYMENT_MAILER_URL", url("NOTIFIER_PORT")),
            // The storefront's links between the services.
            ("ORDER_MAIL_HISTORY_URL", url("NOTIFIER_PORT")),
            ("PAYMENT_STOREFRONT_URL", url("ORDER_PORT")),
            (
                "KAFKA_BROKERS",
                format!("127.0.0.1:{}", self.ports["KAFKA_PORT"]),
            ),
            ("KAFKA_TOPIC_PREFIX", String::new()),
            ("MONGODB_URI", self.mongo_uri()),
            ("NOTIFIER_MONGODB_DATABASE", "notifier".to_owned()),
            ("SMTP_HOST", "127.0.0.1".to_owned()),
            (
                "SMTP_MAILDIR",
                self.state.join("mail").display().to_string(),
            ),
            // Instance 1's URL: `infra/stack up` gives every further payment instance
            // its own (Kakao Pay sends the shopper back to the instance that asked).
            ("PAYMENT_PUBLIC_URL", url("PAYMENT_PORT")),
            ("KAKAOPAY_BASE_URL", url("KAKAOPAY_SIM_PORT")),
            ("ORDER_HOST", "127.0.0.1".to_owned()),
            ("PAYMENT_HOST", "127.0.0.1".to_owned()),
            ("NOTIFIER_HOST", "127.0.0.1".to_owned()),
            ("KAKAOPAY_SIM_HOST", "127.0.0.1".to_owned()),
            ("KAKAOPAY_SIM_MODE", "auto".to_owned()),
            ("NOTIFIER_API_TOKEN", API_TOKEN.to_owned()),
            // Case 1: the secret the services sign their HTTP events with, new per run.
            (
                "INTERNAL_EVENTS_SECRET",
                format!("exp-{}", uuid::Uuid::new_v4().simple()),
            ),
            // SQLite, as `infra/stack test` uses, not the memory engine: tansu 0.6's
            // memory engine answers a fetch from an offset inside a stored batch with
            // the next batch, so a consumer that resumes mid-batch (a rebalance, a
            // second instance joining) silently skips the rest of it, and the run would
            // count those orders as unfinished. The path is relative to the broker's
            // folder in this run's fresh state folder: a new database every run.
            ("TANSU_STORAGE_ENGINE", "sqlite://tansu.db".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
            ("SMTP_SINK_LOG_LEVEL", "WARNING".to_owned()),
            ("STACK_READY_TIMEOUT", "120".to_owned()),
        ];
        env.extend(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)));
        if spec.scenario == ScenarioName::SmtpSlow500ms {
            env.push(("SMTP_SINK_DELAY_MS".to_owned(), "500".to_owned()));
        }
        env
    }

    pub fn url(&self, port: &str) -> String {
        format!("http://127.0.0.1:{}", self.ports[port])
    }

    fn mongo_uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}", self.ports["MONGODB_PORT"])
    }

    fn mail_db(&self) -> String {
        format!("{}/exp_{}_mail", self.postgres_url, self.id)
    }

    /// Every service process's base URL (for /metrics), all instances.
    pub fn service_urls(&self) -> Vec<String> {
        let mut urls = vec![self.url("ORDER_PORT")];
        for p in self.payment_ports.iter().chain(&self.notifier_ports) {
            urls.push(format!("http://127.0.0.1:{p}"));
        }
        urls
    }

    /// The databases that hold this run's timestamps.
    pub fn stores(&self) -> Stores {
        let mail = if self.case <= 2 {
            MailStore::Postgres {
                url: self.mail_db(),
            }
        } else {
            MailStore::Mongo {
                uri: self.mongo_uri(),
                database: "notifier".to_owned(),
            }
        };
        Stores {
            orders_db: format!("{}/exp_{}_orders", self.postgres_url, self.id),
            payments_db: format!("{}/exp_{}_payments", self.postgres_url, self.id),
            mail,
            scratch: self.state.clone(),
        }
    }

    fn stack_command(&self, verb: &[&str]) -> Command {
        let mut cmd = Command::new(self.workspace.join("infra/stack"));
        cmd.args(verb).current_dir(&self.workspace);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// `infra/stack VERB…`, bounded; its output goes to `log`.
    pub fn stack(&self, verb: &[&str], timeout: Duration, log: &Path) -> Result<()> {
        let done = procs::run_bounded(self.stack_command(verb), timeout, &self.state)?;
        let text = format!(
            "$ infra/stack {}\n{}{}\n(exit: {}, {:.1} s)\n",
            verb.join(" "),
            done.stdout,
            done.stderr,
            done.status,
            done.elapsed.as_secs_f64()
        );
        let mut old = std::fs::read_to_string(log).unwrap_or_default();
        old.push_str(&text);
        std::fs::write(log, old)?;
        if !done.status.success() {
            let tail: Vec<&str> = done.stderr.lines().rev().take(12).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "infra/stack {} failed ({}):\n{}",
                verb.join(" "),
                done.status,
                tail.join("\n")
            );
        }
        Ok(())
    }

    /// Process name → PID, from `<state>/pids/*.pid` (alive ones only).
    pub fn pids(&self) -> BTreeMap<String, u32> {
        let mut out = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(self.state.join("pids")) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(name) = name.strip_suffix(".pid") {
                    if let Some(pid) = procfs::stack_pid(&self.state, name) {
                        out.insert(name.to_owned(), pid);
                    }
                }
            }
        }
        out
    }

    fn drop_databases(&self) {
        let admin = format!("{}/postgres", self.postgres_url);
        for db in ["orders", "payments", "mail"] {
            let _ = ceilings::psql(
                &admin,
                &format!(
                    "DROP DATABASE IF EXISTS \"exp_{}_{db}\" WITH (FORCE)",
                    self.id
                ),
                &self.state,
            );
        }
    }

    /// `down`, the processes' logs kept in `logs`, the data dropped.
    fn tear_down(&self, logs: &Path, stack_log: &Path) {
        if let Err(e) = self.stack(&["down"], Duration::from_secs(120), stack_log) {
            log(format!("infra/stack down: {e:#}"));
        }
        if let Ok(entries) = std::fs::read_dir(self.state.join("logs")) {
            for e in entries.flatten() {
                let _ = std::fs::copy(e.path(), logs.join(e.file_name()));
            }
        }
        self.drop_databases();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

pub fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

/// One run on its own stack. A stack that does not come up is torn down and tried once
/// more on fresh ports (a server can lose a race for its port); the second failure is
/// the row.
pub async fn run_one(ctx: &RunContext<'_>, spec: &RunSpec) -> Value {
    let variant = spec.instances.variant();
    let label = match &variant {
        None => format!("case{}-{}", spec.case, spec.scenario.as_str()),
        Some(v) => format!(
            "case{}-{}-{}",
            spec.case,
            spec.scenario.as_str(),
            v.replace([',', '='], "")
        ),
    };
    let logs = ctx.out_dir.join("logs").join(&label);
    let _ = std::fs::create_dir_all(&logs);
    let base = json!({
        "case": spec.case,
        "scenario": spec.scenario.as_str(),
        "variant": variant,
        "instances": spec.instances.json(),
    });
    let stack_log = logs.join("infra-stack.log");
    let up_timeout = Duration::from_secs(ctx.args.up_timeout_secs);
    let mut failures: Vec<String> = Vec::new();
    for attempt in 1..=2 {
        let stack = match Stack::new(ctx, spec) {
            Ok(s) => s,
            Err(e) => {
                return merge(
                    base,
                    json!({ "status": "error", "error": format!("{e:#}") }),
                )
            }
        };
        let up_started = Instant::now();
        let up = stack.stack(
            &["up", "--case", &spec.case.to_string()],
            up_timeout,
            &stack_log,
        );
        let up_seconds = up_started.elapsed().as_secs_f64();
        let row = match up {
            Err(e) => {
                log(format!(
                    "{}: did not start (attempt {attempt}): {}",
                    spec.label(),
                    one_line(&format!("{e:#}"), 300)
                ));
                failures.push(format!("{e:#}"));
                None
            }
            Ok(()) => Some(match crate::run::measure(ctx, &stack, spec).await {
                Ok(row) => merge(json!({ "status": "ok" }), row),
                Err(e) => json!({ "status": "error", "error": format!("{e:#}") }),
            }),
        };
        stack.tear_down(&logs, &stack_log);
        if let Some(mut row) = row {
            row["up_seconds"] = json!(stats::round3(up_seconds));
            row["up_attempts"] = json!(attempt);
            if !failures.is_empty() {
                row["up_failures"] = json!(failures);
            }
            return merge(base, row);
        }
    }
    merge(
        base,
        json!({
            "status": "failed_to_start",
            "error": failures.last().cloned().unwrap_or_default(),
            "up_failures": failures,
            "up_attempts": 2,
        }),
    )
}

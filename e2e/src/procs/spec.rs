//! Each part's command line, working folder and environment. The environment is
//! cleared first: the processes see only what is set here (never the shared stack's
//! settings), then a scenario's extra variables for the part, which win.

use super::child::Spec;
use super::{workspace_root, Part, ProcStack, PARTITIONS, SIM_SECRET};
use std::path::{Path, PathBuf};

/// A program, its arguments and its working folder.
type Command = (PathBuf, Vec<String>, PathBuf);

/// The environment being built, in the order it is set.
struct Env(Vec<(String, String)>);

impl Env {
    fn set(&mut self, name: &str, value: impl Into<String>) {
        self.0.push((name.to_owned(), value.into()));
    }
}

impl ProcStack {
    /// The command line and environment of `part`.
    pub(super) fn spec(&self, part: Part) -> Spec {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".to_owned());
        let mut env = Env(vec![
            ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
            ("HOME".into(), home.clone()),
            ("RUST_BACKTRACE".into(), "1".into()),
            ("NO_COLOR".into(), "1".into()),
        ]);
        let (program, args, cwd) = match part {
            Part::Kafka => self.tansu_command(&home, &mut env),
            Part::Mongo => self.nx_27017_command(&home),
            Part::Smtp => self.smtp_sink_command(&home),
            Part::KakaoPay => self.kakaopay_sim_command(&mut env),
            Part::Payment => self.payment_command(&mut env),
            Part::Order => self.order_command(&mut env),
            Part::Notifier | Part::Notifier2 | Part::Notifier3 => {
                self.notifier_command(part, &mut env)
            }
        };
        let Env(mut env) = env;
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

    /// What every service shares: its log level and the stack's Kafka.
    fn service_env(&self, part: Part, env: &mut Env) {
        env.set("RUST_LOG", "info");
        env.set("KAFKA_BROKERS", self.kafka_brokers());
        env.set("KAFKA_TOPIC_PREFIX", self.topic_prefix());
        env.set("KAFKA_PARTITIONS", PARTITIONS.to_string());
        // One process per part: a stable instance name lets a restarted service take
        // back its partitions at once (see KafkaSettings::group_instance_id).
        env.set("KAFKA_GROUP_INSTANCE_ID", format!("{}-1", part.name()));
        if let Ok(debug) = std::env::var("FAULT_KAFKA_DEBUG") {
            env.set("KAFKA_DEBUG", debug);
        }
    }

    fn tansu_command(&self, home: &str, env: &mut Env) -> Command {
        // As infra/lib/deps.sh: the sqlite path is relative to the working folder.
        // FAULT_TANSU_LOG (e.g. `warn,tansu_broker::coordinator=debug`) shows the
        // broker's group coordination when a scenario needs explaining.
        env.set(
            "RUST_LOG",
            std::env::var("FAULT_TANSU_LOG").unwrap_or_else(|_| "warn".to_owned()),
        );
        let listener = format!("tcp://127.0.0.1:{}", self.ports.kafka);
        (
            tansu_bin(home),
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

    fn nx_27017_command(&self, home: &str) -> Command {
        let dir = self.dir.join("mongodb");
        (
            venv(home).join("bin/nx-27017"),
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

    fn smtp_sink_command(&self, home: &str) -> Command {
        (
            venv(home).join("bin/python"),
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
        )
    }

    fn kakaopay_sim_command(&self, env: &mut Env) -> Command {
        env.set("RUST_LOG", "warn");
        env.set("KAKAOPAY_SIM_HOST", "127.0.0.1");
        env.set("KAKAOPAY_SIM_PORT", self.ports.kakaopay.to_string());
        env.set("KAKAOPAY_SIM_SECRET_KEY", SIM_SECRET);
        env.set("KAKAOPAY_SIM_MODE", "auto");
        (self.bins.join("kakaopay-sim"), vec![], self.dir.clone())
    }

    fn payment_command(&self, env: &mut Env) -> Command {
        self.service_env(Part::Payment, env);
        env.set("PAYMENT_HOST", "127.0.0.1");
        env.set("PAYMENT_PORT", self.ports.payment.to_string());
        env.set("PAYMENT_PUBLIC_URL", self.url(Part::Payment));
        env.set("PAYMENT_STOREFRONT_URL", self.url(Part::Order));
        env.set("PAYMENT_DATABASE_URL", self.database_url("payments"));
        env.set("PAYMENT_CONSUMER_GROUP", self.group(Part::Payment));
        env.set("KAKAOPAY_BASE_URL", self.url(Part::KakaoPay));
        env.set("KAKAOPAY_SECRET_KEY", SIM_SECRET);
        env.set("PAYMENT_API_TOKEN", self.payment_token.clone());
        (self.bins.join("payment"), vec![], self.dir.clone())
    }

    fn order_command(&self, env: &mut Env) -> Command {
        self.service_env(Part::Order, env);
        env.set("ORDER_HOST", "127.0.0.1");
        env.set("ORDER_PORT", self.ports.order.to_string());
        env.set("ORDER_DATABASE_URL", self.database_url("orders"));
        env.set("ORDER_CONSUMER_GROUP", self.group(Part::Order));
        // The shoppers of the tests send free-form lines (name + unit_price) as the
        // load generators do; the catalog's own tests run the default.
        env.set("ORDER_ALLOW_CUSTOM_ITEMS", "true");
        env.set("ORDER_MAIL_HISTORY_URL", self.url(Part::Notifier));
        env.set("ORDER_MAIL_HISTORY_TOKEN", self.notifier_token.clone());
        (self.bins.join("order"), vec![], self.dir.clone())
    }

    /// Any of the notifier instances (`part`): each on its own port, all in one group.
    fn notifier_command(&self, part: Part, env: &mut Env) -> Command {
        self.service_env(part, env);
        env.set("NOTIFIER_HOST", "127.0.0.1");
        env.set("NOTIFIER_PORT", self.ports.of(part).to_string());
        // One group: the instances share the partitions.
        env.set("NOTIFIER_CONSUMER_GROUP", self.group(Part::Notifier));
        env.set(
            "MONGODB_URI",
            format!("mongodb://127.0.0.1:{}", self.ports.mongo),
        );
        env.set("NOTIFIER_MONGODB_DATABASE", format!("notifier_{}", self.id));
        env.set("SMTP_HOST", "127.0.0.1");
        env.set("SMTP_PORT", self.ports.smtp.to_string());
        env.set("NOTIFIER_API_TOKEN", self.notifier_token.clone());
        // Mail retries, drain and shutdown: the shipped defaults (a mail waits
        // for SMTP as long as it is down).
        (self.bins.join("notifier"), vec![], self.dir.clone())
    }
}

/// `TANSU_BIN`, or `tansu` in cargo's bin folder.
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

/// The Python venv `infra/stack` installs (under `SAGA_CACHE_DIR`).
fn venv(home: &str) -> PathBuf {
    std::env::var_os("SAGA_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(home).join(".cache/saga-shop"))
        .join("venv")
}

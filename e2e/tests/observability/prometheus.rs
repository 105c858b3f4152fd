//! A real Prometheus for one test: generated config in a temp folder, storage there too,
//! on a free loopback port, stopped by its PID when dropped.

use anyhow::{bail, Context};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary (`PROMETHEUS_BIN` overrides; Debian's package installs it here).
fn binary() -> PathBuf {
    std::env::var_os("PROMETHEUS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/prometheus"))
}

/// The repository's `infra/` folder.
pub fn infra_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra")
}

pub struct Prometheus {
    child: Child,
    dir: PathBuf,
    pub url: String,
    http: reqwest::Client,
}

impl Prometheus {
    /// Starts Prometheus scraping `jobs` (job name, port on 127.0.0.1) every second, with
    /// the repository's alert rules loaded, and waits until it is ready.
    pub async fn start(jobs: &[(&str, u16)]) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = std::env::temp_dir().join(format!("saga-prometheus-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("data"))?;
        let rules = infra_dir().join("prometheus/alerts.yml").canonicalize()?;
        let mut config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\nscrape_configs:\n",
            rules.display()
        );
        for (job, target) in jobs {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: [\"127.0.0.1:{target}\"]\n"
            ));
        }
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config)?;
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = Command::new(binary())
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (install the Debian package `prometheus`)",
                    binary().display()
                )
            })?;
        let prometheus = Self {
            child,
            dir,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        let started = Instant::now();
        loop {
            let ready = prometheus
                .http
                .get(format!("{}/-/ready", prometheus.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(prometheus);
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("Prometheus not ready after 30 s:\n{}", prometheus.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Evaluates `expr` now (`/api/v1/query`): the parsed response, `status` included.
    pub async fn query(&self, expr: &str) -> anyhow::Result<Value> {
        let response = self
            .http
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .await?;
        Ok(response.json().await?)
    }

    /// The loaded alerting rules (`/api/v1/rules`): (name, expression) pairs.
    pub async fn alert_rules(&self) -> anyhow::Result<Vec<(String, String)>> {
        let rules: Value = self
            .http
            .get(format!("{}/api/v1/rules?type=alert", self.url))
            .send()
            .await?
            .json()
            .await?;
        let mut alerts = Vec::new();
        for group in rules["data"]["groups"].as_array().into_iter().flatten() {
            for rule in group["rules"].as_array().into_iter().flatten() {
                if let (Some(name), Some(query)) = (rule["name"].as_str(), rule["query"].as_str()) {
                    alerts.push((name.to_owned(), query.to_owned()));
                }
            }
        }
        Ok(alerts)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    /// SIGTERM to this Prometheus's own PID, SIGKILL after 5 s; then its folder goes.
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The result of a query: `Ok(samples)` when it parsed and ran, `Err(message)` otherwise.
pub fn samples(response: &Value) -> Result<usize, String> {
    if response["status"] != "success" {
        return Err(format!(
            "{}: {}",
            response["errorType"].as_str().unwrap_or("error"),
            response["error"].as_str().unwrap_or("no message")
        ));
    }
    let result = &response["data"]["result"];
    Ok(match response["data"]["resultType"].as_str() {
        Some("vector") | Some("matrix") => result.as_array().map_or(0, Vec::len),
        // A scalar or a string is one value.
        _ => usize::from(!result.is_null()),
    })
}

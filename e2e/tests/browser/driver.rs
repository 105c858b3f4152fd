//! Debian's Chromium, headless, driven through chromedriver (WebDriver) by `fantoccini`.
//! Each walk gets its own chromedriver (a child stopped by its PID), an empty browser
//! profile, and a folder of screenshots under cargo's test output folder
//! (`target/tmp/browser-walks/<walk>/`).

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A browser waits longer than an API call: a page follows the saga through Kafka.
pub const PATIENCE: Duration = Duration::from_secs(90);

/// Chromium's flags on these machines: headless, as root, and without the background
/// connections a closed network refuses.
const CHROMIUM_ARGS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1400",
];

pub struct Browser {
    pub client: Client,
    driver: std::process::Child,
    shots: PathBuf,
    taken: u32,
}

/// The folder of one walk's screenshots.
pub fn walk_folder(walk: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("browser-walks")
        .join(walk)
}

impl Browser {
    /// A fresh browser for `walk` (its screenshot folder emptied first).
    pub async fn start(walk: &str) -> Browser {
        let shots = walk_folder(walk);
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(shots.join("profile")).expect("screenshot folder");
        let port = free_port();
        let log = std::fs::File::create(shots.join("chromedriver.log")).expect("log file");
        let driver = Command::new(env_or("CHROMEDRIVER", "/usr/bin/chromedriver"))
            .arg(format!("--port={port}"))
            .stdout(Stdio::from(log.try_clone().expect("log file")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("chromedriver starts (infra/stack test installs Debian's chromium-driver)");
        let client = connect(port, &shots).await;
        Browser {
            client,
            driver,
            shots,
            taken: 0,
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("the page opens");
    }

    /// Saves the page as `<n>-<name>.png`.
    pub async fn shot(&mut self, name: &str) {
        self.taken += 1;
        let png = self.client.screenshot().await.expect("a screenshot");
        let file = self.shots.join(format!("{:02}-{name}.png", self.taken));
        std::fs::write(&file, png).expect("the screenshot is saved");
    }

    /// The first element matching `css`, once there is one.
    pub async fn find(&self, css: &str) -> Element {
        let found = self
            .client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await;
        match found {
            Ok(element) => element,
            Err(error) => panic!(
                "{css} on the page in time ({error}) at {}",
                self.url().await
            ),
        }
    }

    /// Every element matching `css`, once there are at least `count`.
    pub async fn find_all(&self, css: &str, count: usize) -> Vec<Element> {
        let started = Instant::now();
        loop {
            let found = self
                .client
                .find_all(Locator::Css(css))
                .await
                .unwrap_or_default();
            if found.len() >= count {
                return found;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "{count} × {css} in time (found {}) at {:?}",
                found.len(),
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.expect("clicks");
    }

    /// Types `text` into the input `css` (emptied first), as a shopper would.
    pub async fn type_into(&self, css: &str, text: &str) {
        let input = self.find(css).await;
        input.clear().await.expect("clears");
        input.send_keys(text).await.expect("types");
    }

    pub async fn url(&self) -> String {
        self.client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    pub async fn stop(mut self) {
        let client = self.client.clone();
        let _ = client.close().await;
        self.stop_driver();
    }

    fn stop_driver(&mut self) {
        if let Ok(pid) = i32::try_from(self.driver.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if matches!(self.driver.try_wait(), Ok(None)) {
            self.stop_driver();
        }
    }
}

/// A WebDriver session, once chromedriver listens.
async fn connect(port: u16, shots: &std::path::Path) -> Client {
    let mut capabilities = serde_json::Map::new();
    let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| (*a).to_owned()).collect();
    args.push(format!(
        "--user-data-dir={}",
        shots.join("profile").display()
    ));
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({"binary": env_or("CHROMIUM", "/usr/bin/chromium"), "args": args}),
    );
    let started = Instant::now();
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let session = ClientBuilder::new(connector)
            .capabilities(capabilities.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await;
        match session {
            Ok(client) => return client,
            Err(error) if started.elapsed() < Duration::from_secs(30) => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("a Chromium session through chromedriver: {error}"),
        }
    }
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

//! Child processes the benchmarks start themselves (servers for ceilings, `pgbench`,
//! `smtp-source`, `infra/stack`): started with a log file, stopped by their own PID
//! (SIGTERM, then SIGKILL), killed when dropped, and commands run with a deadline.

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A child process; stopped by its PID, never by name.
pub struct Spawned {
    pub name: String,
    child: Child,
}

impl Spawned {
    /// Starts `command` with stdout and stderr appended to `log`.
    pub fn start(name: &str, mut command: Command, log: &Path) -> Result<Self> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = command
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", command.get_program()))?;
        Ok(Self {
            name: name.to_owned(),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, up to `grace`, then SIGKILL. Returns how it ended and how long it took.
    pub fn stop(&mut self, grace: Duration) -> (String, Duration) {
        let started = Instant::now();
        if let Some(status) = self.exited() {
            return (format!("had exited: {status}"), Duration::ZERO);
        }
        // This PID only; a failure (it exited meanwhile) shows in the wait below.
        if let Ok(pid) = i32::try_from(self.pid()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = started + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return (format!("SIGTERM: {status}"), started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!("{} did not stop within {grace:?}; killed", self.name);
        ("SIGKILL after grace".to_owned(), started.elapsed())
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `n` distinct free loopback ports (every listener is held until all are chosen).
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind(("127.0.0.1", 0)))
        .collect::<Result<_, _>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

pub fn port_open(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Waits until 127.0.0.1:`port` accepts connections; fails if `process` exits first.
pub fn wait_for_port(port: u16, timeout: Duration, process: &mut Spawned) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if port_open(port) {
            return Ok(());
        }
        if let Some(status) = process.exited() {
            bail!(
                "{} exited before listening on {port}: {status}",
                process.name
            );
        }
        if Instant::now() > deadline {
            bail!("{} not listening on {port} after {timeout:?}", process.name);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What a bounded command printed and how it ended.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub elapsed: Duration,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` to completion within `timeout` (killed past it). Output is collected
/// through files, so a chatty command cannot block on a full pipe.
pub fn run_bounded(mut command: Command, timeout: Duration, scratch: &Path) -> Result<Finished> {
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let out_path = scratch.join(format!(".out-{tag}"));
    let err_path = scratch.join(format!(".err-{tag}"));
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(File::create(&out_path)?)
        .stderr(File::create(&err_path)?)
        .spawn()
        .with_context(|| format!("starting {:?}", command.get_program()))?;
    let deadline = started + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(&out_path);
            let _ = std::fs::remove_file(&err_path);
            bail!(
                "{:?} did not finish within {timeout:?}",
                command.get_program()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = started.elapsed();
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    Ok(Finished {
        status,
        elapsed,
        stdout,
        stderr,
    })
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// `~/.cargo/bin/tansu` unless `TANSU_BIN` says otherwise.
pub fn tansu_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("TANSU_BIN") {
        return PathBuf::from(bin);
    }
    let cargo_home = std::env::var_os("CARGO_HOME").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo"),
        PathBuf::from,
    );
    cargo_home.join("bin/tansu")
}

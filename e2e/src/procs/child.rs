//! One child process: spawned with a clean environment, logging to a file, stopped by
//! its own PID only.

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How to start a process.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
}

pub(crate) struct Child {
    name: &'static str,
    log: PathBuf,
    process: Option<std::process::Child>,
    starts: u32,
}

impl Child {
    pub fn new(name: &'static str, log: PathBuf) -> Self {
        Self {
            name,
            log,
            process: None,
            starts: 0,
        }
    }

    pub fn spawn(&mut self, spec: &Spec) -> anyhow::Result<()> {
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        writeln!(
            log,
            "===== {} start #{}: {} {}",
            self.name,
            self.starts,
            spec.program.display(),
            spec.args.join(" ")
        )?;
        let process = Command::new(&spec.program)
            .args(&spec.args)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&spec.cwd)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} ({})", self.name, spec.program.display()))?;
        self.process = Some(process);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(std::process::Child::id)
    }

    /// Still running (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        match self.process.as_mut().map(std::process::Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(status))) => {
                self.note(&format!("exited: {status}"));
                self.process = None;
                false
            }
            Some(Err(_)) | None => false,
        }
    }

    /// SIGTERM, then SIGKILL after `timeout`.
    pub async fn stop(&mut self, timeout: Duration) {
        if !self.is_running() {
            return;
        }
        let Some(pid) = self.pid() else { return };
        // To this PID only.
        let sent =
            i32::try_from(pid).is_ok_and(|pid| kill(Pid::from_raw(pid), Signal::SIGTERM).is_ok());
        if !sent {
            self.kill9();
            return;
        }
        let started = Instant::now();
        while started.elapsed() < timeout {
            if !self.is_running() {
                self.note(&format!("stopped by SIGTERM in {:?}", started.elapsed()));
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        self.note(&format!("still running {timeout:?} after SIGTERM: SIGKILL"));
        self.kill9();
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut process) = self.process.take() {
            if let Ok(None) = process.try_wait() {
                let _ = process.kill();
                let _ = process.wait();
                self.note("killed with SIGKILL");
            }
        }
    }

    fn note(&self, what: &str) {
        if let Ok(mut log) = OpenOptions::new().append(true).open(&self.log) {
            let _ = writeln!(log, "===== {} {what}", self.name);
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The last `lines` lines of a file (empty when it does not exist).
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_ends_a_process_with_sigterm_by_its_pid() {
        let dir = std::env::temp_dir().join(format!("saga-child-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp folder");
        let log = dir.join("sleep.log");
        let mut child = Child::new("sleep", log.clone());
        let spec = Spec {
            program: "sleep".into(),
            args: vec!["30".into()],
            env: vec![("PATH".into(), std::env::var("PATH").unwrap_or_default())],
            cwd: dir.clone(),
        };
        child.spawn(&spec).expect("sleep starts");
        assert!(child.is_running());
        child.stop(Duration::from_secs(10)).await;
        assert!(!child.is_running());
        let text = std::fs::read_to_string(&log).expect("the log");
        assert!(text.contains("stopped by SIGTERM"), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

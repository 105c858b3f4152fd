//! What the processes of a run use while it runs: the notifier's resident memory,
//! sampled on a thread of its own, and the CPU time of every process involved.

use crate::{procfs, stats};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Samples a process's resident memory every 20 ms until [`RssSampler::finish`]; a
/// thread, so the bench's own async work cannot delay the samples.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(u64, u64)>,
}

impl RssSampler {
    pub fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut max_kb = 0;
            let mut samples = 0;
            while !flag.load(Ordering::Relaxed) {
                if let Some(kb) = procfs::status_kb(pid, "VmRSS") {
                    max_kb = max_kb.max(kb);
                    samples += 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (max_kb, samples)
        });
        Self { stop, thread }
    }

    /// Stops sampling; returns the highest VmRSS (kB) and the number of samples.
    pub fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or((0, 0))
    }
}

/// The notifier's memory over a run, in kB.
pub struct Memory {
    /// `VmHWM` at the end: the whole life's peak.
    pub hwm_kb: u64,
    pub max_sampled_kb: u64,
    pub samples: u64,
    pub after_start_kb: Option<u64>,
    pub after_warmup_kb: Option<u64>,
}

impl Memory {
    pub fn peak_kb(&self) -> u64 {
        self.hwm_kb.max(self.max_sampled_kb)
    }
}

/// The processes whose CPU time a run reports: the notifier, the SMTP server, the bench
/// itself, and the stack's tansu and MongoDB server when `infra/stack` runs them.
pub fn watched_processes(
    notifier: u32,
    smtp_name: &str,
    smtp: u32,
    state_dir: &Path,
) -> Vec<(String, u32)> {
    let mut watched = vec![
        ("notifier".to_owned(), notifier),
        (smtp_name.to_owned(), smtp),
        ("notifier-bench".to_owned(), std::process::id()),
    ];
    for dep in ["tansu", "mongodb"] {
        if let Some(dep_pid) = procfs::stack_pid(state_dir, dep) {
            let label = if dep == "mongodb" { "nx-27017" } else { dep };
            watched.push((label.to_owned(), dep_pid));
        }
    }
    watched
}

/// CPU ticks of some processes since [`CpuWatch::start`].
pub struct CpuWatch {
    ticks_per_sec: f64,
    pids: Vec<(String, u32, u64)>,
    started: Instant,
}

impl CpuWatch {
    pub fn start(pids: Vec<(String, u32)>) -> Self {
        Self {
            ticks_per_sec: procfs::clock_ticks_per_sec() as f64,
            pids: pids
                .into_iter()
                .filter_map(|(name, pid)| Some((name, pid, procfs::cpu_ticks(pid)?)))
                .collect(),
            started: Instant::now(),
        }
    }

    /// Per process: CPU seconds used since `start`, divided by the wall time (1.0 = one
    /// core fully busy).
    pub fn shares(&self) -> (Value, Value) {
        let wall = self.started.elapsed().as_secs_f64();
        let mut shares = serde_json::Map::new();
        let mut seconds = serde_json::Map::new();
        for (name, pid, before) in &self.pids {
            if let Some(now) = procfs::cpu_ticks(*pid) {
                let cpu = now.saturating_sub(*before) as f64 / self.ticks_per_sec;
                seconds.insert(name.clone(), json!(stats::round3(cpu)));
                shares.insert(
                    name.clone(),
                    json!(stats::round3(if wall > 0.0 { cpu / wall } else { 0.0 })),
                );
            }
        }
        (Value::Object(shares), Value::Object(seconds))
    }
}

//! What the figures were measured on.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs this process may use (`nproc`).
    pub nproc: usize,
    /// When the run started (UTC, RFC 3339).
    pub date: String,
    pub cpu_model: Option<String>,
    pub mem_total_mb: Option<u64>,
    pub kernel: Option<String>,
    /// `/proc/loadavg` (1, 5, 15 min) when the run started: other work on the machine.
    pub loadavg_at_start: Option<String>,
}

impl Machine {
    pub fn describe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Self {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            cpu_model: cpu_model(&cpuinfo),
            mem_total_mb: crate::procfs::parse_status_kb(&meminfo, "MemTotal").map(|kb| kb / 1024),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|s| s.trim().to_owned()),
            loadavg_at_start: loadavg(),
        }
    }
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cpu_model() {
        let text = "processor\t: 0\nmodel name\t: Example CPU @ 2.0GHz\nflags\t: fpu\n";
        assert_eq!(cpu_model(text).as_deref(), Some("Example CPU @ 2.0GHz"));
        assert_eq!(cpu_model(""), None);
    }
}

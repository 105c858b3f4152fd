//! Readings from `/proc/<pid>` (Linux): memory (`status`) and CPU time (`stat`).

use std::path::Path;

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`, …) in kB.
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kb(&text, field)
}

/// Parses `Field:   1234 kB` out of a `/proc/<pid>/status` text.
pub fn parse_status_kb(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, rest) = line.split_once(':')?;
        if name != field {
            return None;
        }
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// User + system CPU time of a process, in clock ticks (`/proc/<pid>/stat` fields 14+15).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu_ticks(&text)
}

/// `utime + stime` from a `/proc/<pid>/stat` line. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_stat_cpu_ticks(text: &str) -> Option<u64> {
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 if that fails, as on every common Linux).
pub fn clock_ticks_per_sec() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// The PID recorded by `infra/stack` in `<state>/pids/<name>.pid` (first line), if the
/// process is alive. Read-only: only used to sample the CPU time of the dependencies.
pub fn stack_pid(state_dir: &Path, name: &str) -> Option<u32> {
    let text = std::fs::read_to_string(state_dir.join("pids").join(format!("{name}.pid"))).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_status_fields() {
        let text =
            "Name:\tnotifier\nVmPeak:\t  200000 kB\nVmHWM:\t   31234 kB\nVmRSS:\t   30000 kB\n";
        assert_eq!(parse_status_kb(text, "VmHWM"), Some(31_234));
        assert_eq!(parse_status_kb(text, "VmRSS"), Some(30_000));
        assert_eq!(parse_status_kb(text, "VmSwap"), None);
        assert_eq!(parse_status_kb(text, "Vm"), None);
    }

    #[test]
    fn reads_cpu_ticks_even_with_odd_names() {
        let line =
            "1234 (tokio (rt) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_stat_cpu_ticks(line), Some(300));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(status_kb(pid, "VmRSS").is_some_and(|kb| kb > 0));
        assert!(cpu_ticks(pid).is_some());
    }
}

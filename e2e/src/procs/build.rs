//! The services' binaries: built once per test binary run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The binaries the process stack runs.
pub const BINARIES: [&str; 4] = ["order", "payment", "notifier", "kakaopay-sim"];

/// The folder holding up-to-date `order`, `payment`, `notifier` and `kakaopay-sim`.
///
/// The first call runs `cargo build --bins` for the four packages, from the workspace
/// root, into the target folder and profile this test binary was built with (cargo
/// itself decides whether anything is stale; when nothing is, it takes a second). Later
/// calls return at once. Blocking; panics with cargo's output when the build fails.
pub fn binaries() -> &'static Path {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BUILT.get_or_init(build) {
        Ok(dir) => dir,
        Err(error) => panic!("{error}"),
    }
}

fn build() -> Result<PathBuf, String> {
    // This test runs from <target>/<profile>/deps/<name>-<hash>.
    let exe = std::env::current_exe().map_err(|e| format!("test binary path: {e}"))?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("unexpected test binary path {}", exe.display()))?
        .to_path_buf();
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| format!("unexpected target folder {}", profile_dir.display()))?;
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    // Only the four packages: the workspace's other binaries are not needed here, and a
    // half-edited one elsewhere must not fail this suite.
    command
        .current_dir(super::workspace_root())
        .args(["build", "--bins", "--quiet"])
        .args([
            "-p", "order", "-p", "payment", "-p", "notifier", "-p", "kakaopay",
        ])
        .arg("--target-dir")
        .arg(target_dir);
    if profile != "debug" {
        command.args(["--profile", profile]);
    }
    eprintln!("faults: building the services' binaries ({command:?})");
    let output = command
        .output()
        .map_err(|e| format!("could not run cargo build: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo build --bins failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    for binary in BINARIES {
        let path = profile_dir.join(binary);
        if !path.is_file() {
            return Err(format!("{} missing after cargo build", path.display()));
        }
    }
    Ok(profile_dir)
}

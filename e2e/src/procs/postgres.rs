//! A private PostgreSQL server for one stack, so a scenario can take the services'
//! databases away and bring them back: `initdb` into the stack's folder (trust auth),
//! `pg_ctl start` on a loopback port of its own, and stopped by the PID its
//! `postmaster.pid` names — never by process name, and never the machine's own server.
//!
//! PostgreSQL refuses to run as root: as root the tools run as the `postgres` user
//! (`runuser`), which then owns the data folder and the log.
//!
//! `FAULT_PG_BIN` names the folder of `initdb`/`pg_ctl`; by default the newest
//! `/usr/lib/postgresql/*/bin`.

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long a start or a fast shutdown may take.
const PG_TIMEOUT: Duration = Duration::from_secs(60);

pub struct PrivatePostgres {
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    pub port: u16,
    /// The postmaster's PID while it runs (from `postmaster.pid`).
    pid: Option<u32>,
    as_postgres_user: bool,
}

impl PrivatePostgres {
    /// `initdb` into the new folder `data` (trust auth, superuser `postgres`), logging
    /// to `log`.
    pub fn init(data: PathBuf, log: PathBuf, port: u16) -> anyhow::Result<Self> {
        let bin = pg_bin()?;
        std::fs::create_dir_all(&data)?;
        std::fs::File::create(&log)?;
        let as_postgres_user = is_root();
        if as_postgres_user {
            for path in [&data, &log] {
                chown_postgres(path)?;
            }
        }
        let pg = Self {
            bin,
            data,
            log,
            port,
            pid: None,
            as_postgres_user,
        };
        let data_arg = pg.data.display().to_string();
        pg.run(
            "initdb",
            &[
                "-D",
                &data_arg,
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "--encoding=UTF8",
            ],
        )?;
        Ok(pg)
    }

    /// `postgres://postgres@127.0.0.1:<port>` (append `/<database>`).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// `pg_ctl start`, waiting until the server accepts connections.
    pub fn start(&mut self) -> anyhow::Result<()> {
        // Loopback only, the socket in the data folder (not /var/run), no fsync: the
        // server is stopped only by a clean shutdown, and the machine is shared.
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=200",
            self.port,
            self.data.display()
        );
        let (data, log) = (
            self.data.display().to_string(),
            self.log.display().to_string(),
        );
        self.run(
            "pg_ctl",
            &[
                "start", "-D", &data, "-l", &log, "-w", "-t", "60", "-o", &options,
            ],
        )?;
        self.pid = Some(self.postmaster_pid()?);
        Ok(())
    }

    /// A fast shutdown (SIGINT to the postmaster's PID): sessions are cut off, the
    /// server is unreachable until [`PrivatePostgres::start`].
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(pid) = self.pid.take() else {
            return Ok(());
        };
        signal(pid, Signal::SIGINT)?;
        let started = Instant::now();
        while alive(pid) {
            if started.elapsed() > PG_TIMEOUT {
                signal(pid, Signal::SIGKILL)?;
                bail!("PostgreSQL (pid {pid}) still running {PG_TIMEOUT:?} after SIGINT: killed");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// For `Drop`: an immediate shutdown, then SIGKILL if it lingers.
    pub fn kill(&mut self) {
        let Some(pid) = self.pid.take() else { return };
        let _ = signal(pid, Signal::SIGQUIT);
        let started = Instant::now();
        while alive(pid) && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if alive(pid) {
            let _ = signal(pid, Signal::SIGKILL);
        }
    }

    fn postmaster_pid(&self) -> anyhow::Result<u32> {
        let file = self.data.join("postmaster.pid");
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        text.lines()
            .next()
            .and_then(|line| line.trim().parse().ok())
            .with_context(|| format!("no PID in {}", file.display()))
    }

    /// Runs a PostgreSQL tool (as the `postgres` user when we are root).
    fn run(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let program = self.bin.join(tool);
        let mut command = if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let output = command
            .args(args)
            .current_dir(self.data.parent().unwrap_or(Path::new("/")))
            .output()
            .with_context(|| format!("running {}", program.display()))?;
        if !output.status.success() {
            bail!(
                "{tool} failed ({}): {}{}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                super::child::tail(&self.log, 20)
            );
        }
        Ok(())
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.kill();
    }
}

fn pg_bin() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("FAULT_PG_BIN") {
        return Ok(bin.into());
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("no /usr/lib/postgresql (set FAULT_PG_BIN)")?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("pg_ctl").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .context("no pg_ctl under /usr/lib/postgresql/*/bin (set FAULT_PG_BIN)")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn chown_postgres(path: &Path) -> anyhow::Result<()> {
    let status = Command::new("chown")
        .arg("postgres:")
        .arg(path)
        .status()
        .context("running chown")?;
    anyhow::ensure!(status.success(), "chown postgres {} failed", path.display());
    Ok(())
}

/// Sends `sig` to this PID only.
fn signal(pid: u32, sig: Signal) -> anyhow::Result<()> {
    let raw = i32::try_from(pid).with_context(|| format!("PID {pid} out of range"))?;
    kill(Pid::from_raw(raw), sig).with_context(|| format!("{sig} to PID {pid} failed"))
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::connection::SimpleConnection;
    use diesel::{Connection, PgConnection, RunQueryDsl};

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port")
    }

    #[tokio::test]
    async fn a_private_server_stops_by_its_pid_and_comes_back_with_its_data() {
        let dir = std::env::temp_dir().join(format!("saga-pg-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp folder");
        let mut pg = PrivatePostgres::init(dir.join("data"), dir.join("pg.log"), free_port())
            .expect("initdb");
        pg.start().expect("pg_ctl start");
        let pid = pg.pid().expect("a postmaster PID");
        let url = format!("{}/postgres", pg.url());
        let mut conn = PgConnection::establish(&url).expect("connects");
        conn.batch_execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)")
            .expect("writes");
        drop(conn);

        pg.stop().await.expect("fast shutdown");
        assert!(!alive(pid), "the postmaster {pid} is gone");
        assert!(
            PgConnection::establish(&url).is_err(),
            "unreachable while stopped"
        );

        pg.start().expect("starts again");
        let mut conn = PgConnection::establish(&url).expect("connects again");
        let rows = diesel::sql_query("SELECT n FROM kept")
            .execute(&mut conn)
            .expect("reads");
        assert_eq!(rows, 1, "the data survived the restart");
        drop(conn);
        drop(pg);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

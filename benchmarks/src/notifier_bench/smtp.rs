//! The SMTP servers the notifier sends to, and what they can take on their own: the
//! SMTP ceiling (`smtp-source`) and the lettre probe, measured on the very server a run
//! then uses, before the notifier starts.

use super::lettre_probe::lettre_probe;
use super::{smtp_name, workspace_dir, Args, SmtpChoice};
use crate::procs::{free_ports, is_root, run_bounded, wait_for_port, Spawned};
use crate::{loopback, stats};
use anyhow::{bail, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use uuid::Uuid;

/// An SMTP server the bench started, on a port of its own.
pub struct SmtpServer {
    pub port: u16,
    pub process: Spawned,
    /// aiosmtpd's Maildir (smtp-sink stores nothing).
    pub maildir: Option<PathBuf>,
}

/// Starts the server `kind` on a free port and waits until it listens.
pub fn start_smtp(args: &Args, kind: SmtpChoice, log_dir: &Path) -> Result<SmtpServer> {
    let port = free_ports(1)?[0];
    let (mut process, maildir) = match kind {
        SmtpChoice::SmtpSink => {
            let mut cmd = Command::new(&args.smtp_sink_bin);
            if is_root() {
                cmd.args(["-u", "nobody"]);
            }
            cmd.arg(format!("{}:{port}", loopback::HOST)).arg("1000");
            let p = Spawned::start("smtp-sink", cmd, &log_dir.join("smtp-sink.log"))?;
            (p, None)
        }
        SmtpChoice::Aiosmtpd => {
            let maildir = log_dir.join(format!("maildir-{}", Uuid::now_v7().simple()));
            let mut cmd = Command::new(venv_python(args));
            cmd.arg(workspace_dir().join("infra/smtp_sink.py"))
                .args(["--host", loopback::HOST, "--port", &port.to_string()])
                .arg("--maildir")
                .arg(&maildir)
                .env("SMTP_SINK_TEMPFAIL_RE", "")
                .env("SMTP_SINK_REJECT_RE", "");
            let p = Spawned::start("aiosmtpd", cmd, &log_dir.join("aiosmtpd.log"))?;
            (p, Some(maildir))
        }
        SmtpChoice::Both => bail!("one SMTP server at a time"),
    };
    wait_for_port(port, Duration::from_secs(20), &mut process)?;
    Ok(SmtpServer {
        port,
        process,
        maildir,
    })
}

/// `--python`, or the Python of the stack's venv (as `infra/stack` installs it).
fn venv_python(args: &Args) -> PathBuf {
    args.python.clone().unwrap_or_else(|| {
        let cache = std::env::var_os("SAGA_CACHE_DIR").map_or_else(
            || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/saga-shop"),
            PathBuf::from,
        );
        cache.join("venv/bin/python")
    })
}

/// Mails in a Maildir (`new` and `cur`).
pub fn maildir_count(maildir: &Path) -> u64 {
    ["new", "cur"]
        .iter()
        .filter_map(|sub| std::fs::read_dir(maildir.join(sub)).ok())
        .map(|dir| dir.count() as u64)
        .sum()
}

/// `smtp-source` → the SMTP server: `mails` messages of `size` bytes over `sessions`
/// parallel sessions; `reuse` keeps each session's connection for its next message (as
/// the notifier's lettre pool does).
pub fn smtp_ceiling(
    args: &Args,
    port: u16,
    mails: u64,
    sessions: u32,
    reuse: bool,
) -> Result<(f64, Value)> {
    let mut cmd = Command::new(&args.smtp_source_bin);
    cmd.args(["-s", &sessions.to_string()])
        .args(["-m", &mails.to_string()])
        .args(["-l", &args.mail_size.to_string()])
        .args(["-f", "bench@example.com", "-t", "sink@example.com"]);
    if reuse {
        cmd.arg("-d");
    }
    cmd.arg(format!("{}:{port}", loopback::HOST));
    let shown = format!(
        "{} {}",
        args.smtp_source_bin.display(),
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let run = run_bounded(cmd, Duration::from_secs(300), &std::env::temp_dir())?;
    if !run.status.success() {
        bail!("smtp-source failed ({}): {}", run.status, run.stderr.trim());
    }
    let elapsed = run.elapsed;
    let per_sec = stats::rate(mails, elapsed.as_secs_f64());
    Ok((
        per_sec,
        json!({
            "command": shown,
            "mails": mails,
            "seconds": stats::round3(elapsed.as_secs_f64()),
            "per_sec": per_sec,
            "connection_reuse": reuse,
        }),
    ))
}

/// What the SMTP server and the notifier's client can do without the notifier.
pub struct SmtpFigures {
    /// The higher of the two `smtp-source` rates (mails/s); `None` with
    /// `--skip-ceilings`.
    pub ceiling: Option<f64>,
    /// Both `smtp-source` runs.
    pub ceilings: Value,
    /// [`lettre_probe`]'s result.
    pub lettre: Value,
}

impl SmtpFigures {
    /// The SMTP ceiling (connections kept, one connection per mail) and the lettre probe
    /// on `smtp`; nothing with `--skip-ceilings`.
    pub async fn measure(args: &Args, target: SmtpChoice, smtp: &SmtpServer) -> Result<Self> {
        if args.skip_ceilings {
            return Ok(Self {
                ceiling: None,
                ceilings: Value::Null,
                lettre: Value::Null,
            });
        }
        let name = smtp_name(target);
        let (pooled, pooled_json) =
            smtp_ceiling(args, smtp.port, args.events, args.pool_size, true)?;
        let (fresh, fresh_json) =
            smtp_ceiling(args, smtp.port, args.events, args.pool_size, false)?;
        eprintln!(
            "[{name}] SMTP ceiling: {pooled:.0} mails/s (connections kept), {fresh:.0} mails/s (one connection per mail)"
        );
        let probe = lettre_probe(
            smtp.port,
            args.events.min(2_000),
            args.pool_size,
            args.max_in_flight,
        )
        .await?;
        eprintln!(
            "[{name}] lettre probe: pooled transport {} mails/s; own connections: TCP_NODELAY {} mails/s, without {} mails/s",
            probe["pooled_transport"]["per_sec"],
            probe["own_connections_nodelay"]["per_sec"],
            probe["own_connections_default"]["per_sec"]
        );
        Ok(Self {
            ceiling: Some(pooled.max(fresh)),
            ceilings: json!({ "connection_reuse": pooled_json, "connection_per_mail": fresh_json }),
            lettre: probe,
        })
    }
}

//! `kakaopay-sim`: the Kakao Pay API simulator as a standalone server.

use std::net::IpAddr;
use std::time::Duration;

use clap::Parser;
use kakaopay::sim::{self, Faults, OutageWindow, SimConfig, SimMode};
use secrecy::SecretString;
use url::Url;

/// Kakao Pay online single-payment API simulator (in memory).
///
/// Serves POST /online/v1/payment/{ready,approve,cancel,order}, the shopper page
/// GET /__sim/pay/{tid}, GET /__sim/ledger, GET|PUT /__sim/faults,
/// POST /__sim/clock/advance and GET /healthz. Logs go to stderr; set RUST_LOG
/// to change the level (default info).
#[derive(Parser)]
#[command(name = "kakaopay-sim", version)]
struct Args {
    /// Address to listen on (0.0.0.0: every interface).
    #[arg(long, env = "KAKAOPAY_SIM_HOST", default_value = "127.0.0.1")]
    host: IpAddr,

    /// Port to listen on (0: any free port).
    #[arg(long, env = "KAKAOPAY_SIM_PORT", default_value_t = 8089)]
    port: u16,

    /// Base URL the shopper's browser uses to reach this simulator (for the
    /// next_redirect_*_url links). Default: http://HOST:PORT/.
    #[arg(long, env = "KAKAOPAY_SIM_PUBLIC_URL")]
    public_url: Option<Url>,

    /// Secret key clients must send as `Authorization: SECRET_KEY <key>` (secret).
    /// The default is a simulator-only value for local use; never a real key.
    #[arg(
        long,
        env = "KAKAOPAY_SIM_SECRET_KEY",
        default_value = sim::DEFAULT_SECRET_KEY,
        hide_default_value = false,
        hide_env_values = true
    )]
    secret_key: String,

    /// Merchant code (cid) the simulator accepts.
    #[arg(long, env = "KAKAOPAY_SIM_CID", default_value = kakaopay::TEST_CID)]
    cid: String,

    /// Shopper page behaviour without ?action=: auto approves, manual shows links.
    #[arg(long, env = "KAKAOPAY_SIM_MODE", value_enum, default_value_t = SimMode::Auto)]
    mode: SimMode,

    /// Fixed latency added to every API call, in milliseconds.
    #[arg(long, env = "KAKAOPAY_SIM_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,

    /// Extra random latency, uniform in 0..=N milliseconds.
    #[arg(long, env = "KAKAOPAY_SIM_JITTER_MS", default_value_t = 0)]
    jitter_ms: u64,

    /// Fraction (0.0-1.0) of approves declined with -780.
    #[arg(long, env = "KAKAOPAY_SIM_DECLINE_RATE", default_value_t = 0.0)]
    decline_rate: f64,

    /// Fraction (0.0-1.0) of API calls answered HTTP 500 / -500 without effect.
    #[arg(long, env = "KAKAOPAY_SIM_ERROR_RATE", default_value_t = 0.0)]
    error_rate: f64,

    /// Fraction (0.0-1.0) of API calls processed but answered HTTP 500 / -500
    /// (a lost response).
    #[arg(long, env = "KAKAOPAY_SIM_LOST_RESPONSE_RATE", default_value_t = 0.0)]
    lost_response_rate: f64,

    /// Start an outage (HTTP 503 / -9798 on every API call) N seconds after start.
    #[arg(long, env = "KAKAOPAY_SIM_OUTAGE_AFTER_SECS")]
    outage_after_secs: Option<u64>,

    /// Length of that outage in seconds (without --outage-after-secs: from start).
    /// Without it the outage lasts until PUT /__sim/faults {"outage": false}.
    #[arg(long, env = "KAKAOPAY_SIM_OUTAGE_FOR_SECS")]
    outage_for_secs: Option<u64>,

    /// Seconds a tid stays approvable after ready.
    #[arg(long, env = "KAKAOPAY_SIM_TID_TTL_SECS", default_value_t = 900)]
    tid_ttl_secs: u64,

    /// Worker threads of the HTTP server.
    #[arg(long, env = "KAKAOPAY_SIM_WORKERS", default_value_t = 2)]
    workers: usize,

    /// Log as JSON lines instead of text.
    #[arg(long, env = "KAKAOPAY_SIM_LOG_JSON")]
    log_json: bool,
}

impl Args {
    fn into_config(self) -> anyhow::Result<SimConfig> {
        for (name, rate) in [
            ("decline-rate", self.decline_rate),
            ("error-rate", self.error_rate),
            ("lost-response-rate", self.lost_response_rate),
        ] {
            anyhow::ensure!(
                (0.0..=1.0).contains(&rate),
                "--{name} must be between 0.0 and 1.0"
            );
        }
        let outage_window = match (self.outage_after_secs, self.outage_for_secs) {
            (None, None) => None,
            (after, duration) => Some(OutageWindow {
                after: Duration::from_secs(after.unwrap_or(0)),
                duration: duration.map(Duration::from_secs),
            }),
        };
        Ok(SimConfig {
            host: self.host,
            port: self.port,
            public_url: self.public_url,
            secret_key: SecretString::from(self.secret_key),
            cid: self.cid,
            mode: self.mode,
            tid_ttl: Duration::from_secs(self.tid_ttl_secs),
            faults: Faults {
                latency_ms: self.latency_ms,
                jitter_ms: self.jitter_ms,
                decline_rate: self.decline_rate,
                error_rate: self.error_rate,
                lost_response_rate: self.lost_response_rate,
                ..Faults::default()
            },
            outage_window,
            workers: self.workers,
        })
    }
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing(args.log_json);
    // `Args` holds the secret key: log only the fields that are safe.
    tracing::info!(
        host = %args.host,
        port = args.port,
        cid = %args.cid,
        mode = ?args.mode,
        tid_ttl_secs = args.tid_ttl_secs,
        "starting kakaopay simulator"
    );
    let handle = sim::spawn(args.into_config()?).await?;
    tracing::info!(base_url = %handle.base_url, faults = ?handle.faults(), "ready");
    shutdown_signal().await;
    tracing::info!("shutting down");
    handle.stop().await;
    Ok(())
}

/// Ctrl-C, or SIGTERM on Unix (what `infra/stack down` sends).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::Args;
    use clap::CommandFactory;

    /// The check of `shared_events::cli::assert_every_option_is_described` (this crate
    /// does not depend on shared-events).
    #[test]
    fn every_option_is_described() {
        let cmd = Args::command();
        assert!(
            cmd.get_about()
                .is_some_and(|about| !about.to_string().trim().is_empty()),
            "kakaopay-sim has no about line"
        );
        let undescribed: Vec<String> = cmd
            .get_arguments()
            .filter(|arg| !matches!(arg.get_id().as_str(), "help" | "version"))
            .filter(|arg| {
                arg.get_help()
                    .is_none_or(|help| help.to_string().trim().is_empty())
            })
            .map(|arg| format!("--{}", arg.get_long().unwrap_or(arg.get_id().as_str())))
            .collect();
        assert!(
            undescribed.is_empty(),
            "`kakaopay-sim --help` leaves these undescribed (add a `///` doc comment): {}",
            undescribed.join(", ")
        );
    }
}

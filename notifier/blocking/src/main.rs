//! The blocking mail service of cases 1 and 2: settings from the environment (see
//! `mailer-blocking --help`), logs, then [`mailer_blocking::MailerApp`] until SIGTERM
//! or Ctrl-C.

use clap::Parser;
use mailer_blocking::{MailerApp, MailerSettings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = MailerSettings::parse();
    shared_events::telemetry::init("mailer-blocking");
    let app = MailerApp::build(settings).await?;
    let shutdown = app.shutdown_token();
    tokio::spawn(async move {
        shared_events::telemetry::shutdown_signal().await;
        tracing::info!("Shutdown requested.");
        shutdown.cancel();
    });
    let stopped = app.run_until_stopped().await;
    shared_events::telemetry::shutdown();
    stopped
}

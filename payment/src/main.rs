use clap::Parser;
use payment::config::Settings;
use payment::startup::Application;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared_events::telemetry::init("payment");
    let settings = Settings::parse();
    let application = Application::build(settings).await?;
    let shutdown = application.shutdown_token();
    tokio::spawn(async move {
        shared_events::telemetry::shutdown_signal().await;
        shutdown.cancel();
    });
    let stopped = application.run_until_stopped().await;
    shared_events::telemetry::shutdown();
    stopped
}

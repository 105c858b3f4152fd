use clap::Parser;
use order::config::Settings;
use order::startup::Application;

fn main() -> anyhow::Result<()> {
    let settings = Settings::parse();
    shared_events::db::runtime(settings.blocking_threads())?.block_on(serve(settings))
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    shared_events::telemetry::init("order");
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

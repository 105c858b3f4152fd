//! `saga-audit`: lists every order whose saga broke an invariant — cancelled but
//! charged, completed but unpaid, refunded twice, charged twice, a mail missing,
//! repeated or unexpected, past its deadline and not terminal — from the order and
//! payment databases, the notifier's mail history and (local stacks) the Kakao Pay
//! simulator's ledger. One line per violation (order id, invariant, evidence, separated
//! by tabs) and a summary line; `--json` prints one JSON document instead. Exit status:
//! 0 clean, 1 violations found, 2 a source could not be read.

use clap::Parser;
use e2e::audit::{audit, Rules, Sources};
use std::process::ExitCode;
use url::Url;

/// Audits the order → payment → mail saga: lists every order whose records break an
/// invariant and exits 1 when there is any (0 when clean, 2 when a source is unreadable).
#[derive(Debug, Parser)]
#[command(name = "saga-audit", version)]
struct Args {
    /// order-service's PostgreSQL database, the URL order-service reads (secret: it may
    /// hold the password).
    #[arg(
        long,
        env = "ORDER_DATABASE_URL",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/orders"
    )]
    order_database_url: String,
    /// payment-service's PostgreSQL database, the URL payment-service reads (secret: it
    /// may hold the password).
    #[arg(
        long,
        env = "PAYMENT_DATABASE_URL",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/payments"
    )]
    payment_database_url: String,
    /// The notifier's MongoDB, the connection string the notifier reads (secret: it may
    /// hold the password).
    #[arg(
        long,
        env = "MONGODB_URI",
        hide_env_values = true,
        default_value = "mongodb://127.0.0.1:27017"
    )]
    mongodb_uri: String,
    /// The MongoDB database holding the notifier's `notifications` collection.
    #[arg(long, env = "NOTIFIER_MONGODB_DATABASE", default_value = "notifier")]
    mongodb_database: String,
    /// Cases 1–2: mailer-blocking's PostgreSQL database (its `MAILER_DATABASE_URL`;
    /// secret); the mail history is then read from its `mail_history` table instead of
    /// MongoDB.
    #[arg(long, value_name = "URL", hide_env_values = true)]
    mail_database_url: Option<String>,
    /// The Kakao Pay simulator's ledger, e.g. http://127.0.0.1:8090/__sim/ledger (a bare
    /// base URL gets `/__sim/ledger` added). Local stacks only; without it money is judged
    /// from payment-service's records alone.
    #[arg(long, value_name = "URL")]
    kakaopay_ledger: Option<Url>,
    /// How long past its payment deadline an order may still be running (a refund: past
    /// its request), and how long a payment may stay APPROVING or REFUNDING, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    grace: u64,
    /// Orders and payments changed within this many seconds are still settling: only
    /// their deadline is judged. 0 judges everything (use it once the system is quiet).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    quiet_for: u64,
    /// Print one JSON document (violations, their counts per invariant, orders by status)
    /// instead of text lines.
    #[arg(long)]
    json: bool,
}

fn ledger_url(mut url: Url) -> Url {
    if url.path() == "/" || url.path().is_empty() {
        url.set_path("/__sim/ledger");
    }
    url
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let sources = Sources {
        order_database_url: args.order_database_url,
        payment_database_url: args.payment_database_url,
        mongodb_uri: args.mongodb_uri,
        mongodb_database: args.mongodb_database,
        mail_database_url: args.mail_database_url,
        kakaopay_ledger: args.kakaopay_ledger.map(ledger_url),
    };
    let seconds = |s: u64| chrono::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX));
    let rules = Rules {
        grace: seconds(args.grace),
        quiet_for: seconds(args.quiet_for),
    };
    let report = match audit(&sources, &rules).await {
        Ok(report) => report,
        Err(error) => {
            eprintln!("saga-audit: {error:#}");
            return ExitCode::from(2);
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(json) => println!("{json}"),
            Err(error) => {
                eprintln!("saga-audit: {error}");
                return ExitCode::from(2);
            }
        }
    } else {
        print!("{}", report.to_text());
    }
    if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::Args;
    use clap::CommandFactory;

    #[test]
    fn every_option_is_described() {
        shared_events::cli::assert_every_option_is_described(Args::command());
    }
}

//! Secrets never reach a log line. The services run in this process with the JSON log
//! layer of `LOG_FORMAT=json` (`shared_events::telemetry::json_layer`) writing into a
//! buffer; the shop's full flows run — an order placed, watched and read with its token
//! (header and `?token=`), paid with the `pg_token` Kakao Pay hands the shopper, mailed,
//! the history read with the notifier's token, refunded — in case 3 and in case 1 (whose
//! events travel signed with the internal secret); then every line is searched for each
//! secret. Its own test binary: it owns the process's global subscriber.

use e2e::{Options, Stack};
use kakaopay::sim::SimConfig;
use serde_json::Value;
use shared_events::Case;
use std::io::Write;
use std::sync::{Arc, Mutex};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Every line the JSON layer wrote.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The shipped level (`info`), and `debug` for the shop's own crates so their quieter
/// lines are searched too.
const FILTER: &str = "info,order=debug,payment=debug,notifier=debug,shared_events=debug,\
                      kakaopay=debug,tracing_actix_web=debug";

fn capture_logs() -> Captured {
    let captured = Captured::default();
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new(FILTER))
        .with(shared_events::telemetry::json_layer(
            "shop",
            captured.clone(),
        ))
        .try_init()
        .expect("this test binary installs the only subscriber");
    captured
}

/// What one flow handed out that must stay out of the logs.
struct Secrets {
    pg_tokens: Vec<String>,
    order_tokens: Vec<String>,
}

/// One order: placed, read as its shopper (header and `?token=`), paid with the
/// `pg_token` from Kakao Pay's redirect, completed and mailed, then refunded.
async fn walk_one_order(stack: &Stack, secrets: &mut Secrets) {
    let email = stack.shopper_email("logs");
    let id = stack.place_order(&email).await;
    let token = stack.token(id);
    secrets.order_tokens.push(token.clone());
    let redirect = stack.redirect_url(id).await;
    let by_link = format!("{}/orders/{id}?token={token}", stack.order.url());
    let order: Value = stack
        .http
        .get(by_link)
        .send()
        .await
        .expect("order")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        order["customer_email"],
        email.as_str(),
        "the link shows it all"
    );

    // The shopper's browser: Kakao Pay's page redirects to the approval URL with pg_token.
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let page = browser.get(&redirect).send().await.expect("payment page");
    let approval = page.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let pg_token = url::Url::parse(&approval)
        .expect("approval URL")
        .query_pairs()
        .find(|(key, _)| key == "pg_token")
        .map(|(_, value)| value.into_owned())
        .expect("pg_token in the approval URL");
    secrets.pg_tokens.push(pg_token);
    assert_eq!(
        stack
            .http
            .get(&approval)
            .send()
            .await
            .expect("approve")
            .status(),
        200
    );

    stack.wait_for_status(id, "COMPLETED").await;
    stack.mails_to(&email, 2).await;
    e2e::eventually("the two mails in the history", || async {
        (stack.notifications(id).await.len() == 2).then_some(())
    })
    .await;
    let cancel = format!("{}/orders/{id}/cancel?token={token}", stack.order.url());
    assert_eq!(
        stack
            .http
            .post(cancel)
            .send()
            .await
            .expect("cancel")
            .status(),
        202
    );
    stack.wait_for_status(id, "CANCELLED").await;
    stack.mails_to(&email, 3).await;
}

async fn spawn(case: Case) -> Stack {
    Stack::spawn_with(
        SimConfig::default(),
        Options {
            case,
            ..Options::default()
        },
    )
    .await
    .unwrap_or_else(|error| panic!("case {case}: the stack starts: {error:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_log_line_carries_a_pg_token_an_order_token_the_internal_secret_or_the_api_token() {
    let captured = capture_logs();
    let mut secrets = Secrets {
        pg_tokens: Vec::new(),
        order_tokens: Vec::new(),
    };
    let mut fixed = Vec::new();
    for case in [Case::default(), Case::SyncChain] {
        let stack = spawn(case).await;
        walk_one_order(&stack, &mut secrets).await;
        fixed.push(("the notifier's API token", stack.notifier_token.clone()));
        fixed.push(("case 1's internal secret", stack.internal_secret.clone()));
        stack.stop().await;
    }

    let text = captured.text();
    let lines: Vec<&str> = text.lines().collect();
    // The requests that carried the secrets were logged, with the secrets redacted.
    let approvals: Vec<&&str> = lines
        .iter()
        .filter(|line| line.contains("/approve?pg_token=[REDACTED]"))
        .collect();
    assert!(
        !approvals.is_empty(),
        "the approval requests are in the log"
    );
    assert!(
        text.contains("?token=[REDACTED]"),
        "the token links are in the log"
    );
    let mut searched: Vec<(&str, String)> = fixed;
    searched.extend(secrets.pg_tokens.into_iter().map(|t| ("a pg_token", t)));
    searched.extend(
        secrets
            .order_tokens
            .into_iter()
            .map(|t| ("an order token", t)),
    );
    for (what, secret) in &searched {
        assert!(secret.len() >= 16, "{what} is a real secret");
        for line in &lines {
            serde_json::from_str::<Value>(line).expect("every line is one JSON object");
            assert!(!line.contains(secret.as_str()), "{what} logged: {line}");
        }
    }
    eprintln!(
        "searched {} JSON lines for {} secrets",
        lines.len(),
        searched.len()
    );
}

//! SIGTERM on the real binary in the middle of a burst: it stops within its bounded
//! shutdown time with status 0, and after a restart every mail is there exactly once.

use crate::helpers::*;
use futures::StreamExt;
use mongodb::bson::{doc, Document};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The `notifier` binary Cargo built for this test run, as its own process.
struct NotifierProcess {
    child: Child,
    log: PathBuf,
}

impl NotifierProcess {
    fn start(env: &[(&str, String)], log: &Path) -> Self {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_notifier"))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("the notifier binary starts");
        Self {
            child,
            log: log.to_owned(),
        }
    }

    fn sigterm(&self) {
        let pid = i32::try_from(self.child.id()).expect("a PID fits pid_t");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM delivered");
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Polls until the process exits; fails past `within`.
    async fn wait_exit(&mut self, within: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                return (status, started.elapsed());
            }
            assert!(
                started.elapsed() < within,
                "the notifier did not exit within {within:?}; log: {}",
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_ready(&mut self, http: &reqwest::Client, port: u16) {
        let url = format!("http://127.0.0.1:{port}/readyz");
        let started = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                panic!(
                    "the notifier exited during start-up ({status}); log: {}",
                    self.log.display()
                );
            }
            if let Ok(response) = http.get(&url).send().await {
                if response.status() == 200 {
                    return;
                }
            }
            assert!(
                started.elapsed() < DEADLINE,
                "the notifier was not ready within {DEADLINE:?}; log: {}",
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for NotifierProcess {
    /// A failing test must not leave its notifier running.
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// What a stalled restart left unfinished: the records not `SENT`, the mails with no
/// record, whether the sink has them, and the process log's warnings.
fn unfinished(
    app: &TestApp,
    recipient: &str,
    docs: &[Document],
    expected: &HashSet<String>,
    log: &Path,
) -> String {
    let in_sink = received(app, recipient);
    let message_id = |d: &Document| {
        d.get_str("smtp_message_id")
            .unwrap_or_default()
            .trim_matches(['<', '>'])
            .to_owned()
    };
    let not_sent: Vec<String> = docs
        .iter()
        .filter(|d| d.get_str("status").ok() != Some("SENT"))
        .map(|d| {
            let id = message_id(d);
            format!(
                "{id} {} attempts={:?} last_error={:?} in_sink={}",
                d.get_str("status").unwrap_or("?"),
                d.get("attempts"),
                d.get_str("last_error").ok(),
                in_sink.contains_key(&id)
            )
        })
        .collect();
    let recorded: HashSet<String> = docs.iter().map(message_id).collect();
    let unrecorded: Vec<String> = expected
        .iter()
        .filter(|id| !recorded.contains(*id))
        .map(|id| format!("{id} in_sink={}", in_sink.contains_key(id)))
        .collect();
    let warnings: Vec<String> = std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .map(str::to_owned)
        .collect();
    format!(
        "{} records, not SENT: {not_sent:?}; without a record: {unrecorded:?}; log warnings \
         (last 20 of {}): {:#?}",
        docs.len(),
        warnings.len(),
        &warnings[warnings.len().saturating_sub(20)..]
    )
}

/// Message-IDs (without angle brackets) of the mails to `recipient` in the Maildir, with
/// how often each arrived.
fn received(app: &TestApp, recipient: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for mail in app.mails_to(recipient) {
        *counts.entry(mail.message_id).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_burst_exits_cleanly_and_a_restart_mails_everything_exactly_once() {
    // Arrange: the real binary, few mails in flight so the burst takes a while.
    let app = test_env_with(|s| {
        s.max_in_flight = 4;
        s.smtp_pool_size = 4;
    })
    .await;
    let s = &app.settings;
    let port = free_port();
    let shutdown_timeout = Duration::from_secs(s.shutdown_timeout_secs);
    let env = [
        ("NOTIFIER_HOST", "127.0.0.1".to_owned()),
        ("NOTIFIER_PORT", port.to_string()),
        ("KAFKA_BROKERS", s.kafka.brokers.clone()),
        ("KAFKA_TOPIC_PREFIX", s.kafka.topic_prefix.clone()),
        ("KAFKA_PARTITIONS", s.kafka.partitions.to_string()),
        ("NOTIFIER_CONSUMER_GROUP", s.consumer_group.clone()),
        // As deployed (infra/stack up): a static member, so the restarted process gets
        // its partitions back under its name instead of through a fresh rebalance.
        ("KAFKA_GROUP_INSTANCE_ID", "notifier-1".to_owned()),
        ("MONGODB_URI", s.mongodb_uri.clone()),
        ("NOTIFIER_MONGODB_DATABASE", s.mongodb_database.clone()),
        ("SMTP_HOST", s.mail.smtp_host.clone()),
        ("SMTP_PORT", s.mail.smtp_port.to_string()),
        ("NOTIFIER_API_TOKEN", TOKEN.to_owned()),
        ("NOTIFIER_MAX_IN_FLIGHT", s.max_in_flight.to_string()),
        ("NOTIFIER_SMTP_POOL_SIZE", s.smtp_pool_size.to_string()),
        (
            "NOTIFIER_SHUTDOWN_TIMEOUT_SECS",
            s.shutdown_timeout_secs.to_string(),
        ),
        ("RUST_LOG", "info".to_owned()),
    ];
    let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("notifier-sigterm-{}.log", s.consumer_group));
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("HTTP client");
    let mut first = NotifierProcess::start(&env, &log);
    first.wait_ready(&http, port).await;

    let recipient = unique_recipient("sigterm");
    let orders = 300;
    let events: Vec<_> = (0..orders)
        .flat_map(|i| {
            let order = snapshot(&recipient, if i % 2 == 0 { "ko" } else { "en" }, "Bagel");
            let order_id = Uuid::now_v7();
            [
                payment_approved(order_id, &order),
                order_completed(order_id, &order),
            ]
        })
        .collect();
    let expected: HashSet<String> = events
        .iter()
        .map(|e| {
            notifier::domain::message_id(e.event_id, &recipient, "example.com")
                .trim_matches(['<', '>'])
                .to_owned()
        })
        .collect();
    let total = expected.len();
    assert_eq!(total, 2 * orders);

    // Act: the burst, then SIGTERM once some but not all mails reached the sink.
    futures::stream::iter(&events)
        .for_each_concurrent(64, |event| app.publish(event))
        .await;
    let in_sink_at_sigterm = eventually("the first mails of the burst in the sink", || async {
        let n = app.mails_to(&recipient).len();
        assert!(
            n < total,
            "every mail was sent before SIGTERM could land mid-burst"
        );
        (n > 0).then_some(n)
    })
    .await;
    first.sigterm();
    let (status, took) = first
        .wait_exit(shutdown_timeout + Duration::from_secs(10))
        .await;

    // Assert: a clean, bounded stop that left work for the restart…
    assert!(
        status.success(),
        "exit status after SIGTERM: {status}; log: {}",
        log.display()
    );
    assert!(
        took < shutdown_timeout + Duration::from_secs(5),
        "shutdown is bounded: {took:?}"
    );
    let after_stop = received(&app, &recipient);
    println!(
        "SIGTERM with {in_sink_at_sigterm} of {total} mails in the sink; exited in {took:?} \
         with {} there",
        after_stop.len()
    );
    assert!(
        after_stop.len() < total,
        "the burst was not finished at SIGTERM"
    );
    // …and recorded every mail it sent before exiting.
    let recorded_sent: HashSet<String> = app
        .documents(doc! { "recipient": &recipient, "status": "SENT" })
        .await
        .iter()
        .filter_map(|d| d.get_str("smtp_message_id").ok())
        .map(|id| id.trim_matches(['<', '>']).to_owned())
        .collect();
    let unrecorded: Vec<_> = after_stop
        .keys()
        .filter(|id| !recorded_sent.contains(*id))
        .collect();
    assert!(
        unrecorded.is_empty(),
        "mails sent but not recorded SENT before the exit: {unrecorded:?}"
    );

    // The restart finishes the burst.
    let mut second = NotifierProcess::start(&env, &log);
    second.wait_ready(&http, port).await;
    let what = format!(
        "every mail recorded SENT after the restart (log: {})",
        log.display()
    );
    let docs = eventually_while_progressing(&what, || async {
        let docs = app.documents(doc! { "recipient": &recipient }).await;
        let sent = docs
            .iter()
            .filter(|d| d.get_str("status").ok() == Some("SENT"))
            .count();
        if sent == docs.len() && sent >= total {
            Ok(docs)
        } else {
            Err(Stalled {
                progress: sent,
                detail: unfinished(&app, &recipient, &docs, &expected, &log),
            })
        }
    })
    .await;
    eventually("every mail in the sink", || async {
        let got = received(&app, &recipient);
        expected.iter().all(|id| got.contains_key(id)).then_some(())
    })
    .await;
    // Stop it too, so nothing can arrive after the final count.
    second.sigterm();
    let (status, _) = second
        .wait_exit(shutdown_timeout + Duration::from_secs(10))
        .await;
    assert!(status.success(), "second exit status: {status}");

    let got = received(&app, &recipient);
    let doubled: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "mails sent twice: {doubled:?}");
    assert_eq!(
        got.keys().cloned().collect::<HashSet<_>>(),
        expected,
        "exactly the burst's mails"
    );
    assert_eq!(docs.len(), total, "one history record per mail");
    let recorded: HashSet<String> = docs
        .iter()
        .filter_map(|d| d.get_str("smtp_message_id").ok())
        .map(|id| id.trim_matches(['<', '>']).to_owned())
        .collect();
    assert_eq!(recorded, expected, "the records are the burst's mails");
    assert!(
        docs.iter().all(|d| {
            d.get_i64("attempts")
                .ok()
                .or(d.get_i32("attempts").ok().map(i64::from))
                == Some(1)
        }),
        "each mail took exactly one attempt"
    );
    app.drop_database().await;
}

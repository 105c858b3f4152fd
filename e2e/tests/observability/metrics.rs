//! Every PromQL expression of the dashboards and alert rules, evaluated by a real
//! Prometheus scraping the running shop after it handled happy, declined, refunded,
//! gateway-outage, rejected-mail and poison traffic: each must parse and return data.
//! And every metric the services export must be read by some panel or alert.

use crate::dashboards;
use crate::prometheus::{samples, Prometheus};
use e2e::{eventually, Stack};
use kakaopay::sim::{Faults, SimConfig};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Alert expressions are empty while the shop is healthy (that is the point of a
/// threshold), so for each alert the test names the signals it is built from: the
/// expression without its comparison. Each signal must appear verbatim in the alert's
/// expression and return data. A new alert without an entry here fails the test.
const ALERT_SIGNALS: &[(&str, &[&str])] = &[
    ("ServiceDown", &[r#"up{job=~"order|payment|notifier"}"#]),
    (
        "OrdersStuckPastDeadline",
        &["max without (instance) (order_orders_overdue)"],
    ),
    (
        "OrdersPilingUp",
        &[
            r#"max without (instance) (delta(order_orders{status="PENDING_PAYMENT"}[15m]))"#,
            r#"(sum(increase(order_transitions_total{from="PENDING_PAYMENT"}[15m])) or on () vector(0))"#,
        ],
    ),
    (
        "PaymentsStuck",
        &[r#"max without (instance) (payment_payments{status=~"APPROVING|REFUNDING"})"#],
    ),
    (
        "OutboxBacklogGrowing",
        &[
            "max without (instance) (saga_outbox_backlog_events)",
            "max without (instance) (deriv(saga_outbox_backlog_events[10m]))",
        ],
    ),
    (
        "OutboxRelayStalled",
        &["max without (instance) (saga_outbox_oldest_event_age_seconds)"],
    ),
    (
        "ConsumerLagHigh",
        &["max by (consumer, topic, partition) (saga_consumer_lag_messages)"],
    ),
    (
        "ConsumerRetryingLong",
        &["max by (consumer) (saga_consumer_oldest_retry_seconds)"],
    ),
    (
        "DeadLettersPresent",
        &["sum by (consumer) (increase(saga_dead_letters_total[15m]))"],
    ),
    (
        "GatewayErrorRateHigh",
        &[
            r#"sum by (endpoint) (rate(payment_gateway_requests_total{outcome=~"transient|unknown"}[5m]))"#,
            "sum by (endpoint) (rate(payment_gateway_requests_total[5m]))",
        ],
    ),
    (
        "HttpServerErrors",
        &["sum by (service, route) (rate(saga_http_requests_total[5m]))"],
    ),
    (
        "MailFailureRateHigh",
        &[
            "sum(rate(notifier_mails_failed_total[15m]))",
            "sum(rate(notifier_mails_sent_total[15m]))",
        ],
    ),
    (
        "MailHistoryStoreErrors",
        &["sum(rate(notifier_mongodb_errors_total[5m]))"],
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_dashboard_and_alert_query_returns_data_from_the_running_shop() {
    // Arrange: the shop and a Prometheus scraping its three services every second.
    let stack = Stack::spawn(SimConfig::default())
        .await
        .expect("stack starts");
    let prometheus = Prometheus::start(&[
        ("order", stack.order.port()),
        ("payment", stack.payment.port()),
        ("notifier", stack.notifier.port()),
    ])
    .await
    .expect("Prometheus starts");

    // Act: traffic that makes every kind of series appear.
    drive_traffic(&stack).await;

    // Assert: each dashboard query parses and returns data once Prometheus has scraped
    // the results (histogram quantiles need two scrapes of the buckets).
    let expressions = dashboards::expressions();
    assert!(expressions.len() > 40, "dashboards have their queries");
    let failures = until_no_failures("every dashboard query to return data", || async {
        let mut failures = Vec::new();
        for (place, expr) in &expressions {
            match samples(&prometheus.query(expr).await.expect("Prometheus answers")) {
                Ok(0) => failures.push(format!("{place}: `{expr}` returned no data")),
                Ok(_) => {}
                Err(error) => failures.push(format!("{place}: `{expr}` does not run: {error}")),
            }
        }
        failures
    })
    .await;
    assert!(
        failures.is_empty(),
        "dashboard queries:\n{}\nPrometheus log:\n{}",
        failures.join("\n"),
        prometheus.log()
    );

    // Assert: the figures say what happened. 6 orders placed; 5 completed (2 happy, one
    // paid after the gateway outage, one mail refused, one deferred), of which 1 was
    // then refunded; 2 cancelled in all (refunded, declined) — none for the outage; the
    // consumers and relays caught up.
    // (Every job renders the same process-wide registry here: counters are taken once.)
    let once = |counter: &str| format!("max(sum by (job) ({counter}))");
    let expected = [
        (r#"max(order_orders{status="COMPLETED"})"#.to_owned(), 4.0),
        (r#"max(order_orders{status="CANCELLED"})"#.to_owned(), 2.0),
        (
            r#"max(order_orders{status="PENDING_PAYMENT"})"#.to_owned(),
            0.0,
        ),
        (
            once(r#"order_orders_cancelled_total{reason="payment_declined"}"#),
            1.0,
        ),
        (
            once(r#"order_orders_cancelled_total{reason="payment_unavailable"}"#),
            0.0,
        ),
        (
            once(r#"order_orders_cancelled_total{reason="cancelled_by_shopper"}"#),
            1.0,
        ),
        (once("payment_refunds_total"), 1.0),
        (
            once(r#"order_saga_duration_seconds_count{outcome="completed"}"#),
            5.0,
        ),
        (
            r#"max(payment_payments{status="REFUNDED"})"#.to_owned(),
            1.0,
        ),
        (
            once(
                r#"saga_http_requests_total{service="order",route="/orders",method="POST",status="2xx"}"#,
            ),
            6.0,
        ),
        (
            once(r#"saga_http_requests_total{service="order",route="/orders/{id}",status="4xx"}"#),
            1.0,
        ),
        (
            once(
                r#"payment_gateway_requests_total{endpoint="approve",outcome="rejected",error_code="-780"}"#,
            ),
            1.0,
        ),
        // The deferred mail (451 for ever) is retried in its order's lane, so the
        // notifier stays one message behind on that order's partitions; nothing else.
        (
            r#"max(saga_consumer_lag_messages{consumer!="notifier"})"#.to_owned(),
            0.0,
        ),
        (
            r#"count(saga_consumer_lag_messages{consumer="notifier"} > 0) > bool 0"#.to_owned(),
            1.0,
        ),
        (
            r#"max(saga_consumer_oldest_retry_seconds{consumer="notifier"}) > bool 0"#.to_owned(),
            1.0,
        ),
        ("max(saga_outbox_backlog_events)".to_owned(), 0.0),
    ];

    let failures = until_no_failures("the figures to settle", || async {
        let mut failures = Vec::new();
        for (expr, want) in &expected {
            let got = value(&prometheus.query(expr).await.expect("answers"));
            if got != Some(*want) {
                failures.push(format!("`{expr}` = {got:?}, expected {want}"));
            }
        }
        failures
    })
    .await;
    if !failures.is_empty() {
        // What is still behind, and what keeps failing, says why.
        let behind = prometheus
            .query("saga_consumer_lag_messages > 0 or saga_consumer_oldest_retry_seconds > 0")
            .await
            .expect("answers");
        panic!("figures:\n{}\nbehind: {behind}", failures.join("\n"));
    }
    let lag_series = prometheus
        .query("count by (consumer) (saga_consumer_lag_messages)")
        .await
        .expect("answers");
    assert_eq!(
        samples(&lag_series),
        Ok(3),
        "lag reported by the three consumers: {lag_series}"
    );

    // Assert: each alert rule loaded, parses, and its signals return data.
    let alerts = prometheus.alert_rules().await.expect("rules");
    let loaded: BTreeSet<&str> = alerts.iter().map(|(name, _)| name.as_str()).collect();
    let described: BTreeSet<&str> = ALERT_SIGNALS.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        loaded, described,
        "every alert rule has its signals listed in this test"
    );
    let failures = until_no_failures("every alert signal to return data", || async {
        let mut failures = Vec::new();
        for (name, expr) in &alerts {
            if let Err(error) = samples(&prometheus.query(expr).await.expect("answers")) {
                failures.push(format!("alert {name}: `{expr}` does not run: {error}"));
            }
            let signals = ALERT_SIGNALS
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, s)| *s)
                .unwrap_or_default();
            for signal in signals {
                if !normalize(expr).contains(&normalize(signal)) {
                    failures.push(format!(
                        "alert {name}: signal `{signal}` is not in `{expr}`"
                    ));
                    continue;
                }
                match samples(&prometheus.query(signal).await.expect("answers")) {
                    Ok(0) => failures.push(format!("alert {name}: signal `{signal}` has no data")),
                    Ok(_) => {}
                    Err(error) => failures.push(format!("alert {name}: `{signal}`: {error}")),
                }
            }
        }
        failures
    })
    .await;
    assert!(failures.is_empty(), "alert rules:\n{}", failures.join("\n"));

    // Assert: every metric family the services export is read by a panel or an alert.
    let exported = exported_metric_names(&stack).await;
    let queries: Vec<String> = expressions
        .iter()
        .map(|(_, e)| e.clone())
        .chain(alerts.iter().map(|(_, e)| e.clone()))
        .collect();
    let unused: Vec<&String> = exported
        .iter()
        .filter(|name| !queries.iter().any(|q| mentions(q, name)))
        .collect();
    assert!(
        unused.is_empty(),
        "metrics exported but used by no panel or alert: {unused:?}"
    );

    drop(prometheus);
    stack.stop().await;
}

/// Happy orders, a refund, a decline, a gateway outage, a refused mail, bad requests and
/// poison messages.
async fn drive_traffic(stack: &Stack) {
    // Happy path, twice; the second is then cancelled by the shopper and refunded.
    let mut completed = Vec::new();
    for n in 0..2 {
        let email = stack.shopper_email(&format!("obs{n}"));
        let id = stack.place_order(&email).await;
        let redirect = stack.redirect_url(id).await;
        assert_eq!(stack.shopper_visits(&redirect, None).await.status(), 200);
        stack.wait_for_status(id, "COMPLETED").await;
        completed.push(id);
    }
    let refunded = completed[1];
    let cancel = stack
        .http
        .post(format!("{}/orders/{refunded}/cancel", stack.order.url()))
        .bearer_auth(stack.token(refunded))
        .send()
        .await
        .expect("cancel answers");
    assert_eq!(cancel.status(), 202);
    eventually("the refund", || async {
        let order = stack.get_order(refunded).await;
        (order["status"] == "CANCELLED" && order["refunded_amount"].is_i64()).then_some(())
    })
    .await;

    // Declined by Kakao Pay.
    stack.sim.set_faults(Faults {
        decline_rate: 1.0,
        ..Faults::default()
    });
    let declined = stack
        .place_order(&stack.shopper_email("obs-declined"))
        .await;
    let redirect = stack.redirect_url(declined).await;
    stack.shopper_visits(&redirect, None).await;
    stack.wait_for_status(declined, "CANCELLED").await;

    // Kakao Pay down: `ready` is retried in the order's lane until it is back; the order
    // waits, then is paid.
    stack.sim.set_faults(Faults {
        outage: true,
        ..Faults::default()
    });
    let waited = stack.place_order(&stack.shopper_email("obs-outage")).await;
    eventually("payment retrying the checkout", || async {
        let metrics = stack
            .http
            .get(format!("{}/metrics", stack.payment.url()))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("saga_consumer_retries_total{consumer=\"payment-order-events\"}")
            })
            .any(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) >= Some(2.0))
            .then_some(())
    })
    .await;
    assert_eq!(stack.get_order(waited).await["status"], "PENDING_PAYMENT");
    stack.sim.set_faults(Faults::default());
    let redirect = stack.redirect_url(waited).await;
    stack.shopper_visits(&redirect, None).await;
    stack.wait_for_status(waited, "COMPLETED").await;

    // A recipient the SMTP relay refuses (550), and one it defers (451) for as long as
    // it is asked: that mail waits in its order's lane, retried, never failed.
    for tag in ["reject", "tempfail"] {
        let id = stack.place_order(&stack.shopper_email(tag)).await;
        let redirect = stack.redirect_url(id).await;
        stack.shopper_visits(&redirect, None).await;
        stack.wait_for_status(id, "COMPLETED").await;
    }

    // Client errors: an unknown order, a malformed one.
    let missing = stack
        .http
        .get(format!("{}/orders/{}", stack.order.url(), Uuid::new_v4()))
        .send()
        .await
        .expect("answers");
    assert_eq!(missing.status(), 404);
    let bad = stack
        .http
        .post(format!("{}/orders", stack.order.url()))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("answers");
    assert_eq!(bad.status(), 400);

    // The notifier's history API, with and without its token; an unknown payment.
    let history = stack
        .http
        .get(format!(
            "{}/notifications?order_id={}",
            stack.notifier.url(),
            completed[0]
        ))
        .bearer_auth(&stack.notifier_token)
        .send()
        .await
        .expect("answers");
    assert_eq!(history.status(), 200);
    let anonymous = stack
        .http
        .get(format!(
            "{}/notifications?order_id={}",
            stack.notifier.url(),
            completed[0]
        ))
        .send()
        .await
        .expect("answers");
    assert_eq!(anonymous.status(), 401);
    let no_payment = stack
        .payment_lookup(format!(
            "{}/payments/{}",
            stack.payment.url(),
            Uuid::new_v4()
        ))
        .send()
        .await
        .expect("answers");
    assert_eq!(no_payment.status(), 404);

    // A poison message on each topic: dead-lettered by each of its consumers.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &stack.infra.kafka_brokers)
        .create()
        .expect("producer");
    let topics = stack.infra.kafka(&format!("t{}.", stack.id)).topics();
    for topic in [&topics.orders, &topics.payments] {
        let key = Uuid::new_v4().to_string();
        producer
            .send(
                FutureRecord::to(topic).key(&key).payload("{not an event"),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(error, _)| error)
            .expect("poison published");
    }
}

/// Re-runs `check` until it reports no failures or 90 s pass; returns the last report.
async fn until_no_failures<F, Fut>(what: &str, mut check: F) -> Vec<String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Vec<String>>,
{
    let started = Instant::now();
    loop {
        let failures = check().await;
        if failures.is_empty() || started.elapsed() > Duration::from_secs(90) {
            if !failures.is_empty() {
                eprintln!("gave up waiting for {what}");
            }
            return failures;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// The single value of an instant query, if it has exactly one sample.
fn value(response: &serde_json::Value) -> Option<f64> {
    let result = response["data"]["result"].as_array()?;
    match result.as_slice() {
        [sample] => sample["value"][1].as_str()?.parse().ok(),
        _ => None,
    }
}

/// Whitespace-insensitive form, so a signal matches a multi-line rule expression.
fn normalize(expr: &str) -> String {
    expr.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// True when `query` reads metric family `name` (its samples, or its histogram's
/// `_bucket`/`_sum`/`_count`).
fn mentions(query: &str, name: &str) -> bool {
    query.match_indices(name).any(|(at, _)| {
        let before = query[..at].chars().next_back();
        let after = &query[at + name.len()..];
        let boundary = |c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':');
        let after_ok = after.chars().next().is_none_or(boundary)
            || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                after
                    .strip_prefix(suffix)
                    .is_some_and(|rest| rest.chars().next().is_none_or(boundary))
            });
        before.is_none_or(boundary) && after_ok
    })
}

/// Metric families in the services' `/metrics` text (`# TYPE` lines).
async fn exported_metric_names(stack: &Stack) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for url in [stack.order.url(), stack.payment.url(), stack.notifier.url()] {
        let text = stack
            .http
            .get(format!("{url}/metrics"))
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("text");
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                if let Some(name) = rest.split_whitespace().next() {
                    names.insert(name.to_owned());
                }
            }
        }
    }
    names
}

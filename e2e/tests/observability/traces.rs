//! One trace id per order, through all three services: the binaries run as processes with
//! `LOG_FORMAT=json` (the fault harness's process stack), one order is placed with a W3C
//! `traceparent` and paid, and the order's trace id is then looked for in the JSON log
//! lines of order, payment and notifier.

use e2e::eventually;
use e2e::procs::{Options, Part, ProcStack};
use serde_json::Value;
use uuid::Uuid;

/// The process stack's defaults, with JSON logs for the three services and a broker in
/// memory (nothing here needs durable Kafka data).
// `..Options::default()` keeps this working when the harness gains options.
#[allow(clippy::needless_update)]
fn json_logs() -> Options {
    Options {
        extra_env: [Part::Order, Part::Payment, Part::Notifier]
            .into_iter()
            .map(|part| (part, vec![("LOG_FORMAT".to_owned(), "json".to_owned())]))
            .collect(),
        kafka_storage: "memory://tansu/".to_owned(),
        ..Options::default()
    }
}

/// The JSON lines of a service's log (other lines — a panic message — are skipped).
fn log_lines(stack: &ProcStack, part: Part) -> Vec<Value> {
    std::fs::read_to_string(stack.log_path(part))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_order_keeps_one_trace_id_through_order_payment_and_notifier() {
    // Arrange: the shop as processes logging JSON.
    let mut stack = ProcStack::start_with(json_logs())
        .await
        .expect("process stack starts");
    let order_url = stack.url(Part::Order);

    // Act: the shopper's client starts a trace and places the order in it, then pays.
    let trace_id = Uuid::new_v4().simple().to_string();
    let traceparent = format!(
        "00-{trace_id}-{}-01",
        &Uuid::new_v4().simple().to_string()[..16]
    );
    let email = format!("trace-{}@example.com", stack.id);
    let response = stack
        .http
        .post(format!("{order_url}/orders"))
        .header("traceparent", &traceparent)
        .json(&serde_json::json!({
            "customer_id": format!("shopper-{}", stack.id),
            "customer_email": email,
            "items": [{"name": "Latte", "quantity": 1, "unit_price": 5000}]
        }))
        .send()
        .await
        .expect("order-service answers");
    assert_eq!(response.status(), 202);
    let order: Value = response.json().await.expect("order JSON");
    let order_id: Uuid = order["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("id");
    let redirect = stack
        .watch_order(order_id, |order| {
            order["payment"]["redirect_url"].as_str().map(str::to_owned)
        })
        .await
        .expect("the payment redirect URL");
    let approval = stack
        .http
        .get(&redirect)
        .send()
        .await
        .expect("payment page");
    assert_eq!(
        approval.status(),
        200,
        "the redirect chain ends at the approval"
    );
    eventually("the order completed and both mails sent", || async {
        let order = stack.get_order(order_id).await.ok()?;
        let history = stack.notifications(order_id).await.ok()?;
        (order["status"] == "COMPLETED"
            && history.len() == 2
            && history.iter().all(|n| n["status"] == "SENT"))
        .then_some(())
    })
    .await;
    // Stop the services so every line is written.
    for part in [Part::Notifier, Part::Order, Part::Payment] {
        stack.stop(part).await;
    }

    // Assert: the trace the client started reaches every service's log lines about it.
    let order_id = order_id.to_string();
    for part in [Part::Order, Part::Payment, Part::Notifier] {
        let lines = log_lines(&stack, part);
        let traced: Vec<&Value> = lines
            .iter()
            .filter(|line| line["trace_id"] == trace_id.as_str())
            .collect();
        assert!(
            !traced.is_empty(),
            "no {} log line carries the order's trace id {trace_id}:\n{}",
            part.name(),
            stack.log_tail(part, 40)
        );
        assert!(
            traced.iter().all(|line| line["service"] == part.name()),
            "lines name their service"
        );
        // Every line about this order (its id in a field or a span) is in its trace.
        let about_order: Vec<&Value> = lines
            .iter()
            .filter(|line| line.to_string().contains(&order_id))
            .collect();
        assert!(!about_order.is_empty(), "{} logged the order", part.name());
        let outside: Vec<String> = about_order
            .iter()
            .filter(|line| line["trace_id"] != trace_id.as_str())
            .map(|line| line.to_string())
            .collect();
        assert!(
            outside.is_empty(),
            "{} lines about order {order_id} outside its trace {trace_id}:\n{}",
            part.name(),
            outside.join("\n")
        );
    }
    // The notifier logged the mails it sent in the order's trace.
    let mails_sent = log_lines(&stack, Part::Notifier)
        .into_iter()
        .filter(|line| line["message"] == "Mail sent." && line["trace_id"] == trace_id.as_str())
        .count();
    assert_eq!(mails_sent, 2, "both mails logged in the order's trace");
}

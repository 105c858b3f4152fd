//! Bad input to `POST /orders` is refused with a problem+json naming the field, and
//! changes nothing: no row is written and no event is published.

use diesel::{Connection, PgConnection, RunQueryDsl};
use e2e::{eventually, Stack};
use kakaopay::sim::SimConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use std::time::Duration;

/// `SELECT count(*) FROM <table>` (a table, or a table with a `WHERE`).
pub(crate) fn count(url: &str, table: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = PgConnection::establish(url).expect("connects");
    diesel::sql_query(format!("SELECT count(*) AS n FROM {table}"))
        .get_result::<Count>(&mut conn)
        .expect("counts")
        .n
}

/// Messages ever written to the stack's orders topic (sum of high watermarks).
pub(crate) fn published_order_events(stack: &Stack) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &stack.infra.kafka_brokers)
        .create()
        .expect("consumer");
    let topic = format!("t{}.orders.v1", stack.id);
    (0..shared_events::kafka::DEFAULT_PARTITIONS)
        .map(|partition| {
            consumer
                .fetch_watermarks(&topic, partition, Duration::from_secs(10))
                .map(|(_, high)| high)
                .unwrap_or(0)
        })
        .sum()
}

async fn refused(stack: &Stack, body: reqwest::Body, content_type: &str) -> (u16, Value) {
    let response = stack
        .http
        .post(format!("{}/orders", stack.order.url()))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("order-service answers");
    let status = response.status().as_u16();
    let content = response.headers()["content-type"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content, "application/problem+json", "status {status}");
    (status, response.json().await.expect("problem JSON"))
}

fn invalid_params(problem: &Value) -> Vec<String> {
    problem["invalid_params"]
        .as_array()
        .map(|params| {
            params
                .iter()
                .filter_map(|p| p["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_orders_are_refused_naming_the_field_and_change_nothing() {
    let stack = Stack::spawn(SimConfig::default())
        .await
        .expect("stack starts");
    let email = stack.shopper_email("bad");
    let valid = stack.order_request(&email);
    let with = |path: &str, value: Value| {
        let mut body = valid.clone();
        *body.pointer_mut(path).expect("path exists") = value;
        body
    };
    let without = |field: &str| {
        let mut body = valid.clone();
        body.as_object_mut().expect("object").remove(field);
        body
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        ("missing email", without("customer_email"), "customer_email"),
        ("missing items", without("items"), "items"),
        (
            "zero quantity",
            with("/items/0/quantity", json!(0)),
            "items[0].quantity",
        ),
        (
            "negative quantity",
            with("/items/1/quantity", json!(-3)),
            "items[1].quantity",
        ),
        (
            "negative price",
            with("/items/0/unit_price", json!(-100)),
            "items[0].unit_price",
        ),
        (
            "price as text",
            with("/items/0/unit_price", json!("4500")),
            "items[0].unit_price",
        ),
        ("empty items", with("/items", json!([])), "items"),
        (
            "invalid email",
            with("/customer_email", json!("kim-at-example")),
            "customer_email",
        ),
        (
            "header injection in the email",
            with(
                "/customer_email",
                json!(format!("{email}\r\nBcc: everyone@example.com")),
            ),
            "customer_email",
        ),
        (
            "a 60 KB display name with CR/LF",
            with(
                "/customer_email",
                json!(format!("{}\r\n <{email}>", "A".repeat(60_000))),
            ),
            "customer_email",
        ),
        (
            "a control character in the email",
            with("/customer_email", json!(format!("\u{0}{email}"))),
            "customer_email",
        ),
        (
            "a dotless domain",
            with("/customer_email", json!("a.b@localhost")),
            "customer_email",
        ),
        (
            "a local part over 64 characters",
            with(
                "/customer_email",
                json!(format!("{}@example.com", "a".repeat(65))),
            ),
            "customer_email",
        ),
        (
            "empty customer",
            with("/customer_id", json!("  ")),
            "customer_id",
        ),
        (
            "empty item name",
            with("/items/0/name", json!("")),
            "items[0].name",
        ),
    ];
    for (case, body, field) in cases {
        let (status, problem) = refused(&stack, body.to_string().into(), "application/json").await;
        assert_eq!(status, 400, "{case}");
        assert_eq!(problem["status"], 400, "{case}");
        assert!(
            invalid_params(&problem).contains(&field.to_owned()),
            "{case}: {problem}"
        );
    }

    let (status, problem) = refused(&stack, "{\"customer_id\": ".into(), "application/json").await;
    assert_eq!(status, 400, "malformed JSON");
    assert_eq!(problem["type"], "/problems/malformed-json");

    let huge = json!({"customer_id": "x".repeat(70 * 1024), "customer_email": email, "items": []});
    let (status, _) = refused(&stack, huge.to_string().into(), "application/json").await;
    assert_eq!(status, 413, "body over 64 KiB");

    // Nothing was written.
    assert_eq!(count(&stack.order_database_url(), "orders"), 0);
    assert_eq!(count(&stack.order_database_url(), "outbox"), 0);

    // Nothing was published: once a valid order's event is out, it is the only one.
    let id = stack.place_order(&email).await;
    stack.redirect_url(id).await; // payment-service saw the OrderPlaced
    let published = eventually("the valid order's event on the topic", || async {
        let n = published_order_events(&stack);
        (n >= 1).then_some(n)
    })
    .await;
    assert_eq!(
        published, 1,
        "only the valid order's OrderPlaced was published"
    );
    stack.stop().await;
}

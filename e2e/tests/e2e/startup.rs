//! A service started while PostgreSQL, Kafka or MongoDB is down answers `/healthz`,
//! reports not ready, and becomes ready — and does its work — once the server is back.

use e2e::procs::{verify, Expect, LoadPlan, Part, ProcStack};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};

const DEADLINE: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn services_started_while_their_servers_are_down_wait_and_then_serve() {
    let mut stack = ProcStack::start().await.expect("process stack starts");
    let http = reqwest::Client::new();

    // The orders and payments databases are reached through a port where nothing listens
    // yet; Kafka and MongoDB are stopped.
    let postgres = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let db_port = postgres.local_addr().unwrap().port();
    drop(postgres);
    for (part, variable, database) in [
        (Part::Order, "ORDER_DATABASE_URL", "orders"),
        (Part::Payment, "PAYMENT_DATABASE_URL", "payments"),
    ] {
        let url = format!(
            "postgres://postgres@127.0.0.1:{db_port}/{}",
            stack.database_name(database)
        );
        stack.set_env(part, variable, &url);
    }
    for part in [
        Part::Notifier,
        Part::Order,
        Part::Payment,
        Part::Kafka,
        Part::Mongo,
    ] {
        stack.stop(part).await;
    }
    for part in [Part::Payment, Part::Order, Part::Notifier] {
        stack.launch(part).expect("service starts");
    }

    for part in [Part::Payment, Part::Order, Part::Notifier] {
        let waiting = until_not_ready_says_why(&http, &stack.url(part)).await;
        let expected = if part == Part::Notifier {
            "MongoDB"
        } else {
            "database"
        };
        assert!(
            waiting.contains(expected),
            "{}: /readyz names what it waits for: {waiting}",
            part.name()
        );
        assert!(stack.is_running(part), "{} stays up", part.name());
    }

    // The servers come back: PostgreSQL (through a forwarder on the port the services
    // were given), then Kafka and MongoDB.
    let forwarder = tokio::spawn(forward(db_port, 5432));
    stack.start_part(Part::Kafka).await.expect("tansu restarts");
    stack
        .start_part(Part::Mongo)
        .await
        .expect("nx-27017 restarts");
    for part in [Part::Payment, Part::Order, Part::Notifier] {
        stack
            .wait_ready(part)
            .await
            .unwrap_or_else(|e| panic!("{} becomes ready: {e:#}", part.name()));
    }

    // And they serve: orders placed now are paid and mailed.
    let load = stack
        .shopper()
        .start(LoadPlan::new(4, Duration::from_secs(1)));
    let outcome = load.finish().await;
    assert_eq!(outcome.placed.len(), 4, "every order accepted: {outcome:?}");
    verify(&stack, &outcome, Expect::default())
        .await
        .assert_holds(&stack);
    forwarder.abort();
}

/// Polls `/healthz` (must answer 200) and `/readyz` (must answer 503 with `waiting_for`)
/// until both did; returns `waiting_for`.
async fn until_not_ready_says_why(http: &reqwest::Client, base: &str) -> String {
    let started = Instant::now();
    loop {
        let healthy = matches!(http.get(format!("{base}/healthz")).send().await,
            Ok(r) if r.status() == 200);
        if healthy {
            if let Ok(response) = http.get(format!("{base}/readyz")).send().await {
                assert_eq!(response.status(), 503, "{base} is not ready yet");
                let body: serde_json::Value = response.json().await.unwrap();
                if let Some(waiting) = body["waiting_for"].as_str() {
                    if waiting != "start-up" {
                        return waiting.to_owned();
                    }
                }
            }
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{base} never answered /healthz while its servers were down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Forwards every connection to `from` on loopback to `to`.
async fn forward(from: u16, to: u16) {
    let listener = TcpListener::bind(("127.0.0.1", from))
        .await
        .expect("the forwarder's port is still free");
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", to)).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

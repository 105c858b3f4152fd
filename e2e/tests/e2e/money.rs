//! The money is always right (issue #12): a cancelled order never holds money, a paid
//! order is not cancelled by its deadline, an unclear charge is never forgotten, a bad
//! `pg_token` or a forged cancel link changes nothing, a refund is asked of Kakao Pay
//! once, and failing payments do not starve the reconciler.

use chrono::{DateTime, Utc};
use e2e::{eventually, Options, Stack};
use kakaopay::sim::{Faults, LedgerEntry, PerEndpoint, SimConfig};
use serde_json::Value;
use std::time::Duration;
use uuid::Uuid;

fn ledger_entry(stack: &Stack, id: Uuid) -> LedgerEntry {
    stack
        .sim
        .ledger()
        .payments
        .values()
        .find(|p| p.partner_order_id == id.to_string())
        .cloned()
        .expect("a tid for the order")
}

async fn cancel(stack: &Stack, id: Uuid) -> reqwest::Response {
    stack.cancel_order(id).await
}

/// The kinds of the mails sent for the order, sorted, once `count` have been sent.
async fn sent_mails(stack: &Stack, id: Uuid, count: usize) -> Vec<String> {
    eventually(&format!("{count} SENT mails for {id}"), || async {
        let mut sent: Vec<String> = stack
            .notifications(id)
            .await
            .iter()
            .filter(|n| n["status"] == "SENT")
            .filter_map(|n| n["type"].as_str().map(str::to_owned))
            .collect();
        sent.sort();
        (sent.len() >= count).then_some(sent)
    })
    .await
}

/// The order's payment as payment-service shows it (`None` while it has none).
async fn payment_of(stack: &Stack, id: Uuid) -> Option<Value> {
    let payments: Value = stack
        .payment_lookup(format!("{}/payments?order_id={id}", stack.payment.url()))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    payments.get(0).cloned()
}

async fn payment_in(stack: &Stack, id: Uuid, status: &str) -> Value {
    eventually(&format!("the payment of {id} to be {status}"), || async {
        payment_of(stack, id)
            .await
            .filter(|p| p["status"] == status)
    })
    .await
}

async fn payment_url(stack: &Stack, id: Uuid, step: &str) -> String {
    let payment = payment_in(stack, id, "READY").await;
    let payment_id = payment["id"].as_str().expect("a payment id");
    format!("{}/payments/{payment_id}/{step}", stack.payment.url())
}

async fn deadline_of(stack: &Stack, id: Uuid) -> DateTime<Utc> {
    stack.get_order(id).await["payment_deadline"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .expect("a deadline")
}

/// A cancelled order whose payment was charged ends refunded, exactly once.
async fn assert_refunded_once(stack: &Stack, id: Uuid) {
    let order = eventually("the cancelled order to be refunded", || async {
        let order = stack.get_order(id).await;
        (order["status"] == "CANCELLED" && order["refunded_amount"] == 12_000).then_some(order)
    })
    .await;
    assert_eq!(order["status"], "CANCELLED");
    payment_in(stack, id, "REFUNDED").await;
    let entry = ledger_entry(stack, id);
    assert!(entry.approved, "the shopper had been charged");
    assert_eq!(entry.cancel_calls, 1, "the refund was asked once");
    assert_eq!(entry.canceled_amount, 12_000, "all of it went back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_cancelled_while_its_payment_is_being_approved_is_refunded_once() {
    let stack = Stack::spawn(SimConfig::default())
        .await
        .expect("stack starts");
    let id = stack
        .place_order(&stack.shopper_email("cancel-mid-approve"))
        .await;
    let redirect = stack.redirect_url(id).await;

    // Kakao Pay is slow to approve: the shopper cancels the order meanwhile, so
    // OrderCancelled reaches payment before the approval exists.
    stack.sim.set_faults(Faults {
        latency_ms: 3_000,
        ..Faults::default()
    });
    let shopper = {
        let http = stack.http.clone();
        tokio::spawn(async move { http.get(redirect).send().await.map(|r| r.status()) })
    };
    payment_in(&stack, id, "APPROVING").await;
    let response = cancel(&stack, id).await;
    assert_eq!(response.status(), 202);
    let order: Value = response.json().await.expect("order JSON");
    assert_eq!(order["status"], "CANCELLED", "the order was not paid yet");
    assert_eq!(shopper.await.expect("joins").expect("answers"), 200);
    stack.sim.set_faults(Faults::default());

    assert_refunded_once(&stack, id).await;
    assert_eq!(
        sent_mails(&stack, id, 3).await,
        ["order_cancelled", "order_refunded", "payment_completed"],
        "each mail once"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_cancelled_while_its_approval_waits_in_kafka_is_refunded_once() {
    let mut stack = Stack::spawn(SimConfig::default())
        .await
        .expect("stack starts");
    let id = stack
        .place_order(&stack.shopper_email("cancel-after-approve"))
        .await;
    let redirect = stack.redirect_url(id).await;

    // order-service is down while the shopper pays: PaymentApproved waits in Kafka, and
    // the shopper cancels the moment the order service is back.
    stack.order.stop().await;
    let approval: Value = stack
        .shopper_visits(&redirect, None)
        .await
        .json()
        .await
        .expect("payment JSON");
    assert_eq!(approval["status"], "APPROVED");
    stack.order.start_again().await.expect("order restarts");
    assert_eq!(cancel(&stack, id).await.status(), 202);

    assert_refunded_once(&stack, id).await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paid_order_is_not_cancelled_by_its_deadline_while_its_approval_waits() {
    let options = Options {
        payment_deadline: Some(Duration::from_secs(3)),
        ..Options::default()
    };
    let mut stack = Stack::spawn_with(SimConfig::default(), options)
        .await
        .expect("stack starts");
    let id = stack
        .place_order(&stack.shopper_email("paid-at-deadline"))
        .await;
    let redirect = stack.redirect_url(id).await;
    let deadline = deadline_of(&stack, id).await;

    // The shopper pays while order-service is down; it is back after the deadline, with
    // PaymentApproved still unread.
    stack.order.stop().await;
    let approval: Value = stack
        .shopper_visits(&redirect, None)
        .await
        .json()
        .await
        .expect("payment JSON");
    assert_eq!(approval["status"], "APPROVED");
    eventually("the deadline to pass", || async {
        (Utc::now() > deadline).then_some(())
    })
    .await;
    stack.order.start_again().await.expect("order restarts");

    let order = stack.wait_for_status(id, "COMPLETED").await;
    assert_eq!(order["refunded_amount"], Value::Null);
    assert_eq!(payment_in(&stack, id, "APPROVED").await["amount"], 12_000);
    let entry = ledger_entry(&stack, id);
    assert_eq!(entry.cancel_calls, 0, "nothing refunded");
    assert_eq!(
        sent_mails(&stack, id, 2).await,
        ["order_completed", "payment_completed"],
        "no cancellation mail"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approve_unclear_on_any_attempt_stays_unknown_until_kakao_pay_settles_it() {
    let options = Options {
        fast_reconcile: true,
        ..Options::default()
    };
    let stack = Stack::spawn_with(SimConfig::default(), options)
        .await
        .expect("stack starts");
    let id = stack
        .place_order(&stack.shopper_email("unclear-approve"))
        .await;
    let redirect = stack.redirect_url(id).await;

    // Attempt 1 is applied but its answer never comes (a timeout); attempt 2 meets a
    // dropped connection; the status look-up is dropped too.
    stack.sim.set_faults(Faults {
        applied_answer_lost: PerEndpoint {
            approve: 1.0,
            ..PerEndpoint::default()
        },
        dropped_connection: PerEndpoint {
            order: 1.0,
            ..PerEndpoint::default()
        },
        ..Faults::default()
    });
    let shopper = {
        let http = stack.http.clone();
        tokio::spawn(async move { http.get(redirect).send().await.map(|r| r.status()) })
    };
    eventually("Kakao Pay to have charged the shopper", || async {
        ledger_entry(&stack, id).approved.then_some(())
    })
    .await;
    stack.sim.set_faults(Faults {
        dropped_connection: PerEndpoint {
            approve: 1.0,
            order: 1.0,
            ..PerEndpoint::default()
        },
        ..Faults::default()
    });
    let status = shopper.await.expect("joins").expect("answers");
    assert_eq!(
        status, 503,
        "the shopper is told to wait, not that it failed"
    );
    let payment = payment_in(&stack, id, "APPROVING").await;
    assert!(
        payment["approval_unclear_at"].is_string(),
        "marked unclear: {payment}"
    );
    let calls: Value = stack
        .payment_lookup(format!(
            "{}/payments/{}",
            stack.payment.url(),
            payment["id"].as_str().expect("id")
        ))
        .send()
        .await
        .expect("payment answers")
        .json()
        .await
        .expect("payment JSON");
    let approves: Vec<&Value> = calls["gateway_calls"]
        .as_array()
        .expect("gateway calls")
        .iter()
        .filter(|c| c["kind"] == "approve")
        .collect();
    assert_eq!(approves.len(), 2, "both attempts recorded: {approves:?}");
    assert_eq!(approves[0]["outcome"], "unknown", "attempt 1 timed out");
    assert_eq!(stack.get_order(id).await["status"], "PENDING_PAYMENT");

    // Kakao Pay answers again: the reconciler asks it and finds the charge.
    stack.sim.set_faults(Faults::default());
    let order = stack.wait_for_status(id, "COMPLETED").await;
    assert_eq!(order["payment"]["status"], "APPROVED");
    assert_eq!(ledger_entry(&stack, id).cancel_calls, 0);
    stack.stop().await;
}

async fn assert_refused_token(stack: &Stack, approve: &str, id: Uuid) {
    let response = stack
        .http
        .get(format!("{approve}?pg_token=forged"))
        .send()
        .await
        .expect("payment answers");
    assert_eq!(response.status(), 400);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let problem: Value = response.json().await.expect("problem JSON");
    assert_eq!(
        problem["invalid_params"][0]["name"], "pg_token",
        "{problem}"
    );
    payment_in(stack, id, "READY").await;
    assert_eq!(stack.get_order(id).await["status"], "PENDING_PAYMENT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_pg_token_leaves_the_payment_payable() {
    let stack = Stack::spawn(SimConfig::default())
        .await
        .expect("stack starts");
    let id = stack.place_order(&stack.shopper_email("bad-token")).await;
    let redirect = stack.redirect_url(id).await;
    let approve = payment_url(&stack, id, "approve").await;

    // Before the shopper has been on Kakao Pay's page (-701), and after (-708).
    assert_refused_token(&stack, &approve, id).await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client");
    let page = no_redirects
        .get(&redirect)
        .send()
        .await
        .expect("the payment page answers");
    let real = page
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .expect("sent back with the pg_token")
        .to_owned();
    assert!(real.contains("pg_token="));
    assert_refused_token(&stack, &approve, id).await;

    // The shopper's own token still pays.
    let approval: Value = stack
        .http
        .get(real)
        .send()
        .await
        .expect("payment answers")
        .json()
        .await
        .expect("payment JSON");
    assert_eq!(approval["status"], "APPROVED");
    stack.wait_for_status(id, "COMPLETED").await;
    assert_eq!(ledger_entry(&stack, id).cancel_calls, 0);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cancel_and_fail_urls_ask_kakao_pay_before_failing_anything() {
    let stack = Stack::spawn(SimConfig::default())
        .await
        .expect("stack starts");
    let id = stack
        .place_order(&stack.shopper_email("forged-cancel"))
        .await;
    let redirect = stack.redirect_url(id).await;
    let cancel_url = payment_url(&stack, id, "cancel").await;
    let fail_url = cancel_url.replace("/cancel", "/fail");
    let visit = |url: String| {
        let http = stack.http.clone();
        async move {
            let response = http.get(url).send().await.expect("payment answers");
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.expect("payment JSON")
        }
    };

    // Nobody left Kakao Pay's page: a forged cancel or fail link changes nothing.
    for url in [&cancel_url, &cancel_url, &fail_url] {
        assert_eq!(visit(url.clone()).await["status"], "READY");
    }
    assert_eq!(stack.get_order(id).await["status"], "PENDING_PAYMENT");

    // Paid: the cancel URL, once or twice, shows it paid.
    assert_eq!(stack.shopper_visits(&redirect, None).await.status(), 200);
    stack.wait_for_status(id, "COMPLETED").await;
    for url in [&cancel_url, &cancel_url, &fail_url] {
        assert_eq!(visit(url.clone()).await["status"], "APPROVED");
    }
    assert_eq!(stack.get_order(id).await["status"], "COMPLETED");

    // A shopper who really cancels on Kakao Pay's page is let go.
    let other = stack.place_order(&stack.shopper_email("real-cancel")).await;
    let other_redirect = stack.redirect_url(other).await;
    let left: Value = stack
        .shopper_visits(&other_redirect, Some("cancel"))
        .await
        .json()
        .await
        .expect("payment JSON");
    assert_eq!(left["status"], "FAILED");
    let order = stack.wait_for_status(other, "CANCELLED").await;
    assert_eq!(order["cancel_reason"], "payment_cancelled_by_shopper");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refund_whose_answer_was_lost_is_settled_without_asking_again() {
    let options = Options {
        fast_reconcile: true,
        ..Options::default()
    };
    let stack = Stack::spawn_with(SimConfig::default(), options)
        .await
        .expect("stack starts");
    let id = stack.place_order(&stack.shopper_email("lost-refund")).await;
    let redirect = stack.redirect_url(id).await;
    assert_eq!(stack.shopper_visits(&redirect, None).await.status(), 200);
    stack.wait_for_status(id, "COMPLETED").await;

    // Kakao Pay refunds, but the answer never comes back.
    stack.sim.set_faults(Faults {
        applied_answer_lost: PerEndpoint {
            cancel: 1.0,
            ..PerEndpoint::default()
        },
        ..Faults::default()
    });
    assert_eq!(cancel(&stack, id).await.status(), 202);
    eventually("Kakao Pay to have refunded", || async {
        (ledger_entry(&stack, id).canceled_amount == 12_000).then_some(())
    })
    .await;
    stack.sim.set_faults(Faults::default());
    payment_in(&stack, id, "REFUNDING").await;

    // The reconciler finds the refund in Kakao Pay's record and does not ask again.
    assert_refunded_once(&stack, id).await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refunds_that_keep_failing_do_not_starve_a_charge_to_settle() {
    let options = Options {
        fast_reconcile: true,
        ..Options::default()
    };
    let stack = Stack::spawn_with(SimConfig::default(), options)
        .await
        .expect("stack starts");
    // 60 refunds stuck for an hour that Kakao Pay cannot settle (it knows none of them):
    // more than the reconciler takes in one pass, and all older than the charge below.
    let stuck = insert_stuck_refunds(&stack.payment_database_url(), 60);
    let started = std::time::Instant::now();

    let id = stack.place_order(&stack.shopper_email("starved")).await;
    let redirect = stack.redirect_url(id).await;
    stack.sim.set_faults(Faults {
        lost_response_rate: 1.0,
        ..Faults::default()
    });
    assert_eq!(stack.shopper_visits(&redirect, None).await.status(), 503);
    assert!(ledger_entry(&stack, id).approved, "the gateway did charge");
    stack.sim.set_faults(Faults::default());

    let order = stack.wait_for_status(id, "COMPLETED").await;
    assert_eq!(order["payment"]["status"], "APPROVED");

    // Each failing refund is looked up with a growing pause, not on every pass (one
    // every 200 ms): ~log2(elapsed / 200 ms) looks, not elapsed / 200 ms.
    let checks = checks_of(&stack.payment_database_url(), stuck);
    let passes = started.elapsed().as_millis() / 200;
    eprintln!(
        "measured: a failing refund was looked up {checks} times in {passes} reconciler passes ({:?})",
        started.elapsed()
    );
    assert!(
        (1..=12).contains(&checks) && (checks as u128) * 4 < passes,
        "a failing refund was looked up {checks} times in {passes} passes"
    );
    stack.stop().await;
}

/// Inserts `count` payments `REFUNDING` since an hour ago, with tids Kakao Pay does not
/// know; returns the id of the first.
fn insert_stuck_refunds(database_url: &str, count: usize) -> Uuid {
    use diesel::{Connection, RunQueryDsl};
    let mut conn = diesel::PgConnection::establish(database_url).expect("payment database");
    let first = Uuid::now_v7();
    for n in 0..count {
        let id = if n == 0 { first } else { Uuid::now_v7() };
        let sql = format!(
            "INSERT INTO payments (id, order_id, status, amount, item_name, quantity, \
             partner_user_id, order_snapshot, tid, created_at, updated_at, approved_at) \
             VALUES ('{id}', '{}', 'REFUNDING', 1000, 'x', 1, 'c', '{{}}', 'TSTUCK{n:014}', \
             now() - interval '1 hour', now() - interval '1 hour', now() - interval '1 hour')",
            Uuid::now_v7()
        );
        diesel::sql_query(sql)
            .execute(&mut conn)
            .expect("a stuck refund inserted");
    }
    first
}

fn checks_of(database_url: &str, id: Uuid) -> i64 {
    use diesel::{Connection, RunQueryDsl};
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = diesel::PgConnection::establish(database_url).expect("payment database");
    let sql = format!(
        "SELECT count(*) AS n FROM gateway_calls WHERE payment_id = '{id}' AND kind = 'order'"
    );
    diesel::sql_query(sql)
        .get_result::<Count>(&mut conn)
        .expect("gateway calls counted")
        .n
}

/// The deadline in every case: an unpaid order is cancelled only once payment answers
/// that nothing was charged, and a payment approved as the deadline passes completes
/// its order (case 1 routes `PaymentCloseRequested`/`PaymentClosed` over its HTTP chain,
/// case 4 runs them on the async driver).
async fn deadline_in(case: shared_events::Case) {
    let options = Options {
        case,
        payment_deadline: Some(Duration::from_secs(3)),
        ..Options::default()
    };
    let stack = Stack::spawn_with(SimConfig::default(), options)
        .await
        .unwrap_or_else(|error| panic!("case {case}: the stack starts: {error:#}"));

    let unpaid = stack
        .place_order(&stack.shopper_email("deadline-unpaid"))
        .await;
    stack.redirect_url(unpaid).await;
    let order = stack.wait_for_status(unpaid, "CANCELLED").await;
    assert_eq!(order["cancel_reason"], "deadline_expired", "case {case}");
    let closed = payment_in(&stack, unpaid, "FAILED").await;
    assert!(closed["close_requested_at"].is_string(), "{closed}");

    let paid = stack
        .place_order(&stack.shopper_email("deadline-paid"))
        .await;
    let redirect = stack.redirect_url(paid).await;
    stack.sim.set_faults(Faults {
        latency_ms: 5_000,
        ..Faults::default()
    });
    let approval: Value = stack
        .shopper_visits(&redirect, None)
        .await
        .json()
        .await
        .expect("payment JSON");
    assert_eq!(approval["status"], "APPROVED", "case {case}");
    stack.sim.set_faults(Faults::default());
    let order = stack.wait_for_status(paid, "COMPLETED").await;
    assert_eq!(order["refunded_amount"], Value::Null, "case {case}");
    assert_eq!(ledger_entry(&stack, paid).cancel_calls, 0, "case {case}");
    stack.stop().await;
}

macro_rules! deadline_cases {
    ($($name:ident: $number:literal),+ $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            deadline_in(shared_events::Case::from_number($number).expect("a case")).await;
        }
    )+};
}

deadline_cases!(
    the_deadline_cancels_only_what_was_not_charged_in_case_1: 1,
    the_deadline_cancels_only_what_was_not_charged_in_case_2: 2,
    the_deadline_cancels_only_what_was_not_charged_in_case_3: 3,
    the_deadline_cancels_only_what_was_not_charged_in_case_4: 4,
);

//! Contract tests: the real client against the simulator over HTTP.

use std::time::{Duration, Instant};

use kakaopay::sim::{self, Faults, OutageWindow, SimConfig, SimHandle, SimMode};
use kakaopay::{
    ApproveRequest, CancelRequest, KakaoPayClient, KakaoPayConfig, KakaoPayError,
    PaymentActionType, PaymentMethodType, PaymentStatus, ReadyRequest, ReadyResponse, TEST_CID,
};
use secrecy::SecretString;
use serde_json::{json, Value};
use url::Url;

const USER: &str = "user-1";
const APPROVAL_URL: &str = "https://shop.example/pay/approve?order=";
const CANCEL_URL: &str = "https://shop.example/pay/cancel";
const FAIL_URL: &str = "https://shop.example/pay/fail";

struct Env {
    sim: SimHandle,
    client: KakaoPayClient,
    /// A browser that does not follow redirects, for the shopper page.
    browser: reqwest::Client,
}

async fn start_with(config: SimConfig) -> Env {
    let sim = sim::spawn(config).await.expect("simulator starts");
    let client = KakaoPayClient::new(sim.client_config()).expect("client");
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("browser");
    Env {
        sim,
        client,
        browser,
    }
}

async fn start() -> Env {
    start_with(SimConfig::default()).await
}

fn ready_req(order: &str, total: i64) -> ReadyRequest {
    ReadyRequest {
        partner_order_id: order.to_owned(),
        partner_user_id: USER.to_owned(),
        item_name: "초코파이".to_owned(),
        item_code: None,
        quantity: 1,
        total_amount: total,
        tax_free_amount: 0,
        vat_amount: None,
        approval_url: format!("{APPROVAL_URL}{order}"),
        cancel_url: CANCEL_URL.to_owned(),
        fail_url: FAIL_URL.to_owned(),
    }
}

fn approve_req(tid: &str, order: &str, pg_token: &str) -> ApproveRequest {
    ApproveRequest {
        tid: tid.to_owned(),
        partner_order_id: order.to_owned(),
        partner_user_id: USER.to_owned(),
        pg_token: pg_token.to_owned(),
        total_amount: None,
        payload: None,
    }
}

fn cancel_req(tid: &str, amount: i64) -> CancelRequest {
    CancelRequest {
        tid: tid.to_owned(),
        cancel_amount: amount,
        cancel_tax_free_amount: 0,
        cancel_vat_amount: None,
        cancel_available_amount: None,
        payload: None,
    }
}

impl Env {
    /// Opens a page like a browser would; returns the status and `Location`.
    async fn visit(&self, url: &str) -> (u16, Option<Url>) {
        let resp = self.browser.get(url).send().await.expect("page answers");
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .map(|v| Url::parse(v.to_str().expect("ascii")).expect("absolute Location"));
        (resp.status().as_u16(), location)
    }

    /// ready + shopper approval; returns the ready response and the pg_token.
    async fn authenticated(&self, order: &str, total: i64) -> (ReadyResponse, String) {
        let ready = self
            .client
            .ready(&ready_req(order, total))
            .await
            .expect("ready");
        let (status, location) = self.visit(&ready.next_redirect_pc_url).await;
        assert_eq!(status, 302);
        let token = pg_token(&location.expect("redirect"));
        (ready, token)
    }

    /// A fully approved payment; returns its tid.
    async fn paid(&self, order: &str, total: i64) -> String {
        let (ready, token) = self.authenticated(order, total).await;
        self.client
            .approve(&approve_req(&ready.tid, order, &token))
            .await
            .expect("approve");
        ready.tid
    }

    async fn status(&self, tid: &str) -> PaymentStatus {
        self.client.order(tid).await.expect("order").status
    }

    fn url(&self, path: &str) -> String {
        self.sim.base_url.join(path).expect("path").to_string()
    }

    /// A raw API call with the right key, for bodies the client cannot produce.
    async fn raw_post(&self, path: &str, auth: Option<&str>, body: &str) -> (u16, Value) {
        let mut req = self
            .browser
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        let resp = req.send().await.expect("answer");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("JSON body"))
    }
}

fn pg_token(location: &Url) -> String {
    location
        .query_pairs()
        .find(|(k, _)| k == "pg_token")
        .map(|(_, v)| v.into_owned())
        .expect("pg_token in the approval redirect")
}

fn api_code(err: &KakaoPayError) -> (u16, i32) {
    match err {
        KakaoPayError::Api {
            http_status, code, ..
        } => (*http_status, *code),
        other => panic!("expected an API error, got {other:?}"),
    }
}

const AUTH: &str = "SECRET_KEY DEV-local-secret";

// ---------------------------------------------------------------- ready / shopper

#[tokio::test]
async fn ready_returns_tid_and_redirect_urls() {
    let env = start().await;
    let ready = env
        .client
        .ready(&ready_req("o-ready", 2200))
        .await
        .expect("ready");
    assert_eq!(ready.tid.len(), 20);
    assert!(ready.tid.starts_with('T'));
    assert!(ready.tid[1..].chars().all(|c| c.is_ascii_digit()));
    for url in [
        &ready.next_redirect_pc_url,
        &ready.next_redirect_mobile_url,
        &ready.next_redirect_app_url,
    ] {
        assert!(url.starts_with(env.sim.base_url.as_str()), "{url}");
        assert!(url.contains(&format!("/__sim/pay/{}", ready.tid)), "{url}");
    }
    assert!(ready
        .android_app_scheme
        .as_deref()
        .is_some_and(|s| s.starts_with("kakaotalk://kakaopay/pg?url=")));
    assert!(ready.created_at.is_some());
    assert_eq!(ready.tms_result, Some(false));
    let ledger = env.sim.ledger();
    let entry = ledger.get(&ready.tid).expect("ledger entry");
    assert_eq!(entry.status, PaymentStatus::Ready);
    assert_eq!(entry.total_amount, 2200);
}

#[tokio::test]
async fn shopper_auto_mode_redirects_to_approval_url_with_pg_token() {
    let env = start().await;
    let ready = env
        .client
        .ready(&ready_req("o-auto", 2200))
        .await
        .expect("ready");
    let (status, location) = env.visit(&ready.next_redirect_mobile_url).await;
    assert_eq!(status, 302);
    let location = location.expect("Location");
    assert!(location
        .as_str()
        .starts_with("https://shop.example/pay/approve?"));
    // The approval_url's own query is kept.
    assert!(location
        .query_pairs()
        .any(|(k, v)| k == "order" && v == "o-auto"));
    let token = pg_token(&location);
    assert_eq!(token.len(), 20);
    assert!(token.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(env.status(&ready.tid).await, PaymentStatus::AuthPassword);
    // A refresh replays the same redirect.
    let (_, again) = env.visit(&ready.next_redirect_pc_url).await;
    assert_eq!(pg_token(&again.expect("Location")), token);
}

#[tokio::test]
async fn shopper_cancel_quits_and_redirects_to_cancel_url() {
    let env = start().await;
    let ready = env
        .client
        .ready(&ready_req("o-quit", 1000))
        .await
        .expect("ready");
    let (status, location) = env
        .visit(&format!("{}?action=cancel", ready.next_redirect_pc_url))
        .await;
    assert_eq!(status, 302);
    assert_eq!(location.expect("Location").as_str(), CANCEL_URL);
    assert_eq!(env.status(&ready.tid).await, PaymentStatus::QuitPayment);
    let err = env
        .client
        .approve(&approve_req(&ready.tid, "o-quit", "whatever-token-12345"))
        .await
        .expect_err("quit payment cannot be approved");
    assert_eq!(api_code(&err), (400, -783));
}

#[tokio::test]
async fn shopper_fail_redirects_to_fail_url() {
    let env = start().await;
    let ready = env
        .client
        .ready(&ready_req("o-fail", 1000))
        .await
        .expect("ready");
    let (status, location) = env
        .visit(&format!("{}?action=fail", ready.next_redirect_pc_url))
        .await;
    assert_eq!(status, 302);
    assert_eq!(location.expect("Location").as_str(), FAIL_URL);
    assert_eq!(env.status(&ready.tid).await, PaymentStatus::FailPayment);
}

#[tokio::test]
async fn shopper_manual_mode_shows_choices() {
    let env = start_with(SimConfig {
        mode: SimMode::Manual,
        ..SimConfig::default()
    })
    .await;
    let ready = env
        .client
        .ready(&ready_req("o-manual", 1000))
        .await
        .expect("ready");
    let resp = env
        .browser
        .get(&ready.next_redirect_pc_url)
        .send()
        .await
        .expect("page");
    assert_eq!(resp.status().as_u16(), 200);
    let html = resp.text().await.expect("html");
    for action in ["approve", "cancel", "fail"] {
        assert!(html.contains(&format!("?action={action}")), "{html}");
    }
    assert_eq!(env.status(&ready.tid).await, PaymentStatus::Ready);
    let (status, location) = env
        .visit(&format!("{}?action=approve", ready.next_redirect_pc_url))
        .await;
    assert_eq!(status, 302);
    pg_token(&location.expect("Location"));
}

#[tokio::test]
async fn shopper_page_for_unknown_tid_is_404() {
    let env = start().await;
    let (status, _) = env.visit(&env.url("__sim/pay/T0000000000000000000")).await;
    assert_eq!(status, 404);
}

// ---------------------------------------------------------------- approve

#[tokio::test]
async fn approve_happy_path() {
    let env = start().await;
    let (ready, token) = env.authenticated("o-approve", 2200).await;
    let mut req = approve_req(&ready.tid, "o-approve", &token);
    req.total_amount = Some(2200);
    req.payload = Some("memo".into());
    let approved = env.client.approve(&req).await.expect("approve");
    assert_eq!(approved.tid, ready.tid);
    assert_eq!(approved.cid, TEST_CID);
    assert_eq!(approved.partner_order_id, "o-approve");
    assert_eq!(approved.partner_user_id, USER);
    assert!(approved.aid.starts_with('A') && approved.aid.len() == 20);
    assert_eq!(approved.amount.total, 2200);
    assert_eq!(approved.amount.tax_free, 0);
    assert_eq!(approved.amount.vat, 200);
    assert_eq!(approved.payment_method_type, Some(PaymentMethodType::Money));
    assert!(approved.card_info.is_none());
    assert_eq!(approved.payload.as_deref(), Some("memo"));
    assert!(approved.approved_at.is_some() && approved.created_at.is_some());
    assert_eq!(env.status(&ready.tid).await, PaymentStatus::SuccessPayment);
}

#[tokio::test]
async fn approve_computes_vat_from_taxable_part() {
    let env = start().await;
    let mut ready_body = ready_req("o-vat", 11000);
    ready_body.tax_free_amount = 1000;
    let ready = env.client.ready(&ready_body).await.expect("ready");
    let (_, location) = env.visit(&ready.next_redirect_pc_url).await;
    let token = pg_token(&location.expect("Location"));
    let approved = env
        .client
        .approve(&approve_req(&ready.tid, "o-vat", &token))
        .await
        .expect("approve");
    assert_eq!(approved.amount.tax_free, 1000);
    assert_eq!(approved.amount.vat, 909); // round(10000 / 11)
}

#[tokio::test]
async fn approve_before_shopper_authenticated_is_701() {
    let env = start().await;
    let ready = env
        .client
        .ready(&ready_req("o-701", 1000))
        .await
        .expect("ready");
    let err = env
        .client
        .approve(&approve_req(&ready.tid, "o-701", "AAAAAAAAAAAAAAAAAAAA"))
        .await
        .expect_err("not authenticated");
    assert_eq!(api_code(&err), (400, -701));
    assert!(!err.is_transient());
    assert!(!err.outcome_unknown());
}

#[tokio::test]
async fn approve_twice_is_702_and_outcome_unknown() {
    let env = start().await;
    let (ready, token) = env.authenticated("o-702", 1000).await;
    let req = approve_req(&ready.tid, "o-702", &token);
    env.client.approve(&req).await.expect("first approve");
    let err = env.client.approve(&req).await.expect_err("second approve");
    assert_eq!(api_code(&err), (400, -702));
    assert!(err.outcome_unknown(), "-702 means: check with order");
    assert!(!err.is_transient());
    assert_eq!(env.status(&ready.tid).await, PaymentStatus::SuccessPayment);
}

#[tokio::test]
async fn approve_with_wrong_pg_token_is_708() {
    let env = start().await;
    let (ready, _token) = env.authenticated("o-708", 1000).await;
    let err = env
        .client
        .approve(&approve_req(&ready.tid, "o-708", "wrongwrongwrongwrong"))
        .await
        .expect_err("wrong token");
    assert_eq!(api_code(&err), (400, -708));
    assert!(!err.to_string().contains("wrongwrongwrongwrong"));
}

#[tokio::test]
async fn approve_with_mismatched_partner_ids_is_706_and_707() {
    let env = start().await;
    let (ready, token) = env.authenticated("o-706", 1000).await;
    let err = env
        .client
        .approve(&approve_req(&ready.tid, "another-order", &token))
        .await
        .expect_err("order id mismatch");
    assert_eq!(api_code(&err), (400, -706));
    let mut req = approve_req(&ready.tid, "o-706", &token);
    req.partner_user_id = "someone-else".into();
    let err = env
        .client
        .approve(&req)
        .await
        .expect_err("user id mismatch");
    assert_eq!(api_code(&err), (400, -707));
    // Neither failure consumed the payment.
    env.client
        .approve(&approve_req(&ready.tid, "o-706", &token))
        .await
        .expect("correct ids still approve");
}

#[tokio::test]
async fn approve_with_wrong_total_is_725() {
    let env = start().await;
    let (ready, token) = env.authenticated("o-725", 1000).await;
    let mut req = approve_req(&ready.tid, "o-725", &token);
    req.total_amount = Some(999);
    let err = env.client.approve(&req).await.expect_err("total mismatch");
    assert_eq!(api_code(&err), (400, -725));
}

#[tokio::test]
async fn approve_after_tid_expiry_is_723() {
    let env = start().await;
    let (ready, token) = env.authenticated("o-723", 1000).await;
    env.sim.advance_clock(Duration::from_secs(901));
    let err = env
        .client
        .approve(&approve_req(&ready.tid, "o-723", &token))
        .await
        .expect_err("expired");
    assert_eq!(api_code(&err), (400, -723));
    assert!(!err.is_transient());
    assert_eq!(env.status(&ready.tid).await, PaymentStatus::FailPayment);
}

#[tokio::test]
async fn configured_tid_ttl_expires_shopper_page_to_fail_url() {
    let env = start_with(SimConfig {
        tid_ttl: Duration::from_secs(60),
        ..SimConfig::default()
    })
    .await;
    let ready = env
        .client
        .ready(&ready_req("o-ttl", 1000))
        .await
        .expect("ready");
    env.sim.advance_clock(Duration::from_secs(30));
    assert_eq!(env.status(&ready.tid).await, PaymentStatus::Ready);
    env.sim.advance_clock(Duration::from_secs(31));
    let (status, location) = env.visit(&ready.next_redirect_pc_url).await;
    assert_eq!(status, 302);
    assert_eq!(location.expect("Location").as_str(), FAIL_URL);
    assert_eq!(env.status(&ready.tid).await, PaymentStatus::FailPayment);
}

#[tokio::test]
async fn unknown_tid_is_721_everywhere() {
    let env = start().await;
    let tid = "T9999999999999999999";
    let err = env
        .client
        .approve(&approve_req(tid, "o", "AAAAAAAAAAAAAAAAAAAA"))
        .await
        .expect_err("approve");
    assert_eq!(api_code(&err), (400, -721));
    let err = env
        .client
        .cancel(&cancel_req(tid, 100))
        .await
        .expect_err("cancel");
    assert_eq!(api_code(&err), (400, -721));
    let err = env.client.order(tid).await.expect_err("order");
    assert_eq!(api_code(&err), (400, -721));
    assert!(!err.is_transient() && !err.outcome_unknown());
}

#[tokio::test]
async fn decline_is_780_with_extras() {
    let env = start_with(SimConfig {
        faults: Faults {
            decline_rate: 1.0,
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await;
    let (ready, token) = env.authenticated("o-780", 1000).await;
    let err = env
        .client
        .approve(&approve_req(&ready.tid, "o-780", &token))
        .await
        .expect_err("declined");
    assert_eq!(api_code(&err), (400, -780));
    assert_eq!(err.method_result_code(), Some("DECLINED"));
    assert!(!err.is_transient());
    assert!(!err.outcome_unknown());
    assert_eq!(env.status(&ready.tid).await, PaymentStatus::FailPayment);
    // Revisiting the payment page now leads to fail_url.
    let (_, location) = env.visit(&ready.next_redirect_pc_url).await;
    assert_eq!(location.expect("Location").as_str(), FAIL_URL);

    // The wire body carries the new-API keys and both extras fields.
    let (ready, token) = env.authenticated("o-780-raw", 1000).await;
    let body = json!({"cid": TEST_CID, "tid": ready.tid, "partner_order_id": "o-780-raw",
        "partner_user_id": USER, "pg_token": token});
    let (status, body) = env
        .raw_post("online/v1/payment/approve", Some(AUTH), &body.to_string())
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error_code"], -780);
    assert_eq!(body["error_message"], "approval failure!");
    assert_eq!(body["extras"]["method_result_code"], "DECLINED");
    assert!(body["extras"]["method_result_message"].is_string());
}

#[tokio::test]
async fn user_locked_decline_is_transient_and_retryable() {
    let env = start().await;
    let (ready, token) = env.authenticated("o-locked", 1000).await;
    env.sim.set_faults(Faults {
        decline_rate: 1.0,
        decline_code: Some("USER_LOCKED".into()),
        ..Faults::default()
    });
    let req = approve_req(&ready.tid, "o-locked", &token);
    let err = env.client.approve(&req).await.expect_err("locked");
    assert_eq!(api_code(&err), (400, -780));
    assert!(err.is_transient());
    env.sim.set_faults(Faults::default());
    env.client.approve(&req).await.expect("retry succeeds");
}

// ---------------------------------------------------------------- cancel

#[tokio::test]
async fn full_cancel_is_cancel_payment() {
    let env = start().await;
    let tid = env.paid("o-cancel", 2200).await;
    let mut req = cancel_req(&tid, 2200);
    req.cancel_available_amount = Some(2200);
    let canceled = env.client.cancel(&req).await.expect("cancel");
    assert_eq!(canceled.status, PaymentStatus::CancelPayment);
    assert_eq!(canceled.tid, tid);
    assert!(canceled.aid.starts_with('A'));
    assert_eq!(canceled.amount.total, 2200);
    assert_eq!(canceled.approved_cancel_amount.total, 2200);
    assert_eq!(canceled.approved_cancel_amount.vat, 200);
    assert_eq!(canceled.canceled_amount.total, 2200);
    assert_eq!(canceled.cancel_available_amount.total, 0);
    assert!(canceled.canceled_at.is_some());
    assert_eq!(env.status(&tid).await, PaymentStatus::CancelPayment);
}

#[tokio::test]
async fn partial_cancels_then_the_rest() {
    let env = start().await;
    let tid = env.paid("o-part", 2200).await;
    let first = env
        .client
        .cancel(&cancel_req(&tid, 700))
        .await
        .expect("partial");
    assert_eq!(first.status, PaymentStatus::PartCancelPayment);
    assert_eq!(first.canceled_amount.total, 700);
    assert_eq!(first.cancel_available_amount.total, 1500);
    let second = env
        .client
        .cancel(&cancel_req(&tid, 1500))
        .await
        .expect("rest");
    assert_eq!(second.status, PaymentStatus::CancelPayment);
    assert_eq!(second.canceled_amount.total, 2200);
    // VAT of the refunds adds up to the original VAT despite rounding.
    assert_eq!(second.canceled_amount.vat, 200);
    assert_eq!(second.cancel_available_amount, kakaopay::Amount::default());
}

#[tokio::test]
async fn over_cancel_is_710() {
    let env = start().await;
    let tid = env.paid("o-710", 1000).await;
    env.client
        .cancel(&cancel_req(&tid, 600))
        .await
        .expect("partial");
    let err = env
        .client
        .cancel(&cancel_req(&tid, 500))
        .await
        .expect_err("more than remains");
    assert_eq!(api_code(&err), (400, -710));
    assert!(!err.is_transient() && !err.outcome_unknown());
}

#[tokio::test]
async fn cancel_of_unapproved_payment_is_784() {
    let env = start().await;
    let (ready, _) = env.authenticated("o-784", 1000).await;
    let err = env
        .client
        .cancel(&cancel_req(&ready.tid, 1000))
        .await
        .expect_err("not approved");
    assert_eq!(api_code(&err), (400, -784));
}

#[tokio::test]
async fn stale_cancel_available_amount_is_rejected() {
    let env = start().await;
    let tid = env.paid("o-replay", 1000).await;
    let mut req = cancel_req(&tid, 300);
    req.cancel_available_amount = Some(1000);
    env.client.cancel(&req).await.expect("first partial cancel");
    // The same request replayed carries a stale balance: no second refund.
    let err = env.client.cancel(&req).await.expect_err("replay");
    assert_eq!(api_code(&err), (400, -722));
    let order = env.client.order(&tid).await.expect("order");
    assert_eq!(order.canceled_amount.expect("canceled").total, 300);
}

// ---------------------------------------------------------------- order

#[tokio::test]
async fn order_lookup_follows_the_lifecycle() {
    let env = start().await;
    let ready = env
        .client
        .ready(&ready_req("o-life", 2200))
        .await
        .expect("ready");
    let order = env.client.order(&ready.tid).await.expect("order");
    assert_eq!(order.status, PaymentStatus::Ready);
    assert_eq!(order.partner_order_id, "o-life");
    assert_eq!(order.partner_user_id, USER);
    assert_eq!(order.cid, TEST_CID);
    assert!(order.canceled_amount.is_none() && order.cancel_available_amount.is_none());
    assert!(order.payment_action_details.is_empty());

    let (_, location) = env.visit(&ready.next_redirect_pc_url).await;
    let token = pg_token(&location.expect("Location"));
    assert_eq!(env.status(&ready.tid).await, PaymentStatus::AuthPassword);

    env.client
        .approve(&approve_req(&ready.tid, "o-life", &token))
        .await
        .expect("approve");
    let order = env.client.order(&ready.tid).await.expect("order");
    assert_eq!(order.status, PaymentStatus::SuccessPayment);
    assert_eq!(order.amount.expect("amount").total, 2200);
    assert_eq!(
        order.cancel_available_amount.expect("available").total,
        2200
    );
    assert!(order.approved_at.is_some());
    assert_eq!(order.payment_action_details.len(), 1);
    assert_eq!(
        order.payment_action_details[0].payment_action_type,
        PaymentActionType::Payment
    );

    env.client
        .cancel(&cancel_req(&ready.tid, 200))
        .await
        .expect("partial");
    assert_eq!(
        env.status(&ready.tid).await,
        PaymentStatus::PartCancelPayment
    );
    env.client
        .cancel(&cancel_req(&ready.tid, 2000))
        .await
        .expect("rest");
    let order = env.client.order(&ready.tid).await.expect("order");
    assert_eq!(order.status, PaymentStatus::CancelPayment);
    assert_eq!(order.canceled_amount.expect("canceled").total, 2200);
    let kinds: Vec<_> = order
        .payment_action_details
        .iter()
        .map(|d| (d.payment_action_type, d.amount))
        .collect();
    assert_eq!(
        kinds,
        [
            (PaymentActionType::Payment, 2200),
            (PaymentActionType::Cancel, 200),
            (PaymentActionType::Cancel, 2000)
        ]
    );
}

// ---------------------------------------------------------------- auth and validation

#[tokio::test]
async fn wrong_secret_key_is_401_and_not_transient() {
    let env = start().await;
    let secret = "DEV-wrong-key-9f8e7d";
    let client = KakaoPayClient::new(KakaoPayConfig {
        secret_key: SecretString::from(secret),
        ..env.sim.client_config()
    })
    .expect("client");
    let err = client
        .ready(&ready_req("o-401", 1000))
        .await
        .expect_err("bad key");
    assert_eq!(api_code(&err), (401, -401));
    assert!(!err.is_transient());
    assert!(!err.outcome_unknown());
    for text in [err.to_string(), format!("{err:?}"), format!("{client:?}")] {
        assert!(!text.contains(secret), "secret leaked: {text}");
        assert!(
            !text.contains("DEV-local-secret"),
            "sim secret leaked: {text}"
        );
    }
    assert!(env.sim.ledger().is_empty());
}

#[tokio::test]
async fn missing_or_malformed_authorization_is_401() {
    let env = start().await;
    let body = json!({"cid": TEST_CID, "tid": "T1"}).to_string();
    for auth in [None, Some("KakaoAK DEV-local-secret"), Some("SECRET_KEY")] {
        let (status, body) = env.raw_post("online/v1/payment/order", auth, &body).await;
        assert_eq!(status, 401, "{auth:?}");
        assert_eq!(body["error_code"], -401);
    }
    // The reported DEV_SECRET_KEY scheme is accepted too.
    let (status, body) = env
        .raw_post(
            "online/v1/payment/order",
            Some("DEV_SECRET_KEY DEV-local-secret"),
            &body,
        )
        .await;
    assert_eq!((status, body["error_code"].as_i64()), (400, Some(-721)));
}

#[tokio::test]
async fn wrong_cid_is_731() {
    let env = start().await;
    let client = KakaoPayClient::new(KakaoPayConfig {
        cid: "TCSUBSCRIP".into(),
        ..env.sim.client_config()
    })
    .expect("client");
    let err = client
        .ready(&ready_req("o-731", 1000))
        .await
        .expect_err("cid");
    assert_eq!(api_code(&err), (400, -731));
}

fn raw_ready_body() -> Value {
    json!({
        "cid": TEST_CID,
        "partner_order_id": "o-raw",
        "partner_user_id": USER,
        "item_name": "초코파이",
        "quantity": 1,
        "total_amount": 2200,
        "tax_free_amount": 0,
        "approval_url": "https://shop.example/approve",
        "cancel_url": CANCEL_URL,
        "fail_url": FAIL_URL,
    })
}

#[tokio::test]
async fn validation_errors_are_minus_2_naming_the_field() {
    let env = start().await;
    let cases: Vec<(Value, &str)> = vec![
        (without(raw_ready_body(), "item_name"), "item_name"),
        (
            without(raw_ready_body(), "tax_free_amount"),
            "tax_free_amount",
        ),
        (
            with(raw_ready_body(), "total_amount", json!("abc")),
            "total_amount",
        ),
        (with(raw_ready_body(), "quantity", json!(1.5)), "quantity"),
        (
            with(raw_ready_body(), "partner_order_id", json!("x".repeat(101))),
            "partner_order_id",
        ),
        (
            with(
                raw_ready_body(),
                "approval_url",
                json!(format!("https://a.example/{}", "x".repeat(250))),
            ),
            "approval_url",
        ),
        (
            with(raw_ready_body(), "fail_url", json!("not a url")),
            "fail_url",
        ),
        (without(raw_ready_body(), "cid"), "cid"),
    ];
    for (body, field) in cases {
        let (status, resp) = env
            .raw_post("online/v1/payment/ready", Some(AUTH), &body.to_string())
            .await;
        assert_eq!(status, 400, "{field}: {resp}");
        assert_eq!(resp["error_code"], -2, "{field}: {resp}");
        let message = resp["error_message"].as_str().expect("message");
        assert!(message.contains(field), "{field}: {message}");
    }
    let (status, resp) = env
        .raw_post("online/v1/payment/ready", Some(AUTH), "{not json")
        .await;
    assert_eq!((status, resp["error_code"].as_i64()), (400, Some(-2)));
    assert!(env.sim.ledger().is_empty());
}

#[tokio::test]
async fn tax_free_above_total_is_722() {
    let env = start().await;
    let mut req = ready_req("o-722", 1000);
    req.tax_free_amount = 1001;
    let err = env.client.ready(&req).await.expect_err("amounts");
    assert_eq!(api_code(&err), (400, -722));
}

#[tokio::test]
async fn numeric_strings_are_accepted_like_the_official_samples() {
    let env = start().await;
    let body = json!({
        "cid": TEST_CID,
        "partner_order_id": "o-strings",
        "partner_user_id": USER,
        "item_name": "초코파이",
        "quantity": "1",
        "total_amount": "2200",
        "vat_amount": "200",
        "tax_free_amount": "0",
        "payment_method_type": "CARD",
        "approval_url": "https://shop.example/approve",
        "cancel_url": CANCEL_URL,
        "fail_url": FAIL_URL,
    });
    let (status, ready) = env
        .raw_post("online/v1/payment/ready", Some(AUTH), &body.to_string())
        .await;
    assert_eq!(status, 200, "{ready}");
    let tid = ready["tid"].as_str().expect("tid").to_owned();
    let (_, location) = env
        .visit(ready["next_redirect_pc_url"].as_str().expect("url"))
        .await;
    let token = pg_token(&location.expect("Location"));
    let approved = env
        .client
        .approve(&approve_req(&tid, "o-strings", &token))
        .await
        .expect("approve");
    assert_eq!(approved.amount.total, 2200);
    assert_eq!(approved.amount.vat, 200);
    assert_eq!(approved.payment_method_type, Some(PaymentMethodType::Card));
    assert!(approved
        .card_info
        .expect("card_info")
        .install_month
        .is_some());
    let order = env.client.order(&tid).await.expect("order");
    assert!(order.selected_card_info.is_some());
}

fn without(mut v: Value, key: &str) -> Value {
    v.as_object_mut().expect("object").remove(key);
    v
}

fn with(mut v: Value, key: &str, value: Value) -> Value {
    v[key] = value;
    v
}

// ---------------------------------------------------------------- client robustness

/// A tiny server with canned answers: fields the client does not know, a
/// legacy error body, and a non-JSON error page.
async fn canned_server() -> (Url, actix_web::dev::ServerHandle) {
    use actix_web::{web, App, HttpResponse, HttpServer};
    let server = HttpServer::new(|| {
        App::new()
            .route(
                "/online/v1/payment/ready",
                web::post().to(|| async {
                    HttpResponse::Ok().json(json!({
                        "tid": "T1234567890123456789",
                        "tms_result": true,
                        "next_redirect_app_url": "https://a",
                        "next_redirect_mobile_url": "https://m",
                        "next_redirect_pc_url": "https://p",
                        "created_at": "2023-07-15T21:18:22",
                        "brand_new_field": {"x": [1, 2, 3]},
                        "another": null
                    }))
                }),
            )
            .route(
                "/online/v1/payment/order",
                web::post().to(|| async {
                    HttpResponse::InternalServerError().json(json!({
                        "code": -1, "msg": "internal error", "extras": null
                    }))
                }),
            )
            .route(
                "/online/v1/payment/cancel",
                web::post().to(|| async {
                    HttpResponse::BadGateway()
                        .content_type("text/html")
                        .body(format!("<html>{}</html>", "bad gateway ".repeat(100)))
                }),
            )
    })
    .workers(1)
    .disable_signals()
    .bind(("127.0.0.1", 0))
    .expect("bind");
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    (Url::parse(&format!("http://{addr}/")).expect("url"), handle)
}

#[tokio::test]
async fn client_ignores_unknown_fields_and_reads_legacy_errors() {
    let (base_url, server) = canned_server().await;
    let client = KakaoPayClient::new(KakaoPayConfig::new(base_url, SecretString::from("k")))
        .expect("client");
    let ready = client
        .ready(&ready_req("o", 1))
        .await
        .expect("unknown fields ignored");
    assert_eq!(ready.tid, "T1234567890123456789");
    assert_eq!(ready.tms_result, Some(true));

    let err = client.order("T1").await.expect_err("legacy error body");
    assert_eq!(api_code(&err), (500, -1));
    assert!(err.is_transient() && err.outcome_unknown());

    let err = client.cancel(&cancel_req("T1", 1)).await.expect_err("html");
    match &err {
        KakaoPayError::UnexpectedResponse {
            http_status,
            detail,
        } => {
            assert_eq!(*http_status, 502);
            assert!(detail.len() < 400, "truncated: {}", detail.len());
        }
        other => panic!("expected UnexpectedResponse, got {other:?}"),
    }
    assert!(err.is_transient());
    server.stop(false).await;
}

// ---------------------------------------------------------------- faults

#[tokio::test]
async fn outage_at_runtime_is_503_9798_and_transient() {
    let env = start().await;
    let resp = env
        .browser
        .put(env.url("__sim/faults"))
        .json(&json!({"outage": true}))
        .send()
        .await
        .expect("put faults");
    assert_eq!(resp.status().as_u16(), 200);
    let view: Value = env
        .browser
        .get(env.url("__sim/faults"))
        .send()
        .await
        .expect("get faults")
        .json()
        .await
        .expect("json");
    assert_eq!(view["outage"], true);
    assert_eq!(view["outage_active"], true);

    let err = env
        .client
        .ready(&ready_req("o-outage", 1000))
        .await
        .expect_err("outage");
    assert_eq!(api_code(&err), (503, -9798));
    assert!(err.is_transient());
    assert!(env.sim.ledger().is_empty(), "an outage has no effect");

    env.browser
        .put(env.url("__sim/faults"))
        .json(&json!({"outage": false}))
        .send()
        .await
        .expect("put faults");
    env.client
        .ready(&ready_req("o-outage", 1000))
        .await
        .expect("back up");
}

#[tokio::test]
async fn scheduled_outage_window_applies_from_start() {
    let env = start_with(SimConfig {
        outage_window: Some(OutageWindow {
            after: Duration::ZERO,
            duration: Some(Duration::from_secs(3600)),
        }),
        ..SimConfig::default()
    })
    .await;
    let err = env.client.order("T1").await.expect_err("outage");
    assert_eq!(api_code(&err), (503, -9798));
    assert!(env.sim.faults().outage_active);
}

#[tokio::test]
async fn bad_faults_update_is_rejected() {
    let env = start().await;
    for body in [json!({"error_rate": 2.0}), json!({"no_such_knob": 1})] {
        let resp = env
            .browser
            .put(env.url("__sim/faults"))
            .json(&body)
            .send()
            .await
            .expect("put");
        assert_eq!(resp.status().as_u16(), 400, "{body}");
    }
    assert_eq!(env.sim.faults().faults, Faults::default());
}

#[tokio::test]
async fn error_rate_gives_transient_errors_without_effect() {
    let env = start_with(SimConfig {
        faults: Faults {
            error_rate: 1.0,
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await;
    let err = env
        .client
        .ready(&ready_req("o-500", 1000))
        .await
        .expect_err("injected");
    assert_eq!(api_code(&err), (500, -500));
    assert!(err.is_transient());
    assert!(
        err.outcome_unknown(),
        "a 500 may have taken effect, as far as the client knows"
    );
    assert!(env.sim.ledger().is_empty());
}

#[tokio::test]
async fn lost_response_takes_effect_and_order_reveals_it() {
    let env = start().await;
    let (ready, token) = env.authenticated("o-lost", 1000).await;
    env.sim.set_faults(Faults {
        lost_response_rate: 1.0,
        ..Faults::default()
    });
    let err = env
        .client
        .approve(&approve_req(&ready.tid, "o-lost", &token))
        .await
        .expect_err("response lost");
    assert!(err.outcome_unknown());
    env.sim.set_faults(Faults::default());
    assert_eq!(env.status(&ready.tid).await, PaymentStatus::SuccessPayment);
}

#[tokio::test]
async fn latency_knob_delays_api_calls() {
    let env = start_with(SimConfig {
        faults: Faults {
            latency_ms: 300,
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await;
    let started = Instant::now();
    env.client
        .ready(&ready_req("o-slow", 1000))
        .await
        .expect("ready");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn client_timeout_is_timeout_error() {
    let env = start_with(SimConfig {
        faults: Faults {
            latency_ms: 3000,
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await;
    let client = KakaoPayClient::new(KakaoPayConfig {
        timeout: Duration::from_millis(300),
        ..env.sim.client_config()
    })
    .expect("client");
    let started = Instant::now();
    let err = client.order("T1").await.expect_err("times out");
    assert!(matches!(err, KakaoPayError::Timeout), "{err:?}");
    assert!(started.elapsed() < Duration::from_millis(2500));
    assert!(err.is_transient() && err.outcome_unknown());
}

#[tokio::test]
async fn connection_refused_is_connect_and_transient() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let client = KakaoPayClient::new(KakaoPayConfig::new(
        Url::parse(&format!("http://127.0.0.1:{port}/")).expect("url"),
        SecretString::from("k"),
    ))
    .expect("client");
    let err = client.order("T1").await.expect_err("refused");
    assert!(matches!(err, KakaoPayError::Connect(_)), "{err:?}");
    assert!(err.is_transient());
    assert!(!err.outcome_unknown());
}

#[tokio::test]
async fn stopped_simulator_refuses_connections() {
    let env = start().await;
    let client = env.client.clone();
    env.sim.stop().await;
    let err = client.order("T1").await.expect_err("stopped");
    assert!(matches!(err, KakaoPayError::Connect(_)), "{err:?}");
}

// ---------------------------------------------------------------- ledger and misc

#[tokio::test]
async fn ledger_counts_approve_and_cancel_calls() {
    let env = start().await;
    let (ready, token) = env.authenticated("o-ledger", 1000).await;
    let req = approve_req(&ready.tid, "o-ledger", &token);
    env.client.approve(&req).await.expect("approve");
    env.client.approve(&req).await.expect_err("duplicate");
    env.client
        .cancel(&cancel_req(&ready.tid, 400))
        .await
        .expect("partial");
    env.client
        .cancel(&cancel_req(&ready.tid, 4000))
        .await
        .expect_err("over-cancel");

    let ledger = env.sim.ledger();
    let entry = ledger.get(&ready.tid).expect("entry");
    assert_eq!(entry.partner_order_id, "o-ledger");
    assert_eq!(entry.status, PaymentStatus::PartCancelPayment);
    assert_eq!(entry.approve_calls, 2);
    assert!(entry.approved);
    assert_eq!(entry.cancel_calls, 2);
    assert_eq!(entry.canceled_amount, 400);
    assert_eq!(entry.total_amount, 1000);
    assert_eq!(ledger.by_partner_order_id("o-ledger").count(), 1);

    // The HTTP shape other test suites rely on.
    let raw: Value = env
        .browser
        .get(env.url("__sim/ledger"))
        .send()
        .await
        .expect("ledger")
        .json()
        .await
        .expect("json");
    let entry = &raw[&ready.tid];
    assert_eq!(entry["partner_order_id"], "o-ledger");
    assert_eq!(entry["status"], "PART_CANCEL_PAYMENT");
    assert_eq!(entry["approve_calls"], 2);
    assert_eq!(entry["approved"], true);
    assert_eq!(entry["cancel_calls"], 2);
    assert_eq!(entry["canceled_amount"], 400);
    assert_eq!(entry["total_amount"], 1000);
    let parsed: sim::Ledger = serde_json::from_value(raw).expect("typed ledger parses");
    assert_eq!(parsed, env.sim.ledger());
}

#[tokio::test]
async fn healthz_and_unknown_paths() {
    let env = start().await;
    let resp = env
        .browser
        .get(env.url("healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(resp.status().as_u16(), 200);
    let (status, body) = env
        .raw_post("online/v1/payment/nope", Some(AUTH), "{}")
        .await;
    assert_eq!((status, body["error_code"].as_i64()), (404, Some(-404)));
}

#[actix_web::test]
async fn spawn_works_inside_an_actix_runtime() {
    let env = start().await;
    env.client
        .ready(&ready_req("o-actix", 1000))
        .await
        .expect("ready");
    env.sim.stop().await;
}

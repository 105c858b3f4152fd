//! The storefront in a real browser (Debian's Chromium, headless): three shoppers' walks
//! through the whole shop — the catalog, Kakao Pay's page (the simulator, in manual mode:
//! the shopper clicks), the order page live — against real PostgreSQL, Kafka, MongoDB
//! and SMTP. Every page is saved as a screenshot (`driver::walk_folder`); the README's
//! pictures are these.

mod driver;

use driver::Browser;
use e2e::Stack;
use kakaopay::sim::{SimConfig, SimMode};
use uuid::Uuid;

async fn shop() -> Stack {
    let sim = SimConfig {
        mode: SimMode::Manual,
        ..SimConfig::default()
    };
    Stack::spawn(sim).await.expect("stack starts")
}

/// Puts two products in the cart and checks out as `email`; ends on Kakao Pay's page.
async fn check_out(browser: &mut Browser, stack: &Stack, lang: &str, email: &str) {
    browser
        .goto(&format!("{}/shop?lang={lang}", stack.order.url()))
        .await;
    browser
        .find("[data-testid=\"product-house-blend-200g\"]")
        .await;
    browser.shot("shop").await;
    browser
        .type_into("[data-testid=\"qty-house-blend-200g\"]", "2")
        .await;
    browser
        .type_into("[data-testid=\"qty-paper-filters-100\"]", "1")
        .await;
    browser.type_into("#email", email).await;
    browser
        .find("#cart-lines li[data-sku=\"paper-filters-100\"]")
        .await;
    browser.shot("cart").await;
    browser.click("#place-order").await;
    browser.find("#approve").await;
    browser.shot("kakao-pay").await;
}

/// The order the page shows (its address is `/shop/orders/<id>`).
async fn order_on_page(browser: &Browser) -> Uuid {
    browser.find("#order-id").await;
    let url = browser.url().await;
    let id = url.rsplit('/').next().unwrap_or_default();
    let id = id.split(['?', '#']).next().unwrap_or_default();
    id.parse()
        .unwrap_or_else(|_| panic!("an order page: {url}"))
}

/// What `css` says of `attribute`, once an element matches.
async fn attribute(browser: &Browser, css: &str, attribute: &str) -> String {
    let element = browser.find(css).await;
    element
        .attr(attribute)
        .await
        .expect("reads the attribute")
        .unwrap_or_default()
}

/// The mails the order page lists as sent, by type, once there are `count`.
async fn sent_mails(browser: &Browser, count: usize) -> Vec<String> {
    let mails = browser
        .find_all("#mails li[data-status=\"SENT\"]", count)
        .await;
    let mut kinds = Vec::new();
    for mail in mails {
        kinds.push(
            mail.attr("data-type")
                .await
                .ok()
                .flatten()
                .unwrap_or_default(),
        );
    }
    kinds.sort();
    kinds
}

const PAID: u64 = 2 * 12_000 + 4_500;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paid_order_ends_completed_with_both_mails_sent() {
    let stack = shop().await;
    let mut browser = Browser::start("paid").await;
    check_out(&mut browser, &stack, "ko", &stack.shopper_email("paid")).await;
    browser.click("#approve").await;
    let id = order_on_page(&browser).await;
    browser
        .find("#order-status[data-status=\"COMPLETED\"]")
        .await;
    browser
        .find_all("#timeline li[data-event-type=\"OrderCompleted\"]", 1)
        .await;
    assert_eq!(
        sent_mails(&browser, 2).await,
        ["order_completed", "payment_completed"]
    );
    browser.shot("order-completed").await;
    // What anyone holding only the id sees (the token stayed in the browser).
    let order: serde_json::Value = stack
        .http
        .get(format!("{}/orders/{id}", stack.order.url()))
        .send()
        .await
        .expect("order-service answers")
        .json()
        .await
        .expect("order JSON");
    assert_eq!(order["status"], "COMPLETED");
    assert_eq!(order["total_amount"], PAID);
    browser.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payment_the_shopper_cancels_at_kakao_pay_cancels_the_order() {
    let stack = shop().await;
    let mut browser = Browser::start("cancelled-at-kakao-pay").await;
    check_out(&mut browser, &stack, "en", &stack.shopper_email("gave-up")).await;
    browser.click("#cancel").await;
    let id = order_on_page(&browser).await;
    browser
        .find("#order-status[data-status=\"CANCELLED\"]")
        .await;
    let reason = attribute(&browser, "#cancel-reason", "data-reason").await;
    assert_eq!(reason, "payment_cancelled_by_shopper");
    assert_eq!(sent_mails(&browser, 1).await, ["order_cancelled"]);
    browser.shot("order-cancelled").await;
    let charged = stack
        .sim
        .ledger()
        .payments
        .values()
        .filter(|p| p.partner_order_id == id.to_string() && p.approved)
        .count();
    assert_eq!(charged, 0, "nothing was charged");
    browser.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paid_order_cancelled_on_its_page_is_refunded() {
    let stack = shop().await;
    let mut browser = Browser::start("refunded").await;
    check_out(&mut browser, &stack, "en", &stack.shopper_email("refund")).await;
    browser.click("#approve").await;
    let id = order_on_page(&browser).await;
    browser
        .find("#order-status[data-status=\"COMPLETED\"]")
        .await;
    browser.shot("order-paid").await;
    browser.click("#cancel-order").await;
    browser.find("#cancel-order[data-confirm=\"1\"]").await;
    browser.shot("cancel-confirm").await;
    browser.click("#cancel-order").await;
    browser
        .find("#order-status[data-status=\"CANCELLED\"]")
        .await;
    let refunded = attribute(&browser, "#refunded-amount", "data-amount").await;
    assert_eq!(refunded, PAID.to_string());
    let mails = sent_mails(&browser, 3).await;
    assert!(mails.contains(&"order_refunded".to_owned()), "{mails:?}");
    browser.shot("order-refunded").await;
    let ledger = stack.sim.ledger();
    let payment = ledger
        .payments
        .values()
        .find(|p| p.partner_order_id == id.to_string())
        .expect("the order's payment");
    assert_eq!(
        payment.canceled_amount, PAID as i64,
        "refunded at Kakao Pay"
    );
    browser.stop().await;
    stack.stop().await;
}

//! A service restarted mid-flow loses nothing it had accepted.

use e2e::Stack;
use kakaopay::sim::SimConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orders_accepted_across_restarts_of_every_service_still_complete() {
    let mut stack = Stack::spawn(SimConfig::default())
        .await
        .expect("stack starts");

    // payment-service is down when the order is accepted: the event waits in Kafka.
    stack.payment.stop().await;
    let first = stack.shopper_email("restart-payment");
    let first_id = stack.place_order(&first).await;
    stack.payment.start_again().await.expect("payment restarts");
    let redirect = stack.redirect_url(first_id).await;

    // The notifier is down while the order completes: its mails wait in Kafka.
    stack.notifier.stop().await;
    assert_eq!(stack.shopper_visits(&redirect, None).await.status(), 200);
    stack.wait_for_status(first_id, "COMPLETED").await;
    stack
        .notifier
        .start_again()
        .await
        .expect("notifier restarts");
    assert_eq!(stack.mails_to(&first, 2).await.len(), 2);

    // order-service stops right after accepting: its outbox still publishes the order.
    let second = stack.shopper_email("restart-order");
    let second_id = stack.place_order(&second).await;
    stack.order.stop().await;
    stack.order.start_again().await.expect("order restarts");
    let redirect = stack.redirect_url(second_id).await;
    assert_eq!(stack.shopper_visits(&redirect, None).await.status(), 200);
    stack.wait_for_status(second_id, "COMPLETED").await;
    let mails = stack.mails_to(&second, 2).await;
    assert_eq!(mails.len(), 2);

    // Nothing was mailed twice to the first shopper by the restarts.
    assert_eq!(stack.infra.maildir.to(&first).len(), 2);
    stack.stop().await;
}

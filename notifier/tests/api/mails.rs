//! Each mail kind, in Korean and English, with its history record.

use crate::helpers::*;
use mongodb::bson::doc;
use uuid::Uuid;

/// Checks the mail and its history for one event.
async fn assert_mailed(
    app: &TestApp,
    event: &shared_events::Event,
    recipient: &str,
    kind: &str,
    subject_has: &str,
) -> ReceivedMail {
    let mail = app.wait_for_mails(recipient, 1).await.remove(0);
    let order_id = event.order_id.to_string();
    assert!(
        mail.subject.contains(&order_id),
        "subject names the order: {}",
        mail.subject
    );
    assert!(
        mail.subject.contains(subject_has),
        "{:?} in {}",
        subject_has,
        mail.subject
    );
    assert_eq!(mail.to, recipient);
    assert_eq!(mail.from, "shop@example.com");
    assert!(mail.has_date, "Date header");
    assert_eq!(mail.content_type, "multipart/alternative");
    for body in [&mail.text, &mail.html] {
        assert!(body.contains(&order_id), "body names the order: {body}");
        assert!(body.contains("Tumbler"), "body lists the items: {body}");
        assert!(body.contains("32,000"), "body has the total: {body}");
    }
    assert!(mail.html.contains("<table"), "HTML part: {}", mail.html);

    let docs = app.wait_for_final_documents(event.order_id, 1).await;
    assert_eq!(docs.len(), 1, "{docs:?}");
    let d = &docs[0];
    assert_eq!(d.get_str("status").ok(), Some("SENT"), "{d:?}");
    assert_eq!(d.get_str("type").ok(), Some(kind));
    assert_eq!(d.get_str("recipient").ok(), Some(recipient));
    assert_eq!(
        d.get_str("event_id").ok(),
        Some(event.event_id.to_string().as_str())
    );
    assert_eq!(
        d.get_i32("attempts")
            .ok()
            .map(i64::from)
            .or(d.get_i64("attempts").ok()),
        Some(1)
    );
    assert_eq!(d.get_str("subject").ok(), Some(mail.subject.as_str()));
    assert!(d.get_datetime("sent_at").is_ok(), "{d:?}");
    assert!(d.get_datetime("event_occurred_at").is_ok(), "{d:?}");
    let message_id = d.get_str("smtp_message_id").expect("message id");
    assert_eq!(message_id.trim_matches(['<', '>']), mail.message_id);

    // The API shows the same record.
    let items = app.history(event.order_id).await;
    assert_eq!(items.len(), 1, "{items:?}");
    let item = &items[0];
    for field in [
        "id",
        "event_id",
        "order_id",
        "recipient",
        "type",
        "status",
        "attempts",
        "last_error",
        "subject",
        "smtp_message_id",
        "created_at",
        "updated_at",
        "sent_at",
        "event_occurred_at",
    ] {
        assert!(
            item.get(field).is_some(),
            "API record lacks {field}: {item}"
        );
    }
    assert_eq!(item["status"], "SENT");
    assert_eq!(item["type"], kind);
    assert_eq!(item["attempts"], 1);
    assert_eq!(item["order_id"], order_id);
    mail
}

#[tokio::test(flavor = "multi_thread")]
async fn every_mail_kind_is_sent_in_korean() {
    let app = spawn_app().await;
    let cases = [
        ("payment_completed", "결제가 완료되었습니다"),
        ("order_completed", "주문이 완료되었습니다"),
        ("order_cancelled", "주문이 취소되었습니다"),
        ("order_refunded", "환불되었습니다"),
    ];
    let mut published = Vec::new();
    for (kind, subject) in cases {
        let recipient = unique_recipient("ko");
        let order = snapshot(&recipient, "ko", "아메리카노");
        let order_id = Uuid::now_v7();
        let event = match kind {
            "payment_completed" => payment_approved(order_id, &order),
            "order_completed" => order_completed(order_id, &order),
            "order_cancelled" => order_cancelled(order_id, &order, None),
            _ => order_cancelled(order_id, &order, Some(32_000)),
        };
        app.publish(&event).await;
        published.push((event, recipient, kind, subject));
    }
    for (event, recipient, kind, subject) in &published {
        let mail = assert_mailed(&app, event, recipient, kind, subject).await;
        assert!(mail.text.contains("아메리카노 × 2"), "{}", mail.text);
        assert!(mail.text.contains("32,000원"), "{}", mail.text);
        assert!(mail.html.contains("lang=\"ko\""), "{}", mail.html);
    }
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_mail_kind_is_sent_in_english() {
    let app = spawn_app().await;
    let cases = [
        ("payment_completed", "Payment received"),
        ("order_completed", "is complete"),
        ("order_cancelled", "was cancelled"),
        ("order_refunded", "cancelled and refunded"),
    ];
    let mut published = Vec::new();
    for (kind, subject) in cases {
        let recipient = unique_recipient("en");
        let order = snapshot(&recipient, "en", "Americano");
        let order_id = Uuid::now_v7();
        let event = match kind {
            "payment_completed" => payment_approved(order_id, &order),
            "order_completed" => order_completed(order_id, &order),
            "order_cancelled" => order_cancelled(order_id, &order, None),
            _ => order_cancelled(order_id, &order, Some(32_000)),
        };
        app.publish(&event).await;
        published.push((event, recipient, kind, subject));
    }
    for (event, recipient, kind, subject) in &published {
        let mail = assert_mailed(&app, event, recipient, kind, subject).await;
        assert!(mail.text.contains("Americano × 2"), "{}", mail.text);
        assert!(mail.text.contains("₩32,000"), "{}", mail.text);
        assert!(mail.html.contains("lang=\"en\""), "{}", mail.html);
    }
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn item_names_are_escaped_in_the_html_part() {
    let app = spawn_app().await;
    let recipient = unique_recipient("escape");
    let evil = "<script>alert(1)</script>";
    let order = snapshot(&recipient, "en", evil);
    let event = order_completed(Uuid::now_v7(), &order);
    app.publish(&event).await;
    let mail = assert_mailed(&app, &event, &recipient, "order_completed", "is complete").await;
    assert!(!mail.html.contains("<script>"), "{}", mail.html);
    assert!(mail.html.contains("&lt;script&gt;"), "{}", mail.html);
    assert!(
        mail.text.contains(evil),
        "the text part keeps the name: {}",
        mail.text
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn events_that_need_no_mail_send_none() {
    let app = spawn_app().await;
    let recipient = unique_recipient("quiet");
    let order = snapshot(&recipient, "ko", "Latte");
    let order_id = Uuid::now_v7();
    // OrderPlaced needs no mail; the OrderCompleted after it (same key, so handled after
    // it) tells us when the first was handled.
    app.publish(&order_placed(order_id, &order)).await;
    let marker = order_completed(order_id, &order);
    app.publish(&marker).await;

    let mails = app.wait_for_mails(&recipient, 1).await;
    app.wait_for_final_documents(order_id, 1).await;
    let docs = app
        .documents(doc! { "order_id": order_id.to_string() })
        .await;
    assert_eq!(docs.len(), 1, "{docs:?}");
    assert_eq!(docs[0].get_str("type").ok(), Some("order_completed"));
    assert_eq!(mails.len(), 1);
    assert!(
        mails[0].subject.contains("주문이 완료되었습니다"),
        "{}",
        mails[0].subject
    );
    app.finish().await;
}

//! The MongoDB history store's batched writes against the real server: concurrent claims
//! share one `insert_many`, a duplicate fails only its own mail, outcomes share one
//! `update`, and a stale or repeated outcome is neither lost nor counted twice.

use crate::helpers::*;
use chrono::Utc;
use mongodb::bson::doc;
use notifier::domain::{DeliveryStatus, MailKind};
use notifier::store::{
    Attempt, BatchConfig, Claim, HistoryStore, MongoHistoryStore, NewNotification,
};
use std::time::Duration;
use uuid::Uuid;

async fn store(database: &str) -> MongoHistoryStore {
    require_servers();
    let store = MongoHistoryStore::connect(
        &mongodb_uri(),
        database,
        // A wide window, so every concurrent write of a test lands in one batch.
        BatchConfig {
            max: 64,
            window: Duration::from_millis(50),
        },
    )
    .await
    .expect("client");
    store.ensure_indexes().await.expect("indexes");
    store
}

fn new_mail(recipient: &str) -> NewNotification {
    let now = Utc::now();
    NewNotification {
        id: Uuid::now_v7().to_string(),
        event_id: Uuid::now_v7(),
        event_type: "OrderCompleted".into(),
        order_id: Uuid::now_v7(),
        recipient: recipient.into(),
        kind: MailKind::OrderCompleted,
        locale: "ko".into(),
        subject: "subject".into(),
        smtp_message_id: format!("<{}@example.com>", Uuid::now_v7()),
        created_at: now,
        event_occurred_at: now,
    }
}

/// The same (event, recipient) as `mail`, as a redelivery would claim it.
fn again(mail: &NewNotification) -> NewNotification {
    NewNotification {
        id: Uuid::now_v7().to_string(),
        created_at: Utc::now(),
        ..mail.clone()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_duplicate_in_a_batch_of_claims_marks_only_that_mail_as_claimed_before() {
    let database = format!(
        "notifier_test_{}",
        &Uuid::new_v4().simple().to_string()[..16]
    );
    let store = store(&database).await;
    let recipient = unique_recipient("batch");
    // Arrange: one mail finished before, one claimed and left unfinished.
    let finished = new_mail(&recipient);
    let Claim::Created(record) = store.claim(&finished).await.expect("claim") else {
        panic!("first claim creates");
    };
    store
        .record_attempt(&record, &Attempt::Sent { at: Utc::now() })
        .await
        .expect("sent");
    let unfinished = new_mail(&recipient);
    store.claim(&unfinished).await.expect("claim");
    let fresh: Vec<NewNotification> = (0..5).map(|_| new_mail(&recipient)).collect();

    // Act: all of them at once, so they share one insert_many.
    let mut batch = vec![again(&finished), again(&unfinished)];
    batch.extend(fresh.iter().cloned());
    let claims = futures::future::join_all(batch.iter().map(|m| store.claim(m))).await;

    // Assert
    let claims: Vec<Claim> = claims.into_iter().map(|c| c.expect("claim")).collect();
    assert!(
        matches!(&claims[0], Claim::Finished(r) if r.id == record.id && r.status == DeliveryStatus::Sent),
        "{:?}",
        claims[0]
    );
    assert!(
        matches!(&claims[1], Claim::Unfinished(r) if r.id == unfinished.id && r.status == DeliveryStatus::Pending),
        "{:?}",
        claims[1]
    );
    for (claim, mail) in claims[2..].iter().zip(&fresh) {
        assert!(
            matches!(claim, Claim::Created(r) if r.id == mail.id),
            "{claim:?}"
        );
    }
    let docs = store
        .database()
        .collection::<mongodb::bson::Document>("notifications")
        .count_documents(doc! { "recipient": &recipient })
        .await
        .expect("count");
    assert_eq!(docs, 7, "one record per (event, recipient)");
    store.database().drop().await.expect("drop");
}

#[tokio::test(flavor = "multi_thread")]
async fn batched_outcomes_are_each_recorded_once_even_when_stale_or_repeated() {
    let database = format!(
        "notifier_test_{}",
        &Uuid::new_v4().simple().to_string()[..16]
    );
    let store = store(&database).await;
    let recipient = unique_recipient("outcome");
    let mails: Vec<NewNotification> = (0..6).map(|_| new_mail(&recipient)).collect();
    let claims = futures::future::join_all(mails.iter().map(|m| store.claim(m))).await;
    let records: Vec<_> = claims
        .into_iter()
        .map(|c| match c.expect("claim") {
            Claim::Created(r) => r,
            other => panic!("{other:?}"),
        })
        .collect();
    // One record moves on behind this writer's back (a retry recorded elsewhere).
    let moved = store
        .record_attempt(
            &records[0],
            &Attempt::Retrying {
                at: Utc::now(),
                error: "451".into(),
            },
        )
        .await
        .expect("retrying");
    assert_eq!(moved.attempts, 1);

    // Act: every record's outcome at once, the first from its stale copy.
    let sent_at = Utc::now();
    let sent = Attempt::Sent { at: sent_at };
    let results =
        futures::future::join_all(records.iter().map(|r| store.record_attempt(r, &sent))).await;
    // The same outcome again, as a caller retrying after a lost acknowledgement would.
    let repeated = store
        .record_attempt(&records[1], &sent)
        .await
        .expect("repeat");

    // Assert
    let results: Vec<_> = results.into_iter().map(|r| r.expect("recorded")).collect();
    assert_eq!(results[0].status, DeliveryStatus::Sent);
    assert_eq!(results[0].attempts, 2, "applied on top of the fresh record");
    for record in &results[1..] {
        assert_eq!((record.status, record.attempts), (DeliveryStatus::Sent, 1));
    }
    assert_eq!(
        repeated.attempts, 1,
        "a repeated outcome is not counted twice"
    );
    for (record, result) in records.iter().zip(&results) {
        let stored = store.get(&record.id).await.expect("get").expect("exists");
        assert_eq!(&stored, result, "the store holds what the caller was told");
        assert_eq!(
            stored.sent_at.map(|t| t.timestamp_millis()),
            Some(sent_at.timestamp_millis())
        );
    }
    store.database().drop().await.expect("drop");
}

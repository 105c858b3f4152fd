//! Reads the services' stored timestamps straight from their databases: a handful of
//! queries per run instead of two HTTP calls per order, and every order rather than a
//! sample.
//!
//! * orders database: `orders` (`created_at`, `completed_at`, `cancelled_at`, `status`)
//!   and `saga_steps` (the first `PaymentReady` step with outcome `applied`: the moment
//!   the order service stored the payment page's URL; `at` is the transaction's start,
//!   its commit follows within the same handler).
//! * payments database: `gateway_calls` of kind `approve`. Each row is written after
//!   the call with `called_at = now()` and the call's `latency_ms`, so
//!   `called_at − latency_ms` of the first attempt is when payment started calling
//!   Kakao Pay's approve: right after the shopper's browser arrived at the approval URL
//!   (`GET /payments/{id}/approve`, one `READY → APPROVING` update in between). Payment
//!   stores no timestamp of the callback's arrival itself.
//! * mail history: MongoDB `notifications` (cases 3-4) or PostgreSQL `mail_history`
//!   (cases 1-2), `sent_at` of every `SENT` mail (the SMTP server accepted it).

use crate::saga::{MailTimes, OrderTimes, FINAL_MAILS};
use anyhow::{Context, Result};
use benchmarks::ceilings;
use futures::StreamExt;
use mongodb::bson::{doc, Document};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where one stack keeps its history.
#[derive(Debug, Clone)]
pub struct Stores {
    pub orders_db: String,
    pub payments_db: String,
    pub mail: MailStore,
    /// Scratch folder for psql's output files.
    pub scratch: PathBuf,
}

#[derive(Debug, Clone)]
pub enum MailStore {
    /// The notifier's history (`mongodb://127.0.0.1:PORT`, database).
    Mongo { uri: String, database: String },
    /// mailer-blocking's history (a PostgreSQL URL).
    Postgres { url: String },
}

const EPOCH_US: &str = "(extract(epoch FROM {}) * 1000000)::bigint";

fn us(column: &str) -> String {
    EPOCH_US.replace("{}", column)
}

/// `psql -At` rows split at `|`, on a blocking thread.
async fn rows(url: &str, sql: String, scratch: &Path) -> Result<Vec<Vec<String>>> {
    let (url, scratch) = (url.to_owned(), scratch.to_path_buf());
    let text = tokio::task::spawn_blocking(move || ceilings::psql(&url, &sql, &scratch)).await??;
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('|').map(|f| f.trim().to_owned()).collect())
        .collect())
}

fn opt_i64(field: Option<&String>) -> Option<i64> {
    field.and_then(|f| f.parse().ok())
}

async fn read_orders(stores: &Stores) -> Result<Vec<OrderTimes>> {
    let sql = format!(
        "SELECT o.id, o.status, {}, {}, {}, {} FROM orders o LEFT JOIN LATERAL \
         (SELECT min(s.at) AS at FROM saga_steps s WHERE s.order_id = o.id \
          AND s.event_type = 'PaymentReady' AND s.outcome = 'applied') r ON true",
        us("o.created_at"),
        us("r.at"),
        us("o.completed_at"),
        us("o.cancelled_at"),
    );
    let rows = rows(&stores.orders_db, sql, &stores.scratch).await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            Some(OrderTimes {
                id: r.first()?.clone(),
                status: r.get(1)?.clone(),
                created: opt_i64(r.get(2))?,
                payment_ready: opt_i64(r.get(3)),
                completed: opt_i64(r.get(4)),
                cancelled: opt_i64(r.get(5)),
                ..OrderTimes::default()
            })
        })
        .collect())
}

/// Order id → start of the first approve call.
async fn read_approvals(stores: &Stores) -> Result<HashMap<String, i64>> {
    let sql = format!(
        "SELECT p.order_id, {} FROM payments p JOIN gateway_calls g ON g.payment_id = p.id \
         WHERE g.kind = 'approve' GROUP BY p.order_id",
        us("min(g.called_at - g.latency_ms * interval '1 millisecond')"),
    );
    let rows = rows(&stores.payments_db, sql, &stores.scratch).await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| Some((r.first()?.clone(), opt_i64(r.get(1))?)))
        .collect())
}

async fn mongo(uri: &str, database: &str) -> Result<mongodb::Collection<Document>> {
    let mut options = mongodb::options::ClientOptions::parse(uri).await?;
    options.app_name = Some("experiment".to_owned());
    options.server_selection_timeout = Some(Duration::from_secs(5));
    let client = mongodb::Client::with_options(options)?;
    Ok(client.database(database).collection("notifications"))
}

async fn read_mails(store: &MailStore, scratch: &Path) -> Result<Vec<MailTimes>> {
    match store {
        MailStore::Postgres { url } => {
            let sql = format!(
                "SELECT order_id, kind, {} FROM mail_history WHERE status = 'SENT' AND sent_at IS NOT NULL",
                us("sent_at")
            );
            Ok(rows(url, sql, scratch)
                .await?
                .into_iter()
                .filter_map(|r| {
                    Some(MailTimes {
                        order_id: r.first()?.clone(),
                        kind: r.get(1)?.clone(),
                        sent: opt_i64(r.get(2))?,
                    })
                })
                .collect())
        }
        MailStore::Mongo { uri, database } => {
            let collection = mongo(uri, database).await?;
            let mut cursor = collection
                .find(doc! { "status": "SENT" })
                .projection(doc! { "order_id": 1, "type": 1, "sent_at": 1 })
                .await?;
            let mut out = Vec::new();
            while let Some(d) = cursor.next().await {
                let d = d?;
                if let (Ok(order_id), Ok(kind), Ok(sent)) = (
                    d.get_str("order_id"),
                    d.get_str("type"),
                    d.get_datetime("sent_at"),
                ) {
                    out.push(MailTimes {
                        order_id: order_id.to_owned(),
                        kind: kind.to_owned(),
                        sent: sent.timestamp_millis() * 1000,
                    });
                }
            }
            Ok(out)
        }
    }
}

/// Every order of the run with its payment-page, approval and mail times.
pub async fn read_all(stores: &Stores) -> Result<Vec<OrderTimes>> {
    let orders = read_orders(stores).await.context("reading the orders")?;
    let approvals = read_approvals(stores)
        .await
        .context("reading the approve calls")?;
    let mails = read_mails(&stores.mail, &stores.scratch)
        .await
        .context("reading the mail history")?;
    Ok(crate::saga::join(orders, &approvals, &mails))
}

/// Orders by status (one SQL count).
pub async fn order_status_counts(stores: &Stores) -> Option<BTreeMap<String, u64>> {
    let sql = "SELECT status, count(*) FROM orders GROUP BY status".to_owned();
    let rows = rows(&stores.orders_db, sql, &stores.scratch).await.ok()?;
    Some(
        rows.into_iter()
            .filter_map(|r| Some((r.first()?.clone(), r.get(1)?.parse().ok()?)))
            .collect(),
    )
}

/// Final mails stored so far (a count per type: cheap enough to poll while draining).
pub async fn final_mails(store: &MailStore, scratch: &Path) -> Option<u64> {
    match store {
        MailStore::Postgres { url } => {
            let sql = format!(
                "SELECT count(*) FROM mail_history WHERE status = 'SENT' AND kind IN ({})",
                FINAL_MAILS.map(|k| format!("'{k}'")).join(", ")
            );
            let rows = rows(url, sql, scratch).await.ok()?;
            rows.first()?.first()?.parse().ok()
        }
        MailStore::Mongo { uri, database } => {
            let collection = mongo(uri, database).await.ok()?;
            let mut total = 0;
            for kind in FINAL_MAILS {
                total += collection
                    .count_documents(doc! { "status": "SENT", "type": kind })
                    .await
                    .ok()?;
            }
            Some(total)
        }
    }
}

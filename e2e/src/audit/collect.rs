//! Reading the sources into a [`Snapshot`]: plain SQL on the two PostgreSQL databases
//! (read-only statements), a find on the notifier's collection (or, cases 1–2, a select
//! on mailer-blocking's `mail_history` table), one GET of the ledger.
//! Errors name the source, never its URL (it can hold a password).

use super::rules::{MailRecord, OrderRow, PaymentRow, Snapshot};
use anyhow::Context;
use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel::{Connection, QueryableByName, RunQueryDsl};
use futures::TryStreamExt;
use kakaopay::sim::Ledger;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;
use url::Url;
use uuid::Uuid;

/// The notifier's history collection (`notifier/src/store/mongo.rs`, not exported).
const COLLECTION: &str = "notifications";

/// Where the saga's records are.
#[derive(Clone)]
pub struct Sources {
    /// order-service's database (`ORDER_DATABASE_URL`).
    pub order_database_url: String,
    /// payment-service's database (`PAYMENT_DATABASE_URL`).
    pub payment_database_url: String,
    /// The notifier's MongoDB (`MONGODB_URI`) and database (`NOTIFIER_MONGODB_DATABASE`).
    pub mongodb_uri: String,
    pub mongodb_database: String,
    /// Cases 1–2: mailer-blocking's database (`MAILER_DATABASE_URL`), read instead of
    /// MongoDB.
    pub mail_database_url: Option<String>,
    /// The Kakao Pay simulator's ledger (`GET /__sim/ledger`), local stacks only.
    pub kakaopay_ledger: Option<Url>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources")
            .field("mongodb_database", &self.mongodb_database)
            .field(
                "mail_history_in_postgres",
                &self.mail_database_url.is_some(),
            )
            .field(
                "kakaopay_ledger",
                &self.kakaopay_ledger.as_ref().map(Url::as_str),
            )
            .finish_non_exhaustive()
    }
}

/// Reads every source. The databases are read on blocking threads, MongoDB and the
/// ledger meanwhile.
pub async fn collect(sources: &Sources) -> anyhow::Result<Snapshot> {
    let (order_url, payment_url) = (
        sources.order_database_url.clone(),
        sources.payment_database_url.clone(),
    );
    let orders = tokio::task::spawn_blocking(move || read_orders(&order_url));
    let payments = tokio::task::spawn_blocking(move || read_payments(&payment_url));
    let mails = async {
        match sources.mail_database_url.clone() {
            Some(url) => tokio::task::spawn_blocking(move || read_mail_table(&url)).await?,
            None => read_mails(&sources.mongodb_uri, &sources.mongodb_database).await,
        }
    };
    let ledger = async {
        match &sources.kakaopay_ledger {
            Some(url) => read_ledger(url).await.map(Some),
            None => Ok(None),
        }
    };
    let (mails, ledger) = tokio::try_join!(mails, ledger)?;
    Ok(Snapshot {
        orders: orders.await??,
        payments: payments.await??,
        mails,
        ledger,
    })
}

#[derive(QueryableByName)]
struct OrderSql {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = BigInt)]
    total_amount: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    refunded_amount: Option<i64>,
    #[diesel(sql_type = Timestamptz)]
    payment_deadline: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    updated_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    completed_at: Option<DateTime<Utc>>,
}

fn read_orders(url: &str) -> anyhow::Result<Vec<OrderRow>> {
    let mut conn = PgConnection::establish(url).context("connecting to the orders database")?;
    let rows: Vec<OrderSql> = diesel::sql_query(
        "SELECT id, status, total_amount, refunded_amount, payment_deadline, updated_at, \
         completed_at FROM orders ORDER BY id",
    )
    .load(&mut conn)
    .context("reading the orders")?;
    Ok(rows
        .into_iter()
        .map(|r| OrderRow {
            id: r.id,
            status: r.status,
            total_amount: r.total_amount,
            refunded_amount: r.refunded_amount,
            payment_deadline: r.payment_deadline,
            updated_at: r.updated_at,
            completed_at: r.completed_at,
        })
        .collect())
}

#[derive(QueryableByName)]
struct PaymentSql {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    order_id: Uuid,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = BigInt)]
    amount: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    refunded_amount: Option<i64>,
    #[diesel(sql_type = Timestamptz)]
    updated_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Text>)]
    tid: Option<String>,
    #[diesel(sql_type = BigInt)]
    approvals_ok: i64,
    #[diesel(sql_type = BigInt)]
    refunds_ok: i64,
}

fn read_payments(url: &str) -> anyhow::Result<BTreeMap<Uuid, PaymentRow>> {
    let mut conn = PgConnection::establish(url).context("connecting to the payments database")?;
    let rows: Vec<PaymentSql> = diesel::sql_query(
        "SELECT p.id, p.order_id, p.status, p.amount, p.refunded_amount, p.updated_at, p.tid, \
         count(g.id) FILTER (WHERE g.kind = 'approve' AND g.outcome = 'ok') AS approvals_ok, \
         count(g.id) FILTER (WHERE g.kind = 'cancel' AND g.outcome = 'ok') AS refunds_ok \
         FROM payments p LEFT JOIN gateway_calls g ON g.payment_id = p.id \
         GROUP BY p.id",
    )
    .load(&mut conn)
    .context("reading the payments")?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.order_id,
                PaymentRow {
                    id: r.id,
                    order_id: r.order_id,
                    status: r.status,
                    amount: r.amount,
                    refunded_amount: r.refunded_amount,
                    updated_at: r.updated_at,
                    tid: r.tid,
                    approvals_ok: r.approvals_ok,
                    refunds_ok: r.refunds_ok,
                },
            )
        })
        .collect())
}

/// The fields of a history document the audit reads (notifier/src/store/mongo.rs).
#[derive(Deserialize)]
struct MailDoc {
    event_id: String,
    order_id: String,
    #[serde(rename = "type")]
    kind: String,
    status: String,
    #[serde(default)]
    attempts: i64,
    #[serde(default)]
    last_error: Option<String>,
}

async fn read_mails(uri: &str, database: &str) -> anyhow::Result<BTreeMap<Uuid, Vec<MailRecord>>> {
    use mongodb::options::ClientOptions;
    let mut options = ClientOptions::parse(uri)
        .await
        .context("parsing the MongoDB URI")?;
    options.app_name = Some("saga-audit".to_owned());
    options
        .server_selection_timeout
        .get_or_insert(Duration::from_secs(5));
    let client = mongodb::Client::with_options(options).context("the MongoDB client")?;
    let collection = client.database(database).collection::<MailDoc>(COLLECTION);
    let docs: Vec<MailDoc> = collection
        .find(mongodb::bson::doc! {})
        .await
        .context("reading the mail history")?
        .try_collect()
        .await
        .context("reading the mail history")?;
    let mut mails: BTreeMap<Uuid, Vec<MailRecord>> = BTreeMap::new();
    for doc in docs {
        let Ok(order_id) = doc.order_id.parse::<Uuid>() else {
            continue; // not a record of this shop's orders
        };
        mails.entry(order_id).or_default().push(MailRecord {
            event_id: doc.event_id,
            kind: doc.kind,
            status: doc.status,
            attempts: doc.attempts,
            last_error: doc.last_error,
        });
    }
    Ok(mails)
}

#[derive(QueryableByName)]
struct MailSql {
    #[diesel(sql_type = Text)]
    event_id: String,
    #[diesel(sql_type = SqlUuid)]
    order_id: Uuid,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = BigInt)]
    attempts: i64,
    #[diesel(sql_type = Nullable<Text>)]
    last_error: Option<String>,
}

/// mailer-blocking's history (`diesel-migrations/mail`): the same records as the
/// notifier's documents.
fn read_mail_table(url: &str) -> anyhow::Result<BTreeMap<Uuid, Vec<MailRecord>>> {
    let mut conn = PgConnection::establish(url).context("connecting to the mail database")?;
    let rows: Vec<MailSql> = diesel::sql_query(
        "SELECT event_id::text AS event_id, order_id, kind, status, attempts::bigint AS attempts, \
         last_error FROM mail_history ORDER BY created_at, id",
    )
    .load(&mut conn)
    .context("reading the mail history")?;
    let mut mails: BTreeMap<Uuid, Vec<MailRecord>> = BTreeMap::new();
    for r in rows {
        mails.entry(r.order_id).or_default().push(MailRecord {
            event_id: r.event_id,
            kind: r.kind,
            status: r.status,
            attempts: r.attempts,
            last_error: r.last_error,
        });
    }
    Ok(mails)
}

async fn read_ledger(url: &Url) -> anyhow::Result<Ledger> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    http.get(url.clone())
        .send()
        .await
        .context("reading the Kakao Pay ledger")?
        .error_for_status()
        .context("reading the Kakao Pay ledger")?
        .json()
        .await
        .context("reading the Kakao Pay ledger")
}

//! The mail history in PostgreSQL (Diesel): the same records as the notifier's MongoDB
//! history ([`Notification`]), one row per (event, recipient), unique.
//!
//! The functions taking a `&mut PgConnection` are the blocking worker's: it runs them on
//! a thread of the blocking pool (see [`crate::service`]). [`PgHistoryStore`] is the
//! history API's adapter of the notifier's [`HistoryStore`] port: every call goes through
//! [`shared_events::db::run_blocking`], so the API shares the notifier's handlers (same
//! JSON, filters, cursor and token) and never blocks the async executor.

use crate::schema::mail_history;
use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use notifier::domain::{DeliveryStatus, MailKind, Notification};
use notifier::store::{
    percentile_rank, Attempt, Claim, Cursor, HistoryStore, LatencyStats, ListQuery,
    NewNotification, Page, Stats, StoreError,
};
use shared_events::db::{run_blocking, DbError, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = mail_history)]
struct Row {
    id: Uuid,
    event_id: Uuid,
    event_type: String,
    order_id: Uuid,
    recipient: String,
    kind: String,
    locale: String,
    status: String,
    attempts: i32,
    last_error: Option<String>,
    subject: String,
    smtp_message_id: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    sent_at: Option<DateTime<Utc>>,
    event_occurred_at: DateTime<Utc>,
}

impl Row {
    fn from_record(record: &Notification) -> Result<Self, StoreError> {
        Ok(Self {
            id: Uuid::parse_str(&record.id)
                .map_err(|e| StoreError::permanent(format!("record id: {e}")))?,
            event_id: record.event_id,
            event_type: record.event_type.clone(),
            order_id: record.order_id,
            recipient: record.recipient.clone(),
            kind: record.kind.as_str().to_owned(),
            locale: record.locale.clone(),
            status: record.status.as_str().to_owned(),
            attempts: i32::try_from(record.attempts).unwrap_or(i32::MAX),
            last_error: record.last_error.clone(),
            subject: record.subject.clone(),
            smtp_message_id: record.smtp_message_id.clone(),
            created_at: record.created_at,
            updated_at: record.updated_at,
            sent_at: record.sent_at,
            event_occurred_at: record.event_occurred_at,
        })
    }

    fn into_record(self) -> Result<Notification, StoreError> {
        let kind = self
            .kind
            .parse::<MailKind>()
            .map_err(|()| StoreError::permanent(format!("unknown mail kind {:?}", self.kind)))?;
        let status = self.status.parse::<DeliveryStatus>().map_err(|()| {
            StoreError::permanent(format!("unknown delivery status {:?}", self.status))
        })?;
        Ok(Notification {
            id: self.id.to_string(),
            event_id: self.event_id,
            event_type: self.event_type,
            order_id: self.order_id,
            recipient: self.recipient,
            kind,
            locale: self.locale,
            status,
            attempts: u32::try_from(self.attempts).unwrap_or_default(),
            last_error: self.last_error,
            subject: self.subject,
            smtp_message_id: self.smtp_message_id,
            created_at: self.created_at,
            updated_at: self.updated_at,
            sent_at: self.sent_at,
            event_occurred_at: self.event_occurred_at,
        })
    }
}

/// Records a `PENDING` mail unless (event, recipient) has one, then locks the row until
/// the caller's transaction ends: a second worker handling the same event waits here and
/// then finds the mail finished, so a mail is never sent by two workers at once.
pub fn claim_locked(conn: &mut PgConnection, new: &NewNotification) -> Result<Claim, StoreError> {
    let row = Row::from_record(&new.pending())?;
    let inserted = diesel::insert_into(mail_history::table)
        .values(&row)
        .on_conflict((mail_history::event_id, mail_history::recipient))
        .do_nothing()
        .execute(conn)
        .map_err(query_error)?;
    let current = mail_history::table
        .filter(mail_history::event_id.eq(new.event_id))
        .filter(mail_history::recipient.eq(&new.recipient))
        .select(Row::as_select())
        .for_update()
        .first(conn)
        .map_err(query_error)?
        .into_record()?;
    Ok(if inserted == 1 {
        Claim::Created(current)
    } else if current.status.is_final() {
        Claim::Finished(current)
    } else {
        Claim::Unfinished(current)
    })
}

/// Writes one attempt's outcome; returns the record as now stored.
pub fn record_attempt(
    conn: &mut PgConnection,
    current: &Notification,
    attempt: &Attempt,
) -> Result<Notification, StoreError> {
    let next = attempt.apply(current);
    let id = Uuid::parse_str(&next.id).map_err(|e| StoreError::permanent(e.to_string()))?;
    diesel::update(mail_history::table.find(id))
        .set((
            mail_history::status.eq(next.status.as_str()),
            mail_history::attempts.eq(i32::try_from(next.attempts).unwrap_or(i32::MAX)),
            mail_history::last_error.eq(&next.last_error),
            mail_history::updated_at.eq(next.updated_at),
            mail_history::sent_at.eq(next.sent_at),
        ))
        .execute(conn)
        .map_err(query_error)?;
    Ok(next)
}

pub fn get(conn: &mut PgConnection, id: &str) -> Result<Option<Notification>, StoreError> {
    let Ok(id) = Uuid::parse_str(id) else {
        return Ok(None);
    };
    mail_history::table
        .find(id)
        .select(Row::as_select())
        .first(conn)
        .optional()
        .map_err(query_error)?
        .map(Row::into_record)
        .transpose()
}

/// Newest first (`created_at`, then `id`, descending), filtered, one page.
pub fn list(conn: &mut PgConnection, query: &ListQuery) -> Result<Page, StoreError> {
    let limit = query.limit.max(1);
    let mut sql = mail_history::table.select(Row::as_select()).into_boxed();
    if let Some(order_id) = query.order_id {
        sql = sql.filter(mail_history::order_id.eq(order_id));
    }
    if let Some(recipient) = &query.recipient {
        // PostgreSQL text cannot hold a NUL, so no stored address has one: none matches
        // (sending it would be a query error).
        if recipient.contains('\0') {
            return Ok(Page::default());
        }
        sql = sql.filter(mail_history::recipient.eq(recipient.clone()));
    }
    if let Some(kind) = query.kind {
        sql = sql.filter(mail_history::kind.eq(kind.as_str()));
    }
    if let Some(status) = query.status {
        sql = sql.filter(mail_history::status.eq(status.as_str()));
    }
    if let Some(from) = query.from {
        sql = sql.filter(mail_history::created_at.ge(from));
    }
    if let Some(to) = query.to {
        sql = sql.filter(mail_history::created_at.lt(to));
    }
    if let Some(cursor) = &query.after {
        let id = Uuid::parse_str(&cursor.id).map_err(|e| StoreError::permanent(e.to_string()))?;
        sql = sql.filter(
            mail_history::created_at
                .lt(cursor.created_at)
                .or(mail_history::created_at
                    .eq(cursor.created_at)
                    .and(mail_history::id.lt(id))),
        );
    }
    let rows: Vec<Row> = sql
        .order((mail_history::created_at.desc(), mail_history::id.desc()))
        .limit(i64::try_from(limit + 1).unwrap_or(i64::MAX))
        .load(conn)
        .map_err(query_error)?;
    let more = rows.len() > limit;
    let items = rows
        .into_iter()
        .take(limit)
        .map(Row::into_record)
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = more.then(|| items.last()).flatten().map(|last| Cursor {
        created_at: last.created_at,
        id: last.id.clone(),
    });
    Ok(Page { items, next_cursor })
}

/// Counts by type and status, and send-latency percentiles, of the records created since
/// `since`.
pub fn stats(conn: &mut PgConnection, since: DateTime<Utc>) -> Result<Stats, StoreError> {
    let counts: Vec<(String, String, i64)> = mail_history::table
        .filter(mail_history::created_at.ge(since))
        .group_by((mail_history::kind, mail_history::status))
        .select((
            mail_history::kind,
            mail_history::status,
            diesel::dsl::count_star(),
        ))
        .load(conn)
        .map_err(query_error)?;
    let mut stats = Stats::default();
    for kind in MailKind::ALL {
        for status in DeliveryStatus::ALL {
            let count = counts
                .iter()
                .find(|(k, s, _)| k == kind.as_str() && s == status.as_str())
                .map_or(0, |(_, _, n)| u64::try_from(*n).unwrap_or_default());
            stats.total += count;
            *stats
                .by_status
                .entry(status.as_str().to_owned())
                .or_default() += count;
            stats
                .by_type
                .entry(kind.as_str().to_owned())
                .or_default()
                .insert(status.as_str().to_owned(), count);
        }
    }
    let sent: Vec<(DateTime<Utc>, Option<DateTime<Utc>>)> = mail_history::table
        .filter(mail_history::created_at.ge(since))
        .filter(mail_history::status.eq(DeliveryStatus::Sent.as_str()))
        .select((mail_history::created_at, mail_history::sent_at))
        .load(conn)
        .map_err(query_error)?;
    let mut latencies: Vec<i64> = sent
        .into_iter()
        .filter_map(|(created, sent)| Some((sent? - created).num_milliseconds()))
        .collect();
    latencies.sort_unstable();
    let count = latencies.len() as u64;
    let at = |p| percentile_rank(p, count).and_then(|rank| latencies.get(rank as usize).copied());
    stats.send_latency_ms = LatencyStats {
        count,
        p50: at(50),
        p95: at(95),
        p99: at(99),
    };
    Ok(stats)
}

/// Connection trouble is worth retrying; anything else is a bug or bad data.
fn query_error(error: diesel::result::Error) -> StoreError {
    use diesel::result::Error;
    match error {
        Error::DatabaseError(diesel::result::DatabaseErrorKind::ClosedConnection, _)
        | Error::DatabaseError(diesel::result::DatabaseErrorKind::SerializationFailure, _)
        | Error::BrokenTransactionManager => StoreError::transient(error.to_string()),
        other => StoreError::permanent(other.to_string()),
    }
}

fn db_error(error: DbError) -> StoreError {
    match error {
        DbError::Query(error) => query_error(error),
        other => StoreError::transient(other.to_string()),
    }
}

/// Carries a [`StoreError`] through [`run_blocking`] (which needs `From<DbError>`).
struct Failed(StoreError);

impl From<DbError> for Failed {
    fn from(error: DbError) -> Self {
        Failed(db_error(error))
    }
}

/// The history port over PostgreSQL, for the history API.
#[derive(Clone)]
pub struct PgHistoryStore {
    pool: PgPool,
}

impl PgHistoryStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut PgConnection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        run_blocking(&self.pool, move |conn| f(conn).map_err(Failed))
            .await
            .map_err(|Failed(error)| error)
    }
}

#[async_trait::async_trait]
impl HistoryStore for PgHistoryStore {
    async fn claim(&self, new: &NewNotification) -> Result<Claim, StoreError> {
        let new = new.clone();
        self.run(move |conn| claim_locked(conn, &new)).await
    }

    async fn record_attempt(
        &self,
        current: &Notification,
        attempt: &Attempt,
    ) -> Result<Notification, StoreError> {
        let (current, attempt) = (current.clone(), attempt.clone());
        self.run(move |conn| record_attempt(conn, &current, &attempt))
            .await
    }

    async fn get(&self, id: &str) -> Result<Option<Notification>, StoreError> {
        let id = id.to_owned();
        self.run(move |conn| get(conn, &id)).await
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let query = query.clone();
        self.run(move |conn| list(conn, &query)).await
    }

    async fn stats(&self, since: DateTime<Utc>) -> Result<Stats, StoreError> {
        self.run(move |conn| stats(conn, since)).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(|conn| {
            diesel::sql_query("SELECT 1")
                .execute(conn)
                .map(|_| ())
                .map_err(query_error)
        })
        .await
    }
}

//! Mail history: the port the mail service and the history API use, and its MongoDB
//! adapter.
//!
//! One record per (event, recipient), made unique by the store: claiming the same
//! (event, recipient) twice returns the first record instead of creating a second, which
//! is what makes a redelivered event harmless.

mod batcher;
mod mongo;

pub use batcher::BatchConfig;
pub use mongo::MongoHistoryStore;

use crate::domain::{DeliveryStatus, MailKind, Notification};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use uuid::Uuid;

/// What is recorded before the first delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    pub id: String,
    pub event_id: Uuid,
    pub event_type: String,
    pub order_id: Uuid,
    pub recipient: String,
    pub kind: MailKind,
    pub locale: String,
    pub subject: String,
    pub smtp_message_id: String,
    pub created_at: DateTime<Utc>,
    pub event_occurred_at: DateTime<Utc>,
}

impl NewNotification {
    /// The record of `mail`, rendered for `event`, before its first attempt.
    pub fn for_mail(event: &shared_events::Event, mail: &crate::render::Mail) -> Self {
        Self {
            id: Uuid::now_v7().to_string(),
            event_id: event.event_id,
            event_type: event.event_type().as_str().to_owned(),
            order_id: event.order_id,
            recipient: mail.recipient.clone(),
            kind: mail.kind,
            locale: mail.locale.as_str().to_owned(),
            subject: mail.subject.clone(),
            smtp_message_id: mail.message_id.clone(),
            created_at: Utc::now(),
            event_occurred_at: event.occurred_at,
        }
    }

    /// The record as first stored: `PENDING`, no attempt yet.
    pub fn pending(&self) -> Notification {
        Notification {
            id: self.id.clone(),
            event_id: self.event_id,
            event_type: self.event_type.clone(),
            order_id: self.order_id,
            recipient: self.recipient.clone(),
            kind: self.kind,
            locale: self.locale.clone(),
            status: DeliveryStatus::Pending,
            attempts: 0,
            last_error: None,
            subject: self.subject.clone(),
            smtp_message_id: self.smtp_message_id.clone(),
            created_at: self.created_at,
            updated_at: self.created_at,
            sent_at: None,
            event_occurred_at: self.event_occurred_at,
        }
    }
}

/// The answer to "record this mail before sending it".
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// First time this (event, recipient) is seen: send it.
    Created(Notification),
    /// Seen before, still `PENDING`/`RETRYING`: a previous run stopped mid-way; send again.
    Unfinished(Notification),
    /// Seen before and `SENT` or `FAILED`: nothing to do.
    Finished(Notification),
}

/// The outcome of one delivery attempt. Each increments `attempts`.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Sent { at: DateTime<Utc> },
    Retrying { at: DateTime<Utc>, error: String },
    Failed { at: DateTime<Utc>, error: String },
}

impl Attempt {
    /// The record after this attempt.
    pub fn apply(&self, current: &Notification) -> Notification {
        let mut next = current.clone();
        next.attempts = current.attempts.saturating_add(1);
        match self {
            Attempt::Sent { at } => {
                next.status = DeliveryStatus::Sent;
                next.last_error = None;
                next.updated_at = *at;
                next.sent_at = Some(*at);
            }
            Attempt::Retrying { at, error } => {
                next.status = DeliveryStatus::Retrying;
                next.last_error = Some(error.clone());
                next.updated_at = *at;
            }
            Attempt::Failed { at, error } => {
                next.status = DeliveryStatus::Failed;
                next.last_error = Some(error.clone());
                next.updated_at = *at;
            }
        }
        next
    }
}

/// A page position: the last record of the previous page (newest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: String,
}

impl Cursor {
    /// Opaque to clients: `<created_at millis>_<id>`.
    pub fn encode(&self) -> String {
        format!("{}_{}", self.created_at.timestamp_millis(), self.id)
    }

    /// Exactly what the document's pattern of `cursor` allows: 1 to 15 digits (every
    /// such instant is in chrono's range), `_`, a hyphenated UUID.
    pub fn decode(text: &str) -> Option<Self> {
        let (millis, id) = text.split_once('_')?;
        if !(1..=15).contains(&millis.len()) || !millis.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let created_at = DateTime::from_timestamp_millis(millis.parse().ok()?)?;
        crate::domain::hyphenated_uuid(id)?;
        Some(Self {
            created_at,
            id: id.to_owned(),
        })
    }
}

/// History filters; all optional and combined with AND. Newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListQuery {
    pub order_id: Option<Uuid>,
    pub recipient: Option<String>,
    pub kind: Option<MailKind>,
    pub status: Option<DeliveryStatus>,
    /// `created_at >= from`.
    pub from: Option<DateTime<Utc>>,
    /// `created_at < to`.
    pub to: Option<DateTime<Utc>>,
    pub limit: usize,
    /// Records strictly after (older than) this position.
    pub after: Option<Cursor>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    pub items: Vec<Notification>,
    /// Set when more records follow.
    pub next_cursor: Option<Cursor>,
}

/// Send latency percentiles (`created_at` → `sent_at`) in milliseconds; the
/// percentiles are `null` without any `SENT` record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LatencyStats {
    pub count: u64,
    #[schema(required = true)]
    pub p50: Option<i64>,
    #[schema(required = true)]
    pub p95: Option<i64>,
    #[schema(required = true)]
    pub p99: Option<i64>,
}

/// Counts and latency of the records created since `since`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Stats {
    pub total: u64,
    /// type → status → count (every type and status present, zeros included).
    pub by_type: BTreeMap<String, BTreeMap<String, u64>>,
    /// status → count.
    pub by_status: BTreeMap<String, u64>,
    pub send_latency_ms: LatencyStats,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    /// Worth retrying (the store is unreachable or busy).
    pub transient: bool,
    pub message: String,
}

impl StoreError {
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            transient: true,
            message: message.into(),
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            transient: false,
            message: message.into(),
        }
    }
}

#[async_trait::async_trait]
pub trait HistoryStore: Send + Sync + 'static {
    /// Records a `PENDING` mail, or returns the record already there for the same
    /// (event, recipient).
    async fn claim(&self, new: &NewNotification) -> Result<Claim, StoreError>;
    /// Records one attempt's outcome on `current` (the record as last read or written)
    /// and returns the updated record.
    async fn record_attempt(
        &self,
        current: &Notification,
        attempt: &Attempt,
    ) -> Result<Notification, StoreError>;
    async fn get(&self, id: &str) -> Result<Option<Notification>, StoreError>;
    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError>;
    async fn stats(&self, since: DateTime<Utc>) -> Result<Stats, StoreError>;
    /// Whether the store answers (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Nearest-rank percentile position (0-based) of `p` (0–100) among `count` sorted values.
pub fn percentile_rank(p: u32, count: u64) -> Option<u64> {
    if count == 0 {
        return None;
    }
    let rank = (u64::from(p) * count).div_ceil(100);
    Some(rank.clamp(1, count) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let cursor = Cursor {
            created_at: DateTime::from_timestamp_millis(1_700_000_000_123).expect("time"),
            id: Uuid::now_v7().to_string(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
        for bad in [
            "",
            "x",
            "12_",
            "_abc",
            "12_not-a-uuid",
            "abc_0190a5b2-0000-7000-8000-000000000000",
        ] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn attempts_count_and_set_status_error_and_times() {
        let created = DateTime::from_timestamp_millis(1_700_000_000_000).expect("time");
        let new = NewNotification {
            id: Uuid::now_v7().to_string(),
            event_id: Uuid::now_v7(),
            event_type: "OrderCompleted".into(),
            order_id: Uuid::now_v7(),
            recipient: "kim@example.com".into(),
            kind: MailKind::OrderCompleted,
            locale: "ko".into(),
            subject: "s".into(),
            smtp_message_id: "<m@example.com>".into(),
            created_at: created,
            event_occurred_at: created,
        };
        let pending = new.pending();
        assert_eq!(
            (pending.status, pending.attempts),
            (DeliveryStatus::Pending, 0)
        );
        let later = created + chrono::Duration::seconds(1);
        let retrying = Attempt::Retrying {
            at: later,
            error: "451".into(),
        }
        .apply(&pending);
        assert_eq!(retrying.status, DeliveryStatus::Retrying);
        assert_eq!(retrying.attempts, 1);
        assert_eq!(retrying.last_error.as_deref(), Some("451"));
        assert_eq!(retrying.updated_at, later);
        let sent = Attempt::Sent { at: later }.apply(&retrying);
        assert_eq!(sent.status, DeliveryStatus::Sent);
        assert_eq!(sent.attempts, 2);
        assert_eq!(sent.last_error, None);
        assert_eq!(sent.sent_at, Some(later));
        let failed = Attempt::Failed {
            at: later,
            error: "550".into(),
        }
        .apply(&pending);
        assert_eq!(
            (failed.status, failed.attempts),
            (DeliveryStatus::Failed, 1)
        );
        assert_eq!(failed.sent_at, None);
    }

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(percentile_rank(50, 0), None);
        assert_eq!(percentile_rank(50, 1), Some(0));
        assert_eq!(percentile_rank(99, 1), Some(0));
        assert_eq!(percentile_rank(50, 10), Some(4));
        assert_eq!(percentile_rank(95, 10), Some(9));
        assert_eq!(percentile_rank(99, 200), Some(197));
        assert_eq!(percentile_rank(100, 7), Some(6));
    }
}

//! Figures from the notifier's history documents in MongoDB: how many mails ended how,
//! their send and end-to-end latencies and when each was sent. The warm-up mail is left
//! out of all of them.

use super::WARMUP_RECIPIENT;
use crate::stats::Latency;
use anyhow::Result;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use mongodb::bson::{doc, Document};
use mongodb::Collection;
use std::time::{Duration, Instant};

/// Documents of the run in `status` (`SENT`, `FAILED`, …).
pub async fn count_status(coll: &Collection<Document>, status: &str) -> Result<u64> {
    Ok(coll
        .count_documents(doc! { "status": status, "recipient": { "$ne": WARMUP_RECIPIENT } })
        .await?)
}

/// Waits up to 10 s for `expected` documents to be `SENT` or `FAILED` (the final writes
/// land just after the notifier's counters move); not at all after a timed-out run.
pub async fn confirm(coll: &Collection<Document>, expected: u64, timed_out: bool) -> Result<()> {
    let mut sent_count = count_status(coll, "SENT").await?;
    let confirm_deadline = Instant::now() + Duration::from_secs(10);
    while !timed_out && sent_count + count_status(coll, "FAILED").await? < expected {
        if Instant::now() > confirm_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        sent_count = count_status(coll, "SENT").await?;
    }
    Ok(())
}

/// What the history documents say about a run.
#[derive(Default)]
pub struct DocFigures {
    /// `sent_at - created_at`.
    pub send: Latency,
    /// `sent_at - event_occurred_at`.
    pub end_to_end: Latency,
    pub sent: u64,
    pub failed: u64,
    /// Neither `SENT` nor `FAILED`.
    pub unfinished: u64,
    /// More than one attempt.
    pub retried: u64,
    /// The latest `sent_at`.
    pub last_sent: Option<DateTime<Utc>>,
    /// Mails sent in each second after `t0`.
    pub per_second: Vec<u64>,
}

impl DocFigures {
    /// Reads every document of the run; `t0` is when the first event was published.
    pub async fn read(coll: &Collection<Document>, t0: DateTime<Utc>) -> Result<Self> {
        let mut figures = Self::default();
        let mut cursor = coll
            .find(doc! { "recipient": { "$ne": WARMUP_RECIPIENT } })
            .projection(doc! { "status": 1, "attempts": 1, "created_at": 1, "sent_at": 1, "event_occurred_at": 1 })
            .await?;
        while let Some(d) = cursor.next().await {
            let d = d?;
            if d.get_i64("attempts").unwrap_or(0) > 1 {
                figures.retried += 1;
            }
            match d.get_str("status").unwrap_or_default() {
                "SENT" => figures.record_sent(&d, t0),
                "FAILED" => figures.failed += 1,
                _ => figures.unfinished += 1,
            }
        }
        Ok(figures)
    }

    /// A `SENT` document: counted always, timed when it has all three timestamps.
    fn record_sent(&mut self, d: &Document, t0: DateTime<Utc>) {
        self.sent += 1;
        let (Ok(created), Ok(sent_at), Ok(occurred)) = (
            d.get_datetime("created_at"),
            d.get_datetime("sent_at"),
            d.get_datetime("event_occurred_at"),
        ) else {
            return;
        };
        self.send
            .record_millis(sent_at.timestamp_millis() - created.timestamp_millis());
        self.end_to_end
            .record_millis(sent_at.timestamp_millis() - occurred.timestamp_millis());
        let Some(at) = DateTime::from_timestamp_millis(sent_at.timestamp_millis()) else {
            return;
        };
        self.last_sent = Some(self.last_sent.map_or(at, |l| l.max(at)));
        let second = usize::try_from((at - t0).num_seconds().max(0)).unwrap_or(0);
        // A clock gone wrong must not allocate a vector of millions of seconds.
        if second < 100_000 {
            if self.per_second.len() <= second {
                self.per_second.resize(second + 1, 0);
            }
            self.per_second[second] += 1;
        }
    }
}

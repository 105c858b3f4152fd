//! What became of the shopper's mails, for the order page: the order service asks the mail
//! service's history API (`GET /notifications?order_id=`) with its own token
//! (`ORDER_MAIL_HISTORY_TOKEN`) on behalf of a shopper who showed the order's token. The
//! shopper never holds the operators' token, and sees only the mails of their order.

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use url::Url;
use uuid::Uuid;

/// The order page waits this long for the history before it says it is unavailable.
const TIMEOUT: Duration = Duration::from_secs(3);

/// A client of the mail service's history API.
#[derive(Clone)]
pub struct MailHistory {
    http: reqwest::Client,
    base: Url,
    token: Option<SecretString>,
}

/// One mail of an order, as the shopper sees it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Mail {
    /// `payment_completed`, `order_completed`, `order_cancelled`, `order_refunded`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `PENDING`, `RETRYING`, `SENT`, `FAILED`.
    pub status: String,
    pub recipient: String,
    pub subject: String,
    pub sent_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct Page {
    items: Vec<Mail>,
}

#[derive(Debug, thiserror::Error)]
pub enum MailHistoryError {
    #[error("no token for the mail history is configured (ORDER_MAIL_HISTORY_TOKEN)")]
    NotConfigured,
    #[error("the mail history did not answer: {0}")]
    Unavailable(String),
}

impl MailHistory {
    pub fn new(base: Url, token: Option<SecretString>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .expect("a client with a timeout builds");
        Self { http, base, token }
    }

    /// The mails of order `id`, newest first.
    pub async fn of_order(&self, id: Uuid) -> Result<Vec<Mail>, MailHistoryError> {
        let token = self.token.as_ref().ok_or(MailHistoryError::NotConfigured)?;
        let mut url = self
            .base
            .join("notifications")
            .map_err(|e| MailHistoryError::Unavailable(e.to_string()))?;
        url.query_pairs_mut()
            .append_pair("order_id", &id.to_string())
            .append_pair("limit", "50");
        let response = self
            .http
            .get(url)
            .bearer_auth(token.expose_secret())
            .send()
            .await
            .map_err(|e| MailHistoryError::Unavailable(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(MailHistoryError::Unavailable(format!(
                "answered {}",
                response.status()
            )));
        }
        let page: Page = response
            .json()
            .await
            .map_err(|e| MailHistoryError::Unavailable(e.without_url().to_string()))?;
        Ok(page.items)
    }
}

//! What order-service's handlers share: built once by [`crate::startup`], read by the
//! routes. Its own module so that the routes and the composition root do not import
//! each other.

use crate::changes::Changes;
use crate::persistence::OrderDb;
use shared_events::db::PgPool;
use shared_events::outbox::Outbox;
use std::time::Duration;

/// What the handlers share.
pub struct AppState {
    pub pool: PgPool,
    /// Where the handlers run their SQL (the blocking pool, or the async one in case 4).
    pub db: OrderDb,
    pub outbox: Outbox,
    pub payment_deadline: Duration,
    /// Who waits for which order (long polls, change streams).
    pub changes: Changes,
    pub waits: crate::watch::WaitLimits,
    /// Who may price an order line (`ORDER_ALLOW_CUSTOM_ITEMS`).
    pub pricing: crate::domain::Pricing,
    /// The mail service's history of the shopper's mails.
    pub mail_history: crate::mail_history::MailHistory,
    /// Case 1: payment's events arrive at `POST /internal/events` (and the API document
    /// says so).
    pub event_input: bool,
}

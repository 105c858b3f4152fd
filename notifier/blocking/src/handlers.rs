//! The handlers of the blocking mail service's own routes: `/readyz` and case 1's event
//! input (`POST /internal/events`). The history routes are the notifier's; the table of
//! all of them is [`crate::routes`].

use crate::service::{outcome_label, BlockingMailer, MailerError};
use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use notifier::api::health::ReadyzBody;
use serde::Serialize;
use shared_events::chain::{self, EventSigner};
use shared_events::db::{run_blocking, DbError, PgPool};
use shared_events::http::Problem;
use shared_events::readiness::Readiness;
use shared_events::{Case, Event};
use std::sync::Arc;

/// What the case-1 input and `/readyz` share.
pub struct MailerState {
    pub mailer: Arc<BlockingMailer>,
    pub pool: PgPool,
    /// Case 1: checks that `POST /internal/events` comes from order or payment.
    pub signer: Option<EventSigner>,
    pub readiness: Readiness,
    /// Which routes are served, so `/openapi.json` describes those.
    pub case: Case,
}

/// The answer to a handled event.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EventHandled {
    pub event_id: uuid::Uuid,
    #[schema(inline, value_type = OutcomeName)]
    pub outcome: &'static str,
}

/// `notifier_events_total`'s `outcome` label (`notifier::pipeline::outcome_label`), as
/// the document names it.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum OutcomeName {
    /// The event needs no mail.
    NoMail,
    Sent,
    /// Recorded `FAILED`.
    Failed,
    /// Seen before and finished: nothing sent.
    Duplicate,
}

/// Ready when started and PostgreSQL answers.
#[utoipa::path(
    get, path = "/readyz", tag = "operations", operation_id = "readyz",
    description = "200 once the history is migrated (and, in case 2, the Kafka topics exist) and PostgreSQL answers; 503 (readiness JSON, not a problem: probes read `status`) while starting or while PostgreSQL does not answer.",
    responses(
        (status = 200, description = "Ready", body = ReadyzBody),
        (status = 503, description = "Starting (`waiting_for`, `Retry-After: 1`) or PostgreSQL unavailable (`checks`)", body = ReadyzBody),
    )
)]
pub(crate) async fn readyz(state: web::Data<MailerState>) -> HttpResponse {
    if let Some(waiting_for) = state.readiness.waiting_for() {
        return shared_events::http::starting(&waiting_for);
    }
    let ping = run_blocking(&state.pool, |conn| {
        use diesel::RunQueryDsl;
        diesel::sql_query("SELECT 1")
            .execute(conn)
            .map_err(DbError::from)
    })
    .await;
    ReadyzBody::checked("postgres", ping.map(|_| ()).map_err(|e| e.to_string()))
}

/// Mails one event delivered over HTTP (case 1).
///
/// One event (the envelope JSON), signed by order or payment (`401` otherwise, nothing
/// mailed), handled by the same [`BlockingMailer`] the Kafka consumer uses, before the
/// answer: `200` once the mail is sent or recorded `FAILED` (or needs none), `400`/`422`
/// for an event that cannot be mailed (the sender should not retry), `503` when the
/// history is unavailable (retry later).
#[utoipa::path(
    post, path = "/internal/events", tag = "internal", operation_id = "receive_event",
    description = "Case 1's event input, from order-service and payment-service inside the shopper's request: the event is mailed (and recorded) before the answer. Only in case 1 (`SAGA_CASE=1`); in case 2 the events come from Kafka and this route is not served.",
    request_body(content = Object, content_type = "application/json", description = "An event envelope (`shared_events::Event`) as JSON"),
    security(("saga_signature" = [])),
    responses(
        (status = 200, description = "Handled: mailed, recorded FAILED, needing no mail, or done before", body = EventHandled),
        (status = 400, description = "Not an event envelope (malformed JSON, unknown type or schema version); not retried", content_type = "application/problem+json", body = Problem),
        (status = 401, description = "Not signed with the services' secret; nothing mailed", content_type = "application/problem+json", body = Problem),
        (status = 422, description = "An event that cannot be mailed (e.g. its mail does not render); not retried", content_type = "application/problem+json", body = Problem),
        (status = 503, description = "Still starting, or SMTP or the history unavailable; the sender retries", content_type = "application/problem+json", body = Problem),
    )
)]
pub(crate) async fn receive_event(
    state: web::Data<MailerState>,
    request: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    if let Some(refused) = chain::refuse_unsigned(state.signer.as_ref(), &request, &body) {
        return refused;
    }
    // Until the history is migrated nothing can be recorded: the sender retries.
    if let Some(waiting_for) = state.readiness.waiting_for() {
        // A problem like every other failure of this route (not `/readyz`'s JSON).
        let mut response = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "/problems/unavailable",
            "Service unavailable",
            format!("Still starting (waiting for {waiting_for}); try again shortly."),
        )
        .response();
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    }
    let event = match Event::from_json(&body) {
        Ok(event) => event,
        Err(error) => return Problem::invalid_event(error.to_string()).response(),
    };
    match state.mailer.handle_off_executor(&event).await {
        Ok(outcome) => {
            let label = outcome_label(outcome);
            metrics::counter!("notifier_events_total", "event_type" => event.event_type().as_str(), "outcome" => label).increment(1);
            HttpResponse::Ok().json(EventHandled {
                event_id: event.event_id,
                outcome: label,
            })
        }
        Err(error @ MailerError::Render(_)) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/unmailable-event",
            "Event cannot be mailed",
            error.to_string(),
        )
        .response(),
        Err(error) => {
            tracing::warn!(%error, event_id = %event.event_id, "Event not handled; the sender will retry.");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "/problems/unavailable",
                "Service unavailable",
                "The mail could not be sent or recorded now (SMTP or its history unavailable); try again.",
            )
            .response()
        }
    }
}

//! The blocking mail service's OpenAPI 3.1 document (`GET /openapi.json`): the
//! notifier's history routes (their `#[utoipa::path]` entries, reused), this service's
//! `/readyz` and, in case 1, its event input. A test holds each case's document against
//! that case's route table (`shared_events::routes`).

use crate::handlers::{EventHandled, MailerState};
use actix_web::{web, HttpResponse};
use notifier::api::doc::BearerToken;
use notifier::api::health::{ReadyStatus, ReadyzBody};
use notifier::api::notifications::{Page, StatsBody};
use notifier::domain::{DeliveryStatus, MailKind, Notification};
use notifier::store::{LatencyStats, Stats};
use shared_events::http::{Health, InvalidParam, Problem};
use shared_events::signing::SIGNATURE_HEADER;
use shared_events::Case;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "mailer-blocking",
        description = "The shop's blocking mail service (cases 1 and 2): the notifier's mails on blocking threads, the history in PostgreSQL. This API reads that history (the notifier's routes, same JSON, filters and token) and, in case 1, takes the saga's events over HTTP. Errors are RFC 9457 problem details (application/problem+json).",
    ),
    paths(
        shared_events::http::healthz,
        shared_events::http::metrics,
        crate::handlers::readyz,
        openapi_json,
        notifier::api::notifications::list,
        notifier::api::notifications::stats,
        notifier::api::notifications::get,
        crate::handlers::receive_event,
    ),
    components(schemas(
        Problem, InvalidParam, Health, ReadyzBody, ReadyStatus, Notification, MailKind,
        DeliveryStatus, Page, StatsBody, Stats, LatencyStats, EventHandled,
    )),
    modifiers(&BearerToken, &EventSignature),
    tags(
        (name = "notifications", description = "The mail history: one record per (event, recipient)"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
        (name = "internal", description = "Between the shop's services (case 1)"),
    )
)]
pub struct ApiDoc;

/// Case 1's HMAC signature of each delivery as the `saga_signature` scheme.
struct EventSignature;

impl Modify for EventSignature {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "saga_signature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                SIGNATURE_HEADER,
                "`sha256=<64 hex digits>`: the HMAC-SHA256 of the body under the services' shared secret (INTERNAL_EVENTS_SECRET) — a per-body signature, not a fixed key",
            ))),
        );
    }
}

/// The document of `case`'s routes: case 1's event input only where it is mounted.
pub fn document(case: Case) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    if case.uses_kafka() {
        doc.paths.paths.remove(shared_events::chain::EVENTS_PATH);
    }
    doc
}

/// This document.
#[utoipa::path(
    get, path = "/openapi.json", tag = "operations",
    description = "The OpenAPI 3.1 document of this service, as the running case serves it.",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
pub(crate) async fn openapi_json(state: web::Data<MailerState>) -> HttpResponse {
    HttpResponse::Ok().json(document(state.case))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_events::routes::{assert_spec_matches, RouteList};

    fn json(case: Case) -> serde_json::Value {
        serde_json::to_value(document(case)).expect("the document serializes")
    }

    #[test]
    fn each_case_s_document_describes_exactly_its_routes() {
        let case_2 = RouteList::of(crate::routes);
        assert_spec_matches(&case_2, &json(Case::KafkaBlockingMail));
        let case_1 = RouteList::of(crate::routes_with_event_input);
        assert_spec_matches(&case_1, &json(Case::SyncChain));
    }

    #[test]
    fn it_is_openapi_3_1_and_every_failure_is_a_problem() {
        for case in [Case::SyncChain, Case::KafkaBlockingMail] {
            let doc = json(case);
            assert_eq!(notifier::api::doc::breaches(&doc), Vec::<String>::new());
            assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        }
        let doc = json(Case::SyncChain);
        let events = &doc["paths"]["/internal/events"]["post"];
        assert_eq!(
            events["security"][0]["saga_signature"],
            serde_json::json!([])
        );
        for status in ["200", "400", "401", "422", "503"] {
            assert!(events["responses"][status].is_object(), "{status}");
        }
    }

    #[test]
    fn every_outcome_label_is_in_the_schema() {
        use notifier::service::Outcome;
        let doc = json(Case::SyncChain);
        let labels = &doc["components"]["schemas"]["EventHandled"]["properties"]["outcome"]["enum"];
        for outcome in [
            Outcome::NoMail,
            Outcome::Sent(MailKind::OrderCompleted),
            Outcome::Failed(MailKind::OrderCompleted),
            Outcome::AlreadyDone(DeliveryStatus::Sent),
        ] {
            let label = crate::service::outcome_label(outcome);
            assert!(
                labels.as_array().is_some_and(|l| l.contains(&label.into())),
                "{label}: {labels}"
            );
        }
    }
}

//! payment-service's OpenAPI 3.1 document (`GET /openapi.json`), generated from the
//! handlers' `#[utoipa::path]` and the types they answer with, and held against the route
//! table by a test (`shared_events::routes`).

use actix_web::HttpResponse;
use shared_events::routes::BearerAuth;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "payment-service",
        description = "Payments by Kakao Pay: the return URLs Kakao Pay sends the shopper to (approve, cancel, fail), and payment look-ups. Errors are RFC 9457 problem details (application/problem+json).",
    ),
    paths(
        shared_events::http::healthz,
        shared_events::http::metrics,
        crate::routes::readyz,
        openapi_json,
        crate::routes::list_payments,
        crate::routes::get_payment,
        crate::routes::approve,
        crate::routes::shopper_cancelled,
        crate::routes::payment_failed,
        crate::routes::receive_event,
    ),
    components(schemas(shared_events::http::Problem, shared_events::http::InvalidParam)),
    modifiers(&OPERATOR_TOKEN),
    tags(
        (name = "kakao-pay-return", description = "Where Kakao Pay sends the shopper back to"),
        (name = "payments", description = "Looking payments up (operators: Authorization: Bearer <PAYMENT_API_TOKEN>)"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
        (name = "internal", description = "Between the shop's services (case 1)"),
    )
)]
struct ApiDoc;

const OPERATOR_TOKEN: BearerAuth =
    BearerAuth("The operators' token of the payment look-ups (PAYMENT_API_TOKEN)");

/// The document as served: case 1's event input only where it is mounted.
pub fn document(event_input: bool) -> utoipa::openapi::OpenApi {
    let unmounted: &[&str] = if event_input {
        &[]
    } else {
        &[shared_events::chain::EVENTS_PATH]
    };
    shared_events::routes::as_served(ApiDoc::openapi(), env!("CARGO_PKG_VERSION"), unmounted)
}

/// This document.
#[utoipa::path(
    get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this service", content_type = "application/json", body = Object))
)]
pub(crate) async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(document(false))
}

/// Case 1's document, with its event input.
pub(crate) async fn openapi_json_with_event_input() -> HttpResponse {
    HttpResponse::Ok().json(document(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_events::routes::{assert_spec_matches, RouteList};

    fn json(event_input: bool) -> serde_json::Value {
        serde_json::to_value(document(event_input)).expect("the document serializes")
    }

    #[test]
    fn the_document_describes_exactly_the_routes_served() {
        assert_spec_matches(&RouteList::of(crate::routes::routes), &json(false));
        let case_1 = RouteList::of(crate::routes::routes_with_event_input);
        assert_spec_matches(&case_1, &json(true));
    }

    #[test]
    fn it_is_openapi_3_1_and_every_failure_is_a_problem() {
        shared_events::routes::assert_failures_are_problems(&json(true), &["/readyz"]);
    }
}

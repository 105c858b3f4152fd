//! order-service's OpenAPI 3.1 document (`GET /openapi.json`), generated from the
//! handlers' `#[utoipa::path]` and the types they answer with. A test holds it against
//! the route table (`shared_events::routes`): a route the document lacks, or a path it
//! describes that nothing serves, fails it.

use crate::view::{OrderView, PublicView};
use actix_web::HttpResponse;
use serde::Serialize;
use shared_events::routes::BearerAuth;
use utoipa::{OpenApi, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "order-service",
        description = "The shop's storefront API: the catalog, orders and their saga (payment by Kakao Pay, mails), and the storefront's pages. Errors are RFC 9457 problem details (application/problem+json).",
    ),
    paths(
        shared_events::http::healthz,
        shared_events::http::metrics,
        crate::routes::readyz,
        openapi_json,
        crate::routes::list_products,
        crate::routes::place_order,
        crate::routes::get_order,
        crate::routes::order_events,
        crate::routes::cancel_order,
        crate::routes::get_timeline,
        crate::routes::get_mails,
        crate::routes::receive_event,
        crate::storefront::home,
        crate::storefront::shop,
        crate::storefront::order_page,
        crate::storefront::asset,
    ),
    components(schemas(shared_events::http::Problem, shared_events::http::InvalidParam)),
    modifiers(&ORDER_TOKEN),
    tags(
        (name = "catalog", description = "What the shop sells"),
        (name = "orders", description = "Placing and following an order"),
        (name = "storefront", description = "The shop's pages (HTML)"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
        (name = "internal", description = "Between the shop's services (case 1)"),
    )
)]
pub struct ApiDoc;

/// The shopper's proof: the order's token as a bearer token.
const ORDER_TOKEN: BearerAuth = BearerAuth("The order's access_token, from POST /orders");

/// The answer to `POST /orders`: the shopper's view and, this once, the order's token.
/// A schema only (`view::Rendered::placed` writes these bytes), so never built.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
pub(crate) struct PlacedOrder {
    #[serde(flatten)]
    order: OrderView,
    /// The shopper's capability for this order (64 hex digits): shown only here.
    access_token: String,
}

/// `GET /orders/{id}`: the shopper's view with the order's token, else the public one.
/// A schema only (`view::Rendered::of` writes these bytes), so never built.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum OrderAnswer {
    Owner(OrderView),
    Public(PublicView),
}

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
pub(crate) async fn openapi_json(
    state: actix_web::web::Data<crate::state::AppState>,
) -> HttpResponse {
    HttpResponse::Ok().json(document(state.event_input))
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

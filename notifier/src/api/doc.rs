//! The notifier's OpenAPI 3.1 document (`GET /openapi.json`), generated from the
//! handlers' `#[utoipa::path]` and the types they answer with. A test holds it against
//! the route table ([`super::routes`], `shared_events::routes`): a route the document
//! lacks, or a path it describes that nothing serves, fails it. The blocking mail service
//! serves the same history routes and reuses their entries.

use super::health::{self, ReadyStatus, ReadyzBody};
use super::notifications::{self, Page, StatsBody};
use crate::domain::{DeliveryStatus, MailKind, Notification};
use crate::store::{LatencyStats, Stats};
use actix_web::HttpResponse;
use shared_events::http::{Health, InvalidParam, Problem};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "notifier",
        description = "The shop's mail service (case 3, Tokio): it mails shoppers about their orders from the saga's Kafka events and keeps the mail history in MongoDB. This API reads that history. Errors are RFC 9457 problem details (application/problem+json).",
    ),
    paths(
        shared_events::http::healthz,
        shared_events::http::metrics,
        health::readyz,
        openapi_json,
        notifications::list,
        notifications::stats,
        notifications::get,
    ),
    components(schemas(
        Problem, InvalidParam, Health, ReadyzBody, ReadyStatus, Notification, MailKind,
        DeliveryStatus, Page, StatsBody, Stats, LatencyStats,
    )),
    modifiers(&BearerToken),
    tags(
        (name = "notifications", description = "The mail history: one record per (event, recipient)"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    )
)]
pub struct ApiDoc;

/// The document as served.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// This document.
#[utoipa::path(
    get, path = "/openapi.json", tag = "operations",
    description = "The OpenAPI 3.1 document of this service.",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(document())
}

/// The history API's token (`NOTIFIER_API_TOKEN`) as the `bearer` scheme.
pub struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The history API's token (NOTIFIER_API_TOKEN)"))
                    .build(),
            ),
        );
    }
}

/// What a mail service's document must hold to besides its routes: OpenAPI 3.1, every
/// schema it names defined, every
/// operation described (a summary will do: the workspace's `/healthz` and `/metrics`
/// have only that), every failure a problem (but `/readyz`'s 503, readiness JSON
/// for probes), 401 wherever credentials are required, and 403 too where they are the
/// bearer token (a wrong one is told apart from none). Returns each breach.
pub fn breaches(doc: &serde_json::Value) -> Vec<String> {
    let mut found = Vec::new();
    if !doc["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.1."))
    {
        found.push(format!("openapi is {}, not 3.1.x", doc["openapi"]));
    }
    let mut named = Vec::new();
    schema_refs(doc, &mut named);
    for name in named {
        let schema = name.trim_start_matches("#/components/schemas/");
        if !doc["components"]["schemas"][schema].is_object() {
            found.push(format!("{name} is not in the components"));
        }
    }
    let paths = doc["paths"].as_object().cloned().unwrap_or_default();
    for (path, item) in &paths {
        let operations = item.as_object().cloned().unwrap_or_default();
        for (method, operation) in &operations {
            let name = format!("{method} {path}");
            let described = ["description", "summary"]
                .iter()
                .any(|key| !operation[key].as_str().unwrap_or_default().is_empty());
            if !described {
                found.push(format!("{name} has no description"));
            }
            let responses = operation["responses"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            for (status, response) in &responses {
                let failure = status.starts_with('4') || status.starts_with('5');
                let readiness = path == "/readyz" && status == "503";
                if failure
                    && !readiness
                    && !response["content"]["application/problem+json"].is_object()
                {
                    found.push(format!("{name} answers {status} without a problem"));
                }
            }
            let schemes = operation["security"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let bearer = schemes.iter().any(|s| s.get("bearer").is_some());
            let needed = match (schemes.is_empty(), bearer) {
                (true, _) => &[][..],
                (false, false) => &["401"][..],
                (false, true) => &["401", "403"][..],
            };
            for status in needed {
                if !responses.contains_key(*status) {
                    found.push(format!(
                        "{name} needs credentials but does not declare {status}"
                    ));
                }
            }
        }
    }
    found
}

/// Every `$ref` anywhere in `value`.
fn schema_refs(value: &serde_json::Value, found: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(fields) => {
            if let Some(serde_json::Value::String(name)) = fields.get("$ref") {
                found.push(name.clone());
            }
            fields.values().for_each(|v| schema_refs(v, found));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| schema_refs(v, found)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_events::routes::{assert_spec_matches, RouteList};

    fn json() -> serde_json::Value {
        serde_json::to_value(document()).expect("the document serializes")
    }

    #[test]
    fn the_document_describes_exactly_the_routes_served() {
        assert_spec_matches(&RouteList::of(super::super::routes), &json());
    }

    #[test]
    fn it_is_openapi_3_1_and_every_failure_is_a_problem() {
        let doc = json();
        assert_eq!(breaches(&doc), Vec::<String>::new());
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        let bearer = &doc["components"]["securitySchemes"]["bearer"];
        assert_eq!(bearer["scheme"], "bearer");
        for path in [
            "/notifications",
            "/notifications/stats",
            "/notifications/{id}",
        ] {
            assert_eq!(
                doc["paths"][path]["get"]["security"][0]["bearer"],
                serde_json::json!([]),
                "{path}"
            );
        }
    }

    #[test]
    fn every_list_filter_is_documented() {
        let doc = json();
        let names: Vec<&str> = doc["paths"]["/notifications"]["get"]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        let filters = [
            "order_id",
            "recipient",
            "type",
            "status",
            "from",
            "to",
            "limit",
            "cursor",
        ];
        assert_eq!(names, filters);
    }
}

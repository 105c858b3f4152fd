//! One route table per service, read twice: once to mount the routes in actix-web, once
//! to list them, so a test can hold the service's OpenAPI document against what it
//! really serves ([`assert_spec_matches`]): a route the spec lacks, or a path in the spec
//! that no route serves, fails it.
//!
//! A service writes its routes once, generic over [`Router`]:
//!
//! ```text
//! pub fn routes<R: Router>(r: &mut R) {
//!     r.route(Method::GET, "/orders/{id}", get_order)
//!         .route(Method::POST, "/orders", place_order);
//! }
//! ```
//!
//! and mounts them with `mount(cfg, routes)`: one resource per path, so a method a path
//! does not serve is a `405` problem with `Allow`, not the `404` of an unknown path; and a
//! query, path, form or JSON body actix-web's extractors cannot read is a problem too, not
//! their plain-text answer.

use actix_web::http::Method;
use actix_web::{web, FromRequest, Handler, Responder};
use std::collections::BTreeSet;

/// Where routes go: a [`Mount`] (they are served), or a [`RouteList`] (they are listed).
pub trait Router {
    /// The route `method path` → `handler`.
    fn route<F, Args>(&mut self, method: Method, path: &'static str, handler: F) -> &mut Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static;
}

/// The routes of a table as actix-web resources, one per path, in the table's order.
#[derive(Default)]
pub struct Mount {
    /// Path, its resource (always `Some` between calls), the methods it serves.
    resources: Vec<(&'static str, Option<actix_web::Resource>, Vec<Method>)>,
}

impl Router for Mount {
    fn route<F, Args>(&mut self, method: Method, path: &'static str, handler: F) -> &mut Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        let route = web::method(method.clone()).to(handler);
        match self.resources.iter_mut().find(|(p, ..)| *p == path) {
            Some((_, resource, methods)) => {
                *resource = resource.take().map(|r| r.route(route));
                methods.push(method);
            }
            None => {
                let resource = web::resource(path).route(route);
                self.resources.push((path, Some(resource), vec![method]));
            }
        }
        self
    }
}

/// Serves `table` in `cfg`.
pub fn mount(cfg: &mut web::ServiceConfig, table: impl FnOnce(&mut Mount)) {
    unreadable_input_is_a_problem(cfg);
    let mut mount = Mount::default();
    table(&mut mount);
    for (_, resource, methods) in mount.resources {
        let Some(resource) = resource else { continue };
        let allow = methods
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        cfg.service(resource.default_service(web::to(move || {
            let allow = allow.clone();
            async move { method_not_allowed(&allow) }
        })));
    }
}

/// The extractors' refusals (a duplicated query parameter, a body that is not JSON…) as
/// problems, with the status the extractor chose.
fn unreadable_input_is_a_problem(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::QueryConfig::default().error_handler(|e, _| unreadable("query", e)))
        .app_data(web::PathConfig::default().error_handler(|e, _| unreadable("path", e)))
        .app_data(web::FormConfig::default().error_handler(|e, _| unreadable("form", e)))
        .app_data(web::JsonConfig::default().error_handler(|e, _| unreadable("body", e)));
}

fn unreadable<E>(part: &str, error: E) -> actix_web::Error
where
    E: actix_web::ResponseError + 'static,
{
    let problem = crate::problem::Problem::new(
        error.status_code(),
        "/problems/invalid-request",
        "Invalid request",
        format!("The request's {part} cannot be read: {error}."),
    );
    actix_web::error::InternalError::from_response(error, problem.response()).into()
}

/// `405` for a method the path does not serve, with the ones it does.
fn method_not_allowed(allow: &str) -> actix_web::HttpResponse {
    let mut response = crate::problem::Problem::new(
        actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
        "/problems/method-not-allowed",
        "Method not allowed",
        format!("This resource answers {allow}."),
    )
    .response();
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(allow) {
        response
            .headers_mut()
            .insert(actix_web::http::header::ALLOW, value);
    }
    response
}

/// The routes of a table, as `(method, path)` with actix-web's `{name}` placeholders —
/// OpenAPI's path template syntax too.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RouteList(pub BTreeSet<(String, String)>);

impl Router for RouteList {
    fn route<F, Args>(&mut self, method: Method, path: &'static str, _handler: F) -> &mut Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.0
            .insert((method.as_str().to_lowercase(), path.to_owned()));
        self
    }
}

impl RouteList {
    /// The routes `table` declares.
    pub fn of(table: impl FnOnce(&mut RouteList)) -> Self {
        let mut list = RouteList::default();
        table(&mut list);
        list
    }
}

/// Every `(method, path)` the OpenAPI document (as JSON) describes.
pub fn spec_operations(spec: &serde_json::Value) -> BTreeSet<(String, String)> {
    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    let mut operations = BTreeSet::new();
    let paths = spec["paths"].as_object().cloned().unwrap_or_default();
    for (path, item) in paths {
        for method in METHODS {
            if item.get(method).is_some() {
                operations.insert((method.to_owned(), path.clone()));
            }
        }
    }
    operations
}

/// Fails, listing both differences, unless the spec describes exactly the routes served.
pub fn assert_spec_matches(routes: &RouteList, spec: &serde_json::Value) {
    let described = spec_operations(spec);
    let undocumented: Vec<_> = routes.0.difference(&described).collect();
    let unserved: Vec<_> = described.difference(&routes.0).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "the OpenAPI document and the routes differ:\n  served but not described: {undocumented:?}\n  described but not served: {unserved:?}"
    );
}

/// `/healthz` and `/metrics`, in a service's route table.
pub fn common_routes<R: Router>(r: &mut R) {
    r.route(Method::GET, "/healthz", crate::http::healthz)
        .route(Method::GET, "/metrics", crate::http::metrics);
}

/// Fails unless the document is OpenAPI 3.1 and every 4xx and 5xx answer of every
/// operation is a problem (`application/problem+json`); `except` names the paths whose
/// failures answer otherwise (a `/readyz` answers its 503 as a health body).
pub fn assert_failures_are_problems(spec: &serde_json::Value, except: &[&str]) {
    let version = spec["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1"), "OpenAPI 3.1, not {version:?}");
    let paths = spec["paths"].as_object().cloned().unwrap_or_default();
    for (path, item) in paths
        .iter()
        .filter(|(path, _)| !except.contains(&path.as_str()))
    {
        for (method, operation) in item.as_object().into_iter().flatten() {
            let Some(responses) = operation["responses"].as_object() else {
                continue;
            };
            for (status, response) in responses {
                let failure = status.starts_with('4') || status.starts_with('5');
                let problem = response["content"]["application/problem+json"].is_object();
                assert!(
                    !failure || problem,
                    "{method} {path} {status} is not a problem"
                );
            }
        }
    }
}

/// The `bearer` security scheme (HTTP `Authorization: Bearer …`), described by its text.
pub struct BearerAuth(pub &'static str);

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(self.0))
            .build();
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// `doc` with this crate's version, and without `unmounted` (e.g. case 1's
/// `/internal/events` in cases 2–4).
pub fn as_served(
    mut doc: utoipa::openapi::OpenApi,
    version: &str,
    unmounted: &[&str],
) -> utoipa::openapi::OpenApi {
    doc.info.version = version.to_owned();
    for path in unmounted {
        doc.paths.paths.remove(*path);
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn ok() -> &'static str {
        "ok"
    }

    fn table<R: Router>(r: &mut R) {
        r.route(Method::GET, "/orders/{id}", ok)
            .route(Method::POST, "/orders", ok);
    }

    #[test]
    fn a_spec_of_exactly_the_routes_matches() {
        let routes = RouteList::of(table);
        let spec = serde_json::json!({"paths": {
            "/orders": {"post": {}},
            "/orders/{id}": {"get": {}, "parameters": []}
        }});
        assert_spec_matches(&routes, &spec);
    }

    #[test]
    #[should_panic(expected = "served but not described")]
    fn a_route_the_spec_lacks_fails() {
        let spec = serde_json::json!({"paths": {"/orders": {"post": {}}}});
        assert_spec_matches(&RouteList::of(table), &spec);
    }

    #[derive(serde::Deserialize)]
    struct Lookup {
        #[allow(dead_code)]
        order_id: String,
    }

    async fn lookup(_: web::Query<Lookup>) -> &'static str {
        "ok"
    }

    #[actix_web::test]
    async fn a_query_the_extractor_cannot_read_is_a_problem() {
        use actix_web::{test, App};
        let app = test::init_service(App::new().configure(|cfg| {
            mount(cfg, |r| {
                r.route(Method::GET, "/payments", lookup);
            })
        }))
        .await;
        for uri in ["/payments?order_id=1&order_id=2", "/payments"] {
            let request = test::TestRequest::get().uri(uri).to_request();
            let response = test::call_service(&app, request).await;
            assert_eq!(response.status(), 400, "{uri}");
            assert_eq!(
                response
                    .headers()
                    .get("content-type")
                    .expect("a content type"),
                "application/problem+json",
                "{uri}"
            );
            let body: serde_json::Value = test::read_body_json(response).await;
            assert_eq!(body["type"], "/problems/invalid-request", "{uri}");
            assert!(
                body["detail"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("order_id"),
                "{body}"
            );
        }
        let read = test::TestRequest::get()
            .uri("/payments?order_id=1")
            .to_request();
        assert_eq!(test::call_service(&app, read).await.status(), 200);
    }

    #[test]
    #[should_panic(expected = "described but not served")]
    fn a_path_no_route_serves_fails() {
        let spec = serde_json::json!({"paths": {
            "/orders": {"post": {}, "get": {}},
            "/orders/{id}": {"get": {}}
        }});
        assert_spec_matches(&RouteList::of(table), &spec);
    }
}

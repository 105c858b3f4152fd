//! The document against the route table, and against what a running simulator answers:
//! its Kakao bodies are rendered with `json!`, apart from the shapes that describe them,
//! so only answers checked against the document keep the two the same.

use serde_json::{json, Value};
use shared_events::routes::{assert_spec_matches, RouteList};

use super::document;
use crate::sim::{self, SimConfig};

fn doc() -> Value {
    serde_json::to_value(document()).expect("the document serializes")
}

#[test]
fn the_document_describes_exactly_the_routes_served() {
    assert_spec_matches(&RouteList::of(sim::routes), &doc());
}

/// Every `$ref` of `value`, anywhere in it.
fn refs(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(fields) => {
            if let Some(Value::String(name)) = fields.get("$ref") {
                found.push(name.clone());
            }
            fields.values().for_each(|v| refs(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
        _ => {}
    }
}

#[test]
fn it_is_openapi_3_1_and_every_failure_is_described_in_its_format() {
    let doc = doc();
    let mut named = Vec::new();
    refs(&doc, &mut named);
    for name in named {
        let schema = name.trim_start_matches("#/components/schemas/");
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "{name} is not in components"
        );
    }
    assert!(doc["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.1.")));
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("operations") {
            let name = format!("{method} {path}");
            let described = ["description", "summary"]
                .iter()
                .any(|key| operation[key].as_str().is_some_and(|s| !s.is_empty()));
            assert!(described, "{name} has no description");
            // Kakao's API answers Kakao's errors, the shopper page HTML, the rest problems.
            let failure_type = match path.as_str() {
                p if p.starts_with("/online/") => "application/json",
                "/__sim/pay/{tid}" => "text/html",
                _ => "application/problem+json",
            };
            let responses = operation["responses"].as_object().expect("responses");
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    assert!(
                        response["content"][failure_type].is_object(),
                        "{name} {status} is not {failure_type}"
                    );
                }
            }
            if path.starts_with("/online/") {
                assert_eq!(operation["security"], json!([{"secret_key": []}]), "{name}");
                assert!(responses.contains_key("401"), "{name} declares no 401");
            }
        }
    }
}

/// Why `value` does not conform to `schema` (the subset of JSON Schema utoipa emits:
/// `$ref`, `type` with `null`, `properties`, `required`, `additionalProperties`, `items`,
/// `enum`, `oneOf`, `anyOf`, `allOf`), or nothing. Stricter than JSON Schema in one
/// way: a field no schema names is a breach too, so a field the simulator renders but
/// the document lacks fails.
fn breaches(doc: &Value, schema: &Value, value: &Value, at: &str) -> Vec<String> {
    let mut found = conformance(doc, schema, value, at);
    if let (Value::Object(fields), Some(known)) = (value, known_fields(doc, schema)) {
        let unknown = fields.keys().filter(|name| !known.contains(*name));
        found.extend(unknown.map(|name| format!("{at}.{name} is not described")));
    }
    found
}

/// The fields `schema` names, through `$ref` and `allOf`; `None` when it takes any.
fn known_fields(doc: &Value, schema: &Value) -> Option<std::collections::BTreeSet<String>> {
    let schema = resolve(doc, schema);
    if schema
        .get("additionalProperties")
        .is_some_and(|a| a != &Value::Bool(false))
    {
        return None;
    }
    let mut known: std::collections::BTreeSet<String> = schema["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    for part in schema["allOf"].as_array().into_iter().flatten() {
        known.extend(known_fields(doc, part)?);
    }
    let typed = schema.get("properties").is_some() || schema.get("allOf").is_some();
    typed.then_some(known)
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(name) => {
            let name = name.trim_start_matches("#/components/schemas/");
            resolve(doc, &doc["components"]["schemas"][name])
        }
        None => schema,
    }
}

/// Plain JSON Schema conformance (unknown fields allowed at this level).
fn conformance(doc: &Value, schema: &Value, value: &Value, at: &str) -> Vec<String> {
    let schema = resolve(doc, schema);
    let mut found = Vec::new();
    for all in schema["allOf"].as_array().into_iter().flatten() {
        found.extend(conformance(doc, all, value, at));
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema[key].as_array() {
            if options
                .iter()
                .all(|o| !breaches(doc, o, value, at).is_empty())
            {
                found.push(format!("{at}: {value} matches none of {key}"));
            }
        }
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            found.push(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() && !types.iter().any(|t| is_type(value, t)) {
        found.push(format!("{at}: {value} is not {types:?}"));
        return found;
    }
    if let Value::Object(fields) = value {
        for name in schema["required"].as_array().into_iter().flatten() {
            let name = name.as_str().unwrap_or_default();
            if !fields.contains_key(name) {
                found.push(format!("{at}: required {name} is missing"));
            }
        }
        for (name, v) in fields {
            let here = format!("{at}.{name}");
            match (
                schema["properties"].get(name),
                schema.get("additionalProperties"),
            ) {
                (Some(property), _) => found.extend(breaches(doc, property, v, &here)),
                (None, Some(Value::Bool(_))) | (None, None) => {}
                (None, Some(extra)) => found.extend(breaches(doc, extra, v, &here)),
            }
        }
    }
    if let (Value::Array(items), Some(item)) = (value, schema.get("items")) {
        for (i, v) in items.iter().enumerate() {
            found.extend(breaches(doc, item, v, &format!("{at}[{i}]")));
        }
    }
    found
}

fn is_type(value: &Value, name: &str) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => false,
    }
}

/// A running simulator and what each of its answers is checked against.
struct Sim {
    _sim: sim::SimHandle,
    base: String,
    http: reqwest::Client,
    doc: Value,
}

impl Sim {
    async fn start() -> Self {
        let sim = sim::spawn(SimConfig::default())
            .await
            .expect("the simulator starts");
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a client");
        let base = sim.base_url.as_str().trim_end_matches('/').to_owned();
        Self {
            _sim: sim,
            base,
            http,
            doc: doc(),
        }
    }

    /// Sends `method path` (with a JSON `body`), checks the answer against the document's
    /// entry of `template` and returns its status and JSON body (`null` if none).
    async fn call(
        &self,
        method: &str,
        path: &str,
        template: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method_ = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let mut request = self.http.request(method_, format!("{}{path}", self.base));
        if template.starts_with("/online/") {
            request = request.header(
                "authorization",
                format!("SECRET_KEY {}", sim::DEFAULT_SECRET_KEY),
            );
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("an answer");
        let status = response.status().as_u16();
        let media = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_owned());
        let text = response.text().await.expect("a body");
        let declared =
            &self.doc["paths"][template][method.to_lowercase()]["responses"][status.to_string()];
        let name = format!("{method} {path} → {status}");
        assert!(
            declared.is_object(),
            "{name} is not in the document: {text}"
        );
        let Some(media) = media else {
            assert!(
                declared.get("content").is_none(),
                "{name} has no body but declares one"
            );
            return (status, Value::Null);
        };
        let content = &declared["content"][media.as_str()];
        assert!(
            content.is_object(),
            "{name} answers {media}, not declared: {declared}"
        );
        let value = match media.as_str() {
            "text/html" | "text/plain" => Value::String(text),
            _ => serde_json::from_str(&text).expect("a JSON body"),
        };
        let found = breaches(&self.doc, &content["schema"], &value, "body");
        assert!(found.is_empty(), "{name}: {found:#?}\n{value:#}");
        (status, value)
    }

    async fn api(&self, op: &str, body: Value) -> (u16, Value) {
        let path = format!("/online/v1/payment/{op}");
        self.call("POST", &path, &path, Some(body)).await
    }

    /// A readied, then shopper-approved payment: its tid and pg_token.
    async fn authenticated(&self, order: &str, method: &str) -> (String, String) {
        let (status, ready) = self
            .api(
                "ready",
                json!({
                    "cid": crate::TEST_CID, "partner_order_id": order, "partner_user_id": "u-1",
                    "item_name": "Pie", "quantity": 1, "total_amount": 2200, "tax_free_amount": 0,
                    "payment_method_type": method, "approval_url": "http://shop.test/ok",
                    "cancel_url": "http://shop.test/cancel", "fail_url": "http://shop.test/fail",
                }),
            )
            .await;
        assert_eq!(status, 200);
        let tid = ready["tid"].as_str().expect("a tid").to_owned();
        let response = self
            .http
            .get(format!("{}/__sim/pay/{tid}", self.base))
            .send()
            .await
            .expect("the page answers");
        assert_eq!(response.status().as_u16(), 302);
        let location = response.headers()["location"]
            .to_str()
            .expect("a URL")
            .to_owned();
        let token = location
            .split("pg_token=")
            .nth(1)
            .expect("a pg_token")
            .to_owned();
        (tid, token)
    }
}

#[tokio::test]
async fn every_kakao_answer_is_what_the_document_says() {
    let sim = Sim::start().await;
    let cid = crate::TEST_CID;
    for method in ["MONEY", "CARD"] {
        let order = format!("o-{method}");
        let (tid, pg_token) = sim.authenticated(&order, method).await;
        let (status, order_json) = sim.api("order", json!({"cid": cid, "tid": tid})).await;
        assert_eq!(
            (status, order_json["status"].as_str()),
            (200, Some("AUTH_PASSWORD"))
        );
        let approve = json!({
            "cid": cid, "tid": tid, "partner_order_id": order, "partner_user_id": "u-1",
            "pg_token": pg_token, "payload": "p",
        });
        assert_eq!(sim.api("approve", approve.clone()).await.0, 200);
        assert_eq!(sim.api("approve", approve).await.0, 400, "approved already");
        let (status, _) = sim.api("order", json!({"cid": cid, "tid": tid})).await;
        assert_eq!(status, 200);
        let cancel =
            json!({"cid": cid, "tid": tid, "cancel_amount": 1000, "cancel_tax_free_amount": 0});
        assert_eq!(sim.api("cancel", cancel).await.0, 200);
        let (status, order_json) = sim.api("order", json!({"cid": cid, "tid": tid})).await;
        assert_eq!(
            (status, order_json["status"].as_str()),
            (200, Some("PART_CANCEL_PAYMENT"))
        );
    }
    let (status, error) = sim.api("order", json!({"cid": cid, "tid": "T-none"})).await;
    assert_eq!((status, error["error_code"].as_i64()), (400, Some(-721)));
    let unauthorized = sim
        .http
        .post(format!("{}/online/v1/payment/order", sim.base))
        .json(&json!({"cid": cid, "tid": "T"}))
        .send()
        .await
        .expect("an answer");
    assert_eq!(unauthorized.status().as_u16(), 401);
}

#[tokio::test]
async fn a_decline_and_the_injected_faults_answer_as_documented() {
    let sim = Sim::start().await;
    let patch = json!({"decline_rate": 1.0, "decline_code": "USER_LOCKED"});
    assert_eq!(
        sim.call("PUT", "/__sim/faults", "/__sim/faults", Some(patch))
            .await
            .0,
        200
    );
    let (tid, pg_token) = sim.authenticated("o-declined", "MONEY").await;
    let approve = json!({
        "cid": crate::TEST_CID, "tid": tid, "partner_order_id": "o-declined",
        "partner_user_id": "u-1", "pg_token": pg_token,
    });
    let (status, error) = sim.api("approve", approve).await;
    assert_eq!(
        (status, error["extras"]["method_result_code"].as_str()),
        (400, Some("USER_LOCKED"))
    );
    for (patch, status) in [
        (json!({"error_rate": 1.0}), 500),
        (json!({"outage": true}), 503),
    ] {
        assert_eq!(
            sim.call("PUT", "/__sim/faults", "/__sim/faults", Some(patch))
                .await
                .0,
            200
        );
        assert_eq!(
            sim.api("order", json!({"cid": crate::TEST_CID, "tid": tid}))
                .await
                .0,
            status
        );
    }
}

#[tokio::test]
async fn the_simulator_s_own_endpoints_answer_as_documented() {
    let sim = Sim::start().await;
    let (tid, _) = sim.authenticated("o-ledger", "MONEY").await;
    let (_, ledger) = sim
        .call("GET", "/__sim/ledger", "/__sim/ledger", None)
        .await;
    assert_eq!(ledger[&tid]["status"], "AUTH_PASSWORD");
    sim.call("GET", "/__sim/faults", "/__sim/faults", None)
        .await;
    for bad in [
        json!({"error_rate": 2.0}),
        json!({"no_such_knob": 1}),
        json!([]),
    ] {
        assert_eq!(
            sim.call("PUT", "/__sim/faults", "/__sim/faults", Some(bad))
                .await
                .0,
            400
        );
    }
    the_shopper_page_answers_as_documented(&sim).await;
    let clock = "/__sim/clock/advance";
    for (body, status) in [
        (json!({"secs": 3_155_760_000_u64}), 204),
        (json!({"secs": 3_155_760_001_u64}), 400),
        (json!({"secs": -1}), 400),
        (json!({"seconds": 1}), 400),
    ] {
        assert_eq!(sim.call("POST", clock, clock, Some(body)).await.0, status);
    }
    for _ in 0..5 {
        sim.call(
            "POST",
            clock,
            clock,
            Some(json!({"secs": 3_155_760_000_u64})),
        )
        .await;
    }
    let (status, order) = sim
        .api("order", json!({"cid": crate::TEST_CID, "tid": tid}))
        .await;
    assert_eq!(
        (status, order["status"].as_str()),
        (200, Some("FAIL_PAYMENT")),
        "expired"
    );
    sim.call("GET", "/healthz", "/healthz", None).await;
    let (_, served) = sim
        .call("GET", "/openapi.json", "/openapi.json", None)
        .await;
    assert_eq!(served, doc());
}

/// In manual mode: the choice page, a bad action, an unknown tid, a choice.
async fn the_shopper_page_answers_as_documented(sim: &Sim) {
    let manual = json!({"mode": "manual", "tid_ttl_secs": 60});
    assert_eq!(
        sim.call("PUT", "/__sim/faults", "/__sim/faults", Some(manual))
            .await
            .0,
        200
    );
    let (status, ready) = sim
        .api(
            "ready",
            json!({
                "cid": crate::TEST_CID, "partner_order_id": "o-manual", "partner_user_id": "u-1",
                "item_name": "Pie", "quantity": "1", "total_amount": "1000", "tax_free_amount": 0,
                "approval_url": "http://shop.test/ok", "cancel_url": "http://shop.test/cancel",
                "fail_url": "http://shop.test/fail",
            }),
        )
        .await;
    assert_eq!(status, 200);
    let page = format!("/__sim/pay/{}", ready["tid"].as_str().expect("a tid"));
    let template = "/__sim/pay/{tid}";
    assert_eq!(
        sim.call("GET", &page, template, None).await.0,
        200,
        "the choice page"
    );
    let bad_action = format!("{page}?action=steal&action=approve");
    assert_eq!(sim.call("GET", &bad_action, template, None).await.0, 400);
    assert_eq!(
        sim.call("GET", "/__sim/pay/T-none", template, None).await.0,
        404
    );
    assert_eq!(
        sim.call("GET", &format!("{page}?action=fail"), template, None)
            .await
            .0,
        302
    );
}

#[test]
fn the_checker_finds_missing_extra_and_ill_typed_fields() {
    let doc = doc();
    let schema = json!({"$ref": "#/components/schemas/Money"});
    let money =
        json!({"total": 1, "tax_free": 0, "vat": 0, "point": 0, "discount": 0, "green_deposit": 0});
    assert_eq!(breaches(&doc, &schema, &money, "m"), Vec::<String>::new());
    let mut wrong = money.clone();
    wrong["total"] = json!(null);
    wrong["extra"] = json!(1);
    wrong.as_object_mut().expect("object").remove("vat");
    let found = breaches(&doc, &schema, &wrong, "m");
    assert_eq!(found.len(), 3, "{found:#?}");
}

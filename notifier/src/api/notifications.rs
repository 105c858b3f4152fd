//! The history API.
//!
//! `GET /notifications` — query parameters, all optional and combined with AND:
//!
//! | parameter | meaning |
//! |---|---|
//! | `order_id` | a UUID |
//! | `recipient` | exact address |
//! | `type` | `payment_completed`, `order_completed`, `order_cancelled`, `order_refunded` |
//! | `status` | `PENDING`, `RETRYING`, `SENT`, `FAILED` |
//! | `from`, `to` | RFC 3339 instants; `from <= created_at < to` |
//! | `limit` | page size, default 50, at most 200 (larger values are capped) |
//! | `cursor` | the `next_cursor` of the previous page |
//!
//! The answer is always an object: `{ "items": [record, …], "next_cursor": null | "…" }`,
//! records newest first (`created_at`, then `id`, descending). `next_cursor` is opaque;
//! it is `null` on the last page. Unknown parameters are ignored; invalid ones give a 400
//! problem naming each of them in `invalid_params`.
//!
//! `GET /notifications/{id}` — one record, 404 if there is none.
//!
//! `GET /notifications/stats?window=15m` — over the records created in the window
//! (`<n>s|m|h|d`, 1 s to 7 d, default 15m): `total`, `by_type` (type → status → count),
//! `by_status`, and `send_latency_ms` (`count`, `p50`, `p95`, `p99`, nearest rank, of
//! `sent_at - created_at` over the `SENT` records; `null` without any).

use super::auth::Authorized;
use super::error::ApiError;
use super::ApiState;
use crate::domain::{DeliveryStatus, MailKind, Notification};
use crate::store::{Cursor, ListQuery, Stats};
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;
use shared_events::http::InvalidParam;
use std::collections::HashMap;
use uuid::Uuid;

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 200;
const MAX_WINDOW_SECS: i64 = 7 * 24 * 3600;

#[derive(Serialize)]
struct PageBody {
    items: Vec<Notification>,
    next_cursor: Option<String>,
}

pub async fn list(
    _: Authorized,
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let query = parse_list_query(req.query_string())?;
    let page = state.store.list(&query).await?;
    Ok(HttpResponse::Ok().json(PageBody {
        items: page.items,
        next_cursor: page.next_cursor.map(|c| c.encode()),
    }))
}

pub async fn get(
    _: Authorized,
    id: web::Path<String>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    if Uuid::parse_str(&id).is_err() {
        return Err(ApiError::invalid_param("id", "must be a UUID"));
    }
    match state.store.get(&id).await? {
        Some(record) => Ok(HttpResponse::Ok().json(record)),
        None => Err(ApiError::NotFound(id)),
    }
}

#[derive(Serialize)]
struct StatsBody {
    window: String,
    window_seconds: i64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    #[serde(flatten)]
    stats: Stats,
}

pub async fn stats(
    _: Authorized,
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let params = params(req.query_string());
    let window = params.get("window").map_or("15m", String::as_str);
    let seconds =
        parse_window(window).map_err(|reason| ApiError::invalid_param("window", reason))?;
    let to = Utc::now();
    let from = to - chrono::Duration::seconds(seconds);
    let stats = state.store.stats(from).await?;
    Ok(HttpResponse::Ok().json(StatsBody {
        window: window.to_owned(),
        window_seconds: seconds,
        from,
        to,
        stats,
    }))
}

fn params(query: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

/// Parses and validates the list parameters, reporting every invalid one.
pub fn parse_list_query(query: &str) -> Result<ListQuery, ApiError> {
    let params = params(query);
    let mut invalid = Vec::new();
    let mut bad = |name: &str, reason: &str| {
        invalid.push(InvalidParam {
            name: name.to_owned(),
            reason: reason.to_owned(),
        });
    };
    let mut out = ListQuery {
        limit: DEFAULT_LIMIT,
        ..ListQuery::default()
    };
    if let Some(v) = params.get("order_id") {
        match Uuid::parse_str(v.trim()) {
            Ok(id) => out.order_id = Some(id),
            Err(_) => bad("order_id", "must be a UUID"),
        }
    }
    if let Some(v) = params.get("recipient") {
        let v = v.trim();
        if v.is_empty() || v.len() > 320 {
            bad("recipient", "must be a mail address (1 to 320 characters)");
        } else {
            out.recipient = Some(v.to_owned());
        }
    }
    if let Some(v) = params.get("type") {
        match v.trim().parse::<MailKind>() {
            Ok(kind) => out.kind = Some(kind),
            Err(()) => bad(
                "type",
                "must be one of payment_completed, order_completed, order_cancelled, order_refunded",
            ),
        }
    }
    if let Some(v) = params.get("status") {
        match v.trim().parse::<DeliveryStatus>() {
            Ok(status) => out.status = Some(status),
            Err(()) => bad("status", "must be one of PENDING, RETRYING, SENT, FAILED"),
        }
    }
    for (name, slot) in [("from", &mut out.from), ("to", &mut out.to)] {
        if let Some(v) = params.get(name) {
            match parse_instant(v) {
                Some(at) => *slot = Some(at),
                None => bad(
                    name,
                    "must be an RFC 3339 date-time, e.g. 2026-01-31T09:00:00Z",
                ),
            }
        }
    }
    if let (Some(from), Some(to)) = (out.from, out.to) {
        if from >= to {
            bad("to", "must be later than from");
        }
    }
    if let Some(v) = params.get("limit") {
        match v.trim().parse::<usize>() {
            Ok(0) | Err(_) => bad(
                "limit",
                "must be a positive integer (at most 200 are returned)",
            ),
            Ok(n) => out.limit = n.min(MAX_LIMIT),
        }
    }
    if let Some(v) = params.get("cursor") {
        match Cursor::decode(v.trim()) {
            Some(cursor) => out.after = Some(cursor),
            None => bad("cursor", "must be a next_cursor returned by this API"),
        }
    }
    if invalid.is_empty() {
        Ok(out)
    } else {
        Err(ApiError::InvalidParams(invalid))
    }
}

/// RFC 3339; a `+` offset that arrived as a space (unencoded in a URL) is accepted too.
fn parse_instant(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_rfc3339(&text.replace(' ', "+")))
        .ok()
        .map(|at| at.with_timezone(&Utc))
}

/// `<n>s`, `<n>m`, `<n>h` or `<n>d`, from 1 s to 7 d, in seconds.
pub fn parse_window(text: &str) -> Result<i64, &'static str> {
    const REASON: &str = "must be a duration like 30s, 15m, 2h or 1d (at most 7d)";
    let text = text.trim();
    let unit = text.chars().last().ok_or(REASON)?;
    let factor = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(REASON),
    };
    let n: i64 = text[..text.len() - 1].parse().map_err(|_| REASON)?;
    let seconds = n.checked_mul(factor).ok_or(REASON)?;
    if (1..=MAX_WINDOW_SECS).contains(&seconds) {
        Ok(seconds)
    } else {
        Err(REASON)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid_names(query: &str) -> Vec<String> {
        let problem = parse_list_query(query).expect_err("invalid");
        assert_eq!(
            actix_web::ResponseError::status_code(&problem).as_u16(),
            400
        );
        let body = actix_web::ResponseError::error_response(&problem);
        assert_eq!(
            body.headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap_or_default()),
            Some("application/problem+json")
        );
        let text = format!("{problem}");
        text.split("Invalid parameter(s): ")
            .nth(1)
            .unwrap_or_default()
            .trim_end_matches('.')
            .split(", ")
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn defaults_and_caps() {
        let q = parse_list_query("").expect("valid");
        assert_eq!(q.limit, DEFAULT_LIMIT);
        assert_eq!(q.order_id, None);
        assert_eq!(
            parse_list_query("limit=1000").expect("valid").limit,
            MAX_LIMIT
        );
        assert_eq!(parse_list_query("limit=7").expect("valid").limit, 7);
    }

    #[test]
    fn every_filter_is_parsed() {
        let order = Uuid::now_v7();
        let q = parse_list_query(&format!(
            "order_id={order}&recipient=a%40example.com&type=order_refunded&status=sent\
             &from=2026-01-01T00:00:00Z&to=2026-01-02T09:00:00%2B09:00&unknown=1"
        ))
        .expect("valid");
        assert_eq!(q.order_id, Some(order));
        assert_eq!(q.recipient.as_deref(), Some("a@example.com"));
        assert_eq!(q.kind, Some(MailKind::OrderRefunded));
        assert_eq!(q.status, Some(DeliveryStatus::Sent));
        assert_eq!(
            q.from.map(|t| t.to_rfc3339()).as_deref(),
            Some("2026-01-01T00:00:00+00:00")
        );
        assert_eq!(
            q.to.map(|t| t.to_rfc3339()).as_deref(),
            Some("2026-01-02T00:00:00+00:00")
        );
        // An unencoded `+` arrives as a space.
        let q = parse_list_query("from=2026-01-01T09:00:00+09:00").expect("valid");
        assert_eq!(
            q.from.map(|t| t.to_rfc3339()).as_deref(),
            Some("2026-01-01T00:00:00+00:00")
        );
    }

    #[test]
    fn every_invalid_parameter_is_named() {
        assert_eq!(
            invalid_names("order_id=x&type=shipped&status=LOST&from=yesterday&limit=0&cursor=zz"),
            ["order_id", "type", "status", "from", "limit", "cursor"]
        );
        assert_eq!(
            invalid_names("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z"),
            ["to"]
        );
        assert_eq!(invalid_names("limit=-3"), ["limit"]);
    }

    #[test]
    fn windows() {
        assert_eq!(parse_window("15m"), Ok(900));
        assert_eq!(parse_window("30s"), Ok(30));
        assert_eq!(parse_window("2h"), Ok(7200));
        assert_eq!(parse_window("7d"), Ok(604_800));
        for bad in [
            "",
            "m",
            "15",
            "0m",
            "-5m",
            "8d",
            "15x",
            "1.5h",
            "99999999999999999d",
        ] {
            assert!(parse_window(bad).is_err(), "{bad}");
        }
    }
}

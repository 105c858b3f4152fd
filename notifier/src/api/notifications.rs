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
//! | `from`, `to` | RFC 3339 instants; `from <= created_at < to` (empty when `from >= to`) |
//! | `limit` | page size, default 50, at most 200 (larger values are capped) |
//! | `cursor` | the `next_cursor` of the previous page |
//!
//! The answer is always an object: `{ "items": [record, …], "next_cursor": null | "…" }`,
//! records newest first (`created_at`, then `id`, descending). `next_cursor` is opaque;
//! it is `null` on the last page. Unknown parameters are ignored; invalid ones give a 400
//! problem naming each of them in `invalid_params`. Each parameter is read exactly as
//! `/openapi.json` declares it (a UUID in its hyphenated form, status names in capitals,
//! no surrounding spaces), so a client — or a fuzzer — holding to the document is never
//! refused, and one departing from it always is.
//!
//! `GET /notifications/{id}` — one record, 404 if there is none.
//!
//! `GET /notifications/stats?window=15m` — over the records created in the window
//! (`<n>s|m|h|d`, 1 s to 7 d, default 15m): `total`, `by_type` (type → status → count),
//! `by_status`, and `send_latency_ms` (`count`, `p50`, `p95`, `p99`, nearest rank, of
//! `sent_at - created_at` over the `SENT` records; `null` without any).

use super::error::{ApiError, HistoryErrors};
use super::ApiState;
use crate::domain::{hyphenated_uuid, DeliveryStatus, MailKind, Notification};
use crate::store::{Cursor, ListQuery, Stats};
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;
use shared_events::bearer::Operator;
use shared_events::http::{InvalidParam, Problem};
use std::collections::HashMap;
use uuid::Uuid;

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 200;
const MAX_WINDOW_SECS: i64 = 7 * 24 * 3600;

/// One page of history records, newest first.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Page {
    pub items: Vec<Notification>,
    /// Pass it as `cursor` for the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// The filters of `GET /notifications`, as the document lists them. The handler reads
/// the query itself ([`parse_list_query`]) so that a 400 names every invalid parameter,
/// not only the first one a deserializer trips on.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only the mails about this order.
    pub order_id: Option<Uuid>,
    /// Only the mails to this exact address.
    #[param(min_length = 1, max_length = 320)]
    pub recipient: Option<String>,
    /// Only this kind of mail.
    #[param(inline)]
    pub r#type: Option<MailKind>,
    /// Only the mails in this delivery status.
    #[param(inline)]
    pub status: Option<DeliveryStatus>,
    /// Records created at or after this instant (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Records created before this instant (RFC 3339); none when it is not later than
    /// `from`.
    pub to: Option<DateTime<Utc>>,
    /// Page size (default 50); larger values are capped at 200.
    #[param(minimum = 1, default = 50)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[param(
        pattern = "^[0-9]{1,15}_[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub cursor: Option<String>,
}

#[utoipa::path(
    get, path = "/notifications", tag = "notifications", operation_id = "list_notifications",
    description = "The mail history, newest first (`created_at`, then `id`), filtered (all filters optional, combined with AND) and paginated by an opaque cursor. Unknown parameters are ignored.",
    params(ListParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of records", body = Page),
        (status = 400, description = "Invalid filters, each named in `invalid_params`", content_type = "application/problem+json", body = Problem),
        HistoryErrors,
    )
)]
pub async fn list(
    _: Operator,
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let query = parse_list_query(req.query_string())?;
    let page = state.store.list(&query).await?;
    Ok(HttpResponse::Ok().json(Page {
        items: page.items,
        next_cursor: page.next_cursor.map(|c| c.encode()),
    }))
}

#[utoipa::path(
    get, path = "/notifications/{id}", tag = "notifications", operation_id = "get_notification",
    description = "One history record.",
    params(("id" = Uuid, Path, description = "The record's `id`")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The record", body = Notification),
        (status = 400, description = "`id` is not a UUID", content_type = "application/problem+json", body = Problem),
        (status = 404, description = "No record has this id", content_type = "application/problem+json", body = Problem),
        HistoryErrors,
    )
)]
pub async fn get(
    _: Operator,
    id: web::Path<String>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    if hyphenated_uuid(&id).is_none() {
        return Err(ApiError::invalid_param("id", "must be a UUID"));
    }
    match state.store.get(&id).await? {
        Some(record) => Ok(HttpResponse::Ok().json(record)),
        None => Err(ApiError::NotFound(id)),
    }
}

/// The history's counts and send latency over a window ending now.
#[derive(Serialize, utoipa::ToSchema)]
pub struct StatsBody {
    /// The window as asked (`15m`).
    pub window: String,
    pub window_seconds: i64,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    #[serde(flatten)]
    pub stats: Stats,
}

#[utoipa::path(
    get, path = "/notifications/stats", tag = "notifications", operation_id = "notification_stats",
    description = "Over the records created in the window: `total`, `by_type` (type → status → count, zeros included), `by_status`, and `send_latency_ms` (nearest-rank percentiles of `sent_at - created_at` over the `SENT` records).",
    params(("window" = Option<String>, Query, description = "`<n>s`, `<n>m`, `<n>h` or `<n>d`, from 1 s to 7 d (default 15m)", pattern = "^(([1-9][0-9]{0,4}|[1-5][0-9]{5}|60[0-3][0-9]{3}|604[0-7][0-9]{2}|604800)s|([1-9][0-9]{0,3}|100[0-7][0-9]|10080)m|([1-9][0-9]?|1[0-5][0-9]|16[0-8])h|[1-7]d)$", example = "15m")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The window's counts", body = StatsBody),
        (status = 400, description = "`window` is not a duration from 1 s to 7 d", content_type = "application/problem+json", body = Problem),
        HistoryErrors,
    )
)]
pub async fn stats(
    _: Operator,
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

/// Parses and validates the list parameters, reporting every invalid one. Each is read
/// exactly as the document declares it (no trimming, no alternative spellings), so what
/// the document allows is accepted and what it forbids is refused.
pub fn parse_list_query(query: &str) -> Result<ListQuery, ApiError> {
    let params = params(query);
    let mut invalid = Vec::new();
    let value = |name: &str| params.get(name).map(String::as_str);
    let mut check = |name: &str, reason: &str, valid: bool| {
        if !valid {
            invalid.push(InvalidParam::new(name, reason));
        }
    };
    let order_id = value("order_id").map(hyphenated_uuid);
    check("order_id", "must be a UUID", order_id != Some(None));
    let recipient = value("recipient").map(|v| {
        (1..=MAX_RECIPIENT_CHARS)
            .contains(&v.chars().count())
            .then(|| v.to_owned())
    });
    check(
        "recipient",
        "must be a mail address (1 to 320 characters)",
        recipient != Some(None),
    );
    let kind = value("type").map(|v| v.parse::<MailKind>().ok());
    check(
        "type",
        "must be one of payment_completed, order_completed, order_cancelled, order_refunded",
        kind != Some(None),
    );
    let status = value("status").map(|v| DeliveryStatus::ALL.into_iter().find(|s| s.as_str() == v));
    check(
        "status",
        "must be one of PENDING, RETRYING, SENT, FAILED",
        status != Some(None),
    );
    const INSTANT: &str = "must be an RFC 3339 date-time, e.g. 2026-01-31T09:00:00Z";
    let from = value("from").map(parse_instant);
    check("from", INSTANT, from != Some(None));
    let to = value("to").map(parse_instant);
    check("to", INSTANT, to != Some(None));
    let limit = value("limit").map(parse_limit);
    check(
        "limit",
        "must be a positive integer (at most 200 are returned)",
        limit != Some(None),
    );
    let after = value("cursor").map(|v| Cursor::decode(pattern_value(v)));
    check(
        "cursor",
        "must be a next_cursor returned by this API",
        after != Some(None),
    );
    if !invalid.is_empty() {
        return Err(ApiError::InvalidParams(invalid));
    }
    // `from >= to` is an empty interval, not an error: both are valid instants.
    Ok(ListQuery {
        order_id: order_id.flatten(),
        recipient: recipient.flatten(),
        kind: kind.flatten(),
        status: status.flatten(),
        from: from.flatten(),
        to: to.flatten(),
        limit: limit.flatten().unwrap_or(DEFAULT_LIMIT),
        after: after.flatten(),
    })
}

/// At most 320 characters, the longest mail address SMTP allows.
const MAX_RECIPIENT_CHARS: usize = 320;

/// The document's `limit`: an integer of at least 1, however large (capped at 200).
fn parse_limit(text: &str) -> Option<usize> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Any page size the document allows (a 64-bit integer, at least 1) is taken and
    // capped; a larger number is not one the document allows.
    match text.parse::<i64>() {
        Ok(n) if n >= 1 => Some(usize::try_from(n).map_or(MAX_LIMIT, |n| n.min(MAX_LIMIT))),
        _ => None,
    }
}

/// `text` as a pattern of the document sees it: schemathesis checks patterns with
/// Python's `re.search`, whose `$` also matches before one final newline, so a value
/// with that newline is valid there and must be accepted here.
fn pattern_value(text: &str) -> &str {
    text.strip_suffix('\n').unwrap_or(text)
}

/// RFC 3339; a `+` offset that arrived as a space (unencoded in a URL) is accepted too.
fn parse_instant(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_rfc3339(&text.replace(' ', "+")))
        .ok()
        .map(|at| at.with_timezone(&Utc))
}

/// `<n>s`, `<n>m`, `<n>h` or `<n>d` (`n` without sign or leading zeros), from 1 s to
/// 7 d, in seconds: exactly what the document's pattern of `window` allows.
pub fn parse_window(text: &str) -> Result<i64, &'static str> {
    const REASON: &str = "must be a duration like 30s, 15m, 2h or 1d (at most 7d)";
    let text = pattern_value(text);
    let unit = text.chars().last().ok_or(REASON)?;
    let factor = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(REASON),
    };
    let digits = &text[..text.len() - 1];
    if digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(REASON);
    }
    let n: i64 = digits.parse().map_err(|_| REASON)?;
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
            "order_id={order}&recipient=a%40example.com&type=order_refunded&status=SENT\
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
        assert_eq!(invalid_names("limit=-3"), ["limit"]);
        // Nothing the document does not name: other spellings are refused.
        let order = Uuid::now_v7();
        for query in [
            format!("order_id={}", order.simple()),
            format!("order_id=%20{order}"),
            "status=sent".to_owned(),
            "type=%20order_refunded".to_owned(),
            "recipient=".to_owned(),
            format!("recipient={}", "a".repeat(321)),
            "limit=%2B5".to_owned(),
            // Above the document's 64-bit integer.
            "limit=9223372036854775808".to_owned(),
            "cursor=-5_0190a5b2-0000-7000-8000-000000000000".to_owned(),
        ] {
            assert_eq!(invalid_names(&query).len(), 1, "{query}");
        }
    }

    #[test]
    fn what_the_document_allows_is_accepted() {
        let q = parse_list_query(&format!(
            "recipient=%20&limit=9223372036854775807&cursor=1700000000000_{}%0A\
             &from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
            Uuid::now_v7()
        ))
        .expect("valid");
        assert_eq!(q.recipient.as_deref(), Some(" "));
        assert_eq!(q.limit, MAX_LIMIT);
        assert!(
            q.after.is_some(),
            "a final newline passes the pattern's `$`"
        );
        assert!(q.from > q.to, "an empty interval is no error");
        let recipient = "가".repeat(320);
        let q = parse_list_query(&format!("recipient={recipient}")).expect("characters");
        assert_eq!(q.recipient.as_deref(), Some(recipient.as_str()));
    }

    /// The pattern the document declares for `name` of the operation at `path`, matched
    /// as schemathesis matches it (Python's `$` also before one final newline).
    fn documented(path: &str, name: &str) -> impl Fn(&str) -> bool {
        let doc = serde_json::to_value(super::super::doc::document()).expect("JSON");
        let pattern = doc["paths"][path]["get"]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["schema"]["pattern"].as_str())
            .expect("a pattern")
            .to_owned();
        let regex = regex::Regex::new(&pattern).expect("a valid pattern");
        move |value| regex.is_match(value.strip_suffix('\n').unwrap_or(value))
    }

    #[test]
    fn the_window_pattern_allows_exactly_the_windows_parsed() {
        let allowed = documented("/notifications/stats", "window");
        let mut values = vec![
            "".to_owned(),
            "15".into(),
            "+5m".into(),
            " 5m".into(),
            "5m ".into(),
        ];
        for (unit, top) in [("s", 700_000), ("m", 11_000), ("h", 200), ("d", 10)] {
            values.extend((0..=top).map(|n| format!("{n}{unit}")));
            values.extend([
                format!("0{top}{unit}"),
                format!("-1{unit}"),
                format!("1{unit}\n"),
            ]);
        }
        for value in values {
            assert_eq!(allowed(&value), parse_window(&value).is_ok(), "{value:?}");
        }
    }

    #[test]
    fn the_cursor_pattern_allows_exactly_the_cursors_decoded() {
        let allowed = documented("/notifications", "cursor");
        let id = Uuid::now_v7();
        for value in [
            format!("1700000000000_{id}"),
            format!("0_{id}"),
            format!("999999999999999_{id}"),
            format!("1_{id}\n"),
            format!("1_{}", id.to_string().to_uppercase()),
            format!("1000000000000000_{id}"),
            format!("-1_{id}"),
            format!("+1_{id}"),
            format!("_{id}"),
            format!("1_{}", id.simple()),
            format!("1_{{{id}}}"),
            format!(" 1_{id}"),
            "1_x".to_owned(),
        ] {
            let decoded = Cursor::decode(pattern_value(&value)).is_some();
            assert_eq!(allowed(&value), decoded, "{value:?}");
        }
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

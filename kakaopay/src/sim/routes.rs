//! HTTP routes of the simulator.
//!
//! API calls (`POST /online/v1/payment/*`) go through the same pipeline: fault
//! plan (delay, outage, injected error) → auth → body parsing → payment rules.
//! The state is only touched in synchronous code after the last `.await`.

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;
use shared_events::http::Problem;

use super::error::ApiError;
use super::faults::{CallPlan, FaultsPatch, FaultsView};
use super::ledger::LedgerEntry;
use super::payment::{ApproveInput, CancelInput, Payment, ReadyInput};
use super::schema::{
    ApproveRequest, ApproveResponse, CancelRequest, CancelResponse, KakaoError, KakaoErrors,
    OrderRequest, OrderResponse, ReadyRequest, ReadyResponse,
};
use super::state::{Data, SimState};
use super::validate::{Body, MAX_ID_LEN};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Ready,
    Approve,
    Cancel,
    Order,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Ready => "ready",
            Op::Approve => "approve",
            Op::Cancel => "cancel",
            Op::Order => "order",
        }
    }
}

#[utoipa::path(
    post, path = "/online/v1/payment/ready", tag = "kakao-pay", operation_id = "ready",
    description = "Readies a payment: a new tid and the shopper page's URLs (all `/__sim/pay/{tid}`). Creates the payment. Answers are Kakao's (errors `{error_code, error_message}`, application/json, not problems). Injected faults may also drop the connection unanswered.",
    request_body(content = ReadyRequest, content_type = "application/json"),
    security(("secret_key" = [])),
    responses(
        (status = 200, description = "Done", body = ReadyResponse),
        (status = 400, description = "`-2` a field missing, ill-typed or too long; `-722` inconsistent amounts; `-731` another cid", body = KakaoError),
        KakaoErrors,
    )
)]
pub(crate) async fn ready(state: Data, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    api_call(&state, &req, &body, Op::Ready).await
}

#[utoipa::path(
    post, path = "/online/v1/payment/approve", tag = "kakao-pay", operation_id = "approve",
    description = "Approves a payment the shopper authenticated on the page (at most once). A decline (`decline_rate`) is a 400 `-780` that fails the payment (but `USER_LOCKED`, which leaves it approvable); every call that reaches a tid counts in the ledger's `approve_calls`. Answers are Kakao's (errors `{error_code, error_message}`, application/json, not problems). Injected faults may also drop the connection unanswered.",
    request_body(content = ApproveRequest, content_type = "application/json"),
    security(("secret_key" = [])),
    responses(
        (status = 200, description = "Done", body = ApproveResponse),
        (status = 400, description = "`-2` invalid field; `-7xx` a payment rule (`-702` approved already, `-701` not authenticated, `-706`/`-707` ids differ, `-708` pg_token, `-721` no such tid, `-723` expired, `-725` amount, `-731` cid, `-780` declined with `extras`, `-783` failed payment)", body = KakaoError),
        KakaoErrors,
    )
)]
pub(crate) async fn approve(state: Data, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    api_call(&state, &req, &body, Op::Approve).await
}

#[utoipa::path(
    post, path = "/online/v1/payment/cancel", tag = "kakao-pay", operation_id = "cancel",
    description = "Refunds all or part of an approved payment. Every call that reaches a tid counts in the ledger's `cancel_calls`. Answers are Kakao's (errors `{error_code, error_message}`, application/json, not problems). Injected faults may also drop the connection unanswered.",
    request_body(content = CancelRequest, content_type = "application/json"),
    security(("secret_key" = [])),
    responses(
        (status = 200, description = "Done", body = CancelResponse),
        (status = 400, description = "`-2` invalid field; `-7xx` a payment rule (`-710` more than refundable, `-721` no such tid, `-722` amounts, `-731` cid, `-784` not refundable in its state)", body = KakaoError),
        KakaoErrors,
    )
)]
pub(crate) async fn cancel(state: Data, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    api_call(&state, &req, &body, Op::Cancel).await
}

#[utoipa::path(
    post, path = "/online/v1/payment/order", tag = "kakao-pay", operation_id = "order",
    description = "The payment's state and history (expires an unapproved tid past its lifetime). Answers are Kakao's (errors `{error_code, error_message}`, application/json, not problems). Injected faults may also drop the connection unanswered.",
    request_body(content = OrderRequest, content_type = "application/json"),
    security(("secret_key" = [])),
    responses(
        (status = 200, description = "Done", body = OrderResponse),
        (status = 400, description = "`-2` invalid field; `-721` no such tid; `-731` another cid", body = KakaoError),
        KakaoErrors,
    )
)]
pub(crate) async fn order(state: Data, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    api_call(&state, &req, &body, Op::Order).await
}

async fn api_call(state: &SimState, req: &HttpRequest, body: &[u8], op: Op) -> HttpResponse {
    let plan = state.plan_call(op.name());
    if !plan.delay.is_zero() {
        // Async sleep: a slow gateway must not block the worker.
        actix_web::rt::time::sleep(plan.delay).await;
    }
    if let Some(err) = &plan.reject {
        tracing::info!(op = op.name(), code = err.code, "injected fault");
        return err.response();
    }
    if plan.drop_connection {
        tracing::info!(
            op = op.name(),
            "injected fault: connection dropped, nothing done"
        );
        return dropped_connection();
    }
    let result = authorize(state, req)
        .and_then(|()| Body::parse(body))
        .and_then(|body| {
            body.check_cid(&state.cid)?;
            dispatch(state, op, &body, &plan)
        });
    if plan.lose_answer {
        tracing::info!(
            op = op.name(),
            ok = result.is_ok(),
            "processed; the answer never comes"
        );
        actix_web::rt::time::sleep(super::faults::LOST_ANSWER_HOLD).await;
        return dropped_connection();
    }
    match result {
        Ok(_) if plan.lose_response => {
            tracing::info!(
                op = op.name(),
                "processed; response replaced by injected error"
            );
            ApiError::internal().response()
        }
        Ok(value) => {
            tracing::info!(op = op.name(), tid = value["tid"].as_str(), "ok");
            HttpResponse::Ok().json(value)
        }
        Err(err) => {
            tracing::info!(op = op.name(), code = err.code, message = %err.message, "rejected");
            err.response()
        }
    }
}

/// A response whose body fails at once: actix-web closes the connection without
/// completing an answer, so the caller sees the connection dropped.
fn dropped_connection() -> HttpResponse {
    HttpResponse::Ok().body(Dropped)
}

struct Dropped;

impl actix_web::body::MessageBody for Dropped {
    type Error = std::io::Error;

    fn size(&self) -> actix_web::body::BodySize {
        actix_web::body::BodySize::Stream
    }

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<web::Bytes, Self::Error>>> {
        std::task::Poll::Ready(Some(Err(std::io::Error::other(
            "connection dropped by the simulator",
        ))))
    }
}

fn dispatch(state: &SimState, op: Op, body: &Body, plan: &CallPlan) -> Result<Value, ApiError> {
    let ctx = state.ctx();
    match op {
        Op::Ready => {
            let input = ReadyInput::parse(body)?;
            Ok(state.insert_new(
                |tid| Payment::from_ready(tid, &state.cid, input, ctx.now),
                |p| p.ready_json(&state.public_url),
            ))
        }
        Op::Approve => {
            let input = ApproveInput::parse(body)?;
            let decline = plan
                .decline
                .then(|| state.decline_code().unwrap_or_else(|| "DECLINED".into()));
            state.with_payment(&input.tid, |p| p.approve(&input, &ctx, decline.as_deref()))
        }
        Op::Cancel => {
            let input = CancelInput::parse(body)?;
            state.with_payment(&input.tid, |p| p.cancel(&input, &ctx))
        }
        Op::Order => {
            let tid = body.req_str("tid", MAX_ID_LEN)?;
            state.with_payment(&tid, |p| Ok(p.order_json(&ctx)))
        }
    }
}

/// `Authorization: SECRET_KEY <key>` (or `DEV_SECRET_KEY <key>`, reported but
/// unconfirmed). A missing header is answered like a wrong key, `-401` / HTTP
/// 401: the doc's `-400` for a missing header comes from an unconfirmed
/// third-party list, while `-401` with HTTP 401 is the one auth failure
/// actually observed on open-api.kakaopay.com; to a client both mean "fix the
/// credentials, do not retry".
fn authorize(state: &SimState, req: &HttpRequest) -> Result<(), ApiError> {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("Authorization header is missing"))?;
    let value = header
        .to_str()
        .map_err(|_| ApiError::unauthorized("invalid Authorization header"))?;
    let key = value
        .strip_prefix("SECRET_KEY ")
        .or_else(|| value.strip_prefix("DEV_SECRET_KEY "))
        .ok_or_else(|| ApiError::unauthorized("Authorization must be `SECRET_KEY <key>`"))?;
    if !state.key_matches(key.trim()) {
        return Err(ApiError::unauthorized("invalid secret key"));
    }
    Ok(())
}

#[utoipa::path(
    get, path = "/__sim/ledger", tag = "simulator", operation_id = "ledger",
    description = "What the simulator saw, per tid (a contract of other test suites: fields are added, never renamed or removed).",
    responses((status = 200, description = "Every payment, by tid", body = std::collections::BTreeMap<String, LedgerEntry>))
)]
pub(crate) async fn ledger(state: Data) -> HttpResponse {
    HttpResponse::Ok().json(state.ledger())
}

#[utoipa::path(
    get, path = "/__sim/faults", tag = "simulator", operation_id = "get_faults",
    description = "The fault knobs, the shopper page's mode, the tid lifetime, and whether an outage is in effect.",
    responses((status = 200, description = "The knobs", body = FaultsView))
)]
pub(crate) async fn get_faults(state: Data) -> HttpResponse {
    HttpResponse::Ok().json(state.with_knobs(|k| k.view()))
}

#[utoipa::path(
    put, path = "/__sim/faults", tag = "simulator", operation_id = "put_faults",
    description = "Changes the knobs present (a per-endpoint knob replaces its four rates; `outage` also clears a scheduled window); nothing changes if any value is invalid. They act on every later Kakao API call: a fuzzer should leave this operation alone.",
    request_body(content = FaultsPatch, content_type = "application/json"),
    responses(
        (status = 200, description = "The knobs now", body = FaultsView),
        (status = 400, description = "Not a patch (malformed JSON, an unknown knob, a rate outside 0.0–1.0); nothing changed", content_type = "application/problem+json", body = Problem),
    )
)]
pub(crate) async fn put_faults(state: Data, body: web::Bytes) -> HttpResponse {
    let patch: FaultsPatch = match serde_json::from_slice(&body) {
        Ok(patch) => patch,
        Err(e) => return bad_admin_request(&e.to_string()),
    };
    match state.with_knobs(|k| k.apply(patch).map(|()| k.view())) {
        Ok(view) => {
            tracing::info!(faults = ?view, "faults changed");
            HttpResponse::Ok().json(view)
        }
        Err(e) => bad_admin_request(&e),
    }
}

/// Body of `POST /__sim/clock/advance`.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdvanceClock {
    /// Seconds to move the clock forward, at most 100 years a call.
    #[schema(minimum = 0, maximum = 3_155_760_000_u64)]
    secs: u64,
}

/// The most one call moves the clock: far enough to expire anything, and far from the
/// end of chrono's calendar however often it is called (`SimState::advance_clock`).
const MAX_ADVANCE_SECS: u64 = 3_155_760_000;

/// Moves the simulator's clock forward (for TID expiry without waiting).
#[utoipa::path(
    post, path = "/__sim/clock/advance", tag = "simulator", operation_id = "advance_clock",
    description = "Moves the simulator's clock forward, e.g. past the tid lifetime, without waiting.",
    request_body(content = AdvanceClock, content_type = "application/json"),
    responses(
        (status = 204, description = "Moved"),
        (status = 400, description = "Not `{\"secs\": 0 to 3155760000}`; the clock did not move", content_type = "application/problem+json", body = Problem),
    )
)]
pub(crate) async fn advance_clock(state: Data, body: web::Bytes) -> HttpResponse {
    match serde_json::from_slice::<AdvanceClock>(&body) {
        Ok(a) if a.secs <= MAX_ADVANCE_SECS => {
            state.advance_clock(std::time::Duration::from_secs(a.secs));
            HttpResponse::NoContent().finish()
        }
        Ok(_) => bad_admin_request(&format!("secs must be at most {MAX_ADVANCE_SECS}")),
        Err(e) => bad_admin_request(&e.to_string()),
    }
}

/// The simulator's own endpoints answer problems, like the shop's services (the Kakao
/// API answers Kakao's errors).
fn bad_admin_request(message: &str) -> HttpResponse {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "/problems/invalid-sim-request",
        "Invalid simulator request",
        message,
    )
    .response()
}

pub(crate) async fn not_found() -> HttpResponse {
    ApiError::not_found().response()
}

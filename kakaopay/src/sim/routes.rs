//! HTTP routes of the simulator.
//!
//! API calls (`POST /online/v1/payment/*`) go through the same pipeline: fault
//! plan (delay, outage, injected error) → auth → body parsing → payment rules.
//! The state is only touched in synchronous code after the last `.await`.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use super::error::ApiError;
use super::faults::{CallPlan, FaultsPatch};
use super::payment::{ApproveInput, CancelInput, Payment, ReadyInput};
use super::shopper;
use super::state::{Data, SimState};
use super::validate::{Body, MAX_ID_LEN};

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/online/v1/payment/ready", web::post().to(ready))
        .route("/online/v1/payment/approve", web::post().to(approve))
        .route("/online/v1/payment/cancel", web::post().to(cancel))
        .route("/online/v1/payment/order", web::post().to(order))
        .route("/__sim/pay/{tid}", web::get().to(shopper::page))
        .route("/__sim/ledger", web::get().to(ledger))
        .route("/__sim/faults", web::get().to(get_faults))
        .route("/__sim/faults", web::put().to(put_faults))
        .route("/__sim/clock/advance", web::post().to(advance_clock))
        .route("/healthz", web::get().to(healthz))
        .default_service(web::to(not_found));
}

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

async fn ready(state: Data, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    api_call(&state, &req, &body, Op::Ready).await
}

async fn approve(state: Data, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    api_call(&state, &req, &body, Op::Approve).await
}

async fn cancel(state: Data, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    api_call(&state, &req, &body, Op::Cancel).await
}

async fn order(state: Data, req: HttpRequest, body: web::Bytes) -> HttpResponse {
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

async fn ledger(state: Data) -> HttpResponse {
    HttpResponse::Ok().json(state.ledger())
}

async fn get_faults(state: Data) -> HttpResponse {
    HttpResponse::Ok().json(state.with_knobs(|k| k.view()))
}

async fn put_faults(state: Data, body: web::Bytes) -> HttpResponse {
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

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AdvanceClock {
    secs: u64,
}

/// Moves the simulator's clock forward (for TID expiry without waiting).
async fn advance_clock(state: Data, body: web::Bytes) -> HttpResponse {
    match serde_json::from_slice::<AdvanceClock>(&body) {
        Ok(a) => {
            state.advance_clock(std::time::Duration::from_secs(a.secs));
            HttpResponse::NoContent().finish()
        }
        Err(e) => bad_admin_request(&e.to_string()),
    }
}

fn bad_admin_request(message: &str) -> HttpResponse {
    HttpResponse::BadRequest().json(serde_json::json!({ "error": message }))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

async fn not_found() -> HttpResponse {
    ApiError::not_found().response()
}

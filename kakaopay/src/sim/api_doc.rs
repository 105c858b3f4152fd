//! The simulator's OpenAPI 3.1 document (`GET /openapi.json`), generated from the
//! handlers' `#[utoipa::path]` and the shapes in `schema`. Its tests hold it against
//! the route table ([`super::routes()`]) and every answer of a running simulator against
//! the schema the document gives for it.
//!
//! The Kakao API (`/online/v1/payment/*`) answers as Kakao does — errors are Kakao's
//! JSON, not problems; the simulator's own endpoints (`/__sim/*`) answer problems; the
//! shopper page answers HTML.

use actix_web::HttpResponse;
use shared_events::http::{Health, InvalidParam, Problem};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::faults::{Faults, FaultsPatch, FaultsView, PerEndpoint};
use super::ledger::LedgerEntry;
use super::schema::{
    ApproveRequest, ApproveResponse, CancelRequest, CancelResponse, CardInfo, KakaoError,
    KakaoErrorExtras, Money, OrderRequest, OrderResponse, PaymentAction, ReadyRequest,
    ReadyResponse, SelectedCardInfo,
};
use super::shopper::PageAction;
use super::SimMode;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "kakaopay-sim",
        description = "An in-memory simulator of Kakao Pay's online single-payment API (ready → the shopper's page → approve; cancel; order), with its own endpoints to read what it saw and to inject faults. The API's answers are Kakao's (errors `{error_code, error_message}`); the simulator's own endpoints answer RFC 9457 problems.",
    ),
    paths(
        super::routes::ready,
        super::routes::approve,
        super::routes::cancel,
        super::routes::order,
        super::shopper::page,
        super::routes::ledger,
        super::routes::get_faults,
        super::routes::put_faults,
        super::routes::advance_clock,
        shared_events::http::healthz,
        openapi_json,
    ),
    components(schemas(
        KakaoError, KakaoErrorExtras, ReadyRequest, ReadyResponse, ApproveRequest,
        ApproveResponse, CancelRequest, CancelResponse, OrderRequest, OrderResponse, Money,
        CardInfo, SelectedCardInfo, PaymentAction, LedgerEntry, Faults, FaultsView,
        FaultsPatch, PerEndpoint, SimMode, PageAction, Problem, InvalidParam, Health,
    )),
    modifiers(&SecretKey),
    tags(
        (name = "kakao-pay", description = "The simulated Kakao Pay API"),
        (name = "simulator", description = "The shopper's page, the ledger, the fault knobs and the clock"),
        (name = "operations", description = "Health, this document"),
    )
)]
pub(crate) struct ApiDoc;

/// Kakao's `Authorization: SECRET_KEY <key>` as the `secret_key` scheme.
struct SecretKey;

impl Modify for SecretKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "secret_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "`SECRET_KEY <key>` (or `DEV_SECRET_KEY <key>`); the simulator's key is KAKAOPAY_SIM_SECRET_KEY",
            ))),
        );
    }
}

/// The document as served.
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// This document.
#[utoipa::path(
    get, path = "/openapi.json", tag = "operations",
    description = "The OpenAPI 3.1 document of the simulator.",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
pub(crate) async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(document())
}

#[cfg(test)]
mod tests;

//! The shapes of the simulator's Kakao Pay bodies, for its OpenAPI document only.
//!
//! The simulator renders these bodies with `json!` from its own model (`payment.rs`
//! says why), so none of these types is constructed: each mirrors one `json!` shape,
//! and `api_doc`'s tests hold real responses of a running simulator against them.

#![allow(
    dead_code,
    reason = "described (ToSchema), never constructed: the bodies are rendered with json!"
)]

use std::collections::BTreeMap;

use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};
use utoipa::ToSchema;

/// The failures every Kakao API call can answer whatever its body: a bad key (401) and
/// the injected faults (500, 503; a dropped or never-answered connection has no
/// response to describe).
pub(crate) struct KakaoErrors;

impl utoipa::IntoResponses for KakaoErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        BTreeMap::from([
            (
                "401",
                "`-401`: the `Authorization` header is missing or not `SECRET_KEY <the key>`",
            ),
            (
                "500",
                "`-500`, injected (`error_rate`: nothing done; `lost_response_rate`: done)",
            ),
            (
                "503",
                "`-9798`, an injected outage (`outage`, or the scheduled window): nothing done",
            ),
        ])
        .into_iter()
        .map(|(status, description)| (status.to_owned(), kakao_error(description).into()))
        .collect()
    }
}

/// A response of `description` with Kakao's error body.
fn kakao_error(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("KakaoError")))
                .build(),
        )
        .build()
}

/// The statuses the simulator gives a payment (a subset of Kakao's).
#[derive(ToSchema)]
#[schema(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum SimStatus {
    /// Readied; the shopper has not finished.
    Ready,
    /// The shopper approved on the payment page; `approve` may follow.
    AuthPassword,
    SuccessPayment,
    PartCancelPayment,
    CancelPayment,
    /// The shopper cancelled on the payment page.
    QuitPayment,
    /// Failed on the page, declined, or the tid expired before approval.
    FailPayment,
}

/// `CARD` or `MONEY`.
#[derive(ToSchema)]
#[schema(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum MethodType {
    Card,
    Money,
}

/// Kakao's error body (HTTP 400, 401, 500 or 503).
#[derive(ToSchema)]
pub(crate) struct KakaoError {
    /// `-2` invalid parameter, `-401` bad key, `-7xx` payment rule, `-500`, `-9798`.
    error_code: i32,
    error_message: String,
    /// Only on a declined approval (`-780`).
    extras: Option<KakaoErrorExtras>,
}

/// The card company's reason of a decline.
#[derive(ToSchema)]
pub(crate) struct KakaoErrorExtras {
    /// `DECLINED`, `USER_LOCKED` (retry shortly) or the configured decline code.
    method_result_code: String,
    method_result_message: String,
}

/// Body of `ready`. As Kakao's, the simulator also takes numeric strings for the
/// integers (its samples quote them) and numbers for the strings.
#[derive(ToSchema)]
pub(crate) struct ReadyRequest {
    /// The simulator's merchant code (`TC0ONETIME` unless configured).
    #[schema(max_length = 100)]
    cid: String,
    #[schema(min_length = 1, max_length = 100)]
    partner_order_id: String,
    #[schema(min_length = 1, max_length = 100)]
    partner_user_id: String,
    #[schema(min_length = 1, max_length = 100)]
    item_name: String,
    #[schema(max_length = 100)]
    item_code: Option<String>,
    #[schema(minimum = 1)]
    quantity: i64,
    #[schema(minimum = 1)]
    total_amount: i64,
    /// At most `total_amount`.
    #[schema(minimum = 0)]
    tax_free_amount: i64,
    /// Default: round((total − tax-free) / 11); at most total − tax-free.
    #[schema(minimum = 0)]
    vat_amount: Option<i64>,
    green_deposit: Option<i64>,
    #[schema(inline)]
    payment_method_type: Option<MethodType>,
    /// Absolute http(s) URL, at most 255 characters (so the others).
    #[schema(max_length = 255, format = "uri")]
    approval_url: String,
    #[schema(max_length = 255, format = "uri")]
    cancel_url: String,
    #[schema(max_length = 255, format = "uri")]
    fail_url: String,
}

/// Answer of `ready`: where to send the shopper (all lead to `/__sim/pay/{tid}`).
#[derive(ToSchema)]
pub(crate) struct ReadyResponse {
    tid: String,
    tms_result: bool,
    /// KST wall time without an offset (`2023-07-15T21:18:22`).
    created_at: String,
    next_redirect_pc_url: String,
    next_redirect_mobile_url: String,
    next_redirect_app_url: String,
    android_app_scheme: String,
    ios_app_scheme: String,
}

/// Body of `approve`.
#[derive(ToSchema)]
pub(crate) struct ApproveRequest {
    #[schema(max_length = 100)]
    cid: String,
    #[schema(min_length = 1, max_length = 100)]
    tid: String,
    #[schema(min_length = 1, max_length = 100)]
    partner_order_id: String,
    #[schema(min_length = 1, max_length = 100)]
    partner_user_id: String,
    /// From the shopper's redirect to `approval_url`.
    #[schema(min_length = 1, max_length = 100)]
    pg_token: String,
    /// If sent, must equal `ready`'s.
    total_amount: Option<i64>,
    #[schema(max_length = 200)]
    payload: Option<String>,
}

/// Body of `cancel` (a full or partial refund).
#[derive(ToSchema)]
pub(crate) struct CancelRequest {
    #[schema(max_length = 100)]
    cid: String,
    #[schema(min_length = 1, max_length = 100)]
    tid: String,
    #[schema(minimum = 1)]
    cancel_amount: i64,
    #[schema(minimum = 0)]
    cancel_tax_free_amount: i64,
    cancel_vat_amount: Option<i64>,
    /// If sent, must equal the refundable balance (guards a replayed partial cancel).
    cancel_available_amount: Option<i64>,
    #[schema(max_length = 200)]
    payload: Option<String>,
}

/// Body of `order`.
#[derive(ToSchema)]
pub(crate) struct OrderRequest {
    #[schema(max_length = 100)]
    cid: String,
    #[schema(min_length = 1, max_length = 100)]
    tid: String,
}

/// Amounts in KRW.
#[derive(ToSchema)]
pub(crate) struct Money {
    total: i64,
    tax_free: i64,
    vat: i64,
    point: i64,
    discount: i64,
    green_deposit: i64,
}

/// Answer of `approve`.
#[derive(ToSchema)]
pub(crate) struct ApproveResponse {
    aid: String,
    tid: String,
    cid: String,
    partner_order_id: String,
    partner_user_id: String,
    #[schema(inline)]
    payment_method_type: MethodType,
    item_name: String,
    #[schema(required = true)]
    item_code: Option<String>,
    quantity: i64,
    amount: Money,
    created_at: String,
    approved_at: String,
    #[schema(required = true)]
    payload: Option<String>,
    /// Only for `CARD`.
    card_info: Option<CardInfo>,
}

/// The card of a `CARD` payment (simulated values).
#[derive(ToSchema)]
pub(crate) struct CardInfo {
    kakaopay_purchase_corp: String,
    kakaopay_purchase_corp_code: String,
    kakaopay_issuer_corp: String,
    kakaopay_issuer_corp_code: String,
    bin: String,
    card_type: String,
    install_month: String,
    approved_id: String,
    card_mid: String,
    interest_free_install: String,
    installment_type: String,
    card_item_code: String,
}

/// Answer of `cancel`.
#[derive(ToSchema)]
pub(crate) struct CancelResponse {
    aid: String,
    tid: String,
    cid: String,
    #[schema(inline)]
    status: SimStatus,
    partner_order_id: String,
    partner_user_id: String,
    #[schema(inline)]
    payment_method_type: MethodType,
    item_name: String,
    #[schema(required = true)]
    item_code: Option<String>,
    quantity: i64,
    amount: Money,
    /// This cancel's amounts.
    approved_cancel_amount: Money,
    /// Every cancel's, so far.
    canceled_amount: Money,
    cancel_available_amount: Money,
    created_at: String,
    approved_at: String,
    canceled_at: String,
    #[schema(required = true)]
    payload: Option<String>,
}

/// Answer of `order`: the payment and its history. The amounts other than `amount`,
/// the method and the card exist only once the payment was approved.
#[derive(ToSchema)]
pub(crate) struct OrderResponse {
    tid: String,
    cid: String,
    #[schema(inline)]
    status: SimStatus,
    partner_order_id: String,
    partner_user_id: String,
    amount: Money,
    item_name: String,
    #[schema(required = true)]
    item_code: Option<String>,
    quantity: i64,
    created_at: String,
    #[schema(required = true)]
    approved_at: Option<String>,
    #[schema(required = true)]
    canceled_at: Option<String>,
    payment_action_details: Vec<PaymentAction>,
    #[schema(inline, nullable = false)]
    payment_method_type: Option<MethodType>,
    #[schema(nullable = false)]
    canceled_amount: Option<Money>,
    #[schema(nullable = false)]
    cancel_available_amount: Option<Money>,
    /// Only for `CARD`.
    #[schema(nullable = false)]
    selected_card_info: Option<SelectedCardInfo>,
}

/// One approval or cancel of a payment.
#[derive(ToSchema)]
pub(crate) struct PaymentAction {
    aid: String,
    approved_at: String,
    amount: i64,
    point_amount: i64,
    discount_amount: i64,
    green_deposit: i64,
    #[schema(inline)]
    payment_action_type: ActionType,
    #[schema(inline)]
    payment_method_type: MethodType,
    #[schema(required = true)]
    payload: Option<String>,
}

/// `PAYMENT` or `CANCEL`.
#[derive(ToSchema)]
#[schema(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum ActionType {
    Payment,
    Cancel,
}

/// The card of an approved `CARD` payment, as `order` shows it.
#[derive(ToSchema)]
pub(crate) struct SelectedCardInfo {
    card_bin: String,
    install_month: i64,
    card_corp_name: String,
    interest_free_install: String,
}

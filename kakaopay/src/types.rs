//! Request and response bodies of the new Kakao Pay API.
//!
//! Responses are parsed leniently: only the fields a caller cannot do without are
//! required, everything else is `Option`, and unknown fields are ignored (Kakao adds
//! undocumented keys such as `tms_result`). Datetimes come without an offset
//! (`2023-07-15T21:18:22`, KST implied) and are parsed as [`NaiveDateTime`].

use std::fmt;

use chrono::NaiveDateTime;
use serde::{Deserialize, Deserializer, Serialize};

/// Body of `POST /online/v1/payment/ready` (the client adds `cid`).
#[derive(Debug, Clone, Serialize)]
pub struct ReadyRequest {
    pub partner_order_id: String,
    pub partner_user_id: String,
    pub item_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item_code: Option<String>,
    pub quantity: i64,
    pub total_amount: i64,
    /// Required by Kakao even when it is 0.
    pub tax_free_amount: i64,
    /// When omitted Kakao computes round((total - tax_free) / 11).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vat_amount: Option<i64>,
    pub approval_url: String,
    pub cancel_url: String,
    pub fail_url: String,
}

/// Body of `POST /online/v1/payment/approve` (the client adds `cid`).
///
/// `Debug` is written by hand: `pg_token` is a one-time payment credential and
/// must never reach a log.
#[derive(Clone, Serialize)]
pub struct ApproveRequest {
    pub tid: String,
    pub partner_order_id: String,
    pub partner_user_id: String,
    pub pg_token: String,
    /// If sent, Kakao checks it against the ready `total_amount`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_amount: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
}

impl fmt::Debug for ApproveRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApproveRequest")
            .field("tid", &self.tid)
            .field("partner_order_id", &self.partner_order_id)
            .field("partner_user_id", &self.partner_user_id)
            .field("pg_token", &"[REDACTED]")
            .field("total_amount", &self.total_amount)
            .field("payload", &self.payload)
            .finish()
    }
}

/// Body of `POST /online/v1/payment/cancel` (the client adds `cid`).
#[derive(Debug, Clone, Serialize)]
pub struct CancelRequest {
    pub tid: String,
    pub cancel_amount: i64,
    /// Required by Kakao even when it is 0.
    pub cancel_tax_free_amount: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_vat_amount: Option<i64>,
    /// The refundable balance the caller expects before this cancel. Sent as a
    /// guard against a replayed cancel refunding twice (enforcement unconfirmed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_available_amount: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
}

/// Body of `POST /online/v1/payment/order` (the client adds `cid`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct OrderRequest<'a> {
    pub tid: &'a str,
}

/// Payment status (`status` in order and cancel responses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentStatus {
    Ready,
    SendTms,
    OpenPayment,
    SelectMethod,
    ArsWaiting,
    AuthPassword,
    IssuedSid,
    SuccessPayment,
    PartCancelPayment,
    CancelPayment,
    FailAuthPassword,
    QuitPayment,
    FailPayment,
    /// A status this client does not know yet.
    #[serde(other)]
    Unknown,
}

impl PaymentStatus {
    /// Wire name, e.g. `SUCCESS_PAYMENT`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "READY",
            Self::SendTms => "SEND_TMS",
            Self::OpenPayment => "OPEN_PAYMENT",
            Self::SelectMethod => "SELECT_METHOD",
            Self::ArsWaiting => "ARS_WAITING",
            Self::AuthPassword => "AUTH_PASSWORD",
            Self::IssuedSid => "ISSUED_SID",
            Self::SuccessPayment => "SUCCESS_PAYMENT",
            Self::PartCancelPayment => "PART_CANCEL_PAYMENT",
            Self::CancelPayment => "CANCEL_PAYMENT",
            Self::FailAuthPassword => "FAIL_AUTH_PASSWORD",
            Self::QuitPayment => "QUIT_PAYMENT",
            Self::FailPayment => "FAIL_PAYMENT",
            Self::Unknown => "UNKNOWN",
        }
    }

    /// Ready but not yet approved: the shopper may still be paying.
    pub fn is_in_progress(self) -> bool {
        matches!(
            self,
            Self::Ready
                | Self::SendTms
                | Self::OpenPayment
                | Self::SelectMethod
                | Self::ArsWaiting
                | Self::AuthPassword
        )
    }

    /// Approved at some point (possibly refunded since).
    pub fn is_paid(self) -> bool {
        matches!(
            self,
            Self::SuccessPayment | Self::PartCancelPayment | Self::CancelPayment
        )
    }

    /// Ended without a payment.
    pub fn is_failed(self) -> bool {
        matches!(
            self,
            Self::FailAuthPassword | Self::QuitPayment | Self::FailPayment
        )
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `payment_method_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentMethodType {
    Card,
    Money,
    #[serde(other)]
    Unknown,
}

/// `payment_action_details[].payment_action_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentActionType {
    Payment,
    Cancel,
    IssuedSid,
    #[serde(other)]
    Unknown,
}

/// The amount object shared by every response. Missing members are 0
/// (`green_deposit` only exists on the new API).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Amount {
    pub total: i64,
    pub tax_free: i64,
    pub vat: i64,
    pub point: i64,
    pub discount: i64,
    pub green_deposit: i64,
}

/// Response of `ready`.
#[derive(Debug, Clone, Deserialize)]
pub struct ReadyResponse {
    pub tid: String,
    pub next_redirect_app_url: String,
    pub next_redirect_mobile_url: String,
    pub next_redirect_pc_url: String,
    #[serde(default)]
    pub android_app_scheme: Option<String>,
    #[serde(default)]
    pub ios_app_scheme: Option<String>,
    #[serde(default, deserialize_with = "opt_datetime")]
    pub created_at: Option<NaiveDateTime>,
    /// Undocumented but present in real responses.
    #[serde(default)]
    pub tms_result: Option<bool>,
}

/// `card_info` of an approve response (all strings per the docs).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CardInfo {
    pub kakaopay_purchase_corp: Option<String>,
    pub kakaopay_purchase_corp_code: Option<String>,
    pub kakaopay_issuer_corp: Option<String>,
    pub kakaopay_issuer_corp_code: Option<String>,
    /// Legacy-API names of the same data.
    pub purchase_corp: Option<String>,
    pub purchase_corp_code: Option<String>,
    pub issuer_corp: Option<String>,
    pub issuer_corp_code: Option<String>,
    pub bin: Option<String>,
    pub card_type: Option<String>,
    pub install_month: Option<String>,
    pub approved_id: Option<String>,
    pub card_mid: Option<String>,
    pub interest_free_install: Option<String>,
    pub installment_type: Option<String>,
    pub card_item_code: Option<String>,
}

/// Response of `approve`.
#[derive(Debug, Clone, Deserialize)]
pub struct ApproveResponse {
    pub aid: String,
    pub tid: String,
    pub cid: String,
    #[serde(default)]
    pub sid: Option<String>,
    pub partner_order_id: String,
    pub partner_user_id: String,
    #[serde(default)]
    pub payment_method_type: Option<PaymentMethodType>,
    pub amount: Amount,
    #[serde(default)]
    pub card_info: Option<CardInfo>,
    #[serde(default)]
    pub item_name: Option<String>,
    #[serde(default)]
    pub item_code: Option<String>,
    #[serde(default)]
    pub quantity: Option<i64>,
    #[serde(default, deserialize_with = "opt_datetime")]
    pub created_at: Option<NaiveDateTime>,
    #[serde(default, deserialize_with = "opt_datetime")]
    pub approved_at: Option<NaiveDateTime>,
    #[serde(default)]
    pub payload: Option<String>,
}

/// `selected_card_info` of an order response (`install_month` is a number here).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SelectedCardInfo {
    pub card_bin: Option<String>,
    pub install_month: Option<i64>,
    pub card_corp_name: Option<String>,
    pub interest_free_install: Option<String>,
}

/// One entry of `payment_action_details`.
#[derive(Debug, Clone, Deserialize)]
pub struct PaymentActionDetail {
    pub aid: String,
    #[serde(default, deserialize_with = "opt_datetime")]
    pub approved_at: Option<NaiveDateTime>,
    #[serde(default)]
    pub amount: i64,
    #[serde(default)]
    pub point_amount: i64,
    #[serde(default)]
    pub discount_amount: i64,
    #[serde(default)]
    pub green_deposit: i64,
    pub payment_action_type: PaymentActionType,
    #[serde(default)]
    pub payload: Option<String>,
    #[serde(default)]
    pub payment_method_type: Option<PaymentMethodType>,
}

/// Response of `order` (payment lookup by tid).
#[derive(Debug, Clone, Deserialize)]
pub struct OrderStatusResponse {
    pub tid: String,
    pub cid: String,
    pub status: PaymentStatus,
    pub partner_order_id: String,
    pub partner_user_id: String,
    #[serde(default)]
    pub payment_method_type: Option<PaymentMethodType>,
    /// A payment that was never approved may lack the amount objects.
    #[serde(default)]
    pub amount: Option<Amount>,
    #[serde(default)]
    pub canceled_amount: Option<Amount>,
    #[serde(default)]
    pub cancel_available_amount: Option<Amount>,
    #[serde(default)]
    pub item_name: Option<String>,
    #[serde(default)]
    pub item_code: Option<String>,
    #[serde(default)]
    pub quantity: Option<i64>,
    #[serde(default, deserialize_with = "opt_datetime")]
    pub created_at: Option<NaiveDateTime>,
    #[serde(default, deserialize_with = "opt_datetime")]
    pub approved_at: Option<NaiveDateTime>,
    #[serde(default, deserialize_with = "opt_datetime")]
    pub canceled_at: Option<NaiveDateTime>,
    #[serde(default)]
    pub selected_card_info: Option<SelectedCardInfo>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub payment_action_details: Vec<PaymentActionDetail>,
}

/// Response of `cancel`.
#[derive(Debug, Clone, Deserialize)]
pub struct CancelResponse {
    pub aid: String,
    pub tid: String,
    #[serde(default)]
    pub cid: Option<String>,
    pub status: PaymentStatus,
    #[serde(default)]
    pub partner_order_id: Option<String>,
    #[serde(default)]
    pub partner_user_id: Option<String>,
    #[serde(default)]
    pub payment_method_type: Option<PaymentMethodType>,
    /// The original payment amount.
    pub amount: Amount,
    /// Cancelled by this request.
    pub approved_cancel_amount: Amount,
    /// Cumulative amount cancelled.
    pub canceled_amount: Amount,
    /// Remaining refundable amount.
    pub cancel_available_amount: Amount,
    #[serde(default)]
    pub item_name: Option<String>,
    #[serde(default)]
    pub item_code: Option<String>,
    #[serde(default)]
    pub quantity: Option<i64>,
    #[serde(default, deserialize_with = "opt_datetime")]
    pub created_at: Option<NaiveDateTime>,
    #[serde(default, deserialize_with = "opt_datetime")]
    pub approved_at: Option<NaiveDateTime>,
    #[serde(default, deserialize_with = "opt_datetime")]
    pub canceled_at: Option<NaiveDateTime>,
    #[serde(default)]
    pub payload: Option<String>,
}

/// The datetime format Kakao Pay uses (no offset, KST implied).
pub const DATETIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S";

/// Parses `2023-07-15T21:18:22` (optionally with fractions or an offset, which
/// is dropped) and accepts `null`. A timestamp in an unknown format becomes
/// `None` with a warning instead of failing the whole body: rejecting the
/// response of an approve that did take effect (and then of every `order`
/// lookup used to reconcile it) would be far worse than a missing timestamp.
fn opt_datetime<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NaiveDateTime>, D::Error> {
    let Some(raw) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    let parsed = parse_datetime(&raw);
    if parsed.is_none() {
        tracing::warn!(value = %raw, "unrecognised Kakao Pay datetime; ignored");
    }
    Ok(parsed)
}

/// Parses a Kakao Pay datetime; see [`DATETIME_FORMAT`].
pub fn parse_datetime(raw: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .or_else(|| {
            chrono::DateTime::parse_from_rfc3339(raw)
                .ok()
                .map(|dt| dt.naive_local())
        })
}

fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn approve_request_debug_redacts_pg_token() {
        let req = ApproveRequest {
            tid: "T1".into(),
            partner_order_id: "o".into(),
            partner_user_id: "u".into(),
            pg_token: "supersecretpgtoken12".into(),
            total_amount: Some(1),
            payload: None,
        };
        let dbg = format!("{req:?}");
        assert!(!dbg.contains("supersecretpgtoken12"), "{dbg}");
        assert!(dbg.contains("REDACTED"));
        // The wire form must still carry it.
        let wire = serde_json::to_value(&req).expect("serialises");
        assert_eq!(wire["pg_token"], "supersecretpgtoken12");
        assert!(wire.get("payload").is_none());
    }

    #[test]
    fn status_names_match_the_doc() {
        let names = [
            "READY",
            "SEND_TMS",
            "OPEN_PAYMENT",
            "SELECT_METHOD",
            "ARS_WAITING",
            "AUTH_PASSWORD",
            "ISSUED_SID",
            "SUCCESS_PAYMENT",
            "PART_CANCEL_PAYMENT",
            "CANCEL_PAYMENT",
            "FAIL_AUTH_PASSWORD",
            "QUIT_PAYMENT",
            "FAIL_PAYMENT",
        ];
        for name in names {
            let status: PaymentStatus = serde_json::from_value(json!(name)).expect(name);
            assert_ne!(status, PaymentStatus::Unknown, "{name}");
            assert_eq!(status.as_str(), name);
            assert_eq!(serde_json::to_value(status).expect("ser"), json!(name));
        }
        let other: PaymentStatus = serde_json::from_value(json!("NEW_THING")).expect("other");
        assert_eq!(other, PaymentStatus::Unknown);
    }

    #[test]
    fn ready_response_ignores_unknown_fields_and_parses_dates() {
        let body = json!({
            "tid": "T1234567890123456789",
            "tms_result": false,
            "next_redirect_app_url": "https://a",
            "next_redirect_mobile_url": "https://m",
            "next_redirect_pc_url": "https://p",
            "android_app_scheme": "kakaotalk://kakaopay/pg?url=x",
            "created_at": "2023-07-15T21:18:22",
            "some_future_field": {"nested": [1, 2]}
        });
        let r: ReadyResponse = serde_json::from_value(body).expect("parses");
        assert_eq!(r.tid, "T1234567890123456789");
        assert_eq!(r.tms_result, Some(false));
        assert_eq!(r.ios_app_scheme, None);
        assert_eq!(
            r.created_at.map(|d| d.format(DATETIME_FORMAT).to_string()),
            Some("2023-07-15T21:18:22".to_string())
        );
    }

    #[test]
    fn approve_response_with_legacy_card_info_and_missing_amount_members() {
        let body = json!({
            "aid": "A1", "tid": "T1", "cid": "TC0ONETIME",
            "partner_order_id": "o", "partner_user_id": "u",
            "payment_method_type": "CARD",
            "amount": {"total": 2200, "tax_free": 0, "vat": 200, "point": 0, "discount": 0},
            "card_info": {"purchase_corp": "BC", "install_month": "00", "extra": 1},
            "item_name": "초코파이", "quantity": 1,
            "created_at": "2023-07-15T21:18:22.123", "approved_at": "2023-07-15T21:18:40",
            "unexpected": true
        });
        let r: ApproveResponse = serde_json::from_value(body).expect("parses");
        assert_eq!(r.amount.total, 2200);
        assert_eq!(r.amount.green_deposit, 0);
        assert_eq!(r.payment_method_type, Some(PaymentMethodType::Card));
        let card = r.card_info.expect("card info");
        assert_eq!(card.purchase_corp.as_deref(), Some("BC"));
        assert!(r.created_at.is_some());
    }

    #[test]
    fn order_response_for_unapproved_payment() {
        let body = json!({
            "tid": "T1", "cid": "TC0ONETIME", "status": "READY",
            "partner_order_id": "o", "partner_user_id": "u",
            "payment_action_details": null,
            "created_at": "2023-07-15T21:18:22",
            "approved_at": null
        });
        let r: OrderStatusResponse = serde_json::from_value(body).expect("parses");
        assert_eq!(r.status, PaymentStatus::Ready);
        assert!(r.amount.is_none());
        assert!(r.payment_action_details.is_empty());
        assert!(r.approved_at.is_none());
    }

    #[test]
    fn malformed_datetime_becomes_none() {
        let body = json!({
            "tid": "T1", "next_redirect_app_url": "a", "next_redirect_mobile_url": "m",
            "next_redirect_pc_url": "p", "created_at": "yesterday"
        });
        let r: ReadyResponse = serde_json::from_value(body).expect("parses");
        assert!(r.created_at.is_none());
    }

    #[test]
    fn datetime_with_offset_keeps_local_time() {
        let dt = parse_datetime("2023-07-15T21:18:22+09:00").expect("parses");
        assert_eq!(
            dt.format(DATETIME_FORMAT).to_string(),
            "2023-07-15T21:18:22"
        );
    }
}

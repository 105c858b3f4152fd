//! One simulated payment and the rules of ready → shopper → approve → cancel.
//!
//! Responses are rendered with `json!` from the simulator's own model rather than
//! from the client's types, so a field-name mistake on one side shows up in the
//! contract tests instead of cancelling out.
//!
//! Size: the simulated payment's rules for ready, approve, cancel and order, each
//! checking Kakao Pay's fields and error codes as `shared/reference/kakaopay-api.md`
//! describes; one state machine, read in one place.

use chrono::{DateTime, FixedOffset, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use std::time::Duration;
use url::Url;

use super::error::ApiError;
use super::ids::{new_id, new_pg_token};
use super::ledger::LedgerEntry;
use super::validate::{Body, MAX_ID_LEN, MAX_PAYLOAD_LEN};
use super::Method;
use super::SimMode;
use crate::types::{PaymentStatus, DATETIME_FORMAT};

/// Clock and TTL for one operation, read once so a call sees one instant.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx {
    pub now: DateTime<Utc>,
    pub tid_ttl: Duration,
    pub mode: SimMode,
}

/// The amount object of every response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Money {
    pub total: i64,
    pub tax_free: i64,
    pub vat: i64,
    pub point: i64,
    pub discount: i64,
    pub green_deposit: i64,
}

impl Money {
    fn minus(self, o: Money) -> Money {
        Money {
            total: self.total - o.total,
            tax_free: self.tax_free - o.tax_free,
            vat: self.vat - o.vat,
            point: self.point - o.point,
            discount: self.discount - o.discount,
            green_deposit: self.green_deposit - o.green_deposit,
        }
    }

    fn plus(self, o: Money) -> Money {
        Money {
            total: self.total + o.total,
            tax_free: self.tax_free + o.tax_free,
            vat: self.vat + o.vat,
            point: self.point + o.point,
            discount: self.discount + o.discount,
            green_deposit: self.green_deposit + o.green_deposit,
        }
    }
}

/// Kakao's default VAT: round((total − tax_free) / 11).
pub(crate) fn default_vat(taxable: i64) -> i64 {
    // 11 is odd, so there are no exact halves: +5 rounds to nearest.
    (taxable + 5).div_euclid(11)
}

/// Datetimes as Kakao sends them: KST wall time without an offset.
fn kst(t: DateTime<Utc>) -> String {
    let kst = FixedOffset::east_opt(9 * 3600).expect("+09:00 is a valid offset");
    t.with_timezone(&kst).format(DATETIME_FORMAT).to_string()
}

fn kst_opt(t: Option<DateTime<Utc>>) -> Value {
    t.map(|t| Value::String(kst(t))).unwrap_or(Value::Null)
}

/// Parsed `ready` body.
pub(crate) struct ReadyInput {
    partner_order_id: String,
    partner_user_id: String,
    item_name: String,
    item_code: Option<String>,
    quantity: i64,
    amount: Money,
    method: Option<Method>,
    approval_url: Url,
    cancel_url: Url,
    fail_url: Url,
}

impl ReadyInput {
    pub fn parse(b: &Body) -> Result<Self, ApiError> {
        let total = b.req_int_min("total_amount", 1)?;
        let tax_free = b.req_int_min("tax_free_amount", 0)?;
        let green_deposit = b.opt_int("green_deposit")?.unwrap_or(0);
        if tax_free > total {
            return Err(ApiError::payment(
                -722,
                "tax_free_amount exceeds total_amount",
            ));
        }
        let vat = match b.opt_int("vat_amount")? {
            Some(vat) if vat < 0 || vat > total - tax_free => {
                return Err(ApiError::payment(-722, "vat_amount is invalid"));
            }
            Some(vat) => vat,
            None => default_vat(total - tax_free),
        };
        Ok(Self {
            partner_order_id: b.req_str("partner_order_id", MAX_ID_LEN)?,
            partner_user_id: b.req_str("partner_user_id", MAX_ID_LEN)?,
            item_name: b.req_str("item_name", MAX_ID_LEN)?,
            item_code: b.opt_str("item_code", MAX_ID_LEN)?,
            quantity: b.req_int_min("quantity", 1)?,
            amount: Money {
                total,
                tax_free,
                vat,
                green_deposit,
                ..Money::default()
            },
            method: b.opt_method("payment_method_type")?,
            approval_url: b.req_url("approval_url")?,
            cancel_url: b.req_url("cancel_url")?,
            fail_url: b.req_url("fail_url")?,
        })
    }
}

/// Parsed `approve` body.
pub(crate) struct ApproveInput {
    pub tid: String,
    partner_order_id: String,
    partner_user_id: String,
    pg_token: String,
    total_amount: Option<i64>,
    payload: Option<String>,
}

impl ApproveInput {
    pub fn parse(b: &Body) -> Result<Self, ApiError> {
        Ok(Self {
            tid: b.req_str("tid", MAX_ID_LEN)?,
            partner_order_id: b.req_str("partner_order_id", MAX_ID_LEN)?,
            partner_user_id: b.req_str("partner_user_id", MAX_ID_LEN)?,
            pg_token: b.req_str("pg_token", MAX_ID_LEN)?,
            total_amount: b.opt_int("total_amount")?,
            payload: b.opt_str("payload", MAX_PAYLOAD_LEN)?,
        })
    }
}

/// Parsed `cancel` body.
pub(crate) struct CancelInput {
    pub tid: String,
    cancel_amount: i64,
    cancel_tax_free_amount: i64,
    cancel_vat_amount: Option<i64>,
    cancel_available_amount: Option<i64>,
    payload: Option<String>,
}

impl CancelInput {
    pub fn parse(b: &Body) -> Result<Self, ApiError> {
        Ok(Self {
            tid: b.req_str("tid", MAX_ID_LEN)?,
            cancel_amount: b.req_int_min("cancel_amount", 1)?,
            cancel_tax_free_amount: b.req_int_min("cancel_tax_free_amount", 0)?,
            cancel_vat_amount: b.opt_int("cancel_vat_amount")?,
            cancel_available_amount: b.opt_int("cancel_available_amount")?,
            payload: b.opt_str("payload", MAX_PAYLOAD_LEN)?,
        })
    }
}

/// What the shopper page does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShopperAction {
    Approve,
    Cancel,
    Fail,
}

pub(crate) enum ShopperOutcome {
    Redirect(Url),
    /// Manual mode, no action chosen yet: show the choice page.
    Choose {
        item_name: String,
        total: i64,
    },
}

#[derive(Debug, Clone)]
struct Action {
    aid: String,
    kind: &'static str,
    at: DateTime<Utc>,
    amount: Money,
    payload: Option<String>,
}

#[derive(Debug)]
pub(crate) struct Payment {
    tid: String,
    cid: String,
    partner_order_id: String,
    partner_user_id: String,
    item_name: String,
    item_code: Option<String>,
    quantity: i64,
    amount: Money,
    /// Requested at ready; `None` = any, the simulated shopper then uses MONEY.
    requested_method: Option<Method>,
    approval_url: Url,
    cancel_url: Url,
    fail_url: Url,
    status: PaymentStatus,
    /// The tid's TTL ran out before approval.
    expired: bool,
    created_at: DateTime<Utc>,
    approved_at: Option<DateTime<Utc>>,
    canceled_at: Option<DateTime<Utc>>,
    pg_token: Option<String>,
    method: Option<Method>,
    canceled: Money,
    actions: Vec<Action>,
    approve_calls: u32,
    cancel_calls: u32,
}

impl Payment {
    pub fn from_ready(tid: String, cid: &str, input: ReadyInput, now: DateTime<Utc>) -> Self {
        Self {
            tid,
            cid: cid.to_owned(),
            partner_order_id: input.partner_order_id,
            partner_user_id: input.partner_user_id,
            item_name: input.item_name,
            item_code: input.item_code,
            quantity: input.quantity,
            amount: input.amount,
            requested_method: input.method,
            approval_url: input.approval_url,
            cancel_url: input.cancel_url,
            fail_url: input.fail_url,
            status: PaymentStatus::Ready,
            expired: false,
            created_at: now,
            approved_at: None,
            canceled_at: None,
            pg_token: None,
            method: None,
            canceled: Money::default(),
            actions: Vec::new(),
            approve_calls: 0,
            cancel_calls: 0,
        }
    }

    /// The `ready` response. Redirect URLs all lead to the shopper page; `via`
    /// only records which one the shopper used.
    pub fn ready_json(&self, public_url: &Url) -> Value {
        let page = |via: Option<&str>| {
            let mut url = public_url
                .join(&format!("__sim/pay/{}", self.tid))
                .expect("a tid is a valid path segment");
            if let Some(via) = via {
                url.query_pairs_mut().append_pair("via", via);
            }
            url
        };
        let app = page(Some("app"));
        let scheme = format!(
            "kakaotalk://kakaopay/pg?url={}",
            url::form_urlencoded::byte_serialize(app.as_str().as_bytes()).collect::<String>()
        );
        json!({
            "tid": self.tid,
            "tms_result": false,
            "created_at": kst(self.created_at),
            "next_redirect_pc_url": page(None).as_str(),
            "next_redirect_mobile_url": page(Some("mobile")).as_str(),
            "next_redirect_app_url": app.as_str(),
            "android_app_scheme": scheme,
            "ios_app_scheme": scheme,
        })
    }

    /// Marks an unapproved payment past its TTL as failed; true if expired.
    /// The status after expiry is undocumented; FAIL_PAYMENT matches the
    /// reported redirect to `fail_url`.
    fn check_expiry(&mut self, ctx: &Ctx) -> bool {
        let age = ctx.now.signed_duration_since(self.created_at);
        let ttl = chrono::Duration::from_std(ctx.tid_ttl).unwrap_or(chrono::Duration::MAX);
        if !self.expired && self.status.is_in_progress() && age > ttl {
            self.expired = true;
            self.status = PaymentStatus::FailPayment;
        }
        self.expired
    }

    /// The shopper's visit to the payment page.
    pub fn shopper(&mut self, action: Option<ShopperAction>, ctx: &Ctx) -> ShopperOutcome {
        if self.check_expiry(ctx) {
            return ShopperOutcome::Redirect(self.fail_url.clone());
        }
        if self.status != PaymentStatus::Ready {
            // Decided already (e.g. a browser refresh): replay the outcome.
            return ShopperOutcome::Redirect(self.replay_redirect());
        }
        let action = match (action, ctx.mode) {
            (Some(action), _) => action,
            (None, SimMode::Auto) => ShopperAction::Approve,
            (None, SimMode::Manual) => {
                return ShopperOutcome::Choose {
                    item_name: self.item_name.clone(),
                    total: self.amount.total,
                }
            }
        };
        match action {
            ShopperAction::Approve => {
                self.status = PaymentStatus::AuthPassword;
                self.pg_token = Some(new_pg_token());
                self.method = Some(self.requested_method.unwrap_or(Method::Money));
            }
            ShopperAction::Cancel => self.status = PaymentStatus::QuitPayment,
            ShopperAction::Fail => self.status = PaymentStatus::FailPayment,
        }
        ShopperOutcome::Redirect(self.replay_redirect())
    }

    /// Where the shopper goes for the payment's current state.
    fn replay_redirect(&self) -> Url {
        match (self.status, &self.pg_token) {
            (PaymentStatus::QuitPayment, _) => self.cancel_url.clone(),
            (status, _) if status.is_failed() => self.fail_url.clone(),
            // Authenticated, or approved since: a refresh of the merchant's
            // approval_url is the merchant's to handle (approve answers -702).
            (_, Some(token)) => {
                let mut url = self.approval_url.clone();
                url.query_pairs_mut().append_pair("pg_token", token);
                url
            }
            (_, None) => self.fail_url.clone(),
        }
    }

    /// `approve`. `decline` is the fault plan's verdict for this call.
    pub fn approve(
        &mut self,
        input: &ApproveInput,
        ctx: &Ctx,
        decline: Option<&str>,
    ) -> Result<Value, ApiError> {
        self.approve_calls += 1;
        if self.status.is_paid() {
            return Err(ApiError::payment(-702, "payment is already approved"));
        }
        if self.check_expiry(ctx) {
            return Err(ApiError::payment(-723, "payment expiry time has passed"));
        }
        if input.partner_order_id != self.partner_order_id {
            return Err(ApiError::payment(-706, "partner_order_id does not match"));
        }
        if input.partner_user_id != self.partner_user_id {
            return Err(ApiError::payment(-707, "partner_user_id does not match"));
        }
        if self.status.is_failed() {
            return Err(ApiError::payment(
                -783,
                "payment cannot be approved in its state",
            ));
        }
        if self.status != PaymentStatus::AuthPassword {
            return Err(ApiError::payment(
                -701,
                "user has not finished payment authentication",
            ));
        }
        if self.pg_token.as_deref() != Some(input.pg_token.as_str()) {
            return Err(ApiError::payment(-708, "invalid pg_token"));
        }
        // The docs only say a sent total_amount must equal ready's; -725
        // ("total payment amount invalid") is the closest documented code.
        if input.total_amount.is_some_and(|t| t != self.amount.total) {
            return Err(ApiError::payment(-725, "total_amount does not match"));
        }
        if let Some(code) = decline {
            return Err(self.decline(code));
        }
        self.succeed(input, ctx);
        Ok(self.approve_json(input.payload.as_deref()))
    }

    fn decline(&mut self, method_result_code: &str) -> ApiError {
        // USER_LOCKED means "another transaction in progress, retry shortly":
        // the payment stays approvable. Every other decline is final.
        if method_result_code != "USER_LOCKED" {
            self.status = PaymentStatus::FailPayment;
        }
        ApiError::declined(
            method_result_code,
            "결제가 거절되었습니다 (simulated decline)",
        )
    }

    fn succeed(&mut self, input: &ApproveInput, ctx: &Ctx) {
        self.status = PaymentStatus::SuccessPayment;
        self.approved_at = Some(ctx.now);
        self.actions.push(Action {
            aid: new_id('A'),
            kind: "PAYMENT",
            at: ctx.now,
            amount: self.amount,
            payload: input.payload.clone(),
        });
    }

    fn method(&self) -> Method {
        self.method.unwrap_or(Method::Money)
    }

    fn approve_json(&self, payload: Option<&str>) -> Value {
        let aid = self.actions.last().map(|a| a.aid.as_str());
        let mut body = json!({
            "aid": aid,
            "tid": self.tid,
            "cid": self.cid,
            "partner_order_id": self.partner_order_id,
            "partner_user_id": self.partner_user_id,
            "payment_method_type": self.method().as_str(),
            "item_name": self.item_name,
            "item_code": self.item_code,
            "quantity": self.quantity,
            "amount": self.amount,
            "created_at": kst(self.created_at),
            "approved_at": kst_opt(self.approved_at),
            "payload": payload,
        });
        if self.method() == Method::Card {
            body["card_info"] = card_info();
        }
        body
    }

    /// `cancel` (full or partial refund).
    pub fn cancel(&mut self, input: &CancelInput, ctx: &Ctx) -> Result<Value, ApiError> {
        self.cancel_calls += 1;
        if !matches!(
            self.status,
            PaymentStatus::SuccessPayment | PaymentStatus::PartCancelPayment
        ) {
            return Err(ApiError::payment(
                -784,
                "payment cannot be cancelled in its state",
            ));
        }
        let available = self.amount.minus(self.canceled);
        // How Kakao enforces cancel_available_amount is undocumented. Rejecting a
        // mismatch is what makes the field useful (a replayed partial cancel
        // carries a stale balance and must not refund twice), so the simulator
        // enforces it; -722 ("amount information invalid") is the closest code.
        if input
            .cancel_available_amount
            .is_some_and(|expected| expected != available.total)
        {
            return Err(ApiError::payment(
                -722,
                "cancel_available_amount does not match the cancellable amount",
            ));
        }
        let refund = refund_amount(input, available)?;
        self.canceled = self.canceled.plus(refund);
        self.canceled_at = Some(ctx.now);
        self.status = if self.canceled.total >= self.amount.total {
            PaymentStatus::CancelPayment
        } else {
            PaymentStatus::PartCancelPayment
        };
        self.actions.push(Action {
            aid: new_id('A'),
            kind: "CANCEL",
            at: ctx.now,
            amount: refund,
            payload: input.payload.clone(),
        });
        Ok(self.cancel_json(refund, input.payload.as_deref()))
    }

    fn cancel_json(&self, refund: Money, payload: Option<&str>) -> Value {
        let aid = self.actions.last().map(|a| a.aid.as_str());
        json!({
            "aid": aid,
            "tid": self.tid,
            "cid": self.cid,
            "status": self.status.as_str(),
            "partner_order_id": self.partner_order_id,
            "partner_user_id": self.partner_user_id,
            "payment_method_type": self.method().as_str(),
            "item_name": self.item_name,
            "item_code": self.item_code,
            "quantity": self.quantity,
            "amount": self.amount,
            "approved_cancel_amount": refund,
            "canceled_amount": self.canceled,
            "cancel_available_amount": self.amount.minus(self.canceled),
            "created_at": kst(self.created_at),
            "approved_at": kst_opt(self.approved_at),
            "canceled_at": kst_opt(self.canceled_at),
            "payload": payload,
        })
    }

    /// `order` lookup. Amount objects other than `amount` only exist once the
    /// payment was approved.
    pub fn order_json(&mut self, ctx: &Ctx) -> Value {
        self.check_expiry(ctx);
        let mut body = json!({
            "tid": self.tid,
            "cid": self.cid,
            "status": self.status.as_str(),
            "partner_order_id": self.partner_order_id,
            "partner_user_id": self.partner_user_id,
            "amount": self.amount,
            "item_name": self.item_name,
            "item_code": self.item_code,
            "quantity": self.quantity,
            "created_at": kst(self.created_at),
            "approved_at": kst_opt(self.approved_at),
            "canceled_at": kst_opt(self.canceled_at),
            "payment_action_details": self.actions.iter().map(|a| self.action_json(a)).collect::<Vec<_>>(),
        });
        if self.approved_at.is_some() {
            body["payment_method_type"] = json!(self.method().as_str());
            body["canceled_amount"] = json!(self.canceled);
            body["cancel_available_amount"] = json!(self.amount.minus(self.canceled));
            if self.method() == Method::Card {
                body["selected_card_info"] = json!({
                    "card_bin": "123456",
                    "install_month": 0,
                    "card_corp_name": "비씨카드",
                    "interest_free_install": "N",
                });
            }
        }
        body
    }

    fn action_json(&self, a: &Action) -> Value {
        json!({
            "aid": a.aid,
            "approved_at": kst(a.at),
            "amount": a.amount.total,
            "point_amount": a.amount.point,
            "discount_amount": a.amount.discount,
            "green_deposit": a.amount.green_deposit,
            "payment_action_type": a.kind,
            "payment_method_type": self.method().as_str(),
            "payload": a.payload,
        })
    }

    pub fn ledger_entry(&self) -> LedgerEntry {
        LedgerEntry {
            partner_order_id: self.partner_order_id.clone(),
            status: self.status,
            approve_calls: self.approve_calls,
            approved: self.approved_at.is_some(),
            cancel_calls: self.cancel_calls,
            canceled_amount: self.canceled.total,
            total_amount: self.amount.total,
            partner_user_id: self.partner_user_id.clone(),
            created_at: Some(kst(self.created_at)),
            approved_at: self.approved_at.map(kst),
        }
    }
}

/// Splits a refund into tax-free and VAT parts and checks it against what is
/// still refundable.
fn refund_amount(input: &CancelInput, available: Money) -> Result<Money, ApiError> {
    if input.cancel_amount > available.total {
        return Err(ApiError::payment(
            -710,
            "cancel_amount exceeds the cancellable amount",
        ));
    }
    if input.cancel_tax_free_amount > input.cancel_amount
        || input.cancel_tax_free_amount > available.tax_free
    {
        return Err(ApiError::payment(-722, "cancel_tax_free_amount is invalid"));
    }
    let is_rest = input.cancel_amount == available.total;
    let vat = match input.cancel_vat_amount {
        Some(vat) => vat,
        // The last refund takes whatever VAT is left, so rounding over several
        // partial refunds still adds up to the original VAT.
        None if is_rest => available.vat,
        None => default_vat(input.cancel_amount - input.cancel_tax_free_amount).min(available.vat),
    };
    if vat < 0 || vat > available.vat {
        return Err(ApiError::payment(-722, "cancel_vat_amount is invalid"));
    }
    Ok(Money {
        total: input.cancel_amount,
        tax_free: input.cancel_tax_free_amount,
        vat,
        ..Money::default()
    })
}

/// A plausible `card_info` for CARD payments.
fn card_info() -> Value {
    json!({
        "kakaopay_purchase_corp": "비씨카드",
        "kakaopay_purchase_corp_code": "104",
        "kakaopay_issuer_corp": "비씨카드",
        "kakaopay_issuer_corp_code": "104",
        "bin": "123456",
        "card_type": "신용",
        "install_month": "00",
        "approved_id": "12345678",
        "card_mid": "123456789",
        "interest_free_install": "N",
        "installment_type": "CARD_INSTALLMENT",
        "card_item_code": "",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vat_rounds_to_nearest() {
        assert_eq!(default_vat(2200), 200);
        assert_eq!(default_vat(1000), 91); // 90.9
        assert_eq!(default_vat(1005), 91); // 91.36
        assert_eq!(default_vat(1001), 91); // 91.0
        assert_eq!(default_vat(60), 5); // 5.45
        assert_eq!(default_vat(61), 6); // 5.55
        assert_eq!(default_vat(0), 0);
    }

    #[test]
    fn kst_formatting() {
        let t = DateTime::parse_from_rfc3339("2023-07-15T12:18:22Z")
            .expect("valid")
            .with_timezone(&Utc);
        assert_eq!(kst(t), "2023-07-15T21:18:22");
    }
}

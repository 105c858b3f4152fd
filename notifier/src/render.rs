//! Mail rendering: a pure function from an event to the mail it calls for (subject,
//! plain text, HTML, recipient, Message-ID). No I/O, no clock: the same event renders
//! the same mail, which is what makes a resend after a crash the same mail.
//!
//! Templates are [minijinja] templates embedded in the binary (`src/templates/`), one
//! subject, text and HTML template per mail kind and language (`ko`, the default, and
//! `en`). Templates whose name ends in `.html` are HTML-escaped automatically, so item
//! names and customer ids supplied by shoppers cannot inject markup.

use crate::domain::{message_id, MailKind};
use chrono::{DateTime, FixedOffset, Utc};
use minijinja::value::Serde;
use minijinja::{Environment, Value};
use serde::Serialize;
use shared_events::{CancelReason, Event, EventBody, OrderSnapshot};
use uuid::Uuid;

/// A mail's language, from the order's `locale` (`ko` unless it says English).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Locale {
    Ko,
    En,
}

impl Locale {
    pub fn from_tag(tag: &str) -> Self {
        let primary = tag.trim().split(['-', '_']).next().unwrap_or_default();
        if primary.eq_ignore_ascii_case("en") {
            Locale::En
        } else {
            Locale::Ko
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Locale::Ko => "ko",
            Locale::En => "en",
        }
    }
}

/// A rendered mail, ready for a transport.
#[derive(Debug, Clone, PartialEq)]
pub struct Mail {
    pub event_id: Uuid,
    pub order_id: Uuid,
    pub kind: MailKind,
    pub locale: Locale,
    /// The recipient as given in the order (validated by the transport).
    pub recipient: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// `<…@domain>`: deterministic per (event, recipient).
    pub message_id: String,
}

#[derive(Debug, thiserror::Error)]
#[error("could not render the {kind} mail ({locale}): {source:#}")]
pub struct RenderError {
    kind: MailKind,
    locale: &'static str,
    #[source]
    source: minijinja::Error,
}

macro_rules! templates {
    ($($name:literal),+ $(,)?) => {
        &[$(($name, include_str!(concat!("templates/", $name)))),+]
    };
}

/// Every template, embedded at compile time.
const TEMPLATES: &[(&str, &str)] = templates!(
    "layout.html",
    "macros.html",
    "macros.txt",
    "ko/payment_completed.subject.txt",
    "ko/payment_completed.txt",
    "ko/payment_completed.html",
    "ko/order_completed.subject.txt",
    "ko/order_completed.txt",
    "ko/order_completed.html",
    "ko/order_cancelled.subject.txt",
    "ko/order_cancelled.txt",
    "ko/order_cancelled.html",
    "ko/order_refunded.subject.txt",
    "ko/order_refunded.txt",
    "ko/order_refunded.html",
    "en/payment_completed.subject.txt",
    "en/payment_completed.txt",
    "en/payment_completed.html",
    "en/order_completed.subject.txt",
    "en/order_completed.txt",
    "en/order_completed.html",
    "en/order_cancelled.subject.txt",
    "en/order_cancelled.txt",
    "en/order_cancelled.html",
    "en/order_refunded.subject.txt",
    "en/order_refunded.txt",
    "en/order_refunded.html",
);

/// Renders mails from events. Cheap to share (`Arc`); rendering takes `&self`.
pub struct Renderer {
    env: Environment<'static>,
    message_id_domain: String,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer")
            .field("message_id_domain", &self.message_id_domain)
            .finish_non_exhaustive()
    }
}

impl Renderer {
    /// `message_id_domain` ends every Message-ID (`<…@domain>`), normally the domain of
    /// the From address.
    pub fn new(message_id_domain: &str) -> Result<Self, minijinja::Error> {
        let mut env = Environment::new();
        // Text templates are plain text; `.html` ones are HTML-escaped (the default
        // callback decides by extension).
        env.set_auto_escape_callback(minijinja::default_auto_escape_callback);
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        for (name, source) in TEMPLATES {
            env.add_template(name, source)?;
        }
        Ok(Self {
            env,
            message_id_domain: message_id_domain.to_owned(),
        })
    }

    /// The mail `event` calls for, or `None` when it needs none.
    pub fn render(&self, event: &Event) -> Result<Option<Mail>, RenderError> {
        let Some((kind, order)) = MailKind::for_event(event) else {
            return Ok(None);
        };
        let locale = Locale::from_tag(&order.locale);
        let err = |source| RenderError {
            kind,
            locale: locale.as_str(),
            source,
        };
        let context = MailContext::new(event, kind, order, locale);
        let base = format!("{}/{}", locale.as_str(), kind.as_str());

        let subject = self
            .env
            .get_template(&format!("{base}.subject.txt"))
            .and_then(|t| t.render(Value::from(Serde(&context))))
            .map_err(err)?;
        let subject = one_line(&subject);
        let context = Value::from(Serde(&context));
        let with_subject = minijinja::context! { subject => subject.clone(), ..context.clone() };
        let text = self
            .env
            .get_template(&format!("{base}.txt"))
            .and_then(|t| t.render(with_subject.clone()))
            .map_err(err)?;
        let html = self
            .env
            .get_template(&format!("{base}.html"))
            .and_then(|t| t.render(with_subject))
            .map_err(err)?;
        let recipient = order.customer_email.trim().to_owned();
        Ok(Some(Mail {
            event_id: event.event_id,
            order_id: event.order_id,
            kind,
            locale,
            message_id: message_id(event.event_id, &recipient, &self.message_id_domain),
            recipient,
            subject,
            text,
            html,
        }))
    }
}

/// A subject is one line: whitespace runs (including any newline) become one space.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[derive(Serialize)]
struct ItemContext<'a> {
    name: &'a str,
    quantity: u32,
    unit_price: i64,
    line_total: i64,
    unit_price_text: String,
    line_total_text: String,
}

/// What the templates see.
#[derive(Serialize)]
struct MailContext<'a> {
    locale: Locale,
    kind: MailKind,
    order_id: String,
    customer_id: &'a str,
    items: Vec<ItemContext<'a>>,
    total_amount: i64,
    total_text: String,
    occurred_at_text: String,
    paid_text: Option<String>,
    payment_method: Option<&'a str>,
    approved_at_text: Option<String>,
    completed_at_text: Option<String>,
    reason: Option<&'static str>,
    refunded_text: Option<String>,
    cancelled_at_text: Option<String>,
}

impl<'a> MailContext<'a> {
    fn new(event: &'a Event, kind: MailKind, order: &'a OrderSnapshot, locale: Locale) -> Self {
        let items = order
            .items
            .iter()
            .map(|item| {
                let line_total = item.unit_price.saturating_mul(i64::from(item.quantity));
                ItemContext {
                    name: &item.name,
                    quantity: item.quantity,
                    unit_price: item.unit_price,
                    line_total,
                    unit_price_text: format_krw(item.unit_price, locale),
                    line_total_text: format_krw(line_total, locale),
                }
            })
            .collect();
        let mut context = Self {
            locale,
            kind,
            order_id: event.order_id.to_string(),
            customer_id: &order.customer_id,
            items,
            total_amount: order.total_amount,
            total_text: format_krw(order.total_amount, locale),
            occurred_at_text: format_time(event.occurred_at, locale),
            paid_text: None,
            payment_method: None,
            approved_at_text: None,
            completed_at_text: None,
            reason: None,
            refunded_text: None,
            cancelled_at_text: None,
        };
        match &event.body {
            EventBody::PaymentApproved(p) => {
                context.paid_text = Some(format_krw(p.amount, locale));
                context.payment_method = p.payment_method.as_deref();
                context.approved_at_text = Some(format_time(p.approved_at, locale));
            }
            EventBody::OrderCompleted(p) => {
                context.completed_at_text = Some(format_time(p.completed_at, locale));
            }
            EventBody::OrderCancelled(p) => {
                context.reason = Some(cancel_reason(p.reason, locale));
                context.refunded_text = p.refunded_amount.map(|a| format_krw(a, locale));
                context.cancelled_at_text = Some(format_time(p.cancelled_at, locale));
            }
            EventBody::OrderPlaced(_)
            | EventBody::PaymentReady(_)
            | EventBody::PaymentFailed(_)
            | EventBody::PaymentRefunded(_)
            | EventBody::RefundRequested(_)
            | EventBody::PaymentCloseRequested(_)
            | EventBody::PaymentClosed(_) => {}
        }
        context
    }
}

/// Whole won with thousands separators: `12,000원` (ko) or `₩12,000` (en).
pub fn format_krw(amount: i64, locale: Locale) -> String {
    let digits = amount.unsigned_abs().to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    let sign = if amount < 0 { "-" } else { "" };
    match locale {
        Locale::Ko => format!("{sign}{grouped}원"),
        Locale::En => format!("{sign}₩{grouped}"),
    }
}

/// Korean mails show Korean time (KST, UTC+9); English ones UTC.
fn format_time(at: DateTime<Utc>, locale: Locale) -> String {
    match locale {
        Locale::Ko => {
            let kst = FixedOffset::east_opt(9 * 3600).expect("UTC+9 is a valid offset");
            at.with_timezone(&kst)
                .format("%Y-%m-%d %H:%M (KST)")
                .to_string()
        }
        Locale::En => at.format("%-d %b %Y, %H:%M UTC").to_string(),
    }
}

fn cancel_reason(reason: CancelReason, locale: Locale) -> &'static str {
    match (reason, locale) {
        (CancelReason::PaymentDeclined, Locale::Ko) => "결제가 거절되었습니다",
        (CancelReason::PaymentDeclined, Locale::En) => "the payment was declined",
        (CancelReason::PaymentCancelledByShopper, Locale::Ko) => "결제를 취소하셨습니다",
        (CancelReason::PaymentCancelledByShopper, Locale::En) => "you cancelled the payment",
        (CancelReason::PaymentFailed, Locale::Ko) => "결제에 실패했습니다",
        (CancelReason::PaymentFailed, Locale::En) => "the payment failed",
        (CancelReason::PaymentExpired, Locale::Ko) => "결제 유효 시간이 지났습니다",
        (CancelReason::PaymentExpired, Locale::En) => "the payment expired",
        (CancelReason::PaymentUnavailable, Locale::Ko) => "결제 서비스를 이용할 수 없었습니다",
        (CancelReason::PaymentUnavailable, Locale::En) => "the payment service was unavailable",
        (CancelReason::DeadlineExpired, Locale::Ko) => "결제 기한 안에 결제되지 않았습니다",
        (CancelReason::DeadlineExpired, Locale::En) => "the order was not paid in time",
        (CancelReason::CancelledByShopper, Locale::Ko) => "주문을 취소하셨습니다",
        (CancelReason::CancelledByShopper, Locale::En) => "you cancelled the order",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_events::{
        LineItem, OrderCancelled, OrderCompleted, OrderPlaced, PaymentApproved, PaymentFailed,
        PaymentFailureReason, PaymentReady, PaymentRefunded, RefundRequested,
    };

    fn order(locale: &str, item_name: &str) -> OrderSnapshot {
        OrderSnapshot {
            customer_id: "customer <b>7</b>".into(),
            customer_email: "kim@example.com".into(),
            locale: locale.into(),
            items: vec![
                LineItem {
                    name: item_name.into(),
                    quantity: 2,
                    unit_price: 4500,
                },
                LineItem {
                    name: "Mug".into(),
                    quantity: 1,
                    unit_price: 1_203_000,
                },
            ],
            total_amount: 1_212_000,
        }
    }

    fn events(locale: &str, item_name: &str) -> Vec<(MailKind, Event)> {
        let order_id = Uuid::now_v7();
        let o = order(locale, item_name);
        vec![
            (
                MailKind::PaymentCompleted,
                Event::new(
                    order_id,
                    None,
                    PaymentApproved {
                        payment_id: Uuid::now_v7(),
                        tid: "T1".into(),
                        amount: 1_212_000,
                        payment_method: Some("CARD".into()),
                        approved_at: Utc::now(),
                        order: o.clone(),
                    },
                ),
            ),
            (
                MailKind::OrderCompleted,
                Event::new(
                    order_id,
                    None,
                    OrderCompleted {
                        order: o.clone(),
                        payment_id: Uuid::now_v7(),
                        completed_at: Utc::now(),
                    },
                ),
            ),
            (
                MailKind::OrderCancelled,
                Event::new(
                    order_id,
                    None,
                    OrderCancelled {
                        order: o.clone(),
                        reason: CancelReason::PaymentDeclined,
                        refunded_amount: None,
                        cancelled_at: Utc::now(),
                    },
                ),
            ),
            (
                MailKind::OrderRefunded,
                Event::new(
                    order_id,
                    None,
                    OrderCancelled {
                        order: o,
                        reason: CancelReason::CancelledByShopper,
                        refunded_amount: Some(1_212_000),
                        cancelled_at: Utc::now(),
                    },
                ),
            ),
        ]
    }

    fn renderer() -> Renderer {
        Renderer::new("example.com").expect("templates compile")
    }

    #[test]
    fn every_kind_renders_in_both_languages_with_order_items_and_total() {
        let renderer = renderer();
        for locale in ["ko", "en"] {
            for (kind, event) in events(locale, "커피") {
                let mail = renderer.render(&event).expect("renders").expect("a mail");
                assert_eq!(mail.kind, kind);
                assert_eq!(mail.locale.as_str(), locale);
                assert_eq!(mail.recipient, "kim@example.com");
                let order_id = event.order_id.to_string();
                assert!(mail.subject.contains(&order_id), "{}", mail.subject);
                assert!(!mail.subject.contains('\n'));
                for body in [&mail.text, &mail.html] {
                    assert!(body.contains(&order_id), "{kind} {locale}: {body}");
                    assert!(body.contains("커피"), "{kind} {locale}: {body}");
                    assert!(body.contains("1,212,000"), "{kind} {locale}: {body}");
                    assert!(
                        body.contains("9,000"),
                        "{kind} {locale}: line total in {body}"
                    );
                }
                assert!(mail.text.contains("커피 × 2"), "{}", mail.text);
                assert!(mail.html.starts_with("<!DOCTYPE html>"));
                assert!(mail.html.contains(&format!("lang=\"{locale}\"")));
                if locale == "ko" {
                    assert!(mail.text.contains("원"), "{}", mail.text);
                } else {
                    assert!(mail.text.contains("₩1,212,000"), "{}", mail.text);
                }
            }
        }
    }

    #[test]
    fn korean_is_the_default_language() {
        let (_, event) = events("fr", "x").remove(0);
        let mail = renderer().render(&event).expect("renders").expect("a mail");
        assert_eq!(mail.locale, Locale::Ko);
        assert!(
            mail.subject.contains("결제가 완료되었습니다"),
            "{}",
            mail.subject
        );
        assert_eq!(Locale::from_tag("en-US"), Locale::En);
        assert_eq!(Locale::from_tag(""), Locale::Ko);
    }

    #[test]
    fn user_text_is_escaped_in_html_and_kept_in_text() {
        let item = "<script>alert('x')</script> & co";
        for (_, event) in events("en", item) {
            let mail = renderer().render(&event).expect("renders").expect("a mail");
            assert!(!mail.html.contains("<script>"), "{}", mail.html);
            assert!(mail.html.contains("&lt;script&gt;"), "{}", mail.html);
            assert!(!mail.html.contains("<b>7</b>"), "{}", mail.html);
            assert!(
                mail.html.contains("&lt;b&gt;7&lt;&#x2f;b&gt;")
                    || mail.html.contains("&lt;b&gt;7&lt;/b&gt;"),
                "{}",
                mail.html
            );
            assert!(mail.text.contains(item), "{}", mail.text);
        }
    }

    #[test]
    fn refunds_and_reasons_are_spelled_out() {
        let renderer = renderer();
        let (_, refunded) = events("ko", "x").pop().expect("refund");
        let mail = renderer
            .render(&refunded)
            .expect("renders")
            .expect("a mail");
        assert!(
            mail.text.contains("환불 금액: 1,212,000원"),
            "{}",
            mail.text
        );
        assert!(mail.text.contains("주문을 취소하셨습니다"), "{}", mail.text);
        let (_, cancelled) = events("en", "x").remove(2);
        let mail = renderer
            .render(&cancelled)
            .expect("renders")
            .expect("a mail");
        assert!(
            mail.text.contains("the payment was declined"),
            "{}",
            mail.text
        );
    }

    #[test]
    fn rendering_is_deterministic() {
        let renderer = renderer();
        for (_, event) in events("ko", "x") {
            assert_eq!(
                renderer.render(&event).expect("ok"),
                renderer.render(&event).expect("ok")
            );
        }
    }

    #[test]
    fn events_that_need_no_mail_render_nothing() {
        let order_id = Uuid::now_v7();
        let quiet: Vec<EventBody> = vec![
            OrderPlaced {
                order: order("ko", "x"),
                payment_deadline: Utc::now(),
            }
            .into(),
            PaymentReady {
                payment_id: Uuid::now_v7(),
                tid: "T".into(),
                redirect_url: "http://x".into(),
                mobile_redirect_url: None,
            }
            .into(),
            PaymentFailed {
                payment_id: None,
                tid: None,
                reason: PaymentFailureReason::Declined,
                error_code: None,
                detail: "no".into(),
            }
            .into(),
            PaymentRefunded {
                payment_id: Uuid::now_v7(),
                tid: "T".into(),
                amount: 1,
                refunded_at: Utc::now(),
            }
            .into(),
            RefundRequested {
                payment_id: Uuid::now_v7(),
                amount: 1,
                reason: CancelReason::CancelledByShopper,
            }
            .into(),
        ];
        for body in quiet {
            let event = Event::new(order_id, None, body);
            assert_eq!(renderer().render(&event).expect("ok"), None);
        }
    }

    #[test]
    fn won_amounts_are_grouped_by_thousands() {
        assert_eq!(format_krw(0, Locale::Ko), "0원");
        assert_eq!(format_krw(999, Locale::Ko), "999원");
        assert_eq!(format_krw(1000, Locale::Ko), "1,000원");
        assert_eq!(format_krw(1_234_567, Locale::En), "₩1,234,567");
        assert_eq!(format_krw(-45_000, Locale::Ko), "-45,000원");
    }
}

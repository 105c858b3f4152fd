//! `GET /__sim/pay/{tid}`: the page the shopper's browser opens instead of
//! Kakao Pay's payment screens. It ends with a 302 to the merchant's
//! `approval_url?pg_token=…`, `cancel_url` or `fail_url`.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use super::error::ApiError;
use super::payment::{ShopperAction, ShopperOutcome};
use super::state::Data;

/// The page's `action` as the document names it: approve, cancel, fail, or empty (as if
/// absent). Written by hand: the derive has no way to name an empty variant.
pub(crate) struct PageAction;

impl utoipa::PartialSchema for PageAction {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(["approve", "cancel", "fail", ""]))
            .description(Some("What the shopper does; empty: as if absent"))
            .into()
    }
}

impl utoipa::ToSchema for PageAction {}

#[utoipa::path(
    get, path = "/__sim/pay/{tid}", tag = "simulator", operation_id = "shopper_page",
    description = "The page the shopper's browser opens instead of Kakao Pay's (a `next_redirect_*_url`). Without `action`, auto mode approves at once and manual mode shows approve / cancel / fail links; it ends with a 302 to the merchant's `approval_url?pg_token=…`, `cancel_url` or `fail_url`. A payment decided already (or expired) redirects as it was decided.",
    params(
        ("tid" = String, Path, description = "The payment's tid"),
        ("action" = Option<PageAction>, Query, description = "What the shopper does; absent or empty: the mode decides"),
        ("via" = Option<String>, Query, description = "Which redirect URL the shopper used (`mobile`, `app`); only informative"),
    ),
    responses(
        (status = 200, description = "Manual mode: the choice page", content_type = "text/html", body = String),
        (status = 302, description = "To the merchant's approval, cancel or fail URL",
            headers(("Location" = String, description = "`approval_url?pg_token=…`, `cancel_url` or `fail_url`"))),
        (status = 400, description = "`action` is none of approve, cancel, fail", content_type = "text/html", body = String),
        (status = 404, description = "No payment has this tid", content_type = "text/html", body = String),
    )
)]
pub(crate) async fn page(state: Data, tid: web::Path<String>, req: HttpRequest) -> HttpResponse {
    // Read by hand rather than with `web::Query`, whose refusals (a repeated `action`)
    // are plain-text 400s outside this page's answers.
    let action = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(name, _)| name == "action")
        .map(|(_, value)| value.into_owned());
    let action = match action.as_deref() {
        None | Some("") => None,
        Some("approve") => Some(ShopperAction::Approve),
        Some("cancel") => Some(ShopperAction::Cancel),
        Some("fail") => Some(ShopperAction::Fail),
        Some(_) => {
            return html(
                400,
                "Unknown action",
                "<p>action must be approve, cancel or fail.</p>",
            )
        }
    };
    let ctx = state.ctx();
    let outcome = state.with_payment(&tid, |p| Ok(p.shopper(action, &ctx)));
    match outcome {
        // The Location carries the pg_token: it is deliberately not logged.
        Ok(ShopperOutcome::Redirect(url)) => {
            tracing::info!(tid = %tid, ?action, "shopper redirected");
            HttpResponse::Found()
                .insert_header((header::LOCATION, url.as_str()))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .finish()
        }
        Ok(ShopperOutcome::Choose { item_name, total }) => choice_page(&item_name, total),
        Err(ApiError { code: -721, .. }) => {
            html(404, "Payment not found", "<p>No such payment.</p>")
        }
        Err(err) => err.response(),
    }
}

/// Manual mode: let a human (or a test) pick the outcome.
fn choice_page(item_name: &str, total: i64) -> HttpResponse {
    let body = format!(
        "<p class=\"item\">{}</p>\n<p class=\"total\">{total} KRW</p>\n<ul>\n\
         <li><a id=\"approve\" class=\"pay\" href=\"?action=approve\">Approve</a></li>\n\
         <li><a id=\"cancel\" href=\"?action=cancel\">Cancel</a></li>\n\
         <li><a id=\"fail\" href=\"?action=fail\">Fail</a></li>\n</ul>",
        escape(item_name)
    );
    html(200, "Kakao Pay simulator", &body)
}

/// Enough style to tell the simulator's page from the shop's in a screenshot.
const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;\
padding:2rem;border-radius:1rem;background:#fee500;color:#191919}h1{font-size:1.3rem}\
.item{font-size:1.1rem}.total{font-size:2rem;font-weight:700}ul{list-style:none;padding:0}\
li{margin:.6rem 0}a{display:block;padding:.8rem;border-radius:.6rem;background:#fff;\
color:#191919;text-align:center;text-decoration:none;font-weight:600}a.pay{background:#191919;color:#fee500}";

fn html(status: u16, title: &str, body: &str) -> HttpResponse {
    let status =
        actix_web::http::StatusCode::from_u16(status).expect("callers pass valid status codes");
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>\
             <style>{STYLE}</style></head>\n\
             <body><h1>{title}</h1>\n{body}\n</body></html>\n"
        ))
}

fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '&' => "&amp;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_html() {
        assert_eq!(
            super::escape("<a href='x'>&"),
            "&lt;a href=&#39;x&#39;&gt;&amp;"
        );
    }
}

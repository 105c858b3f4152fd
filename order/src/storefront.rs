//! The storefront's pages, served by the order service (the storefront's backend): the
//! catalog and checkout at `/shop`, one order live at `/shop/orders/{id}`. Plain HTML and a
//! little JavaScript from `order/storefront/`, compiled into the binary, so the shop needs
//! no other server and no asset ever comes from another origin (the pages are served with
//! `Content-Security-Policy: default-src 'self'`). The pages call the same REST API as any
//! client; an order's token stays in the shopper's browser.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::{web, HttpResponse};
use shared_events::routes::Router;

const SHOP_PAGE: &[u8] = include_bytes!("../storefront/shop.html");
const ORDER_PAGE: &[u8] = include_bytes!("../storefront/order.html");

/// Every asset the pages load: name, media type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../storefront/assets/style.css"),
    ),
    (
        "i18n.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../storefront/assets/i18n.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../storefront/assets/api.js"),
    ),
    (
        "shop.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../storefront/assets/shop.js"),
    ),
    (
        "order.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../storefront/assets/order.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("../storefront/assets/favicon.svg"),
    ),
];

/// Only this origin's scripts, styles, images and connections; no frames, no plugins.
const POLICY: &str = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'";

/// The pages and their assets, in the service's route table.
pub fn routes<R: Router>(r: &mut R) {
    r.route(Method::GET, "/", home)
        .route(Method::GET, "/shop", shop)
        .route(Method::GET, "/shop/orders/{id}", order_page)
        .route(Method::GET, "/shop/assets/{name}", asset);
}

/// The shop's front door.
#[utoipa::path(
    get, path = "/", tag = "storefront",
    responses((status = 303, description = "On to the shop", headers(("Location" = String))))
)]
pub(crate) async fn home() -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/shop"))
        .finish()
}

/// The catalog and the checkout.
#[utoipa::path(
    get, path = "/shop", tag = "storefront",
    responses((status = 200, description = "The shop's page", content_type = "text/html", body = String))
)]
pub(crate) async fn shop() -> HttpResponse {
    page(SHOP_PAGE)
}

/// The same page for every id: its script reads the id from the address and the order's
/// token from the browser that placed it (an unknown id is the API's 404, shown there).
#[utoipa::path(
    get, path = "/shop/orders/{id}", tag = "storefront",
    params(("id" = String, Path, description = "The order's id")),
    responses((status = 200, description = "The order's page (the order itself comes from the API)", content_type = "text/html", body = String))
)]
pub(crate) async fn order_page(_id: web::Path<String>) -> HttpResponse {
    page(ORDER_PAGE)
}

/// A script, style sheet or image of the pages.
#[utoipa::path(
    get, path = "/shop/assets/{name}", tag = "storefront",
    params(("name" = String, Path, description = "The asset's file name, e.g. shop.js")),
    responses(
        (status = 200, description = "The asset (JavaScript, CSS or SVG)", content(
            (String = "text/javascript"), (String = "text/css"), (String = "image/svg+xml")
        )),
        (status = 404, description = "No such asset", content_type = "application/problem+json", body = shared_events::http::Problem),
    )
)]
pub(crate) async fn asset(name: web::Path<String>) -> HttpResponse {
    match ASSETS.iter().find(|(asset, ..)| *asset == name.as_str()) {
        Some((_, media_type, bytes)) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, *media_type))
            // Assets change only with a release; an hour keeps a demo fresh enough.
            .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
            .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
            .body(*bytes),
        None => shared_events::http::Problem::not_found("asset").response(),
    }
}

fn page(html: &'static [u8]) -> HttpResponse {
    let mut response = HttpResponse::Ok()
        .content_type(header::ContentType::html())
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        // The order page's address names the order; tokens never travel in it.
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(html);
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file the pages reference is served, with a media type a browser accepts
    /// for it (a module script refuses any but a JavaScript type).
    #[test]
    fn every_asset_the_pages_reference_is_served() {
        for page in [SHOP_PAGE, ORDER_PAGE] {
            let html = std::str::from_utf8(page).expect("UTF-8");
            for reference in html.split("/shop/assets/").skip(1) {
                let name: String = reference
                    .chars()
                    .take_while(|c| !matches!(c, '"' | '\'' | '?' | '#'))
                    .collect();
                assert!(
                    ASSETS.iter().any(|(asset, ..)| *asset == name),
                    "{name} is referenced but not served"
                );
            }
        }
        for (name, media_type, _) in ASSETS {
            if name.ends_with(".js") {
                assert!(media_type.starts_with("text/javascript"), "{name}");
            }
        }
    }

    #[test]
    fn scripts_import_only_served_modules() {
        for (name, _, bytes) in ASSETS.iter().filter(|(n, ..)| n.ends_with(".js")) {
            let source = std::str::from_utf8(bytes).expect("UTF-8");
            for module in source.split("from '").skip(1) {
                let module = module.split('\'').next().unwrap_or_default();
                let file = module.trim_start_matches("./");
                assert!(
                    ASSETS.iter().any(|(asset, ..)| *asset == file),
                    "{name} imports {module}, which is not served"
                );
            }
        }
    }
}

//! The shopper's order is a capability: whoever holds its token is the shopper.
//!
//! `POST /orders` answers, once, with `access_token`: 256 random bits (64 hex digits).
//! Only its SHA-256 is stored, so neither the database nor a backup can give it away.
//! A request presents it as `Authorization: Bearer <token>` or, for a link a browser
//! opens, `?token=<token>` (the header wins; the query value never reaches a log line,
//! see `shared_events::request_span`).
//!
//! * Without a token, `GET /orders/{id}` (long poll and change stream included) shows
//!   the public view: id, status, amounts, timestamps, the payment's status and
//!   `redirect_url` — nothing about who ordered what or which payment paid it.
//! * With the right token it shows everything; with a wrong one it answers `403`.
//! * Cancelling and the timeline need the token: `401` without one, `403` with a wrong one.

use crate::domain::OrderError;
use crate::store::Order;
use actix_web::HttpRequest;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The query parameter a token may travel in (a browser link).
pub const TOKEN_QUERY: &str = "token";

/// A new order's token. Shown once, in the answer to `POST /orders`; never logged
/// (`Debug` redacts it).
pub struct OrderToken(String);

impl std::fmt::Debug for OrderToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OrderToken([REDACTED])")
    }
}

impl OrderToken {
    /// 32 bytes from the thread's CSPRNG (ChaCha, seeded by the OS).
    pub fn generate() -> Self {
        use rand::RngCore;
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The token of an order placed with an `Idempotency-Key`: HMAC-SHA256(key, salt), so
    /// a retry with the key shows it again (see `crate::idempotency`).
    pub fn derived(key: &[u8], salt: &[u8]) -> Self {
        use hmac::{KeyInit, Mac};
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(salt);
        let bytes = mac.finalize().into_bytes();
        Self(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// What is stored: the SHA-256 of the token's text.
    pub fn hash(&self) -> Vec<u8> {
        digest(&self.0)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The token a request presented, if any. `Debug` redacts it.
#[derive(Clone, Default)]
pub struct Presented(Option<String>);

impl std::fmt::Debug for Presented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = if self.0.is_some() {
            "[REDACTED]"
        } else {
            "none"
        };
        write!(f, "Presented({shown})")
    }
}

impl Presented {
    /// `Authorization: Bearer <token>`, else `?token=<token>`.
    pub fn from_request(request: &HttpRequest) -> Self {
        let bearer = request
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                let (scheme, token) = value.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .map(str::to_owned);
        let token = bearer.or_else(|| {
            url::form_urlencoded::parse(request.query_string().as_bytes())
                .find(|(key, _)| key == TOKEN_QUERY)
                .map(|(_, value)| value.into_owned())
        });
        Self(token.filter(|t| !t.is_empty()))
    }

    #[cfg(test)]
    fn token(token: &str) -> Self {
        Self(Some(token.to_owned()))
    }
}

/// How much of an order a request may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The order's token: everything.
    Owner,
    /// No token: the public view only.
    Public,
}

/// What `presented` may see of `order`: `Public` without a token, `Owner` with the
/// right one, `403` with a wrong one (a client bug or a guess, never silently ignored).
pub fn view_access(order: &Order, presented: &Presented) -> Result<Access, OrderError> {
    match &presented.0 {
        None => Ok(Access::Public),
        Some(token) if matches(order, token) => Ok(Access::Owner),
        Some(_) => Err(OrderError::WrongToken),
    }
}

/// The shopper's own actions: `401` without a token, `403` with a wrong one.
pub fn require_owner(order: &Order, presented: &Presented) -> Result<(), OrderError> {
    match &presented.0 {
        None => Err(OrderError::TokenRequired),
        Some(token) if matches(order, token) => Ok(()),
        Some(_) => Err(OrderError::WrongToken),
    }
}

/// Compared in constant time. An order stored without a hash matches no token.
fn matches(order: &Order, token: &str) -> bool {
    order
        .row
        .access_token_hash
        .as_deref()
        .is_some_and(|stored| bool::from(stored.ct_eq(&digest(token))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn tokens_are_256_random_bits_and_stored_as_their_digest() {
        let (a, b) = (OrderToken::generate(), OrderToken::generate());
        assert_eq!(a.expose().len(), 64);
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.hash(), digest(a.expose()));
        assert_ne!(a.hash(), a.expose().as_bytes());
        assert_eq!(format!("{a:?}"), "OrderToken([REDACTED])");
        assert_eq!(
            format!("{:?}", Presented::token("x")),
            "Presented([REDACTED])"
        );
    }

    #[test]
    fn the_header_wins_over_the_query() {
        let request = TestRequest::get()
            .uri("/orders/1?token=from-query")
            .insert_header(("Authorization", "Bearer from-header"))
            .to_http_request();
        assert_eq!(
            Presented::from_request(&request).0.as_deref(),
            Some("from-header")
        );
        let query = TestRequest::get()
            .uri("/orders/1?wait=2&token=from-query")
            .to_http_request();
        assert_eq!(
            Presented::from_request(&query).0.as_deref(),
            Some("from-query")
        );
        let none = TestRequest::get()
            .uri("/orders/1?token=")
            .insert_header(("Authorization", "Basic abc"))
            .to_http_request();
        assert_eq!(Presented::from_request(&none).0, None);
    }
}

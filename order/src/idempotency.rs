//! Safe retries of `POST /orders`: the `Idempotency-Key` header
//! (draft-ietf-httpapi-idempotency-key-header, as Stripe does it).
//!
//! The first request with a key places the order and records the key with the order's
//! id and a fingerprint of the request, in the order's own transaction. A later request
//! with the same key and the same request gets that order again (same id, `202`,
//! `Idempotent-Replayed: true`); with another request, `422`. Two at once: the second
//! waits on the key's row until the first commits, then replays it — one order, one
//! `OrderPlaced`, one payment.
//!
//! A replay must show the order's token again, but only the token's hash is stored. So
//! an order placed with a key gets a token derived from it: HMAC-SHA256(key, salt), the
//! salt random and stored. Whoever holds the key (the client that sent it) can have the
//! token again; the database alone cannot give it, as it keeps only the key's SHA-256.
//! Keys therefore must be long enough not to be guessed (a UUID is).

use crate::access::OrderToken;
use crate::domain::PlaceOrder;
use crate::store::KeyRecord;
use actix_web::http::header::HeaderName;
use actix_web::HttpRequest;
use sha2::{Digest, Sha256};
use shared_events::http::InvalidParam;
use uuid::Uuid;

pub const HEADER: HeaderName = HeaderName::from_static("idempotency-key");
/// Sent with an answer that is a replay of an earlier request's.
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// A key derives the order's token: it must carry enough chance (a UUID has 36 characters).
pub const MIN_KEY_CHARS: usize = 16;
pub const MAX_KEY_CHARS: usize = 255;

/// The client's key. `Debug` redacts it: it derives the order's token.
pub struct IdempotencyKey(String);

impl std::fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdempotencyKey([REDACTED])")
    }
}

impl IdempotencyKey {
    /// The request's key, if it sent one: visible ASCII, 16–255 characters, bare or as a
    /// structured-field string (`"…"`), one header only.
    pub fn from_request(request: &HttpRequest) -> Result<Option<Self>, InvalidParam> {
        let mut values = request.headers().get_all(HEADER);
        let Some(value) = values.next() else {
            return Ok(None);
        };
        let refuse = |reason: String| InvalidParam::new("Idempotency-Key", reason);
        if values.next().is_some() {
            return Err(refuse("must be sent once".into()));
        }
        let text = value
            .to_str()
            .map_err(|_| refuse("must be visible ASCII".into()))?
            .trim();
        let text = text
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .unwrap_or(text);
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(refuse(
                "must be visible ASCII, without spaces or quotes".into(),
            ));
        }
        if !(MIN_KEY_CHARS..=MAX_KEY_CHARS).contains(&text.len()) {
            return Err(refuse(format!(
                "must be {MIN_KEY_CHARS} to {MAX_KEY_CHARS} characters (a UUID is fine)"
            )));
        }
        Ok(Some(Self(text.to_owned())))
    }

    /// What is stored to find the key again.
    pub fn hash(&self) -> Vec<u8> {
        Sha256::digest(self.0.as_bytes()).to_vec()
    }

    /// The token of the order placed with this key and `salt`.
    pub fn token(&self, salt: &[u8]) -> OrderToken {
        OrderToken::derived(self.0.as_bytes(), salt)
    }
}

/// The SHA-256 of a request's canonical form (as parsed, re-serialized): spacing and key
/// order do not make two requests different; any value does.
pub fn fingerprint(request: &PlaceOrder) -> Vec<u8> {
    let canonical = serde_json::to_vec(request).expect("a parsed request serializes");
    Sha256::digest(&canonical).to_vec()
}

/// A retried request: its key and what it asked for.
#[derive(Debug)]
pub struct Retry {
    pub key: IdempotencyKey,
    pub fingerprint: Vec<u8>,
}

impl Retry {
    /// What a new order records of this request's key, with a new salt.
    pub fn record(&self, order_id: Uuid) -> KeyRecord {
        use rand::RngCore;
        let mut salt = vec![0u8; 32];
        rand::rng().fill_bytes(&mut salt);
        KeyRecord {
            key_hash: self.key.hash(),
            request_hash: self.fingerprint.clone(),
            order_id,
            token_salt: salt,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn key_of(request: TestRequest) -> Result<Option<IdempotencyKey>, InvalidParam> {
        IdempotencyKey::from_request(&request.to_http_request())
    }

    #[test]
    fn a_key_is_long_visible_ascii_sent_once() {
        let uuid = "0b6f7c1e-5d0a-4d3b-9d6e-2f1f6d8a9c11";
        assert!(key_of(TestRequest::default()).expect("no key").is_none());
        let bare = key_of(TestRequest::default().insert_header(("Idempotency-Key", uuid)));
        let quoted = format!("\"{uuid}\"");
        let quoted = key_of(TestRequest::default().insert_header(("Idempotency-Key", quoted)));
        assert_eq!(
            bare.expect("bare").expect("a key").hash(),
            quoted.expect("quoted").expect("a key").hash()
        );
        for bad in ["short", "has space in it 123", &"x".repeat(256)] {
            let request = TestRequest::default().insert_header(("Idempotency-Key", bad));
            assert!(key_of(request).is_err(), "{bad:?}");
        }
        let twice = TestRequest::default()
            .append_header(("Idempotency-Key", uuid))
            .append_header(("Idempotency-Key", uuid));
        assert!(key_of(twice).is_err());
    }

    #[test]
    fn the_token_is_the_keys_and_the_salts() {
        let key = IdempotencyKey("0123456789abcdef0123".into());
        let other = IdempotencyKey("0123456789abcdef0124".into());
        let salt = [7u8; 32];
        assert_eq!(key.token(&salt).expose(), key.token(&salt).expose());
        assert_ne!(key.token(&salt).expose(), other.token(&salt).expose());
        assert_ne!(key.token(&salt).expose(), key.token(&[8u8; 32]).expose());
        assert_eq!(key.token(&salt).expose().len(), 64);
    }

    #[test]
    fn the_fingerprint_ignores_spacing_and_key_order() {
        let a: PlaceOrder = serde_json::from_str(
            r#"{"customer_id":"c","customer_email":"a@b.kr","items":[{"sku":"x","quantity":1}]}"#,
        )
        .expect("json");
        let b: PlaceOrder = serde_json::from_str(
            r#"{ "items": [ {"quantity": 1, "sku": "x"} ], "customer_email": "a@b.kr", "customer_id": "c" }"#,
        )
        .expect("json");
        let c: PlaceOrder = serde_json::from_str(
            r#"{"customer_id":"c","customer_email":"a@b.kr","items":[{"sku":"x","quantity":2}]}"#,
        )
        .expect("json");
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&c));
    }
}

//! How case 1's services know a delivered event comes from one of them: every delivery
//! carries the HMAC-SHA256 of its body under the secret they share.

use std::sync::Arc;

/// The header with the HMAC-SHA256 of a delivery's body: `sha256=<64 hex digits>`.
pub const SIGNATURE_HEADER: &str = "x-saga-signature";
/// The environment variable holding the secret case 1's services share.
pub const SECRET_ENV: &str = "INTERNAL_EVENTS_SECRET";
/// Shorter secrets are refused: an HMAC key is only as strong as its guessability.
pub const MIN_SECRET_LEN: usize = 16;

/// Signs and checks case 1's deliveries with the services' shared secret. The key is
/// never shown (`Debug` redacts it) and never sent: only the signature travels.
#[derive(Clone)]
pub struct EventSigner {
    key: Arc<[u8]>,
}

impl std::fmt::Debug for EventSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventSigner([REDACTED])")
    }
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

impl EventSigner {
    /// A signer for `secret`; refuses one shorter than [`MIN_SECRET_LEN`] bytes.
    pub fn new(secret: &str) -> Result<Self, SignerError> {
        let secret = secret.trim();
        if secret.len() < MIN_SECRET_LEN {
            return Err(SignerError::TooShort);
        }
        Ok(Self {
            key: secret.as_bytes().into(),
        })
    }

    /// Case 1 needs a secret: `None` is refused with a message naming the variable, so a
    /// service never starts accepting unauthenticated events.
    pub fn required(secret: Option<&str>) -> Result<Self, SignerError> {
        Self::new(secret.ok_or(SignerError::Missing)?)
    }

    fn mac(&self) -> HmacSha256 {
        use hmac::KeyInit;
        HmacSha256::new_from_slice(&self.key).expect("HMAC takes a key of any length")
    }

    /// The [`SIGNATURE_HEADER`] value for `body`.
    pub fn sign(&self, body: &[u8]) -> String {
        use hmac::Mac;
        let mut mac = self.mac();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    /// True when `signature` is `body`'s, compared in constant time.
    pub fn verify(&self, body: &[u8], signature: Option<&str>) -> bool {
        use hmac::Mac;
        let Some(digest) = signature
            .and_then(|s| s.trim().strip_prefix("sha256="))
            .and_then(|hex_digits| hex::decode(hex_digits).ok())
        else {
            return false;
        };
        let mut mac = self.mac();
        mac.update(body);
        mac.verify_slice(&digest).is_ok()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignerError {
    #[error(
        "case 1 delivers events over HTTP and needs {SECRET_ENV}, the secret its services \
         share to authenticate them (at least {MIN_SECRET_LEN} characters, the same for \
         order, payment and mailer-blocking); it is not set"
    )]
    Missing,
    #[error("{SECRET_ENV} must be at least {MIN_SECRET_LEN} characters long")]
    TooShort,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_accepted_only_for_its_body_and_secret() {
        let signer = EventSigner::new("a-secret-of-16-chars").expect("long enough");
        let body = br#"{"event_type":"PaymentApproved"}"#;
        let signature = signer.sign(body);
        assert!(signer.verify(body, Some(&signature)));
        assert!(!signer.verify(b"{}", Some(&signature)), "another body");
        let other = EventSigner::new("another-secret-16-chars").expect("long enough");
        assert!(!other.verify(body, Some(&signature)), "another secret");
        assert!(!signer.verify(body, None));
        assert!(!signer.verify(body, Some("sha256=zz")));
        assert!(!signer.verify(body, Some(signature.trim_start_matches("sha256="))));
        assert_eq!(format!("{signer:?}"), "EventSigner([REDACTED])");
    }

    #[test]
    fn case_1_refuses_a_missing_or_short_secret() {
        assert_eq!(
            EventSigner::required(None).unwrap_err(),
            SignerError::Missing
        );
        assert_eq!(
            EventSigner::new("short").unwrap_err(),
            SignerError::TooShort
        );
        assert!(SignerError::Missing.to_string().contains(SECRET_ENV));
    }
}

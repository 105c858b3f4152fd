//! Kakao Pay online single-payment API (the new `open-api.kakaopay.com` JSON API).
//!
//! - [`client`]: an async HTTP client for `ready`, `approve`, `cancel` and `order`.
//! - [`error`]: the error type and the retry / unknown-outcome policy.
//! - [`types`]: request and response bodies.
//! - [`sim`]: an in-memory simulator of the same API (also shipped as the
//!   `kakaopay-sim` binary) used by contract tests and by the local stack.
//!
//! Field names, error codes and statuses follow the project's research notes
//! (`shared/reference/kakaopay-api.md`); where those notes mark something as
//! unconfirmed, the code says which choice it made.

pub mod client;
pub mod error;
pub mod sim;
pub mod types;

pub use client::{KakaoPayClient, KakaoPayConfig, DEFAULT_BASE_URL, DEFAULT_TIMEOUT, TEST_CID};
pub use error::KakaoPayError;
pub use types::*;

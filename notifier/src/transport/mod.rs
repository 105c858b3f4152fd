//! Mail transports: the port the mail service sends through, and its SMTP adapter.
//!
//! A transport only delivers an already rendered [`Mail`]; it says whether a failure is
//! worth retrying ([`SendError::Transient`]) or not ([`SendError::Permanent`]). Retry
//! policy and history live in the mail service, so another adapter (a blocking SMTP
//! client, a provider's HTTP API) can be dropped in without touching them.

mod smtp;

pub use smtp::{classify, SmtpSettings, SmtpTransport};

use crate::render::Mail;

/// What the server said when it accepted a mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendReceipt {
    /// The server's reply (`250 …`), for logs.
    pub reply: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Connection refused or reset, timeout, a 4xx reply: worth another attempt.
    #[error("transient: {0}")]
    Transient(String),
    /// A 5xx reply, an invalid address, a mail that cannot be built: retrying cannot help.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl SendError {
    pub fn is_transient(&self) -> bool {
        matches!(self, SendError::Transient(_))
    }

    pub fn message(&self) -> &str {
        match self {
            SendError::Transient(m) | SendError::Permanent(m) => m,
        }
    }
}

#[async_trait::async_trait]
pub trait MailTransport: Send + Sync + 'static {
    async fn send(&self, mail: &Mail) -> Result<SendReceipt, SendError>;
}

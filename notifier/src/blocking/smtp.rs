//! Synchronous SMTP: lettre's blocking `SmtpTransport` with its connection pool. A send
//! occupies the calling thread for the whole SMTP dialogue; the caller is a thread of the
//! blocking pool.
//!
//! The MIME message is built by the notifier's SMTP adapter
//! ([`crate::transport::SmtpTransport::build_message`]), so both mail services send the
//! same bytes. Known cost, measured against the local sink: lettre writes the body and the
//! closing `<CRLF>.<CRLF>` as two writes on a socket without `TCP_NODELAY`, and its
//! blocking client offers no way to set it, so each mail can wait for the server's delayed
//! ACK (~40 ms on Linux). The Tokio notifier works around it with its own sockets; this
//! service keeps lettre's stock blocking client, as a blocking service would.

use crate::render::Mail;
use crate::transport::{SendError, SendReceipt, SmtpSettings};
use lettre::transport::smtp::PoolConfig;
use lettre::Transport;

pub struct BlockingSmtp {
    transport: lettre::SmtpTransport,
    /// Builds the MIME message (no I/O).
    builder: crate::transport::SmtpTransport,
}

impl BlockingSmtp {
    pub fn new(settings: &SmtpSettings) -> anyhow::Result<Self> {
        let transport = lettre::SmtpTransport::builder_dangerous(settings.host.as_str())
            .port(settings.port)
            .timeout(Some(settings.timeout))
            .pool_config(PoolConfig::new().max_size(settings.pool_size.max(1)))
            .build();
        Ok(Self {
            transport,
            builder: crate::transport::SmtpTransport::new(settings)?,
        })
    }

    /// The domain of the From address (it ends the Message-IDs).
    pub fn from_domain(&self) -> String {
        self.builder.from_domain()
    }

    /// Sends `mail`, blocking the calling thread until the server answers.
    pub fn send(&self, mail: &Mail) -> Result<SendReceipt, SendError> {
        let message = self.builder.build_message(mail)?;
        let response = self.transport.send(&message).map_err(|e| classify(&e))?;
        Ok(SendReceipt {
            reply: format!(
                "{} {}",
                response.code(),
                response.message().collect::<Vec<_>>().join(" ")
            ),
        })
    }
}

/// 5xx replies and client-side errors are permanent; 4xx replies, timeouts and
/// connection trouble are transient.
fn classify(error: &lettre::transport::smtp::Error) -> SendError {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        let part = inner.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = inner.source();
    }
    if error.is_permanent() || error.is_client() {
        SendError::Permanent(text)
    } else {
        SendError::Transient(text)
    }
}

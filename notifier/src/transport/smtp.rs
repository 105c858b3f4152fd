//! The SMTP adapter: lettre's async transport on Tokio, with pooled connections.

use super::{MailTransport, SendError, SendReceipt};
use crate::render::Mail;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    /// Timeout of each SMTP command.
    pub timeout: Duration,
    /// Pooled connections.
    pub pool_size: u32,
    /// `From` of every mail, e.g. `Saga Shop <shop@example.com>`.
    pub from: String,
}

/// Plain SMTP (no TLS, no auth) to a relay, as the local sink and Mailpit expect.
#[derive(Clone)]
pub struct SmtpTransport {
    inner: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl SmtpTransport {
    pub fn new(settings: &SmtpSettings) -> anyhow::Result<Self> {
        let from: Mailbox = settings
            .from
            .parse()
            .map_err(|e| anyhow::anyhow!("MAIL_FROM {:?} is not a mailbox: {e}", settings.from))?;
        let pool = PoolConfig::new()
            .max_size(settings.pool_size.max(1))
            .idle_timeout(Duration::from_secs(60));
        let inner = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(settings.host.as_str())
            .port(settings.port)
            .timeout(Some(settings.timeout))
            .pool_config(pool)
            .build();
        Ok(Self { inner, from })
    }

    /// The domain of the From address (it ends the Message-IDs).
    pub fn from_domain(&self) -> String {
        self.from.email.domain().to_owned()
    }

    /// The MIME message: multipart/alternative (text, then HTML), Date and Message-ID.
    pub fn build_message(&self, mail: &Mail) -> Result<Message, SendError> {
        let to: Mailbox = mail.recipient.parse().map_err(|e| {
            SendError::Permanent(format!(
                "invalid recipient address {:?}: {e}",
                mail.recipient
            ))
        })?;
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .message_id(Some(mail.message_id.clone()))
            .date(SystemTime::now())
            .multipart(
                MultiPart::alternative()
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .body(mail.text.clone()),
                    )
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(mail.html.clone()),
                    ),
            )
            .map_err(|e| SendError::Permanent(format!("could not build the message: {e}")))
    }
}

#[async_trait::async_trait]
impl MailTransport for SmtpTransport {
    async fn send(&self, mail: &Mail) -> Result<SendReceipt, SendError> {
        let message = self.build_message(mail)?;
        match self.inner.send(message).await {
            Ok(response) => Ok(SendReceipt {
                reply: format!(
                    "{} {}",
                    response.code(),
                    response.message().collect::<Vec<_>>().join(" ")
                ),
            }),
            Err(error) => Err(classify(&error)),
        }
    }
}

/// 5xx replies and client-side errors are permanent; 4xx replies, timeouts and
/// connection trouble are transient.
fn classify(error: &lettre::transport::smtp::Error) -> SendError {
    let text = error_text(error);
    if error.is_permanent() || error.is_client() {
        SendError::Permanent(text)
    } else {
        SendError::Transient(text)
    }
}

fn error_text(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let part = inner.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::MailKind;
    use crate::render::Locale;
    use uuid::Uuid;

    fn transport() -> SmtpTransport {
        SmtpTransport::new(&SmtpSettings {
            host: "127.0.0.1".into(),
            port: 1,
            timeout: Duration::from_secs(1),
            pool_size: 1,
            from: "Saga Shop <shop@example.com>".into(),
        })
        .expect("transport")
    }

    fn mail(recipient: &str) -> Mail {
        Mail {
            event_id: Uuid::now_v7(),
            order_id: Uuid::now_v7(),
            kind: MailKind::OrderCompleted,
            locale: Locale::Ko,
            recipient: recipient.into(),
            subject: "주문이 완료되었습니다".into(),
            text: "본문".into(),
            html: "<p>본문</p>".into(),
            message_id: "<abc.notification@example.com>".into(),
        }
    }

    // The pooled transport needs a Tokio runtime even to be dropped.
    #[tokio::test]
    async fn the_message_is_multipart_alternative_with_ids() {
        let message = transport()
            .build_message(&mail("kim@example.com"))
            .expect("builds");
        let raw = String::from_utf8(message.formatted()).expect("utf-8");
        assert!(
            raw.contains("Message-ID: <abc.notification@example.com>"),
            "{raw}"
        );
        assert!(raw.contains("Date: "), "{raw}");
        assert!(raw.contains("multipart/alternative"), "{raw}");
        assert!(raw.contains("text/plain"), "{raw}");
        assert!(raw.contains("text/html"), "{raw}");
        assert!(
            raw.contains("From: \"Saga Shop\" <shop@example.com>")
                || raw.contains("From: Saga Shop <shop@example.com>"),
            "{raw}"
        );
        assert_eq!(transport().from_domain(), "example.com");
    }

    #[tokio::test]
    async fn an_invalid_recipient_is_a_permanent_failure() {
        let error = transport()
            .build_message(&mail("not an address"))
            .expect_err("rejected");
        assert!(!error.is_transient(), "{error}");
    }

    #[tokio::test]
    async fn a_refused_connection_is_transient() {
        let error = transport()
            .send(&mail("kim@example.com"))
            .await
            .expect_err("no server");
        assert!(error.is_transient(), "{error}");
    }
}

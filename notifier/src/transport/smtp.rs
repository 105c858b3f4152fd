//! The SMTP adapter: lettre's async SMTP client on Tokio, over a small pool of
//! connections.
//!
//! Why not lettre's `AsyncSmtpTransport` with its pool: measured against the local sink,
//! every mail took ~45 ms, almost all of it waiting. lettre writes the message body and
//! the closing `<CRLF>.<CRLF>` as two writes on a socket without `TCP_NODELAY`, so
//! Nagle's algorithm holds the second write until the server's delayed ACK (40 ms on
//! Linux); lettre offers no way to set the option on the sockets it opens. So this
//! adapter opens the TCP connection itself (with `TCP_NODELAY`) and hands it to lettre's
//! [`AsyncSmtpConnection`] for the SMTP dialogue, and keeps the connections in its own
//! pool: at most `pool_size` sessions at once (a semaphore), idle ones reused (checked
//! with `NOOP` after a pause, dropped after a minute). lettre's async transport also
//! applies its timeout only to connecting; here the whole attempt is bounded.

use super::{MailTransport, SendError, SendReceipt};
use crate::render::Mail;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::extension::ClientId;
use lettre::Message;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// An idle connection older than this is checked with `NOOP` before reuse.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(2);
/// An idle connection older than this is closed rather than reused.
const MAX_IDLE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    /// Bound of one delivery attempt (connecting included).
    pub timeout: Duration,
    /// At most this many SMTP sessions at once; idle ones are kept for reuse.
    pub pool_size: u32,
    /// `From` of every mail, e.g. `Saga Shop <shop@example.com>`.
    pub from: String,
}

/// Plain SMTP (no TLS, no auth) to a relay, as the local sink and Mailpit expect.
#[derive(Clone)]
pub struct SmtpTransport {
    pool: Arc<Pool>,
    from: Mailbox,
}

struct Pool {
    host: String,
    port: u16,
    timeout: Duration,
    hello: ClientId,
    sessions: Semaphore,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
}

impl SmtpTransport {
    pub fn new(settings: &SmtpSettings) -> anyhow::Result<Self> {
        let from: Mailbox = settings
            .from
            .parse()
            .map_err(|e| anyhow::anyhow!("MAIL_FROM {:?} is not a mailbox: {e}", settings.from))?;
        let pool_size = settings.pool_size.max(1) as usize;
        Ok(Self {
            pool: Arc::new(Pool {
                host: settings.host.clone(),
                port: settings.port,
                timeout: settings.timeout,
                hello: ClientId::default(),
                sessions: Semaphore::new(pool_size),
                idle: Mutex::new(Vec::with_capacity(pool_size)),
            }),
            from,
        })
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

impl Pool {
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<(AsyncSmtpConnection, Instant)>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An idle connection that still answers, or a new one.
    async fn checkout(&self) -> Result<AsyncSmtpConnection, SendError> {
        loop {
            let Some((mut conn, since)) = self.idle().pop() else {
                break;
            };
            let idle_for = since.elapsed();
            if idle_for > MAX_IDLE || conn.has_broken() {
                continue; // dropped: the socket closes
            }
            if idle_for < CHECK_AFTER_IDLE || conn.test_connected().await {
                return Ok(conn);
            }
        }
        self.connect().await
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| {
                SendError::Transient(format!(
                    "could not connect to {}:{}: {e}",
                    self.host, self.port
                ))
            })?;
        stream
            .set_nodelay(true)
            .map_err(|e| SendError::Transient(format!("could not set TCP_NODELAY: {e}")))?;
        AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello)
            .await
            .map_err(|e| classify(&e))
    }

    fn checkin(&self, conn: AsyncSmtpConnection) {
        if !conn.has_broken() {
            self.idle().push((conn, Instant::now()));
        }
    }

    async fn send(&self, message: &Message) -> Result<SendReceipt, SendError> {
        let _session = self
            .sessions
            .acquire()
            .await
            .map_err(|_| SendError::Transient("the SMTP transport is closed".to_owned()))?;
        let attempt = async {
            let mut conn = self.checkout().await?;
            let response = conn
                .send(message.envelope(), &message.formatted())
                .await
                .map_err(|e| classify(&e))?;
            self.checkin(conn);
            Ok(SendReceipt {
                reply: format!(
                    "{} {}",
                    response.code(),
                    response.message().collect::<Vec<_>>().join(" ")
                ),
            })
        };
        tokio::time::timeout(self.timeout, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(SendError::Transient(format!(
                    "no answer from {}:{} within {:?}",
                    self.host, self.port, self.timeout
                )))
            })
    }
}

#[async_trait::async_trait]
impl MailTransport for SmtpTransport {
    async fn send(&self, mail: &Mail) -> Result<SendReceipt, SendError> {
        let message = self.build_message(mail)?;
        self.pool.send(&message).await
    }
}

/// 5xx replies and client-side errors are permanent; 4xx replies, timeouts and
/// connection trouble are transient. Both mail services judge SMTP errors by it.
pub fn classify(error: &lettre::transport::smtp::Error) -> SendError {
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

//! Synchronous SMTP: lettre's blocking `SmtpConnection`, kept in a small pool. A send
//! occupies the calling thread (a thread of the blocking pool) for the whole SMTP
//! dialogue.
//!
//! The MIME message is built by the notifier's SMTP adapter
//! ([`notifier::transport::SmtpTransport::build_message`]), so both mail services send the
//! same bytes.
//!
//! Why not lettre's `SmtpTransport` as it is: it writes the message body and the closing
//! `<CRLF>.<CRLF>` as two writes on a socket without `TCP_NODELAY` (which its blocking
//! client offers no way to set), so Nagle's algorithm holds the terminator until the
//! server's delayed ACK — ~40 ms per mail on Linux, measured here at ~70 ms per mail in
//! all. That is an artefact of the client, not a cost of blocking I/O, and it would skew
//! the seed's comparison. So the dialogue is lettre's (`MAIL`, `RCPT`, `DATA`, replies
//! parsed and classified by lettre), but the dot-stuffed body and its terminator go out
//! as one write. Messages that are not plain ASCII (the builder encodes bodies as
//! quoted-printable or base64, so in practice none) take lettre's own path.

use lettre::address::Envelope;
use lettre::transport::smtp::client::SmtpConnection;
use lettre::transport::smtp::commands::{Data, Mail as MailFrom, Rcpt};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use notifier::render::Mail;
use notifier::transport::{classify, SendError, SendReceipt, SmtpSettings};
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// An idle connection older than this is checked with `NOOP` before reuse.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(2);
/// An idle connection older than this is closed rather than reused.
const MAX_IDLE: Duration = Duration::from_secs(60);

pub struct BlockingSmtp {
    host: String,
    port: u16,
    timeout: Duration,
    hello: ClientId,
    /// Idle connections, at most `pool_size`.
    idle: Mutex<Vec<(SmtpConnection, Instant)>>,
    pool_size: usize,
    /// Builds the MIME message (no I/O).
    builder: notifier::transport::SmtpTransport,
}

impl BlockingSmtp {
    pub fn new(settings: &SmtpSettings) -> anyhow::Result<Self> {
        Ok(Self {
            host: settings.host.clone(),
            port: settings.port,
            timeout: settings.timeout,
            hello: ClientId::default(),
            idle: Mutex::new(Vec::new()),
            pool_size: settings.pool_size.max(1) as usize,
            builder: notifier::transport::SmtpTransport::new(settings)?,
        })
    }

    /// The domain of the From address (it ends the Message-IDs).
    pub fn from_domain(&self) -> String {
        self.builder.from_domain()
    }

    /// Sends `mail`, blocking the calling thread until the server answers.
    pub fn send(&self, mail: &Mail) -> Result<SendReceipt, SendError> {
        let message = self.builder.build_message(mail)?;
        let mut conn = self.checkout().map_err(|e| classify(&e))?;
        match dialogue(&mut conn, message.envelope(), &message.formatted()) {
            Ok(response) => {
                self.checkin(conn);
                Ok(SendReceipt {
                    reply: format!(
                        "{} {}",
                        response.code(),
                        response.message().collect::<Vec<_>>().join(" ")
                    ),
                })
            }
            Err(error) => {
                // The session is in an unknown state: close it rather than reuse it.
                conn.abort();
                Err(classify(&error))
            }
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<(SmtpConnection, Instant)>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An idle connection that still answers, or a new one.
    fn checkout(&self) -> Result<SmtpConnection, lettre::transport::smtp::Error> {
        loop {
            let Some((mut conn, since)) = self.idle().pop() else {
                break;
            };
            let idle_for = since.elapsed();
            if idle_for > MAX_IDLE || conn.has_broken() {
                conn.abort();
                continue;
            }
            if idle_for < CHECK_AFTER_IDLE || conn.test_connected() {
                return Ok(conn);
            }
        }
        SmtpConnection::connect(
            (self.host.as_str(), self.port),
            Some(self.timeout),
            &self.hello,
            None,
            None,
        )
    }

    fn checkin(&self, mut conn: SmtpConnection) {
        let mut idle = self.idle();
        if conn.has_broken() || idle.len() >= self.pool_size {
            drop(idle);
            let _ = conn.quit();
            return;
        }
        idle.push((conn, Instant::now()));
    }
}

/// `MAIL FROM`, `RCPT TO`, `DATA`, then the body and its terminator in one write.
fn dialogue(
    conn: &mut SmtpConnection,
    envelope: &Envelope,
    email: &[u8],
) -> Result<Response, lettre::transport::smtp::Error> {
    let Some(text) = std::str::from_utf8(email).ok().filter(|t| t.is_ascii()) else {
        return conn.send(envelope, email); // lettre's path handles 8BITMIME
    };
    conn.command(MailFrom::new(envelope.from().cloned(), vec![]))?;
    for to in envelope.to() {
        conn.command(Rcpt::new(to.clone(), vec![]))?;
    }
    conn.command(Data)?;
    conn.command(Body(dot_stuffed(text)))
}

/// The DATA payload: lines starting with `.` get another one (RFC 5321 §4.5.2), then the
/// `<CRLF>.<CRLF>` terminator.
fn dot_stuffed(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    if text.starts_with('.') {
        out.push('.');
    }
    out.push_str(&text.replace("\r\n.", "\r\n.."));
    if !out.ends_with("\r\n") {
        out.push_str("\r\n");
    }
    out.push_str(".\r\n");
    out
}

/// The already terminated DATA payload, written as one "command".
struct Body(String);

impl fmt::Display for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_dots_are_doubled_and_the_body_is_terminated_once() {
        assert_eq!(dot_stuffed("a\r\n.b\r\n"), "a\r\n..b\r\n.\r\n");
        assert_eq!(dot_stuffed(".x"), "..x\r\n.\r\n");
        assert_eq!(dot_stuffed("a\r\n.\r\nb"), "a\r\n..\r\nb\r\n.\r\n");
    }

    #[test]
    fn a_refused_connection_is_transient() {
        let smtp = BlockingSmtp::new(&SmtpSettings {
            host: "127.0.0.1".into(),
            port: 1,
            timeout: Duration::from_secs(1),
            pool_size: 1,
            from: "Saga Shop <shop@example.com>".into(),
        })
        .expect("smtp");
        let mail = Mail {
            event_id: uuid::Uuid::now_v7(),
            order_id: uuid::Uuid::now_v7(),
            kind: notifier::domain::MailKind::OrderCompleted,
            locale: notifier::render::Locale::En,
            recipient: "kim@example.com".into(),
            subject: "s".into(),
            text: "t".into(),
            html: "<p>t</p>".into(),
            message_id: "<a.notification@example.com>".into(),
        };
        assert!(smtp.send(&mail).expect_err("no server").is_transient());
    }
}

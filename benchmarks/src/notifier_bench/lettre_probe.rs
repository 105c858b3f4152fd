//! The lettre probe: the notifier's SMTP client alone, to tell the client from the
//! server.

use crate::{loopback, stats};
use anyhow::Result;
use futures::StreamExt;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A mail of the notifier's size and shape (Korean and English text, HTML alternative).
fn probe_message() -> Result<lettre::Message> {
    use lettre::message::header::ContentType;
    use lettre::message::{MultiPart, SinglePart};
    let line = "주문해 주셔서 감사합니다. Thank you for your order. ";
    let text = line.repeat(25);
    let html = format!("<html><body><p>{}</p></body></html>", line.repeat(40));
    Ok(lettre::Message::builder()
        .from("Saga Shop <shop@example.com>".parse()?)
        .to("probe@example.com".parse()?)
        .subject("[Saga Shop] 주문이 완료되었습니다")
        .multipart(
            MultiPart::alternative()
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .body(text),
                )
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(html),
                ),
        )?)
}

/// Sends `mails` with lettre to the SMTP server on `port`, three ways:
/// * `pooled_transport`: `AsyncSmtpTransport` with a pool of `pool` connections and
///   `in_flight` concurrent sends — how the notifier sent mail before it opened its own
///   `TCP_NODELAY` connections;
/// * `own_connections_nodelay` / `own_connections_default`: `pool` tasks, each with its
///   own `AsyncSmtpConnection` over a tokio `TcpStream`, with and without
///   `TCP_NODELAY` (the only difference between the two).
pub async fn lettre_probe(port: u16, mails: u64, pool: u32, in_flight: usize) -> Result<Value> {
    use lettre::transport::smtp::PoolConfig;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

    let message = probe_message()?;
    let envelope = message.envelope().clone();
    let bytes = message.formatted();
    let bound = Duration::from_secs(300);

    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(loopback::HOST)
        .port(port)
        .timeout(Some(Duration::from_secs(10)))
        .pool_config(
            PoolConfig::new()
                .max_size(pool.max(1))
                .idle_timeout(Duration::from_secs(60)),
        )
        .build();
    let errors = AtomicU64::new(0);
    let started = Instant::now();
    let sent = tokio::time::timeout(
        bound,
        futures::stream::iter(0..mails)
            .map(|_| async {
                if transport.send_raw(&envelope, &bytes).await.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            })
            .buffer_unordered(in_flight.max(1))
            .count(),
    )
    .await
    .unwrap_or(0) as u64;
    let pooled_seconds = started.elapsed().as_secs_f64();
    let pooled_errors = errors.load(Ordering::Relaxed);
    let pooled_per_sec = stats::rate(sent.saturating_sub(pooled_errors), pooled_seconds);
    drop(transport);

    let envelope = Arc::new(envelope);
    let bytes = Arc::new(bytes);
    let nodelay = own_connections(port, mails, pool, &envelope, &bytes, true, bound).await?;
    let default = own_connections(port, mails, pool, &envelope, &bytes, false, bound).await?;
    Ok(json!({
        "mails": mails,
        "message_bytes": bytes.len(),
        "pooled_transport": {
            "how": format!("lettre AsyncSmtpTransport, pool max_size {pool}, {in_flight} concurrent sends (how the notifier sent mail before it opened its own TCP_NODELAY connections)"),
            "seconds": stats::round3(pooled_seconds),
            "per_sec": pooled_per_sec,
            "errors": pooled_errors,
        },
        "own_connections_nodelay": nodelay,
        "own_connections_default": default,
    }))
}

/// `tasks` lettre connections, each sending its share of `mails` back to back.
async fn own_connections(
    port: u16,
    mails: u64,
    tasks: u32,
    envelope: &Arc<lettre::address::Envelope>,
    bytes: &Arc<Vec<u8>>,
    nodelay: bool,
    bound: Duration,
) -> Result<Value> {
    use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream};
    use lettre::transport::smtp::extension::ClientId;

    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + bound;
    let mut handles = Vec::new();
    for _ in 0..tasks.max(1) {
        let (next, errors, envelope, bytes) = (
            next.clone(),
            errors.clone(),
            envelope.clone(),
            bytes.clone(),
        );
        handles.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect((loopback::HOST, port)).await?;
            stream.set_nodelay(nodelay)?;
            let stream: Box<dyn AsyncTokioStream> = Box::new(stream);
            let mut conn =
                AsyncSmtpConnection::connect_with_transport(stream, &ClientId::default()).await?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= mails || Instant::now() > deadline {
                    break;
                }
                if conn.send(&envelope, &bytes).await.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            let _ = conn.quit().await;
            anyhow::Ok(())
        }));
    }
    for handle in handles {
        handle.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let done = next.load(Ordering::Relaxed).min(mails);
    let errors = errors.load(Ordering::Relaxed);
    Ok(json!({
        "how": format!(
            "{tasks} tasks, each one lettre AsyncSmtpConnection over a tokio TcpStream, TCP_NODELAY {}",
            if nodelay { "on" } else { "off (the default, as inside lettre's transport)" }
        ),
        "seconds": stats::round3(seconds),
        "per_sec": stats::rate(done.saturating_sub(errors), seconds),
        "mean_ms_per_mail_per_connection": stats::round3(if done > 0 { seconds * 1000.0 * f64::from(tasks.max(1)) / done as f64 } else { 0.0 }),
        "errors": errors,
    }))
}

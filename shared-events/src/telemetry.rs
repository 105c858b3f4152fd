//! Telemetry every binary installs: logs, trace context and the Prometheus recorder.
//!
//! * **Logs** ([`init`]): `tracing` with the level from `RUST_LOG` (default `info`);
//!   human-readable lines, or one JSON object per line when `LOG_FORMAT=json`. A JSON
//!   line carries `timestamp`, `level`, `service`, `target`, the event's fields (with
//!   `message`), `trace_id` and `span_id` of the trace it belongs to, and the spans it
//!   happened in (`spans`, outermost first, with their fields).
//! * **Credentials never reach a line**: the request span records its target with
//!   `pg_token`, `token` and every other credential-like query parameter redacted
//!   (`crate::request_span`), and tokens and keys are held in types whose `Debug`
//!   redacts them. `e2e`'s `logs` test searches every JSON line of the shop's flows.
//! * **Traces**: every span is an OpenTelemetry span (`tracing-opentelemetry`), so each
//!   request and each consumed event belongs to a trace. The W3C `traceparent` travels
//!   in HTTP headers (read by the request span, `crate::request_span`), in the outbox
//!   row and the Kafka headers of every event ([`current_traceparent`],
//!   [`continue_trace`]); one order
//!   keeps one trace id through all services. Spans are exported over OTLP/HTTP only
//!   when the binary is built with the `otlp` feature *and* `OTEL_EXPORTER_OTLP_ENDPOINT`
//!   is set (the exporter reads the standard `OTEL_EXPORTER_OTLP_*` variables);
//!   otherwise trace ids exist only in logs and headers.
//! * **Metrics** ([`metrics`]): the process-wide `metrics-exporter-prometheus` recorder,
//!   rendered at `GET /metrics`. Names follow `<service>_<noun>_<unit>[_total]`; shared
//!   plumbing uses `saga_*` with a `service` or `consumer` label. See
//!   `docs/operations.md` for the catalogue.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;
use tracing::field::{Field, Visit};
use tracing::Subscriber;
use tracing_opentelemetry::{OpenTelemetrySpanExt, OtelData};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// The W3C header (and Kafka header, and outbox column) carrying the trace context.
pub const TRACEPARENT: &str = "traceparent";

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Installs the global subscriber (once per process; later calls do nothing): logs as
/// configured by `RUST_LOG` and `LOG_FORMAT`, OpenTelemetry spans, the W3C propagator.
pub fn init(service: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = tracer_provider(service);
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(service.to_owned()))
        .with_tracked_inactivity(false);
    let json_layer = json.then(|| json_layer(service, std::io::stdout));
    let text_layer = (!json).then(|| tracing_subscriber::fmt::layer().with_target(false));
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(otel)
        .with(json_layer)
        .with(text_layer)
        .try_init();
    if installed.is_ok() {
        let _ = PROVIDER.set(provider);
        tracing::info!(
            otlp_export = otlp_enabled(),
            json,
            "Logging started for {service}."
        );
    }
}

/// The layer writing `LOG_FORMAT=json` lines to `writer`. [`init`] writes to stdout; a
/// test that must read every line a flow logs installs it with a writer of its own.
pub fn json_layer<S, W>(service: &str, writer: W) -> impl tracing_subscriber::Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .fmt_fields(JsonFields::new())
        .event_format(JsonLines {
            service: service.to_owned(),
        })
        .with_writer(writer)
}

/// Flushes and stops span export. Call it once, when the process is about to exit.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        if let Err(error) = provider.shutdown() {
            tracing::debug!(%error, "Tracer provider shut down with an error.");
        }
    }
}

fn otlp_endpoint() -> Option<String> {
    std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        .ok()
        .filter(|v| !v.trim().is_empty())
}

fn otlp_enabled() -> bool {
    cfg!(feature = "otlp") && otlp_endpoint().is_some()
}

fn resource(service: &str) -> opentelemetry_sdk::Resource {
    opentelemetry_sdk::Resource::builder()
        .with_service_name(service.to_owned())
        .build()
}

#[cfg(feature = "otlp")]
fn tracer_provider(service: &str) -> SdkTracerProvider {
    let builder = SdkTracerProvider::builder().with_resource(resource(service));
    if otlp_endpoint().is_none() {
        return builder.build();
    }
    match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(exporter) => builder.with_batch_exporter(exporter).build(),
        Err(error) => {
            eprintln!("OTLP span exporter not created ({error}); spans are not exported.");
            SdkTracerProvider::builder()
                .with_resource(resource(service))
                .build()
        }
    }
}

#[cfg(not(feature = "otlp"))]
fn tracer_provider(service: &str) -> SdkTracerProvider {
    if otlp_endpoint().is_some() {
        eprintln!(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but this binary was built without the `otlp` \
             feature; spans are not exported (trace ids still reach logs and headers)."
        );
    }
    SdkTracerProvider::builder()
        .with_resource(resource(service))
        .build()
}

/// The `traceparent` of the current span, when tracing is installed and the span is
/// part of a trace. Written with outbox rows and stored on rows that later requests
/// continue (an order, a payment).
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

/// The `traceparent` naming `span` as the parent.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// The trace id (32 hex digits) of `span`, if it belongs to a trace.
pub fn trace_id_of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// Parses a `traceparent` header value into a remote parent context.
pub fn remote_context(traceparent: &str) -> Option<opentelemetry::Context> {
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.trim().to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    context.span().span_context().is_valid().then_some(context)
}

/// Makes `span` continue the trace of `traceparent` (when there is a valid one), and
/// records the span's trace id in its `trace_id` field (declare it `Empty`). Call it
/// before the span is first entered. Returns true when the remote parent was taken.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) -> bool {
    let continued = traceparent
        .and_then(remote_context)
        .is_some_and(|parent| span.set_parent(parent).is_ok());
    if let Some(trace_id) = trace_id_of(span) {
        span.record("trace_id", tracing::field::display(trace_id));
    }
    continued
}

/// The process's Prometheus recorder, installed on first use. Every service renders it at
/// `GET /metrics`. Durations are histograms with buckets (not summaries), so quantiles can
/// be aggregated across instances.
pub fn metrics() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
        let builder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Suffix("end_to_end_seconds".into()), SAGA_BUCKETS)
            })
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("order_saga_duration_seconds".into()),
                    SAGA_BUCKETS,
                )
            })
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("saga_outbox_relay_lag_seconds".into()),
                    LAG_BUCKETS,
                )
            })
            .and_then(|b| {
                // A count of documents, not a duration.
                b.set_buckets_for_metric(Matcher::Suffix("_batch_size".into()), BATCH_BUCKETS)
            })
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("A metrics recorder was already installed; /metrics will be empty.");
        }
        handle
    })
}

/// Requests, gateway calls, database writes: milliseconds to tens of seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// A saga waits for a shopper to pay: seconds to the 15-minute deadline and beyond.
const SAGA_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0,
];
/// Outbox relay lag: milliseconds normally, minutes when Kafka is away.
/// Buckets of `*_batch_size` histograms (items per batch).
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

const LAG_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0,
];

/// Resolves on SIGTERM or Ctrl-C: the binaries cancel their shutdown token on it.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "Cannot listen for Ctrl-C.");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "Cannot listen for SIGTERM.");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    tracing::info!("Shutdown requested.");
}

/// One JSON object per line, with the trace id of the span the event happened in.
struct JsonLines {
    service: String,
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        let mut fields = Map::new();
        event.record(&mut JsonVisitor(&mut fields));
        // Events bridged from the `log` crate (librdkafka, r2d2) name their origin in
        // `log.*` fields.
        let target = match fields.remove("log.target") {
            Some(Value::String(target)) => target,
            _ => metadata.target().to_owned(),
        };
        fields.retain(|name, _| !name.starts_with("log."));

        let mut trace = None;
        let mut spans = Vec::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope {
                let extensions = span.extensions();
                if trace.is_none() {
                    trace = extensions.get::<OtelData>().and_then(|data| {
                        let trace_id = data.trace_id().filter(|id| *id != TraceId::INVALID)?;
                        Some((trace_id, data.span_id()))
                    });
                }
                let mut entry = Map::new();
                entry.insert("name".into(), Value::from(span.name()));
                if let Some(formatted) = extensions.get::<FormattedFields<N>>() {
                    if let Ok(Value::Object(span_fields)) =
                        serde_json::from_str::<Value>(formatted.as_str())
                    {
                        entry.extend(span_fields);
                    }
                }
                spans.push(Value::Object(entry));
            }
        }
        spans.reverse();

        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::from(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        );
        line.insert("level".into(), Value::from(metadata.level().as_str()));
        line.insert("service".into(), Value::from(self.service.as_str()));
        line.insert("target".into(), Value::from(target));
        if let Some((trace_id, span_id)) = trace {
            line.insert("trace_id".into(), Value::from(trace_id.to_string()));
            if let Some(span_id) = span_id {
                line.insert("span_id".into(), Value::from(span_id.to_string()));
            }
        }
        for (name, value) in fields {
            // An event field never hides the line's own keys.
            let name = if line.contains_key(&name) {
                format!("field.{name}")
            } else {
                name
            };
            line.insert(name, value);
        }
        if let Some(Value::Object(current)) = spans.last() {
            if let Some(name) = current.get("name") {
                line.insert("span".into(), name.clone());
            }
        }
        if !spans.is_empty() {
            line.insert("spans".into(), Value::Array(spans));
        }
        let text = serde_json::to_string(&Value::Object(line)).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().into(), Value::from(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::from(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_is_parsed_and_invalid_ones_are_refused() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = remote_context(valid).expect("valid traceparent");
        assert_eq!(
            context.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(
            remote_context("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none()
        );
        assert!(remote_context("garbage").is_none());
    }

    #[test]
    fn without_a_subscriber_there_is_no_trace_context() {
        assert_eq!(current_traceparent(), None);
        let span = tracing::info_span!("x", trace_id = tracing::field::Empty);
        assert!(!continue_trace(&span, None));
    }
}

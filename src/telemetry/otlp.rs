//! Optional OTLP export of the gateway's spans (`--otlp-endpoint`): a tracing layer that turns
//! the gateway's spans into OpenTelemetry spans, batched by the SDK and sent over gRPC (tonic) to
//! a collector. Off by default; off, nothing here runs: [`enabled`] is one relaxed atomic load,
//! and the rest of the gateway propagates the W3C context by itself (`traceparent.rs`).
//!
//! Only the gateway's own spans (targets `oms_gateway` and `oms_rest`, its REST client; level
//! info and up) are exported, whatever the log level: the exporter's own HTTP/2 client traces
//! too, and its spans must never feed the exporter.

use super::traceparent::{SpanId, TraceId, TraceParent};
use opentelemetry::trace::{
    SpanContext, TraceContextExt, TraceFlags, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::registry::LookupSpan;

/// Whether the OTLP layer is installed.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// How long one export request may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether spans are exported (an OTLP layer was built by [`layer`]).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The running exporter; [`Exporter::shutdown`] sends what is still batched.
#[derive(Debug)]
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// Flushes the spans not yet sent and stops the exporter (bounded by the export timeout).
    pub fn shutdown(self) {
        if let Err(err) = self.provider.shutdown() {
            eprintln!("oms-gateway: OTLP exporter shutdown: {err}");
        }
    }
}

/// Why `--otlp-endpoint` cannot be exported to, if it cannot (checked at start and by
/// `--check-config`).
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let shown = crate::config::redact::url(endpoint);
    let url: http::Uri = endpoint
        .parse()
        .map_err(|e| format!("invalid --otlp-endpoint `{shown}`: {e}"))?;
    if !matches!(url.scheme_str(), Some("http" | "https")) || url.host().is_none() {
        return Err(format!(
            "invalid --otlp-endpoint `{shown}`: expected http://host:port or https://host:port"
        ));
    }
    Ok(())
}

/// The tracing layer exporting spans to the OTLP/gRPC collector at `endpoint`
/// (e.g. `http://127.0.0.1:4317`), and the exporter to shut down on exit. Must run inside the
/// Tokio runtime (the tonic channel is created there).
pub fn layer<S>(endpoint: &str) -> Result<(impl Layer<S>, Exporter), String>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    check_endpoint(endpoint)?;
    let shown = crate::config::redact::url(endpoint);
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot build the OTLP exporter for `{shown}`: {e}"))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("oms-gateway")
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("oms-gateway");
    let only_ours = Targets::new()
        .with_target("oms_gateway", LevelFilter::INFO)
        .with_target("oms_rest", LevelFilter::INFO);
    // Thread names and busy/idle times would be noise on every span, and cost a clock read each
    // time a span is entered.
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(only_ours);
    ENABLED.store(true, Ordering::Relaxed);
    Ok((layer, Exporter { provider }))
}

/// Makes the caller's span (`incoming`, with its `tracestate`) the OpenTelemetry parent of the
/// RPC span, and returns the RPC span's own ids (`None` if the span is not exported, e.g.
/// filtered out).
pub(super) fn adopt_parent(
    span: &tracing::Span,
    incoming: Option<TraceParent>,
    tracestate: Option<&str>,
) -> Option<TraceParent> {
    if let Some(parent) = incoming {
        let state = tracestate
            .and_then(|s| TraceState::from_str(s).ok())
            .unwrap_or_default();
        let remote = SpanContext::new(
            opentelemetry::trace::TraceId::from_bytes(parent.trace_id.0),
            opentelemetry::trace::SpanId::from_bytes(parent.parent_id.0),
            TraceFlags::new(parent.flags),
            true,
            state,
        );
        let cx = opentelemetry::Context::new().with_remote_span_context(remote);
        // Fails only when the span is not ours to export (no layer saw it): nothing to do then.
        let _ = span.set_parent(cx);
    }
    ids(span)
}

/// The exported span's trace id, span id and flags, if `span` is exported.
pub(super) fn ids(span: &tracing::Span) -> Option<TraceParent> {
    let cx = span.context();
    let otel = cx.span();
    let context = otel.span_context();
    context.is_valid().then(|| TraceParent {
        trace_id: TraceId(context.trace_id().to_bytes()),
        parent_id: SpanId(context.span_id().to_bytes()),
        flags: context.trace_flags().to_u8(),
    })
}

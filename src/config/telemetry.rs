//! Tracing export settings: where (if anywhere) the gateway sends its spans over OTLP.

use clap::Args;

/// Span export. Off unless an endpoint is given; the W3C trace context reaches OMS either way.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct TelemetrySettings {
    /// OTLP/gRPC collector to export the gateway's spans to, e.g. http://127.0.0.1:4317. Unset:
    /// no export (the caller's `traceparent` is still passed on to OMS).
    #[arg(
        long = "otlp-endpoint",
        env = "OTEL_EXPORTER_OTLP_ENDPOINT",
        value_hint = clap::ValueHint::Url,
        hide_env_values = true
    )]
    pub otlp_endpoint: Option<String>,
}

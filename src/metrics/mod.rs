//! The gateway's Prometheus metrics: one [`Metrics`] per gateway, shared by `Arc` with what
//! records (the gRPC layer in [`grpc`], the REST client), the helpers with which each feature
//! writes the collectors that read its own state at scrape time ([`scrape`]; the feature
//! registers them when it is assembled, so this module imports no feature), and [`render`],
//! which writes the registry in the Prometheus text format, or OpenMetrics when asked.
//!
//! Names follow go-grpc-middleware for the gRPC server families (its dashboards work as they
//! are) and Prometheus's conventions otherwise: units in names, `_total` on counters, HELP on
//! every family. Recording is cheap: label values are `&'static str` (or small integers), the
//! per-method handles are resolved once, a family lookup takes a read lock and no allocation.

pub mod grpc;
pub mod methods;
pub mod scrape;

use crate::error::{HttpFailure, UpstreamError};
use http::StatusCode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

/// Latency buckets, in seconds: Prometheus's default buckets, which go-grpc-middleware uses.
const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// What became of one HTTP request to OMS: its status, or why there was none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamStatus {
    /// OMS answered with a 2xx (`2xx`: the exact code is not kept past the answer; `2..`
    /// matches it).
    Success,
    /// OMS answered with this non-2xx HTTP status.
    Http(u16),
    /// No connection could be made.
    ConnectError,
    /// The connection failed before an answer.
    TransportError,
    /// The per-attempt timeout passed.
    Timeout,
    /// The caller's deadline cut the request short.
    DeadlineExceeded,
    /// Anything else (the circuit, a bad answer).
    Error,
}

impl EncodeLabelValue for UpstreamStatus {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        match self {
            Self::Success => encoder.write_str("2xx"),
            Self::Http(status) => write!(encoder, "{status}"),
            Self::ConnectError => encoder.write_str("connect_error"),
            Self::TransportError => encoder.write_str("transport_error"),
            Self::Timeout => encoder.write_str("timeout"),
            Self::DeadlineExceeded => encoder.write_str("deadline_exceeded"),
            Self::Error => encoder.write_str("error"),
        }
    }
}

impl UpstreamStatus {
    fn of_error(error: &UpstreamError) -> Self {
        match error {
            UpstreamError::Http(failure) => Self::Http(failure.status),
            UpstreamError::Connect(_) => Self::ConnectError,
            UpstreamError::Transport(_) => Self::TransportError,
            UpstreamError::Timeout(_) => Self::Timeout,
            UpstreamError::DeadlineExceeded => Self::DeadlineExceeded,
            UpstreamError::AuthFailed { .. } => Self::Http(401),
            UpstreamError::CircuitOpen(_) | UpstreamError::BadResponse(_) => Self::Error,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    operation: &'static str,
    status: UpstreamStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct OutcomeLabels {
    pub(crate) outcome: &'static str,
}

/// The metrics one gateway records. Built with [`Metrics::new`], which registers them.
pub struct Metrics {
    /// The gRPC server families, recorded by [`grpc::GrpcMetricsLayer`].
    pub grpc: grpc::GrpcMetrics,
    upstream_requests: Family<RequestLabels, Counter>,
    upstream_duration: Family<OperationLabels, Histogram, fn() -> Histogram>,
    retries: Counter,
    budget_exhausted: Counter,
    token_exchanges: Family<OutcomeLabels, Counter>,
}

// === impl Metrics ===

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// The gateway's metrics, and a registry holding them.
    pub fn registered() -> (Arc<Self>, Registry) {
        let mut registry = Registry::default();
        let metrics = Arc::new(Self::new(&mut registry));
        (metrics, registry)
    }

    /// The gateway's metrics, registered with `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self {
            grpc: grpc::GrpcMetrics::new(registry),
            upstream_requests: Family::default(),
            upstream_duration: Family::new_with_constructor(latency_histogram),
            retries: Counter::default(),
            budget_exhausted: Counter::default(),
            token_exchanges: Family::default(),
        };
        registry.register(
            "oms_upstream_requests",
            "HTTP requests sent to OMS (every attempt), by REST operation and HTTP status or failure",
            metrics.upstream_requests.clone(),
        );
        registry.register_with_unit(
            "oms_upstream_request_duration",
            "Time from sending an HTTP request to OMS to its answer (or failure), by REST operation",
            Unit::Seconds,
            metrics.upstream_duration.clone(),
        );
        registry.register(
            "oms_upstream_retries",
            "Retries of upstream calls (attempts after the first)",
            metrics.retries.clone(),
        );
        registry.register(
            "oms_upstream_retry_budget_exhausted",
            "Retries not made because the retry budget was spent",
            metrics.budget_exhausted.clone(),
        );
        registry.register(
            "oms_upstream_token_exchanges",
            "OMS token exchanges (POST /auth/token), by outcome: ok, rejected (the credentials), error, deadline_exceeded",
            metrics.token_exchanges.clone(),
        );
        metrics
    }

    /// One HTTP request to OMS ended with `outcome` after `elapsed`.
    pub fn upstream_request<T>(
        &self,
        operation: &'static str,
        outcome: &Result<Result<T, (StatusCode, HttpFailure)>, UpstreamError>,
        elapsed: Duration,
    ) {
        let status = match outcome {
            Ok(Ok(_)) => UpstreamStatus::Success,
            Ok(Err((status, _))) => UpstreamStatus::Http(status.as_u16()),
            Err(error) => UpstreamStatus::of_error(error),
        };
        self.upstream_requests
            .get_or_create(&RequestLabels { operation, status })
            .inc();
        self.upstream_duration
            .get_or_create(&OperationLabels { operation })
            .observe(elapsed.as_secs_f64());
        crate::access::note_upstream_request();
    }

    /// A retry is about to be made.
    pub fn upstream_retry(&self) {
        self.retries.inc();
    }

    /// A retry was not made: the budget was spent.
    pub fn retry_budget_exhausted(&self) {
        self.budget_exhausted.inc();
    }

    /// A token exchange ended.
    pub fn token_exchange<T>(&self, result: &Result<T, UpstreamError>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(UpstreamError::AuthFailed { .. }) => "rejected",
            Err(UpstreamError::DeadlineExceeded) => "deadline_exceeded",
            Err(_) => "error",
        };
        self.token_exchanges
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }
}

/// The content type of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The content type of the OpenMetrics text format.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `registry` in OpenMetrics (`openmetrics`) or in the Prometheus text format.
pub fn render(registry: &Registry, openmetrics: bool) -> String {
    let mut text = String::with_capacity(16 * 1024);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    if openmetrics {
        text
    } else {
        to_prometheus_text(&text)
    }
}

/// The Prometheus text format (0.0.4) of an OpenMetrics exposition from prometheus-client: a
/// counter family is named with its `_total` suffix (as its samples are), and the `# UNIT` and
/// `# EOF` lines, which that format lacks, go. Gauges and histograms read the same in both.
fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if line.starts_with("# HELP ") {
            if let Some(previous) = help.replace(line) {
                out.push_str(previous);
                out.push('\n');
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some(name) = rest.strip_suffix(" counter")
        {
            if let Some(help) = help.take() {
                let text = help.strip_prefix("# HELP ").unwrap_or(help);
                let text = text.strip_prefix(name).unwrap_or(text);
                let _ = writeln!(out, "# HELP {name}_total{text}");
            }
            let _ = writeln!(out, "# TYPE {name}_total counter");
            continue;
        }
        if let Some(help) = help.take() {
            out.push_str(help);
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_with_total_in_the_prometheus_text_format() {
        let mut registry = Registry::default();
        let counter = Counter::<u64>::default();
        counter.inc();
        registry.register("calls", "Calls", counter);
        let waits = Family::<OperationLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        waits
            .get_or_create(&OperationLabels { operation: "op" })
            .observe(0.2);
        registry.register_with_unit("wait", "Wait", Unit::Seconds, waits);
        let text = render(&registry, false);
        assert!(
            text.starts_with(
                "# HELP calls_total Calls.\n# TYPE calls_total counter\ncalls_total 1\n"
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE wait_seconds histogram\n"), "{text}");
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        let open = render(&registry, true);
        assert!(open.contains("# TYPE calls counter\n") && open.ends_with("# EOF\n"));
    }
}

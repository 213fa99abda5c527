//! The client's Prometheus families: requests to OMS by operation and status, their latency,
//! retries, retries the budget refused, token exchanges by outcome, and what OMS sent that the
//! gateway does not know ([`Drift`]). The application
//! registers them with its registry ([`UpstreamMetrics::register`]) and hands them to the client,
//! which records into them; the names, labels, HELP texts and buckets are part of the
//! application's scrape and do not change.
//!
//! Recording is cheap: label values are `&'static str` (or a small integer), a family lookup
//! takes a read lock and no allocation.

use crate::drift::Drift;
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

/// Latency buckets, in seconds: Prometheus's default buckets, which go-grpc-middleware uses (the
/// gateway's gRPC families take the same, from here).
const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram with [`LATENCY_BUCKETS`].
pub fn latency_histogram() -> Histogram {
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
struct OutcomeLabels {
    outcome: &'static str,
}

/// The families the client records. Built with [`UpstreamMetrics::register`].
pub struct UpstreamMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<OperationLabels, Histogram, fn() -> Histogram>,
    retries: Counter,
    budget_exhausted: Counter,
    token_exchanges: Family<OutcomeLabels, Counter>,
    drift: Arc<Drift>,
}

// === impl UpstreamMetrics ===

impl std::fmt::Debug for UpstreamMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamMetrics").finish_non_exhaustive()
    }
}

impl UpstreamMetrics {
    /// The client's families, registered with `registry` (the `oms_upstream_*` families).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            retries: Counter::default(),
            budget_exhausted: Counter::default(),
            token_exchanges: Family::default(),
            drift: Arc::default(),
        };
        registry.register(
            "oms_upstream_requests",
            "HTTP requests sent to OMS (every attempt), by REST operation and HTTP status or failure",
            metrics.requests.clone(),
        );
        registry.register_with_unit(
            "oms_upstream_request_duration",
            "Time from sending an HTTP request to OMS to its answer (or failure), by REST operation",
            Unit::Seconds,
            metrics.duration.clone(),
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
        registry.register(
            "oms_upstream_unknown",
            "Fields and enum values OMS sent that the gateway does not know, by kind (field, \
             enum_value) and JSON path; past 64 distinct paths, under path=\"(other)\"",
            metrics.drift.family(),
        );
        metrics
    }

    /// The drift recorder: what OMS sent that the gateway does not know.
    pub fn drift(&self) -> &Arc<Drift> {
        &self.drift
    }

    /// One HTTP request to OMS ended with `outcome` after `elapsed`.
    pub(crate) fn request<T>(
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
        self.requests
            .get_or_create(&RequestLabels { operation, status })
            .inc();
        self.duration
            .get_or_create(&OperationLabels { operation })
            .observe(elapsed.as_secs_f64());
    }

    /// A retry is about to be made.
    pub(crate) fn retry(&self) {
        self.retries.inc();
    }

    /// A retry was not made: the budget was spent.
    pub(crate) fn retry_budget_exhausted(&self) {
        self.budget_exhausted.inc();
    }

    /// A token exchange ended.
    pub(crate) fn token_exchange<T>(&self, result: &Result<T, UpstreamError>) {
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

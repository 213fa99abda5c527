//! What can go wrong talking to OMS: [`UpstreamError`] (an HTTP status with what OMS said, or a
//! transport fault), [`UpstreamFailure`] (the same, with the REST operation that met it) and
//! [`HttpFailure`] (a non-2xx answer, decoded). This crate's one error type: it says which
//! failures are worth another attempt and which say OMS is unwell; what a caller is told (a
//! gRPC code, a reason, a retry hint) is the application's decision, not this crate's. No
//! variant carries a secret: the request's credentials are cut out of what OMS says before it
//! gets here.

use std::time::Duration;

/// What went wrong talking to OMS.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// OMS answered with a non-2xx status.
    #[error("OMS answered HTTP {}: {}", .0.status, .0.message)]
    Http(Box<HttpFailure>),
    /// No connection could be made (refused, DNS, TLS handshake, connect timeout).
    #[error("cannot connect to OMS: {0}")]
    Connect(String),
    /// The connection failed after the request was sent and before a response arrived.
    #[error("the connection to OMS failed before it answered: {0}")]
    Transport(String),
    /// One attempt took longer than the per-attempt timeout.
    #[error("OMS did not answer within {0:?}")]
    Timeout(Duration),
    /// The caller's deadline passed before the exchange finished.
    #[error("the call's deadline passed before OMS answered")]
    DeadlineExceeded,
    /// OMS rejected the gateway's own credentials, even after a fresh token exchange.
    #[error("OMS rejected the gateway's API credentials ({message})")]
    AuthFailed {
        /// OMS's message.
        message: String,
        /// OMS's request id, when it sent one.
        request_id: Option<String>,
    },
    /// The circuit breaker is open: OMS has been failing, so the call was not sent.
    #[error(
        "OMS has been failing persistently; the gateway is not sending calls for the next {0:?}"
    )]
    CircuitOpen(Duration),
    /// A 2xx answer that does not decode into the documented shape.
    #[error("OMS sent a response the gateway cannot decode: {0}")]
    BadResponse(String),
}

/// An upstream call that failed: which REST operation, and what went wrong.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation}: {error}")]
pub struct UpstreamFailure {
    /// The REST operation, e.g. `POST /cash-ins` (see [`crate::ops`]).
    pub operation: &'static str,
    /// What went wrong.
    pub error: UpstreamError,
}

/// A non-2xx answer from OMS, with what it said.
#[derive(Debug, Clone, Default)]
pub struct HttpFailure {
    /// The HTTP status.
    pub status: u16,
    /// OMS's human-readable message (or a default for the status when it sent none).
    pub message: String,
    /// OMS's machine-readable error code, when it sent one (e.g. `invalid_state`).
    pub code: Option<String>,
    /// OMS's request id (`x-request-id` header or `requestId` in the body).
    pub request_id: Option<String>,
    /// `Retry-After`, when sent.
    pub retry_after: Option<Duration>,
    /// Per-field problems OMS reported: (REST field path, message).
    pub field_errors: Vec<(String, String)>,
}

// === impl UpstreamError ===

impl UpstreamError {
    /// Whether another attempt of the same request (with the same idempotency key) may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Http(failure) => is_transient_http(failure.status),
            Self::Connect(_) | Self::Transport(_) | Self::Timeout(_) => true,
            Self::DeadlineExceeded
            | Self::AuthFailed { .. }
            | Self::BadResponse(_)
            | Self::CircuitOpen(_) => false,
        }
    }

    /// Whether the failure says OMS is unwell (no answer, a 5xx, a 429): what the circuit
    /// breaker counts. A 4xx, a bad answer or the caller's own deadline say nothing of the kind.
    pub fn is_outage(&self) -> bool {
        match self {
            Self::Http(failure) => failure.status >= 500 || failure.status == 429,
            Self::Connect(_) | Self::Transport(_) | Self::Timeout(_) => true,
            Self::DeadlineExceeded
            | Self::AuthFailed { .. }
            | Self::BadResponse(_)
            | Self::CircuitOpen(_) => false,
        }
    }

    /// The HTTP status OMS answered, if it answered.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Self::Http(failure) => Some(failure.status),
            _ => None,
        }
    }

    /// The `Retry-After` OMS sent (or the breaker's remaining cool-down), if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Http(failure) => failure.retry_after,
            Self::CircuitOpen(wait) => Some(*wait),
            _ => None,
        }
    }
}

/// HTTP statuses that say nothing final about the request: rate limits, gateways and timeouts in
/// front of OMS (408 Request Timeout, 425 Too Early, 499 Client Closed Request from a load
/// balancer), and 421 Misdirected Request (retried on a new connection). The same request with
/// the same key may succeed, so they are retried, reported as retryable and never stored.
fn is_transient_http(status: u16) -> bool {
    matches!(status, 408 | 421 | 425 | 429 | 499 | 502 | 503 | 504)
}

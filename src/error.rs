//! The gateway's errors, one type per layer, and the single place they become a `tonic::Status`.
//!
//! [`UpstreamError`] is what the REST client reports (an HTTP status with OMS's message, or a
//! transport fault; the `oms-rest` crate owns the type, and its gRPC code is decided here);
//! [`GatewayError`] is what a service handler returns (a validation failure, an upstream error
//! with the operation that hit it, or an internal fault). `impl From<GatewayError> for Status`
//! is the one boundary: it decides the gRPC code, the `ErrorInfo` (exactly one), the
//! retry hint and the log level, following the error table in `docs/errors.md`.
//! No variant carries a secret, so no status, log line or Debug print can show one. Every
//! status is bounded there too (`bound`): at most [`MAX_LISTED_VIOLATIONS`] violations listed
//! and [`MAX_STATUS_BYTES`] on the wire, whatever the error holds.

mod bound;

pub use bound::{MAX_LISTED_VIOLATIONS, MAX_STATUS_BYTES};
pub use oms_rest::{HttpFailure, UpstreamError, UpstreamFailure};

use bound::Details;
use std::{collections::HashMap, time::Duration};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// `ErrorInfo.domain` of errors reported by OMS itself.
pub const UPSTREAM_DOMAIN: &str = "oms.polygon.technology";
/// `ErrorInfo.domain` of errors the gateway decides.
pub const GATEWAY_DOMAIN: &str = "oms-gateway";

/// The retry hint given when the upstream gave none.
const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(1);

/// Whether an outcome is OMS's (or the gateway's own validation's) final word on the request,
/// so the same key with the same request must get it again rather than go upstream: successes,
/// the gateway's own INVALID_ARGUMENT, and OMS's 400, 403, 404 and 422. Anything else (another
/// 4xx, which may come from an intermediary, a 5xx, a timeout, a reset) may not have reached OMS
/// or may have a different answer next time.
pub fn is_final_outcome<T>(outcome: &Result<T, GatewayError>) -> bool {
    match outcome {
        Ok(_) | Err(GatewayError::Invalid { .. }) => true,
        Err(GatewayError::Upstream {
            source: UpstreamError::Http(failure),
            ..
        }) => matches!(failure.status, 400 | 403 | 404 | 422),
        Err(_) => false,
    }
}

/// A resource an RPC addressed, for NOT_FOUND's `ResourceInfo`.
#[derive(Debug, Clone)]
pub struct ResourceRef {
    /// The resource type, e.g. `polygon.oms.v1.CashIn`.
    pub kind: &'static str,
    /// Its id.
    pub name: String,
}

// === impl ResourceRef ===

impl ResourceRef {
    /// A cash-in, by id.
    pub fn cash_in(id: &str) -> Self {
        Self {
            kind: "polygon.oms.v1.CashIn",
            name: id.to_owned(),
        }
    }
}

/// One invalid request field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The proto field path, e.g. `source.indicated_amount`.
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

/// What a service handler can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    /// The request failed validation; nothing was sent upstream.
    #[error("{total} invalid field(s)")]
    Invalid {
        /// The first violations found, at most [`MAX_LISTED_VIOLATIONS`].
        violations: Vec<FieldViolation>,
        /// How many there were in all.
        total: usize,
    },
    /// An upstream call failed.
    #[error("{operation}: {source}")]
    Upstream {
        /// The REST operation, e.g. `POST /cash-ins`.
        operation: &'static str,
        /// The resource addressed, if any.
        resource: Option<ResourceRef>,
        /// What went wrong.
        source: UpstreamError,
    },
    /// OMS answered a page of `operation` as if the cursor sent were not there: the page's
    /// cursor is the one sent, or the page holds the item the cursor points after. Paging on
    /// would hand out the same page forever, so the listing ends here (INTERNAL: OMS broke the
    /// paging contract; no retry or other request of the caller's can fix it).
    #[error(
        "{operation}: OMS answered the page after the page token's cursor with that page again (the same cursor, or the cash-in the cursor points after); the listing ends here instead of repeating it"
    )]
    UpstreamCursorRepeated {
        /// The REST operation, e.g. `GET /cash-ins`.
        operation: &'static str,
    },
    /// The resource is not in a state that allows the call (decided by the gateway).
    #[error("{0}")]
    Precondition(String),
    /// An idempotency key was reused with a different request.
    #[error("{0}")]
    KeyReused(String),
    /// The call lost a race it can win by retrying (e.g. a shared call was cancelled).
    #[error("{0}")]
    Aborted(String),
    /// The caller's deadline passed inside the gateway.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// Another call with the same idempotency key was still running when this caller's
    /// deadline came: answered just before it (DEADLINE_EXCEEDED, reason
    /// `IDEMPOTENCY_KEY_IN_FLIGHT`, a retry hint); a retry with the same key gets that call's
    /// outcome once it is stored, or takes it over.
    #[error("{0}")]
    KeyInFlight(String),
    /// A limit of the gateway itself was hit.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The gateway is shutting down or otherwise cannot serve; the caller should retry elsewhere.
    #[error("{0}")]
    Unavailable(String),
    /// The caller's quota (the policy's `[[quota]]` or `[default_quota]`) refuses the call or
    /// the stream, before any upstream call: RESOURCE_EXHAUSTED with a QuotaFailure naming the
    /// caller and the limit, and a RetryInfo when waiting is enough (`retry`).
    #[error("{description}")]
    QuotaExceeded {
        /// The caller's identity (the QuotaFailure's subject).
        caller: String,
        /// The quota's name in the policy.
        quota: String,
        /// Which limit: `calls_per_second`, `concurrent_calls`, `watch_streams` or
        /// `watched_resources`.
        limit: &'static str,
        /// What the limit is and what to do.
        description: String,
        /// When a retry may pass (the token bucket), if waiting is enough.
        retry: Option<Duration>,
    },
    /// More calls in flight than the gateway takes: shed, not queued.
    #[error("the gateway is at its limit of {max_in_flight} calls in flight; retry with backoff")]
    Overloaded {
        /// The limit.
        max_in_flight: usize,
    },
    /// The request message is not a valid protobuf encoding of its type.
    #[error("the message is not a valid protobuf encoding of its type: {0}")]
    MalformedMessage(String),
    /// The request message is larger than the gateway accepts.
    #[error("{0}")]
    MessageTooLarge(String),
    /// The call carries no caller identity where the gateway requires one.
    #[error("{0}")]
    Unauthenticated(String),
    /// The authorization policy allows this caller no such call.
    #[error("caller `{caller}` is not allowed to call {method}")]
    NotAllowed {
        /// The authenticated caller.
        caller: String,
        /// `package.Service/Method`.
        method: String,
    },
}

// === impl GatewayError ===

impl GatewayError {
    /// The gRPC code this error is reported with, decided without building the status.
    pub fn code(&self) -> Code {
        match self {
            Self::Invalid { .. } => Code::InvalidArgument,
            Self::Upstream { source, .. } => upstream_code(source),
            Self::Precondition(_) | Self::KeyReused(_) => Code::FailedPrecondition,
            Self::Aborted(_) => Code::Aborted,
            Self::DeadlineExceeded(_) | Self::KeyInFlight(_) => Code::DeadlineExceeded,
            Self::ResourceExhausted(_)
            | Self::Overloaded { .. }
            | Self::MessageTooLarge(_)
            | Self::QuotaExceeded { .. } => Code::ResourceExhausted,
            Self::Unavailable(_) => Code::Unavailable,
            Self::MalformedMessage(_) => Code::InvalidArgument,
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::NotAllowed { .. } => Code::PermissionDenied,
            Self::UpstreamCursorRepeated { .. } => Code::Internal,
        }
    }

    /// `ErrorInfo.reason` and retry hint of the errors the gateway decides on its own.
    fn own_reason(&self) -> (&'static str, Option<Duration>) {
        match self {
            Self::Precondition(_) => ("FAILED_PRECONDITION", None),
            Self::KeyReused(_) => ("IDEMPOTENCY_KEY_REUSED", None),
            Self::Aborted(_) => (
                "CONCURRENT_CALL_CANCELLED",
                Some(Duration::from_millis(100)),
            ),
            Self::DeadlineExceeded(_) => ("DEADLINE_EXCEEDED", None),
            Self::KeyInFlight(_) => ("IDEMPOTENCY_KEY_IN_FLIGHT", Some(DEFAULT_RETRY_DELAY)),
            Self::ResourceExhausted(_) => ("GATEWAY_LIMIT_REACHED", Some(DEFAULT_RETRY_DELAY)),
            Self::Unavailable(_) => ("GATEWAY_UNAVAILABLE", Some(DEFAULT_RETRY_DELAY)),
            Self::Overloaded { .. } => ("GATEWAY_OVERLOADED", Some(Duration::from_millis(250))),
            Self::QuotaExceeded { retry, .. } => ("QUOTA_EXCEEDED", *retry),
            Self::MalformedMessage(_) => ("MALFORMED_MESSAGE", None),
            Self::MessageTooLarge(_) => ("MESSAGE_TOO_LARGE", None),
            Self::Unauthenticated(_) => ("CALLER_UNAUTHENTICATED", None),
            Self::NotAllowed { .. } => ("CALLER_NOT_ALLOWED", None),
            Self::UpstreamCursorRepeated { .. } => ("UPSTREAM_CURSOR_REPEATED", None),
            Self::Invalid { .. } | Self::Upstream { .. } => ("INTERNAL", None),
        }
    }

    /// Wraps an upstream failure (on `resource`, for NOT_FOUND's ResourceInfo).
    pub fn upstream(resource: Option<ResourceRef>) -> impl FnOnce(UpstreamFailure) -> Self {
        move |failure| Self::Upstream {
            operation: failure.operation,
            resource,
            source: failure.error,
        }
    }

    /// A 2xx answer of `operation` that the contract cannot hold (UPSTREAM_BAD_RESPONSE).
    pub fn bad_response(operation: &'static str, problem: impl std::fmt::Display) -> Self {
        Self::Upstream {
            operation,
            resource: None,
            source: UpstreamError::BadResponse(problem.to_string()),
        }
    }

    /// Whether the upstream call was never sent (the circuit breaker refused it).
    pub fn is_upstream_unsent(&self) -> bool {
        matches!(
            self,
            Self::Upstream {
                source: UpstreamError::CircuitOpen(_),
                ..
            }
        )
    }

    /// Whether OMS answered 404.
    pub fn is_upstream_not_found(&self) -> bool {
        matches!(self, Self::Upstream { source: UpstreamError::Http(f), .. } if f.status == 404)
    }
}

/// Maps an OMS REST field path (`source.indicatedAmount`) to the proto path
/// (`source.indicated_amount`), so a BadRequest names fields the caller actually sent.
fn rest_field_to_proto(field: &str) -> String {
    let mut out = String::with_capacity(field.len() + 4);
    for c in field.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// UPPER_SNAKE_CASE of an upstream error code, keeping only `[A-Z0-9_]`.
fn reason_from_code(code: &str) -> Option<String> {
    let reason: String = rest_field_to_proto(code)
        .chars()
        .map(|c| match c {
            'a'..='z' => c.to_ascii_uppercase(),
            'A'..='Z' | '0'..='9' => c,
            _ => '_',
        })
        .collect();
    let reason = reason.trim_matches('_').to_owned();
    (!reason.is_empty() && reason.len() <= 63).then_some(reason)
}

fn default_reason(status: u16) -> &'static str {
    match status {
        400 => "INVALID_REQUEST",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "CONFLICT",
        422 => "UNPROCESSABLE",
        429 => "RATE_LIMITED",
        408 => "UPSTREAM_REQUEST_TIMEOUT",
        421 => "UPSTREAM_MISDIRECTED_REQUEST",
        425 => "UPSTREAM_TOO_EARLY",
        499 => "UPSTREAM_CLIENT_CLOSED_REQUEST",
        500 => "UPSTREAM_INTERNAL_ERROR",
        502 | 503 => "UPSTREAM_UNAVAILABLE",
        504 => "UPSTREAM_TIMEOUT",
        _ => "UPSTREAM_ERROR",
    }
}

/// The gRPC code an upstream failure is reported with (the error table).
fn upstream_code(error: &UpstreamError) -> Code {
    match error {
        UpstreamError::Http(failure) => code_for_http(failure.status),
        UpstreamError::Connect(_) | UpstreamError::Transport(_) | UpstreamError::CircuitOpen(_) => {
            Code::Unavailable
        }
        UpstreamError::Timeout(_) | UpstreamError::DeadlineExceeded => Code::DeadlineExceeded,
        UpstreamError::AuthFailed { .. } | UpstreamError::BadResponse(_) => Code::Internal,
    }
}

fn code_for_http(status: u16) -> Code {
    match status {
        400 => Code::InvalidArgument,
        401 => Code::Internal,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        409 => Code::Aborted,
        422 => Code::FailedPrecondition,
        429 => Code::ResourceExhausted,
        408 | 421 | 425 | 499 | 502 | 503 => Code::Unavailable,
        504 => Code::DeadlineExceeded,
        402 | 405..=407 | 410..=420 | 423 | 424 | 426..=428 | 430..=498 => Code::FailedPrecondition,
        _ => Code::Internal,
    }
}

impl From<GatewayError> for Status {
    fn from(err: GatewayError) -> Self {
        let code = err.code();
        match err {
            GatewayError::Invalid { violations, total } => invalid_status(&violations, total),
            GatewayError::Upstream {
                operation,
                resource,
                source,
            } => upstream_status(code, operation, resource, source),
            own => {
                let (reason, retry) = own.own_reason();
                if matches!(own, GatewayError::ResourceExhausted(_)) {
                    tracing::warn!(error = %own, "gateway limit reached");
                }
                let metadata = match &own {
                    GatewayError::NotAllowed { caller, method } => HashMap::from([
                        ("caller".to_owned(), caller.clone()),
                        ("method".to_owned(), method.clone()),
                    ]),
                    GatewayError::QuotaExceeded { quota, limit, .. } => HashMap::from([
                        ("quota".to_owned(), quota.clone()),
                        ("limit".to_owned(), (*limit).to_owned()),
                    ]),
                    GatewayError::UpstreamCursorRepeated { operation } => {
                        tracing::warn!(operation, "OMS repeated a page; the listing ends");
                        HashMap::from([("operation".to_owned(), (*operation).to_owned())])
                    }
                    _ => HashMap::new(),
                };
                let mut details = Details::new();
                details.set_error_info(reason, GATEWAY_DOMAIN, metadata);
                if retry.is_some() {
                    details.set_retry_info(retry);
                }
                if let GatewayError::QuotaExceeded {
                    caller,
                    description,
                    ..
                } = &own
                {
                    details.set_quota_failure(caller, description);
                }
                bounded_status(code, &own.to_string(), details)
            }
        }
    }
}

/// The one place a `tonic::Status` is built (clippy's `disallowed-methods`, in clippy.toml,
/// refuses it anywhere else). Only [`bounded_status`] calls it.
#[allow(clippy::disallowed_methods)]
fn status(code: Code, message: String, details: ErrorDetails) -> Status {
    Status::with_error_details(code, message, details)
}

/// Every status's way out: within [`MAX_STATUS_BYTES`] and [`MAX_LISTED_VIOLATIONS`] (see
/// `bound`), whatever `message` and `details` hold.
fn bounded_status(code: Code, message: &str, details: Details) -> Status {
    bound::bounded(code, message, details, status)
}

/// INVALID_ARGUMENT for `total` violations, of which `violations` are the first: listed in the
/// BadRequest and the message, with the count of the rest.
fn invalid_status(violations: &[FieldViolation], total: usize) -> Status {
    let total = total.max(violations.len());
    let mut details = Details::new();
    details.set_error_info(
        "INVALID_REQUEST_FIELDS",
        GATEWAY_DOMAIN,
        HashMap::from([("violations".to_owned(), total.to_string())]),
    );
    for violation in violations {
        details.add_bad_request_violation(&violation.field, &violation.description);
    }
    details.count_unlisted(total - violations.len());
    details.list_violations_in_message();
    let head = format!(
        "invalid request ({total} problem{})",
        if total == 1 { "" } else { "s" }
    );
    tracing::debug!(violations = total, "rejected by validation");
    bounded_status(Code::InvalidArgument, &head, details)
}

fn upstream_status(
    code: Code,
    operation: &'static str,
    resource: Option<ResourceRef>,
    source: UpstreamError,
) -> Status {
    let mut details = Details::new();
    let mut metadata = HashMap::from([("operation".to_owned(), operation.to_owned())]);
    let (reason, domain) = match &source {
        UpstreamError::Http(failure) => (
            http_details(failure, resource.as_ref(), &mut details, &mut metadata),
            UPSTREAM_DOMAIN,
        ),
        UpstreamError::AuthFailed { request_id, .. } => {
            metadata.insert("httpStatus".into(), "401".into());
            if let Some(id) = request_id {
                metadata.insert("upstreamRequestId".into(), id.clone());
            }
            ("UPSTREAM_AUTH_FAILED".to_owned(), GATEWAY_DOMAIN)
        }
        other => (transport_details(other, &mut details), GATEWAY_DOMAIN),
    };
    log_upstream(code, operation, &source);
    details.set_error_info(reason, domain, metadata);
    bounded_status(code, &upstream_message(operation, &source), details)
}

/// The status message of an upstream failure: the operation, then what OMS or the connection said.
fn upstream_message(operation: &str, source: &UpstreamError) -> String {
    match source {
        UpstreamError::Http(failure) => format!(
            "{operation}: OMS answered {}: {}",
            failure.status, failure.message
        ),
        UpstreamError::AuthFailed { .. } => format!(
            "{operation}: the gateway's OMS credentials were rejected; this is a gateway configuration problem, not the caller's"
        ),
        other => format!("{operation}: {other}"),
    }
}

/// Details and reason of an answer OMS gave: its status, request id and code in the metadata,
/// BadRequest for a 400 naming fields, ResourceInfo for a 404, RetryInfo for what may pass.
fn http_details(
    failure: &HttpFailure,
    resource: Option<&ResourceRef>,
    details: &mut Details,
    metadata: &mut HashMap<String, String>,
) -> String {
    metadata.insert("httpStatus".into(), failure.status.to_string());
    if let Some(id) = &failure.request_id {
        metadata.insert("upstreamRequestId".into(), id.clone());
    }
    if let Some(code) = &failure.code {
        metadata.insert("upstreamCode".into(), code.clone());
    }
    match failure.status {
        400 => {
            for (field, description) in failure.field_errors.iter().take(MAX_LISTED_VIOLATIONS) {
                details.add_bad_request_violation(&rest_field_to_proto(field), description);
            }
            details.count_unlisted(
                failure
                    .field_errors
                    .len()
                    .saturating_sub(MAX_LISTED_VIOLATIONS),
            );
        }
        404 => {
            if let Some(resource) = resource {
                details.set_resource_info(resource.kind, &resource.name, &failure.message);
            }
        }
        409 | 408 | 421 | 425 | 429 | 499 | 502 | 503 => {
            details.set_retry_info(Some(failure.retry_after.unwrap_or(DEFAULT_RETRY_DELAY)));
        }
        _ => {}
    }
    failure
        .code
        .as_deref()
        .and_then(reason_from_code)
        .unwrap_or_else(|| default_reason(failure.status).to_owned())
}

/// Reason (and retry hint) of a failure that is no answer from OMS.
fn transport_details(source: &UpstreamError, details: &mut Details) -> String {
    let reason = match source {
        UpstreamError::Connect(_) => "UPSTREAM_UNREACHABLE",
        UpstreamError::Transport(_) => "UPSTREAM_CONNECTION_FAILED",
        UpstreamError::CircuitOpen(_) => "UPSTREAM_CIRCUIT_OPEN",
        UpstreamError::Timeout(_) => "UPSTREAM_TIMEOUT",
        UpstreamError::DeadlineExceeded => "DEADLINE_EXCEEDED",
        UpstreamError::BadResponse(_) => "UPSTREAM_BAD_RESPONSE",
        UpstreamError::Http(_) | UpstreamError::AuthFailed { .. } => "UPSTREAM_ERROR",
    };
    match source {
        UpstreamError::Connect(_) | UpstreamError::Transport(_) => {
            details.set_retry_info(Some(DEFAULT_RETRY_DELAY));
        }
        UpstreamError::CircuitOpen(wait) => {
            details.set_retry_info(Some((*wait).max(Duration::from_millis(100))));
        }
        _ => {}
    }
    reason.to_owned()
}

/// Each failure's log level: our credentials are an error, OMS's faults a warning, OMS refusing
/// a caller's request a debug line.
fn log_upstream(code: Code, operation: &'static str, source: &UpstreamError) {
    match code {
        Code::Internal if matches!(source, UpstreamError::AuthFailed { .. }) => {
            tracing::error!(operation, error = %source, "OMS rejected the gateway's credentials")
        }
        Code::Internal | Code::Unavailable | Code::DeadlineExceeded => {
            tracing::warn!(operation, error = %source, "upstream call failed")
        }
        _ => tracing::debug!(operation, error = %source, "upstream refused the call"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16) -> GatewayError {
        GatewayError::Upstream {
            operation: oms_rest::ops::GET_CASH_IN,
            resource: Some(ResourceRef {
                kind: "polygon.oms.v1.CashIn",
                name: "ci_1".into(),
            }),
            source: UpstreamError::Http(Box::new(HttpFailure {
                status,
                message: "nope".into(),
                retry_after: Some(Duration::from_secs(7)),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn every_http_row_of_the_error_table_maps_to_its_code() {
        let table = [
            (400, Code::InvalidArgument),
            (403, Code::PermissionDenied),
            (404, Code::NotFound),
            (409, Code::Aborted),
            (422, Code::FailedPrecondition),
            (429, Code::ResourceExhausted),
            (500, Code::Internal),
            (502, Code::Unavailable),
            (503, Code::Unavailable),
            (504, Code::DeadlineExceeded),
        ];
        for (http_status, code) in table {
            let status = Status::from(http(http_status));
            assert_eq!(status.code(), code, "HTTP {http_status}");
            let details = status.get_error_details();
            let info = details.error_info().expect("ErrorInfo");
            assert_eq!(info.metadata["httpStatus"], http_status.to_string());
            assert!(status.message().contains("nope"));
        }
        let limited = Status::from(http(429)).get_error_details();
        assert_eq!(
            limited.retry_info().unwrap().retry_delay,
            Some(Duration::from_secs(7))
        );
    }

    #[test]
    fn upstream_codes_become_reasons() {
        assert_eq!(
            reason_from_code("invalid_state").as_deref(),
            Some("INVALID_STATE")
        );
        assert_eq!(
            reason_from_code("idempotencyKeyReused").as_deref(),
            Some("IDEMPOTENCY_KEY_REUSED")
        );
        assert_eq!(reason_from_code("--"), None);
        assert_eq!(
            rest_field_to_proto("source.indicatedAmount"),
            "source.indicated_amount"
        );
    }

    #[test]
    fn a_quota_refusal_names_the_caller_and_the_limit_and_only_the_bucket_says_when() {
        let refusal = |retry| GatewayError::QuotaExceeded {
            caller: "spiffe://td/ns/recon/sa/job".into(),
            quota: "batch".into(),
            limit: "calls_per_second",
            description: "calls_per_second: at most 20 a second".into(),
            retry,
        };
        let status = Status::from(refusal(Some(Duration::from_millis(50))));
        assert_eq!(status.code(), Code::ResourceExhausted);
        let details = status.get_error_details();
        let info = details.error_info().expect("an ErrorInfo");
        assert_eq!(info.reason, "QUOTA_EXCEEDED");
        assert_eq!(info.metadata["quota"], "batch");
        assert_eq!(info.metadata["limit"], "calls_per_second");
        let failure = details.quota_failure().expect("a QuotaFailure");
        assert_eq!(failure.violations.len(), 1);
        assert_eq!(failure.violations[0].subject, "spiffe://td/ns/recon/sa/job");
        assert!(
            failure.violations[0]
                .description
                .starts_with("calls_per_second")
        );
        let retry = details.retry_info().and_then(|r| r.retry_delay);
        assert_eq!(retry, Some(Duration::from_millis(50)));
        let status = Status::from(refusal(None));
        assert!(status.get_error_details().retry_info().is_none());
    }
}

/// The replay decision ([`is_final_outcome`]) over every answer a write can meet upstream: a
/// stored outcome is replayed for the whole idempotency window, so storing one that is not
/// OMS's final word burns the caller's key, and not storing one that is lets a retry reach OMS
/// again.
#[cfg(test)]
mod replay_decision {
    use super::*;

    fn upstream(source: UpstreamError) -> Result<(), GatewayError> {
        Err(GatewayError::Upstream {
            operation: oms_rest::ops::CREATE_CASH_IN,
            resource: None,
            source,
        })
    }

    fn http(status: u16) -> Result<(), GatewayError> {
        upstream(UpstreamError::Http(Box::new(HttpFailure {
            status,
            message: "an answer".into(),
            ..Default::default()
        })))
    }

    #[test]
    fn only_successes_and_omss_final_refusals_are_stored_for_replay() {
        let table = [
            ("200", Ok(()), true),
            ("201", Ok(()), true),
            ("400", http(400), true),
            ("401", http(401), false),
            (
                "401 after a fresh token",
                upstream(UpstreamError::AuthFailed {
                    message: "bad credentials".into(),
                    request_id: None,
                }),
                false,
            ),
            ("403", http(403), true),
            ("404", http(404), true),
            ("408", http(408), false),
            ("409", http(409), false),
            ("421", http(421), false),
            ("422", http(422), true),
            ("425", http(425), false),
            ("429", http(429), false),
            ("499", http(499), false),
            ("500", http(500), false),
            ("502", http(502), false),
            ("503", http(503), false),
            ("504", http(504), false),
            (
                "reset",
                upstream(UpstreamError::Transport("connection reset".into())),
                false,
            ),
            (
                "connect",
                upstream(UpstreamError::Connect("connection refused".into())),
                false,
            ),
            (
                "timeout",
                upstream(UpstreamError::Timeout(Duration::from_secs(10))),
                false,
            ),
            (
                "the caller's deadline",
                upstream(UpstreamError::DeadlineExceeded),
                false,
            ),
            (
                "circuit open",
                upstream(UpstreamError::CircuitOpen(Duration::from_secs(1))),
                false,
            ),
            (
                "a 2xx that does not decode",
                upstream(UpstreamError::BadResponse("not JSON".into())),
                false,
            ),
            (
                "the gateway's own validation",
                Err(GatewayError::Invalid {
                    violations: vec![FieldViolation {
                        field: "customer_id".into(),
                        description: "required".into(),
                    }],
                    total: 1,
                }),
                true,
            ),
            (
                "the gateway's own limit",
                Err(GatewayError::Unavailable("shutting down".into())),
                false,
            ),
        ];
        let wrong: Vec<_> = table
            .iter()
            .filter(|(_, outcome, stored)| is_final_outcome(outcome) != *stored)
            .map(|(answer, _, stored)| format!("{answer}: stored should be {stored}"))
            .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
    }
}

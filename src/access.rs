//! The access log: one line per gRPC call, target `access`, level info: method, code, latency,
//! upstream requests made for it and the caller. Written by the gRPC metrics layer when a call
//! ends ([`crate::metrics::grpc`]); the caller and the upstream attempts (HTTP requests) are noted during
//! the call, in a task-local scope, by the security layer and the REST client (one line each).
//! Its only inputs are those fields, so no secret, token, key or deposit code can reach it.
//!
//! A call a caller's quota refused names the quota and the limit (`quota_refused`).
//!
//! Upstream requests are counted in the call's own task: those of a unary call (retries and
//! re-authentication included); not the pollers' of a watch stream, which many streams share.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The log target of access lines.
pub const TARGET: &str = "access";

/// What a call noted about itself while it ran.
#[derive(Debug, Default)]
pub struct Notes {
    /// The authenticated caller, when one was resolved (anonymous: none).
    pub caller: Option<Arc<str>>,
    /// HTTP requests sent to OMS for the call.
    pub upstream_requests: u32,
    /// The quota and limit that refused the call (`batch/calls_per_second`), if one did.
    pub quota_refused: Option<String>,
}

#[derive(Default)]
struct Scope {
    caller: RefCell<Option<Arc<str>>>,
    upstream_requests: Cell<u32>,
    quota_refused: RefCell<Option<String>>,
}

impl Scope {
    fn from_notes(notes: Notes) -> Self {
        Self {
            caller: RefCell::new(notes.caller),
            upstream_requests: Cell::new(notes.upstream_requests),
            quota_refused: RefCell::new(notes.quota_refused),
        }
    }

    fn take(&self) -> Notes {
        Notes {
            caller: self.caller.borrow_mut().take(),
            upstream_requests: self.upstream_requests.get(),
            quota_refused: self.quota_refused.borrow_mut().take(),
        }
    }
}

tokio::task_local! {
    static CALL: Scope;
}

/// Runs the synchronous part of a call (`Service::call`) with a scope to note into.
pub fn in_call_sync<R>(f: impl FnOnce() -> R) -> (R, Notes) {
    CALL.sync_scope(Scope::default(), || {
        let output = f();
        (output, CALL.with(Scope::take))
    })
}

/// Runs the rest of a call with what its synchronous part noted, and returns all it noted.
pub async fn in_call<F: Future>(notes: Notes, call: F) -> (F::Output, Notes) {
    CALL.scope(Scope::from_notes(notes), async {
        let output = call.await;
        (output, CALL.with(Scope::take))
    })
    .await
}

/// Notes the call's authenticated caller (the security layer).
pub fn note_caller(caller: &str) {
    if caller.is_empty() {
        return;
    }
    let _ = CALL.try_with(|scope| *scope.caller.borrow_mut() = Some(Arc::from(caller)));
}

/// Notes one HTTP request sent to OMS (the REST client).
pub fn note_upstream_request() {
    let _ = CALL.try_with(|scope| {
        scope
            .upstream_requests
            .set(scope.upstream_requests.get() + 1)
    });
}

/// HTTP requests sent to OMS for the call so far (0 outside a call).
pub fn upstream_requests() -> u32 {
    CALL.try_with(|scope| scope.upstream_requests.get())
        .unwrap_or(0)
}

/// Notes that the caller's quota refused the call: the quota's name (from the policy) and the
/// limit.
pub fn note_quota_refused(quota: &str, limit: &str) {
    let _ =
        CALL.try_with(|scope| *scope.quota_refused.borrow_mut() = Some(format!("{quota}/{limit}")));
}

/// The gRPC codes' names as the spec spells them (`DEADLINE_EXCEEDED`), as audit lines do.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Logs a finished call of `method` (`package.Service/Method`) of `grpc_type` (`unary`, …).
pub fn log_call((method, grpc_type): (&str, &str), code: u8, latency: Duration, notes: &Notes) {
    tracing::info!(
        target: TARGET,
        method,
        grpc_type,
        code = CODE_NAMES.get(usize::from(code)).copied().unwrap_or("UNKNOWN"),
        latency_ms = latency.as_secs_f64() * 1000.0,
        upstream_attempts = notes.upstream_requests,
        caller = notes.caller.as_deref().unwrap_or(""),
        quota_refused = notes.quota_refused.as_deref().unwrap_or(""),
        "call"
    );
}

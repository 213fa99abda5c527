//! The audit log: one structured line, target `audit`, per mutating call (CreateCashIn,
//! RefreshCashIn, the SandboxService RPCs) and per refused call (a caller's quota included), so operators can route it apart
//! from the operational log (`--log-level audit=info,...`, or filter on the target in JSON).
//! Fields: caller, method, idempotency key, the key sent to OMS, cash-in id, customer id, the
//! outcome (a gRPC code name) and OMS's request id when known; the time is the log line's. The
//! functions take only those fields, so no secret, bearer token or deposit code can reach it.

use crate::error::{GatewayError, UpstreamError};
use std::cell::RefCell;

tokio::task_local! {
    /// OMS's request id of the last upstream answer within [`recording_request_id`].
    static UPSTREAM_REQUEST_ID: RefCell<Option<String>>;
}

/// Runs `call` and returns its output with OMS's request id (`x-request-id`) of the last
/// successful upstream answer it got in this task ("" when none: a replay, or a shared call led
/// by another caller's task).
pub async fn recording_request_id<F: std::future::Future>(call: F) -> (F::Output, String) {
    UPSTREAM_REQUEST_ID
        .scope(RefCell::new(None), async {
            let output = call.await;
            let id = UPSTREAM_REQUEST_ID
                .try_with(|id| id.borrow().clone())
                .ok()
                .flatten()
                .unwrap_or_default();
            (output, id)
        })
        .await
}

/// Called for the REST client on a 2xx answer: notes its `x-request-id` (as the client gives it:
/// credentials cut out, at most 128 characters) for the audit line of the call in progress, if
/// one is recording.
pub fn note_upstream_request_id(id: &str) {
    let _ = UPSTREAM_REQUEST_ID.try_with(|current| *current.borrow_mut() = Some(id.to_owned()));
}

/// The log target of audit lines.
pub const TARGET: &str = "audit";

/// What one mutating call did.
#[derive(Debug, Default)]
pub struct Mutation<'a> {
    /// The authenticated caller ("" when anonymous).
    pub caller: &'a str,
    /// `package.Service/Method`.
    pub method: &'a str,
    /// The caller's idempotency key.
    pub idempotency_key: &'a str,
    /// The `Idempotency-Key` sent to OMS.
    pub oms_idempotency_key: &'a str,
    /// The cash-in addressed or created.
    pub cash_in_id: &'a str,
    /// The customer, when known.
    pub customer_id: &'a str,
}

/// The gRPC code name an outcome is reported with, and OMS's request id when it sent one.
fn outcome(result: Result<(), &GatewayError>) -> (String, String) {
    match result {
        Ok(()) => ("OK".to_owned(), String::new()),
        Err(err) => {
            let request_id = match err {
                GatewayError::Upstream {
                    source: UpstreamError::Http(failure),
                    ..
                } => failure.request_id.clone(),
                GatewayError::Upstream {
                    source: UpstreamError::AuthFailed { request_id, .. },
                    ..
                } => request_id.clone(),
                _ => None,
            };
            (code_name(err.code()), request_id.unwrap_or_default())
        }
    }
}

/// A gRPC code's name as the spec spells it: `DeadlineExceeded` → `DEADLINE_EXCEEDED`.
pub fn code_name(code: tonic::Code) -> String {
    let debug = format!("{code:?}");
    let mut out = String::with_capacity(debug.len() + 4);
    for (i, c) in debug.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Logs a mutating call's audit line.
pub fn mutation(call: &Mutation<'_>, result: Result<(), &GatewayError>, upstream_request_id: &str) {
    let (outcome, error_request_id) = outcome(result);
    let upstream_request_id = if upstream_request_id.is_empty() {
        error_request_id
    } else {
        upstream_request_id.to_owned()
    };
    tracing::info!(
        target: TARGET,
        caller = call.caller,
        method = call.method,
        idempotency_key = call.idempotency_key,
        oms_idempotency_key = call.oms_idempotency_key,
        cash_in_id = call.cash_in_id,
        customer_id = call.customer_id,
        outcome = %outcome,
        upstream_request_id = %upstream_request_id,
        "mutation"
    );
}

/// The longest method path an audit line shows, in bytes (the longest served, reflection's
/// `ServerReflectionInfo`, is 61).
const MAX_METHOD_BYTES: usize = 128;

/// Logs a refused call's audit line. The request body is never read for a refused call, so the
/// idempotency key is the `idempotency-key` metadata's (if any) and there is no cash-in or
/// customer. Both the key and the method are the caller's, unvalidated (up to the 16 KiB of
/// headers a request may carry): an invalid key, or a path that is no method name, is shown as
/// `<invalid>`.
pub fn denied(caller: &str, method: &str, idempotency_key: &str, outcome: &str) {
    let idempotency_key =
        if idempotency_key.is_empty() || crate::validate::is_idempotency_key(idempotency_key) {
            idempotency_key
        } else {
            "<invalid>"
        };
    let method = loggable_method(method);
    tracing::warn!(
        target: TARGET,
        caller,
        method,
        idempotency_key,
        outcome,
        "call refused"
    );
}

/// Logs the audit line of a call or stream a caller's quota refused (RESOURCE_EXHAUSTED): the
/// quota's name comes from the policy, the limit is one of its four keys.
pub fn quota_refused(caller: &str, method: &str, quota: &str, limit: &str) {
    let method = loggable_method(method);
    tracing::warn!(
        target: TARGET,
        caller,
        method,
        quota,
        limit,
        outcome = "RESOURCE_EXHAUSTED",
        "call refused by the caller's quota"
    );
}

/// `method` if it looks like a method path (the caller's, unvalidated), else `<invalid>`.
fn loggable_method(method: &str) -> &str {
    let method_like = method.len() <= MAX_METHOD_BYTES
        && method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._/".contains(&b));
    if method_like { method } else { "<invalid>" }
}

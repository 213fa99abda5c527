//! [`CallContext`]: what the application around the client knows of the call in progress, lent
//! to every request the client sends. The client knows nothing of where its calls come from (a
//! gRPC call, a background poller); the application does, and through this trait it gives each
//! request its W3C trace headers and hears of each HTTP request sent and of OMS's request id.
//! Every method has a default that does nothing, so a client without an application around it
//! (a test) sends no trace headers and notes nothing.

use std::fmt;

/// The W3C trace headers one request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceHeaders {
    /// The `traceparent` value: the call's trace, the request's own span id.
    pub traceparent: String,
    /// The caller's `tracestate`, passed on unchanged.
    pub tracestate: Option<String>,
}

/// What the client asks of, and tells, the application about the call in progress. Called on
/// the task that made the call, inside the request's span (`oms_attempt`, or
/// `oms_token_exchange` for a token exchange, which runs on a task of its own once asked for).
pub trait CallContext: fmt::Debug + Send + Sync + 'static {
    /// The trace headers of a request about to go out inside `span`, which has `trace_id` and
    /// `span_id` fields for the implementation to record; `None` sends none.
    fn trace_headers(&self, span: &tracing::Span) -> Option<TraceHeaders> {
        let _ = span;
        None
    }

    /// One HTTP request of a call (an attempt, not a token exchange) ended, answered or not.
    fn request_ended(&self) {}

    /// OMS answered an attempt with request id `id` (the request's credentials cut out, at most
    /// 128 characters), `success` when the answer was a 2xx. The client has recorded it on the
    /// attempt's span already.
    fn request_id(&self, id: &str, success: bool) {
        let _ = (id, success);
    }
}

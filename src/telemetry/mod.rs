//! Tracing across the gateway: the W3C trace context of each gRPC call, the RPC span that names
//! the call, and the `traceparent` / `tracestate` each upstream attempt sends to OMS.
//!
//! [`TraceContextLayer`] (a tower layer around the router) reads the caller's `traceparent` and
//! `tracestate` metadata into a task-local for the call; an invalid `traceparent` is ignored and
//! the call starts a new trace. The handler's span, made by [`rpc_span!`], carries the method, the
//! call's trace id and OMS's request id when an answer arrives. Each upstream attempt asks
//! [`outgoing`] for its headers: the call's trace id, a new span id (the attempt's: OMS's request
//! is its child) and the caller's `tracestate` unchanged.
//!
//! Without OTLP export that needs no OpenTelemetry at all (`traceparent.rs`). With export on
//! (`otlp.rs`), the RPC span takes the caller's context as its OpenTelemetry parent and the
//! attempt's span id is the exported attempt span's, so OMS's request hangs under the span the
//! collector received. Calls outside any gRPC call (watch pollers, the circuit probe) start a
//! new trace per request.

pub mod otlp;
mod traceparent;

use oms_rest::TraceHeaders;
use std::cell::{Cell, RefCell};
use std::task::{Context, Poll};
use tokio::task::futures::TaskLocalFuture;
use traceparent::{SpanId, TraceId, TraceParent};

tokio::task_local! {
    static CALL: CallTrace;
}

/// The trace context of the gRPC call running in this task (public only as part of
/// [`TraceContext`]'s future type).
pub struct CallTrace {
    /// The gRPC method, `package.Service/Method`.
    method: String,
    /// The caller's valid `traceparent`, if any.
    incoming: Option<TraceParent>,
    /// The caller's `tracestate`, passed on unchanged.
    tracestate: Option<String>,
    /// The call's trace id: the caller's, else a new one (with export on: the RPC span's).
    trace_id: Cell<TraceId>,
    /// The trace flags sent upstream.
    flags: Cell<u8>,
    /// The RPC span, once the handler made it, to record OMS's request id on.
    span: RefCell<Option<tracing::Span>>,
}

impl CallTrace {
    fn from_headers(path: &str, headers: &http::HeaderMap) -> Self {
        let mut parents = headers.get_all("traceparent").iter();
        // More than one `traceparent` is as invalid as a malformed one.
        let incoming = match (parents.next(), parents.next()) {
            (Some(value), None) => value.to_str().ok().and_then(TraceParent::parse),
            _ => None,
        };
        let states: Vec<&str> = headers
            .get_all("tracestate")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        // A new trace carries no vendor state of the caller's.
        let tracestate =
            incoming.and_then(|_| traceparent::tracestate(&states.join(",")).map(str::to_owned));
        Self {
            method: path.trim_start_matches('/').to_owned(),
            trace_id: Cell::new(incoming.map_or_else(TraceId::random, |p| p.trace_id)),
            flags: Cell::new(incoming.map_or(0, |p| p.flags)),
            incoming,
            tracestate,
            span: RefCell::new(None),
        }
    }
}

/// The gRPC method of the call in progress (empty outside one), for [`rpc_span!`].
pub fn method() -> String {
    CALL.try_with(|call| call.method.clone())
        .unwrap_or_default()
}

/// Makes `span` the call's RPC span: with export on, its parent is the caller's span; its
/// `trace_id` field is the call's trace id; OMS's request ids are recorded on it. Use
/// [`rpc_span!`], which declares the fields.
pub fn adopt(span: tracing::Span) -> tracing::Span {
    let _ = CALL.try_with(|call| {
        if otlp::enabled()
            && let Some(ids) = otlp::adopt_parent(&span, call.incoming, call.tracestate.as_deref())
        {
            call.trace_id.set(ids.trace_id);
            call.flags.set(ids.flags);
        }
        span.record("trace_id", tracing::field::display(call.trace_id.get()));
        *call.span.borrow_mut() = Some(span.clone());
    });
    span
}

/// The trace headers of an upstream attempt whose span is `attempt` (made by the REST client,
/// inside the RPC span): `traceparent`, and `tracestate` when the caller sent one. Records the
/// attempt's trace and span ids on it.
pub fn outgoing(attempt: &tracing::Span) -> TraceHeaders {
    let (trace_id, flags, tracestate) = CALL
        .try_with(|call| {
            (
                call.trace_id.get(),
                call.flags.get(),
                call.tracestate.clone(),
            )
        })
        .unwrap_or_else(|_| (TraceId::random(), 0, None));
    let exported = otlp::enabled().then(|| otlp::ids(attempt)).flatten();
    let parent = exported.unwrap_or(TraceParent {
        trace_id,
        parent_id: SpanId::random(),
        flags,
    });
    attempt.record("trace_id", tracing::field::display(parent.trace_id));
    attempt.record("span_id", tracing::field::display(parent.parent_id));
    TraceHeaders {
        traceparent: parent.to_string(),
        tracestate,
    }
}

/// Records OMS's request id (`x-request-id` of an answer, already redacted by the REST client,
/// which recorded it on the attempt span) on the RPC span.
pub fn note_upstream_request_id(id: &str) {
    let _ = CALL.try_with(|call| {
        if let Some(span) = call.span.borrow().as_ref() {
            span.record("upstream_request_id", id);
        }
    });
}

/// An `info_span!` for one gRPC call, with the fields every call has (the method, the trace id,
/// OMS's request id, the span kind for OTLP) before the call's own, made the call's RPC span by
/// [`adopt`].
macro_rules! rpc_span {
    ($name:literal, $($fields:tt)+) => {
        $crate::telemetry::adopt(tracing::info_span!(
            $name,
            otel.kind = "server",
            method = %$crate::telemetry::method(),
            trace_id = tracing::field::Empty,
            upstream_request_id = tracing::field::Empty,
            $($fields)+
        ))
    };
}
pub(crate) use rpc_span;

// === impl TraceContextLayer ===

/// The tower layer that gives every gRPC call its trace context (see the module documentation).
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceContextLayer;

impl<S> tower::Layer<S> for TraceContextLayer {
    type Service = TraceContext<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceContext { inner }
    }
}

/// See [`TraceContextLayer`].
#[derive(Clone, Debug)]
pub struct TraceContext<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for TraceContext<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TaskLocalFuture<CallTrace, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let trace = CallTrace::from_headers(request.uri().path(), request.headers());
        CALL.scope(trace, self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, http::HeaderValue::from_static(value));
        }
        map
    }

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[tokio::test]
    async fn an_attempt_continues_the_callers_trace_with_a_span_of_its_own() {
        let call = CallTrace::from_headers(
            "/p.S/M",
            &headers(&[("traceparent", PARENT), ("tracestate", "congo=t61rcWkgMzE")]),
        );
        let out = CALL
            .scope(call, async { outgoing(&tracing::Span::none()) })
            .await;
        let sent = TraceParent::parse(&out.traceparent).expect("valid");
        assert_eq!(
            sent.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_ne!(sent.parent_id.to_string(), "00f067aa0ba902b7");
        assert_eq!(sent.flags, 1, "sampled, as the caller said");
        assert_eq!(out.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
    }

    #[tokio::test]
    async fn two_traceparents_or_a_bad_one_start_a_new_trace_without_tracestate() {
        for pairs in [
            &[("traceparent", PARENT), ("traceparent", PARENT)][..],
            &[
                ("traceparent", "00-xyz-00f067aa0ba902b7-01"),
                ("tracestate", "a=b"),
            ][..],
        ] {
            let call = CallTrace::from_headers("/p.S/M", &headers(pairs));
            assert_eq!(call.incoming, None);
            let out = CALL
                .scope(call, async { outgoing(&tracing::Span::none()) })
                .await;
            let sent = TraceParent::parse(&out.traceparent).expect("valid");
            assert_ne!(
                sent.trace_id.to_string(),
                "4bf92f3577b34da6a3ce929d0e0e4736"
            );
            assert_eq!(sent.flags, 0, "not sampled: nothing recorded it");
            assert_eq!(out.tracestate, None);
        }
    }
}

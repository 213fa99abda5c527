//! The gateway's side of the OMS REST client (the `oms-rest` crate, which knows nothing of the
//! gateway): [`client`] builds it from the gateway's settings and metrics, and lends it
//! [`GrpcCallContext`], what the gRPC call in progress knows. Each request carries the call's W3C
//! trace context (`telemetry`), counts once for the call's access line (`access`), and gives
//! OMS's request id to the RPC span and, from a 2xx, to the audit line (`audit`). All three read
//! the call's task-locals, so outside a call (a watch poller, the circuit probe) a request starts
//! a trace of its own and nothing is noted.

use crate::config::UpstreamSettings;
use crate::metrics::Metrics;
use oms_rest::{CallContext, OmsClient, TraceHeaders, auth::Credentials};
use std::sync::Arc;

/// The REST client to the OMS at `base_url`, with the gateway's upstream settings, recording
/// into the gateway's metrics.
pub(crate) fn client(
    base_url: &str,
    credentials: Credentials,
    settings: &UpstreamSettings,
    metrics: &Metrics,
) -> Result<OmsClient, String> {
    OmsClient::new(
        base_url,
        credentials,
        settings.client(),
        metrics.upstream.clone(),
        Arc::new(GrpcCallContext),
    )
}

/// The gRPC call in progress, as the REST client sees it (see the module documentation).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GrpcCallContext;

impl CallContext for GrpcCallContext {
    fn trace_headers(&self, span: &tracing::Span) -> Option<TraceHeaders> {
        Some(crate::telemetry::outgoing(span))
    }

    fn request_ended(&self) {
        crate::access::note_upstream_request();
    }

    fn request_id(&self, id: &str, success: bool) {
        crate::telemetry::note_upstream_request_id(id);
        if success {
            crate::audit::note_upstream_request_id(id);
        }
    }
}

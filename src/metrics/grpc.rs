//! The gRPC server metrics and the access log, as one tower layer around the router (outside
//! load shedding and caller security, so shed and refused calls count too).
//!
//! Per call: `grpc_server_started_total` when it arrives; when its response body ends (a unary
//! answer, or the end of a stream) `grpc_server_handled_total` with the code from `grpc-status`
//! (trailers, or the headers of a trailers-only answer; CANCELLED when the caller went away
//! first), `grpc_server_handling_seconds`, and one `access` log line (see [`crate::access`]);
//! `grpc_server_msg_sent_total` per message sent and `grpc_server_msg_received_total` per message
//! received, counted from the gRPC length prefixes of the data frames. Names and labels are go-grpc-middleware's (`grpc_service`, `grpc_method`,
//! `grpc_type`, `grpc_code` spelled as grpc-go spells codes).

use super::methods::{self, MethodInfo};
use super::{Histogram, latency_histogram};
use bytes::Buf;
use http_body::Frame;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::{Registry, Unit};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tower::{Layer, Service};

/// grpc-go's names of the gRPC codes, by number (what go-grpc-middleware's `grpc_code` holds).
const CODE_NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];
const CANCELLED: u8 = 1;
const UNKNOWN: u8 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MethodLabels {
    grpc_service: &'static str,
    grpc_method: &'static str,
    grpc_type: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HandledLabels {
    grpc_service: &'static str,
    grpc_method: &'static str,
    grpc_type: &'static str,
    grpc_code: &'static str,
}

/// One method's counters, resolved once so a call touches no family map but `handled`.
#[derive(Debug)]
struct MethodHandles {
    started: Counter,
    msg_sent: Counter,
    msg_received: Counter,
    handling: Histogram,
}

/// The gRPC server families of one gateway.
#[derive(Debug)]
pub struct GrpcMetrics {
    handled: Family<HandledLabels, Counter>,
    methods: Vec<MethodHandles>,
}

impl GrpcMetrics {
    pub(super) fn new(registry: &mut Registry) -> Self {
        let started = Family::<MethodLabels, Counter>::default();
        let handled = Family::<HandledLabels, Counter>::default();
        let handling = Family::<MethodLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let msg_sent = Family::<MethodLabels, Counter>::default();
        let msg_received = Family::<MethodLabels, Counter>::default();
        // Every method appears from the start (at 0), as go-grpc-middleware's InitializeMetrics
        // does, so a rate() over a fresh process has a series to start from.
        let methods = methods::table()
            .methods
            .iter()
            .map(|info| {
                let labels = MethodLabels {
                    grpc_service: info.service,
                    grpc_method: info.method,
                    grpc_type: info.kind,
                };
                MethodHandles {
                    started: started.get_or_create_owned(&labels),
                    msg_sent: msg_sent.get_or_create_owned(&labels),
                    msg_received: msg_received.get_or_create_owned(&labels),
                    handling: handling.get_or_create_owned(&labels),
                }
            })
            .collect();
        registry.register("grpc_server_started", "RPCs started on the server", started);
        registry.register(
            "grpc_server_handled",
            "RPCs completed on the server, whatever their code",
            handled.clone(),
        );
        registry.register_with_unit(
            "grpc_server_handling",
            "Time from an RPC's arrival to its last message or status",
            Unit::Seconds,
            handling,
        );
        registry.register(
            "grpc_server_msg_sent",
            "Messages sent by the server (one per unary answer, one per stream event)",
            msg_sent,
        );
        registry.register(
            "grpc_server_msg_received",
            "Messages received by the server (one per unary or server-streaming request)",
            msg_received,
        );
        Self { handled, methods }
    }

    fn finish(&self, info: &MethodInfo, code: u8, started: Instant) {
        let elapsed = started.elapsed();
        let grpc_code = CODE_NAMES
            .get(usize::from(code))
            .copied()
            .unwrap_or("Unknown");
        self.handled
            .get_or_create(&HandledLabels {
                grpc_service: info.service,
                grpc_method: info.method,
                grpc_type: info.kind,
                grpc_code,
            })
            .inc();
        self.methods[info.index]
            .handling
            .observe(elapsed.as_secs_f64());
    }
}

/// Parses a `grpc-status` value (a decimal code).
fn parse_code(value: &http::HeaderValue) -> u8 {
    value
        .to_str()
        .ok()
        .and_then(|v| v.parse::<u8>().ok())
        .filter(|code| usize::from(*code) < CODE_NAMES.len())
        .unwrap_or(UNKNOWN)
}

/// The layer; see the module documentation.
#[derive(Debug, Clone)]
pub struct GrpcMetricsLayer {
    metrics: Arc<super::Metrics>,
}

impl GrpcMetricsLayer {
    /// A layer recording into `metrics`.
    pub fn new(metrics: Arc<super::Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`GrpcMetricsLayer`] wraps around the router.
#[derive(Debug, Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    metrics: Arc<super::Metrics>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for GrpcMetricsService<S>
where
    S: Service<http::Request<CountedBody<ReqBody>>, Response = http::Response<ResBody>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    ResBody: http_body::Body + Send + 'static,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let started = Instant::now();
        request
            .extensions_mut()
            .insert(crate::arrival::Arrival(started));
        let info = methods::table().lookup(request.uri().path());
        let handles = &self.metrics.grpc.methods[info.index];
        handles.started.inc();
        let received = handles.msg_received.clone();
        let request = request.map(|inner| CountedBody {
            inner,
            received,
            framing: Framing::default(),
        });
        // The caller is resolved by the security layer inside, synchronously in its `call`.
        let (future, notes) = crate::access::in_call_sync(|| self.inner.call(request));
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let (result, notes) = crate::access::in_call(notes, future).await;
            match result {
                Ok(response) => {
                    let code = response.headers().get("grpc-status").map(parse_code);
                    let end = CallEnd {
                        metrics,
                        info,
                        started,
                        notes,
                    };
                    Ok(response.map(|inner| MeteredBody {
                        inner,
                        end: Some(end),
                        code,
                        framing: Framing::default(),
                    }))
                }
                Err(err) => {
                    CallEnd {
                        metrics,
                        info,
                        started,
                        notes,
                    }
                    .finish(UNKNOWN);
                    Err(err)
                }
            }
        })
    }
}

/// What is recorded when a call ends.
struct CallEnd {
    metrics: Arc<super::Metrics>,
    info: &'static MethodInfo,
    started: Instant,
    notes: crate::access::Notes,
}

impl CallEnd {
    fn finish(self, code: u8) {
        self.metrics.grpc.finish(self.info, code, self.started);
        crate::access::log_call(
            (self.info.name, self.info.kind),
            code,
            self.started.elapsed(),
            &self.notes,
        );
    }
}

/// Counts gRPC messages in a byte stream: each is a 5-byte prefix (flag, big-endian length)
/// and that many bytes, split across data frames anyhow.
#[derive(Debug, Default)]
struct Framing {
    /// Bytes of the current prefix seen (0 while inside a message or between messages).
    prefix_seen: u8,
    length: u32,
    /// Bytes of the current message still to skip.
    remaining: u64,
}

impl Framing {
    /// Messages that start in `chunk`.
    /// The messages that end in `frame` (0 for trailers): what both bodies count.
    fn count<D: Buf>(&mut self, frame: &Frame<D>) -> u64 {
        frame.data_ref().map_or(0, |data| self.feed(data.chunk()))
    }

    fn feed(&mut self, mut chunk: &[u8]) -> u64 {
        let mut messages = 0;
        while !chunk.is_empty() {
            if self.remaining > 0 {
                let skip = self.remaining.min(chunk.len() as u64);
                chunk = &chunk[skip as usize..];
                self.remaining -= skip;
                continue;
            }
            if self.prefix_seen > 0 {
                self.length = (self.length << 8) | u32::from(chunk[0]);
            }
            chunk = &chunk[1..];
            self.prefix_seen += 1;
            if self.prefix_seen == 5 {
                messages += 1;
                self.remaining = u64::from(self.length);
                self.prefix_seen = 0;
                self.length = 0;
            }
        }
        messages
    }
}

pin_project_lite::pin_project! {
    /// A response body that records the call when it ends, or when it is dropped before (the
    /// caller went away: CANCELLED).
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        end: Option<CallEnd>,
        // From the headers of a trailers-only answer.
        code: Option<u8>,
        framing: Framing,
    }

    impl<B> PinnedDrop for MeteredBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(end) = this.end.take() {
                end.finish(this.code.unwrap_or(CANCELLED));
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A request body that counts the messages it carries into `grpc_server_msg_received_total`.
    pub struct CountedBody<B> {
        #[pin]
        inner: B,
        received: Counter,
        framing: Framing,
    }
}

impl<B: http_body::Body> http_body::Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            let messages = this.framing.count(frame);
            if messages > 0 {
                this.received.inc_by(messages);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<B: http_body::Body> http_body::Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let messages = this.framing.count(frame);
                if messages > 0
                    && let Some(end) = this.end.as_ref()
                {
                    end.metrics.grpc.methods[end.info.index]
                        .msg_sent
                        .inc_by(messages);
                }
                if let Some(code) = frame
                    .trailers_ref()
                    .and_then(|trailers| trailers.get("grpc-status"))
                {
                    *this.code = Some(parse_code(code));
                }
            }
            // The end, or a body that failed: no status beyond what was seen is coming.
            Poll::Ready(None | Some(Err(_))) => {
                if let Some(end) = this.end.take() {
                    end.finish(this.code.unwrap_or(UNKNOWN));
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_counted_across_frames() {
        let mut framing = Framing::default();
        // Two messages (3 and 0 bytes) in one chunk, then one split inside its prefix and body.
        assert_eq!(framing.feed(&[0, 0, 0, 0, 3, 9, 9, 9, 0, 0, 0, 0, 0]), 2);
        assert_eq!(framing.feed(&[0, 0, 0]), 0);
        assert_eq!(framing.feed(&[0, 2, 7]), 1);
        assert_eq!(framing.feed(&[7, 0, 0, 0, 0, 0]), 1);
        assert_eq!(framing.remaining, 0);
    }
}

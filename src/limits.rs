//! Load shedding: a cap on calls in flight across all connections. A call beyond the cap is
//! answered at once with RESOURCE_EXHAUSTED (with RetryInfo) instead of queuing without bound,
//! so an overloaded gateway stays responsive and callers back off. Health checks are exempt, so
//! the mesh can still see the instance while it sheds.
//!
//! The same layer bounds every request message, on every service (health and reflection
//! included), at [`MAX_REQUEST_MESSAGE_BYTES`]: it reads each message's length prefix as the
//! request body arrives ([`BoundedMessages`]) and refuses a message declared larger before any
//! of its bytes are buffered, let alone decoded. It also corrects one code: tonic refuses a
//! request message over `--max-message-bytes` with OUT_OF_RANGE, where gRPC's status-code table
//! says RESOURCE_EXHAUSTED ("sent or received message was larger than configured limit").

use crate::error::GatewayError;
use crate::metrics::scrape;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use tokio::sync::Semaphore;
use tower::{Layer, Service};

/// The most bytes of request headers (gRPC metadata, names and values) a call may carry; more
/// is refused by HTTP/2 before the call (HTTP 431).
pub const MAX_REQUEST_HEADER_BYTES: u32 = 16 * 1024;

/// The largest request message any service takes, in bytes, however large
/// `--max-message-bytes` (which bounds responses too) is set; a smaller `--max-message-bytes`
/// still applies. The largest legitimate request is a CreateCashIn with every field at its
/// bound, 50 metadata entries of 40 + 500 characters and 50 developer fees included: about
/// 125 KiB when every character takes 4 bytes in UTF-8 (`validate`'s tests build it). Every other request is under
/// 1 KiB. Compression is not accepted, so the bytes on the wire are the bytes decoded.
pub const MAX_REQUEST_MESSAGE_BYTES: usize = 128 * 1024;

/// The length of a gRPC message's prefix: a compression flag and a 4-byte big-endian length.
const PREFIX_BYTES: usize = 5;

/// Sheds calls beyond `max_in_flight`.
#[derive(Clone, Debug)]
pub struct LoadShedLayer {
    permits: Arc<Semaphore>,
    max_in_flight: usize,
    /// Calls shed since start (for the metrics).
    shed: Arc<AtomicU64>,
}

impl LoadShedLayer {
    /// A layer admitting at most `max_in_flight` calls at once.
    pub fn new(max_in_flight: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            shed: Arc::default(),
        }
    }

    /// Calls holding a slot now.
    pub fn in_flight(&self) -> usize {
        self.max_in_flight
            .saturating_sub(self.permits.available_permits())
    }

    /// Calls shed since start.
    pub fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    /// Registers the layer's metrics (calls in flight, calls shed) with `registry`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(ShedMetrics(self.clone())));
    }
}

/// Reads the layer's slots and count at each scrape.
#[derive(Debug)]
struct ShedMetrics(LoadShedLayer);

impl Collector for ShedMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> scrape::Encoded {
        scrape::gauge(
            &mut encoder,
            "oms_gateway_calls_in_flight",
            "Calls holding a slot under --max-concurrent-calls (health checks are not counted).",
            i64::try_from(self.0.in_flight()).unwrap_or(i64::MAX),
        )?;
        scrape::counter(
            &mut encoder,
            "oms_gateway_shed",
            "Calls shed with RESOURCE_EXHAUSTED at --max-concurrent-calls.",
            self.0.shed(),
        )
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;
    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            inner,
            permits: self.permits.clone(),
            max_in_flight: self.max_in_flight,
            shed: self.shed.clone(),
        }
    }
}

/// The service [`LoadShedLayer`] wraps around the gRPC router.
#[derive(Clone, Debug)]
pub struct LoadShed<S> {
    inner: S,
    permits: Arc<Semaphore>,
    max_in_flight: usize,
    shed: Arc<AtomicU64>,
}

/// Replaces tonic's trailers-only OUT_OF_RANGE for an oversize message with the gateway's
/// RESOURCE_EXHAUSTED (reason MESSAGE_TOO_LARGE), keeping tonic's message.
fn oversize_is_resource_exhausted<B: Default>(response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers();
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .filter(|m| {
            m.contains("message%20length%20too%20large") || m.contains("message length too large")
        });
    match message {
        Some(message) if headers.get("grpc-status").is_some_and(|s| s == "11") => {
            let message = percent_decode(message);
            tonic::Status::from(GatewayError::MessageTooLarge(message)).into_http()
        }
        _ => response,
    }
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2); decodes `%XX` escapes.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(Some(hi)), Some(Some(lo))) = (
                bytes.get(i + 1).map(|b| hex(*b)),
                bytes.get(i + 2).map(|b| hex(*b)),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for LoadShed<S>
where
    S: Service<http::Request<BoundedMessages<ReqBody>>, Response = http::Response<ResBody>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let request = request.map(BoundedMessages::new);
        if request
            .uri()
            .path()
            .starts_with(crate::proto::HEALTH_PATH_PREFIX)
        {
            return Box::pin(self.inner.call(request));
        }
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let call = self.inner.call(request);
                Box::pin(async move {
                    let response = call.await.map(oversize_is_resource_exhausted);
                    drop(permit);
                    response
                })
            }
            Err(_) => {
                self.shed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    max_in_flight = self.max_in_flight,
                    "shedding a call: at the concurrency limit"
                );
                let status = tonic::Status::from(GatewayError::Overloaded {
                    max_in_flight: self.max_in_flight,
                });
                let response = status.into_http();
                Box::pin(async move { Ok(response) })
            }
        }
    }
}

pin_project! {
    /// A request body whose gRPC messages are held to [`MAX_REQUEST_MESSAGE_BYTES`]: each
    /// message's length prefix is read as it passes, and a message declared larger ends the body
    /// with the gateway's RESOURCE_EXHAUSTED (reason MESSAGE_TOO_LARGE), which tonic answers
    /// with, before the message's bytes are read. Costs a few comparisons per DATA frame.
    pub struct BoundedMessages<B> {
        #[pin]
        inner: B,
        // The prefix of the next message, as far as it has arrived.
        prefix: [u8; PREFIX_BYTES],
        prefix_len: usize,
        // Bytes of the current message still to pass.
        remaining: u64,
        refused: bool,
    }
}

// === impl BoundedMessages ===

impl<B> BoundedMessages<B> {
    fn new(inner: B) -> Self {
        Self {
            inner,
            prefix: [0; PREFIX_BYTES],
            prefix_len: 0,
            remaining: 0,
            refused: false,
        }
    }
}

/// Reads the message prefixes in `data`, the next bytes of a request body; `Err` with the
/// declared length of the first message over the bound.
pub(crate) fn check_prefixes(
    mut data: &[u8],
    prefix: &mut [u8; PREFIX_BYTES],
    prefix_len: &mut usize,
    remaining: &mut u64,
) -> Result<(), u64> {
    while !data.is_empty() {
        if *remaining > 0 {
            let skip = usize::try_from(*remaining).map_or(data.len(), |r| r.min(data.len()));
            data = &data[skip..];
            *remaining -= skip as u64;
            continue;
        }
        let take = (PREFIX_BYTES - *prefix_len).min(data.len());
        prefix[*prefix_len..*prefix_len + take].copy_from_slice(&data[..take]);
        *prefix_len += take;
        data = &data[take..];
        if *prefix_len == PREFIX_BYTES {
            *prefix_len = 0;
            let declared = u64::from(u32::from_be_bytes([
                prefix[1], prefix[2], prefix[3], prefix[4],
            ]));
            if declared > MAX_REQUEST_MESSAGE_BYTES as u64 {
                return Err(declared);
            }
            *remaining = declared;
        }
    }
    Ok(())
}

impl<B> Body for BoundedMessages<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<tower::BoxError>,
{
    type Data = Bytes;
    type Error = tower::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if *this.refused {
            return Poll::Ready(None);
        }
        let frame = match ready!(this.inner.poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(err)) => return Poll::Ready(Some(Err(err.into()))),
            None => return Poll::Ready(None),
        };
        if let Some(data) = frame.data_ref()
            && let Err(declared) =
                check_prefixes(data, this.prefix, this.prefix_len, this.remaining)
        {
            *this.refused = true;
            let status = tonic::Status::from(GatewayError::MessageTooLarge(format!(
                "the request message is {declared} bytes, over the gateway's limit of \
                 {MAX_REQUEST_MESSAGE_BYTES} bytes per request message"
            )));
            return Poll::Ready(Some(Err(Box::new(status))));
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.refused || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The prefixes `chunks` pass, one chunk at a time: `Err` with the first declared length
    /// over the bound.
    fn check(chunks: &[&[u8]]) -> Result<(), u64> {
        let (mut prefix, mut prefix_len, mut remaining) = ([0; PREFIX_BYTES], 0, 0);
        for chunk in chunks {
            check_prefixes(chunk, &mut prefix, &mut prefix_len, &mut remaining)?;
        }
        Ok(())
    }

    fn framed(len: u32) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&len.to_be_bytes());
        out
    }

    #[test]
    fn prefixes_are_read_across_chunks_and_messages() {
        let limit = MAX_REQUEST_MESSAGE_BYTES as u32;
        let mut two = framed(3);
        two.extend_from_slice(b"abc");
        two.extend(framed(limit));
        assert_eq!(check(&[&two]), Ok(()));
        let mut over = framed(2);
        over.extend_from_slice(b"ab");
        over.extend(framed(limit + 1));
        // Split inside the second prefix: still seen.
        assert_eq!(check(&[&over[..9], &over[9..]]), Err(u64::from(limit) + 1));
        // The message's own bytes are never read as a prefix.
        let mut body = framed(8);
        body.extend_from_slice(&[0xff; 8]);
        assert_eq!(check(&[&body[..6], &body[6..]]), Ok(()));
        assert_eq!(check(&[&framed(u32::MAX)]), Err(u64::from(u32::MAX)));
    }
}

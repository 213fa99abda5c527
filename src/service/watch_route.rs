//! CashInService as the server registers it: the generated service for the unary RPCs, and the
//! two watch RPCs served here (`build.rs` leaves them out of the generated trait), so their
//! events go out as the bytes the watch hub encoded once for every stream (see `watch::wire`)
//! rather than as a `CashInEvent` built and encoded per stream. Same path, same request decoding
//! and size limits, same messages: a client cannot tell, and every layer around the router
//! (security, shedding) still applies.
//!
//! tonic's [`Grpc`] decodes the request (with [`EventCodec`]'s INVALID_ARGUMENT for a malformed
//! one), calls the handler and writes the response headers, or the trailers-only answer of an
//! error. The body of a stream that opened is then [`EventBody`]: each event's framed bytes are
//! one DATA frame, sent as they are, with no per-stream encode buffer (tonic's would copy every
//! event into a buffer of the stream's own first, and keep that buffer for the stream's life),
//! and the stream's end is its `grpc-status` trailers.

use super::cash_in::CashIns;
use crate::codec::{EntryBounds, RequestDecoder};
use crate::error::GatewayError;
use crate::proto::v1::{self as pb, cash_in_service_server::CashInServiceServer};
use crate::watch::stream::EventStream;
use crate::watch::wire::Encoded;
use bytes::{BufMut, Bytes};
use futures_util::future::BoxFuture;
use futures_util::stream;
use http_body::Frame;
use prost::Message;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use tonic::body::Body;
use tonic::codec::{BufferSettings, EncodeBuf, Encoder};
use tonic::codegen::{Body as HttpBody, StdError};
use tonic::server::{Grpc, NamedService, ServerStreamingService};
use tonic::{Request, Response, Status};

const WATCH_CASH_IN: &str = "/polygon.oms.v1.CashInService/WatchCashIn";
const WATCH_CASH_INS: &str = "/polygon.oms.v1.CashInService/WatchCashIns";

/// The CashInService router entry.
#[derive(Clone)]
pub struct CashInRoutes {
    generated: CashInServiceServer<CashIns>,
    cash_ins: Arc<CashIns>,
    max_message: usize,
}

impl CashInRoutes {
    /// Serves `cash_ins`, with messages up to `max_message` bytes either way.
    pub fn new(cash_ins: CashIns, max_message: usize) -> Self {
        Self {
            generated: CashInServiceServer::new(cash_ins.clone())
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_message),
            cash_ins: Arc::new(cash_ins),
            max_message,
        }
    }
}

impl NamedService for CashInRoutes {
    const NAME: &'static str = <CashInServiceServer<CashIns> as NamedService>::NAME;
}

impl<B> tower::Service<http::Request<B>> for CashInRoutes
where
    B: HttpBody + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let max = self.max_message;
        let limit = Some(max);
        let cash_ins = self.cash_ins.clone();
        match request.uri().path() {
            WATCH_CASH_IN => Box::pin(async move {
                let mut grpc = Grpc::new(EventCodec::<pb::WatchCashInRequest>::default())
                    .apply_max_message_size_config(limit, limit);
                let opened = Opened::default();
                let service = WatchOne(cash_ins, opened.clone());
                let response = grpc.server_streaming(service, request).await;
                Ok(opened.into_body(response, max))
            }),
            WATCH_CASH_INS => Box::pin(async move {
                let mut grpc = Grpc::new(EventCodec::<pb::WatchCashInsRequest>::default())
                    .apply_max_message_size_config(limit, limit);
                let opened = Opened::default();
                let service = WatchCustomer(cash_ins, opened.clone());
                let response = grpc.server_streaming(service, request).await;
                Ok(opened.into_body(response, max))
            }),
            _ => self.generated.call(request),
        }
    }
}

/// Where a watch handler leaves the stream it opened, for [`Opened::into_body`]; tonic is given
/// an empty stream in its place.
#[derive(Clone, Default)]
struct Opened(Arc<Mutex<Option<EventStream>>>);

/// What tonic is handed instead of the events.
type NoEvents = stream::Empty<Result<Encoded, Status>>;

impl Opened {
    /// The handler's answer for tonic: its metadata, with the stream kept here.
    fn keep(
        &self,
        answer: Result<Response<EventStream>, Status>,
    ) -> Result<Response<NoEvents>, Status> {
        let response = answer?;
        Ok(response.map(|events| {
            *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(events);
            stream::empty()
        }))
    }

    /// tonic's response, its body replaced by the opened stream's [`EventBody`]. Without a
    /// stream (the request did not decode, or the handler refused it) it is tonic's own answer.
    fn into_body(self, response: http::Response<Body>, max_message: usize) -> http::Response<Body> {
        let opened = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        match opened {
            Some(events) => response.map(|_| Body::new(EventBody::new(events, max_message))),
            None => response,
        }
    }
}

/// A watch stream's HTTP/2 body: each event's framed bytes as a DATA frame, then the closing
/// status as trailers (`grpc-status: 0` when the stream simply ends).
pub struct EventBody {
    events: EventStream,
    max_message: usize,
    ended: bool,
}

impl EventBody {
    fn new(events: EventStream, max_message: usize) -> Self {
        Self {
            events,
            max_message,
            ended: false,
        }
    }
}

impl HttpBody for EventBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let mut trailers = http::HeaderMap::new();
        let status = match ready!(self.events.as_mut().poll_next(cx)) {
            Some(Ok(event)) if event.message().len() <= self.max_message => {
                return Poll::Ready(Some(Ok(Frame::data(event.framed()))));
            }
            // As gRPC's own servers answer a message over the send limit: RESOURCE_EXHAUSTED.
            Some(Ok(event)) => Status::from(GatewayError::MessageTooLarge(format!(
                "the event is {} bytes, over the gateway's message limit of {} bytes",
                event.message().len(),
                self.max_message
            ))),
            Some(Err(status)) => status,
            None => {
                self.ended = true;
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
        };
        self.ended = true;
        Poll::Ready(Some(
            status
                .add_header(&mut trailers)
                .map(|()| Frame::trailers(trailers)),
        ))
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

struct WatchOne(Arc<CashIns>, Opened);

impl ServerStreamingService<pb::WatchCashInRequest> for WatchOne {
    type Response = Encoded;
    type ResponseStream = NoEvents;
    type Future = BoxFuture<'static, Result<Response<NoEvents>, Status>>;

    fn call(&mut self, request: Request<pb::WatchCashInRequest>) -> Self::Future {
        let (cash_ins, opened) = (self.0.clone(), self.1.clone());
        Box::pin(async move { opened.keep(cash_ins.watch_one(request).await) })
    }
}

struct WatchCustomer(Arc<CashIns>, Opened);

impl ServerStreamingService<pb::WatchCashInsRequest> for WatchCustomer {
    type Response = Encoded;
    type ResponseStream = NoEvents;
    type Future = BoxFuture<'static, Result<Response<NoEvents>, Status>>;

    fn call(&mut self, request: Request<pb::WatchCashInsRequest>) -> Self::Future {
        let (cash_ins, opened) = (self.0.clone(), self.1.clone());
        Box::pin(async move { opened.keep(cash_ins.watch_customer(request).await) })
    }
}

/// The watch RPCs' codec: requests decoded as by [`Codec`], events written as the bytes they
/// were encoded to.
#[derive(Debug)]
pub struct EventCodec<U>(std::marker::PhantomData<fn() -> U>);

impl<U> Default for EventCodec<U> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

/// tonic's encode buffer for a watch call: none up front (it would grow for an event; the
/// events are sent by the watch route's own body, so it holds none).
const EVENT_BUFFER: usize = 0;
/// tonic's default: how much a buffer may hold before it is sent.
const YIELD_THRESHOLD: usize = 32 * 1024;

impl<U> tonic::codec::Codec for EventCodec<U>
where
    U: Message + Default + EntryBounds + Send + 'static,
{
    type Encode = Encoded;
    type Decode = U;
    type Encoder = EventEncoder;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        EventEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder::default()
    }
}

/// Writes an already encoded event.
#[derive(Debug)]
pub struct EventEncoder;

impl Encoder for EventEncoder {
    type Item = Encoded;
    type Error = Status;

    fn encode(&mut self, item: Encoded, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(item.message());
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(EVENT_BUFFER, YIELD_THRESHOLD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use prost::Message;

    fn event(kind: pb::CashInEventType, id: &str) -> Encoded {
        Encoded::new(&pb::CashInEvent {
            r#type: kind as i32,
            cash_in: Some(pb::CashIn {
                id: id.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn body(items: Vec<Result<Encoded, Status>>, max_message: usize) -> EventBody {
        EventBody::new(Box::pin(stream::iter(items)), max_message)
    }

    /// Every frame until the body ends.
    async fn frames(mut body: EventBody) -> (Vec<Frame<Bytes>>, bool) {
        let mut frames = Vec::new();
        while let Some(frame) = body.frame().await {
            frames.push(frame.expect("no body error"));
        }
        (frames, body.is_end_stream())
    }

    /// A DATA frame's gRPC message: uncompressed, its length as prefixed, decoded.
    fn message(frame: &Frame<Bytes>) -> pb::CashInEvent {
        let data = frame.data_ref().expect("a DATA frame");
        assert_eq!(data[0], 0, "not compressed");
        let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
        assert_eq!(len, data.len() - 5);
        pb::CashInEvent::decode(&data[5..]).unwrap()
    }

    #[tokio::test]
    async fn events_go_out_as_one_grpc_message_per_data_frame_then_grpc_status_0() {
        let (initial, changed) = (
            event(pb::CashInEventType::Initial, "ci_1"),
            event(pb::CashInEventType::Changed, "ci_1"),
        );
        let (frames, ended) = frames(body(vec![Ok(initial.clone()), Ok(changed)], 4096)).await;
        assert_eq!(frames.len(), 3, "{frames:?}");
        assert_eq!(
            message(&frames[0]).r#type,
            pb::CashInEventType::Initial as i32
        );
        assert_eq!(
            message(&frames[1]).r#type,
            pb::CashInEventType::Changed as i32
        );
        assert_eq!(
            frames[0].data_ref().unwrap().as_ptr(),
            initial.framed().as_ptr(),
            "the shared bytes themselves, not a copy"
        );
        let trailers = frames[2].trailers_ref().expect("trailers last");
        assert_eq!(trailers["grpc-status"], "0");
        assert!(trailers.get("grpc-message").is_none());
        assert!(ended);
    }

    #[tokio::test]
    async fn a_stream_that_ends_with_an_error_carries_it_in_the_trailers() {
        let status = Status::from(GatewayError::Unavailable(
            "the gateway is shutting down; reconnect to resume watching".into(),
        ));
        let items = vec![Ok(event(pb::CashInEventType::Initial, "ci_1")), Err(status)];
        let (frames, ended) = frames(body(items, 4096)).await;
        assert_eq!(frames.len(), 2);
        let trailers = frames[1].trailers_ref().unwrap();
        assert_eq!(
            trailers["grpc-status"],
            (tonic::Code::Unavailable as i32).to_string()
        );
        let message = trailers["grpc-message"].to_str().unwrap();
        assert!(message.contains("shutting%20down"), "{message}");
        assert!(
            trailers.contains_key("grpc-status-details-bin"),
            "the ErrorInfo and retry hint go too"
        );
        assert!(ended);
    }

    #[tokio::test]
    async fn an_event_over_the_message_limit_ends_the_stream_with_resource_exhausted() {
        let big = event(pb::CashInEventType::Initial, &"x".repeat(200));
        let after = event(pb::CashInEventType::Changed, "ci_1");
        let (frames, _) = frames(body(vec![Ok(big), Ok(after)], 100)).await;
        assert_eq!(frames.len(), 1, "nothing is sent after it: {frames:?}");
        let trailers = frames[0].trailers_ref().unwrap();
        assert_eq!(
            trailers["grpc-status"],
            (tonic::Code::ResourceExhausted as i32).to_string()
        );
        let message = trailers["grpc-message"].to_str().unwrap();
        assert!(message.contains("limit%20of%20100%20bytes"), "{message}");
    }
}

//! CashInService as the server registers it: the generated service, except that the two watch
//! RPCs are served here with [`EventCodec`], so their events go out as the bytes the watch hub
//! encoded once for every stream (see `watch::wire`) rather than as a `CashInEvent` built and
//! encoded per stream. Same path, same request decoding and size limits, same wire bytes: a
//! client cannot tell, and every layer around the router (security, shedding) still applies.

use super::cash_in::CashIns;
use crate::codec::EventCodec;
use crate::proto::v1::{self as pb, cash_in_service_server::CashInServiceServer};
use crate::watch::stream::EventStream;
use crate::watch::wire::Encoded;
use futures_util::future::BoxFuture;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::body::Body;
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
        let limit = Some(self.max_message);
        let cash_ins = self.cash_ins.clone();
        match request.uri().path() {
            WATCH_CASH_IN => Box::pin(async move {
                let mut grpc = Grpc::new(EventCodec::<pb::WatchCashInRequest>::default())
                    .apply_max_message_size_config(limit, limit);
                Ok(grpc.server_streaming(WatchOne(cash_ins), request).await)
            }),
            WATCH_CASH_INS => Box::pin(async move {
                let mut grpc = Grpc::new(EventCodec::<pb::WatchCashInsRequest>::default())
                    .apply_max_message_size_config(limit, limit);
                Ok(grpc
                    .server_streaming(WatchCustomer(cash_ins), request)
                    .await)
            }),
            _ => self.generated.call(request),
        }
    }
}

struct WatchOne(Arc<CashIns>);

impl ServerStreamingService<pb::WatchCashInRequest> for WatchOne {
    type Response = Encoded;
    type ResponseStream = EventStream;
    type Future = BoxFuture<'static, Result<Response<EventStream>, Status>>;

    fn call(&mut self, request: Request<pb::WatchCashInRequest>) -> Self::Future {
        let cash_ins = self.0.clone();
        Box::pin(async move { cash_ins.watch_one(request).await })
    }
}

struct WatchCustomer(Arc<CashIns>);

impl ServerStreamingService<pb::WatchCashInsRequest> for WatchCustomer {
    type Response = Encoded;
    type ResponseStream = EventStream;
    type Future = BoxFuture<'static, Result<Response<EventStream>, Status>>;

    fn call(&mut self, request: Request<pb::WatchCashInsRequest>) -> Self::Future {
        let cash_ins = self.0.clone();
        Box::pin(async move { cash_ins.watch_customer(request).await })
    }
}

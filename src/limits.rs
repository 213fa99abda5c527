//! Load shedding: a cap on calls in flight across all connections. A call beyond the cap is
//! answered at once with RESOURCE_EXHAUSTED (with RetryInfo) instead of queuing without bound,
//! so an overloaded gateway stays responsive and callers back off. Health checks are exempt, so
//! the mesh can still see the instance while it sheds.
//!
//! The same layer corrects one code: tonic refuses a request message over the size limit with
//! OUT_OF_RANGE, where gRPC's status-code table says RESOURCE_EXHAUSTED ("sent or received
//! message was larger than configured limit").

use crate::error::GatewayError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use tokio::sync::Semaphore;
use tower::{Layer, Service};

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
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Send + 'static,
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

//! The HTTP client every OMS request goes out on: hyper's pooled client, HTTP/1.1 (and HTTP/2
//! where TLS negotiates it by ALPN), over rustls on ring with the webpki roots plus
//! [`Settings::ca_file`], TCP_NODELAY, the connect timeout and idle-pool settings of
//! [`Settings`]. It follows no redirect and adds no header: a request goes out exactly as
//! `send.rs` and `auth.rs` built it.
//!
//! This is hyper directly rather than reqwest: for a GetCashIn, reqwest's request builder, its
//! redirect layer (which parses every request's URL again, redirects off or not) and its
//! `Url` → `Uri` round trip cost ≈ 20k instructions, about a tenth of the gateway's whole call.

use crate::{Settings, TraceHeaders};
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::CertificateDer;
use std::sync::Arc;

/// What a request carries.
pub(crate) type RequestBody = Full<Bytes>;
/// What comes back.
pub(crate) type Response = http::Response<hyper::body::Incoming>;
/// A request that got no answer (connect failure, reset, TLS).
pub(crate) type SendError = hyper_util::client::legacy::Error;

/// The gateway's `User-Agent`: this crate's version is the gateway's (one workspace version).
pub(crate) const USER_AGENT: HeaderValue =
    HeaderValue::from_static(concat!("oms-gateway/", env!("CARGO_PKG_VERSION")));

/// The `tracestate` header, not among `http`'s constants.
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
/// The `traceparent` header.
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The `Idempotency-Key` header (HTTP/2 and hyper write names in lower case; HTTP/1.1 names
/// are case-insensitive).
pub(crate) const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The pooled client. Cheap to clone (the pool is shared).
#[derive(Clone, Debug)]
pub(crate) struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, RequestBody>,
}

impl HttpClient {
    /// A client that speaks only https when `https_only`, trusting the webpki roots and
    /// `extra_roots`, keeping up to `max_idle` idle connections per host (0: a new connection
    /// for every request).
    pub(crate) fn new(
        https_only: bool,
        config: &Settings,
        extra_roots: &[CertificateDer<'static>],
        max_idle: usize,
    ) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for root in extra_roots {
            roots
                .add(root.clone())
                .map_err(|e| format!("cannot trust an upstream CA certificate: {e}"))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot configure TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(config.connect_timeout));
        // The https connector decides the scheme; this only dials.
        tcp.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls);
        let https = if https_only {
            https.https_only()
        } else {
            https.https_or_http()
        };
        let connector = https.enable_http1().enable_http2().wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(max_idle)
            .build(connector);
        Ok(Self { client })
    }

    /// Sends `request` and returns the answer's head (the body streams from it).
    pub(crate) async fn send(
        &self,
        request: http::Request<RequestBody>,
    ) -> Result<Response, SendError> {
        self.client.request(request).await
    }
}

/// `traceparent`, and `tracestate` when there is one, of `trace` (a value that cannot travel as
/// a header is left out: the request goes without it rather than not at all).
pub(crate) fn insert_trace_headers(headers: &mut HeaderMap, trace: Option<&TraceHeaders>) {
    let Some(trace) = trace else {
        return;
    };
    if let Ok(value) = HeaderValue::try_from(&trace.traceparent) {
        headers.insert(TRACEPARENT, value);
    }
    if let Some(value) = trace
        .tracestate
        .as_ref()
        .and_then(|state| HeaderValue::try_from(state).ok())
    {
        headers.insert(TRACESTATE, value);
    }
}

/// The certificates of a PEM bundle ([`Settings::ca_file`]); none is an error.
pub(crate) fn pem_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let roots = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("holds no PEM certificates: {e}"))?;
    if roots.is_empty() {
        return Err("holds no PEM certificates".into());
    }
    Ok(roots)
}

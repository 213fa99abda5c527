//! The OMS REST client of oms-gateway: authenticated, idempotent, deadline-bound calls with
//! retries, and HTTP failures decoded into [`UpstreamError`].
//!
//! Every call runs inside the caller's deadline (retries, backoff and token exchange included);
//! dropping the future (a cancelled gRPC call) drops the HTTP request. A keyed write sends the
//! same `Idempotency-Key` on every attempt. A 401 earns one fresh token exchange and one more
//! attempt; a second 401 is [`UpstreamError::AuthFailed`]. Reads and keyed writes are retried on
//! connect failures, resets, timeouts, 429, 502, 503 and 504 with full-jitter exponential backoff,
//! honouring `Retry-After`, never past the deadline.
//!
//! A crate of its own, depending on no gRPC, tonic or prost crate and on nothing of the gateway:
//! it knows nothing of protobuf, and the crate edge keeps it so. The application gives it its
//! [`Settings`], its [`metrics::UpstreamMetrics`] and a [`CallContext`] (the trace headers of
//! the call in progress, and what it notes of each request); it answers in REST models
//! ([`model`]) and [`UpstreamFailure`]s, whose gRPC status the application decides.

pub mod auth;
pub mod breaker;
pub mod budget;
mod context;
mod decode;
pub mod drift;
mod endpoints;
mod error;
mod failure;
pub mod metrics;
pub mod model;
mod observe;
pub mod redact;
mod secret;
mod send;
mod settings;
mod transport;

pub use context::{CallContext, TraceHeaders};
pub use endpoints::ops;
pub use error::{HttpFailure, UpstreamError, UpstreamFailure};
pub use secret::Secret;
pub use settings::Settings;

use auth::{Credentials, TokenSource};
use breaker::{CircuitBreaker, CircuitState};
use budget::RetryBudget;
use metrics::UpstreamMetrics;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::time::Instant;
use transport::HttpClient;
use url::Url;

/// Whether the gateway can currently talk to OMS with its credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamHealth {
    /// No token exchange has finished yet.
    Starting,
    /// The last exchange succeeded.
    Serving,
    /// The last exchange could not reach OMS or OMS failed.
    Unreachable,
    /// OMS rejected the gateway's credentials.
    AuthFailed,
}

/// Query of `GET /cash-ins`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListCashInsQuery {
    /// `customer`.
    pub customer: Option<String>,
    /// `status`, in OMS's spelling (`pending`, ...).
    pub status: Option<String>,
    /// `createdAfter`, RFC 3339.
    pub created_after: Option<String>,
    /// `createdBefore`, RFC 3339.
    pub created_before: Option<String>,
    /// `limit`, 1 to 100.
    pub limit: u32,
    /// `startingAfter`, a cursor from a previous page.
    pub starting_after: Option<String>,
}

/// Query of `GET /cash-locations`.
#[derive(Debug, Clone, PartialEq)]
pub struct ListCashLocationsQuery {
    /// `provider`.
    pub provider: String,
    /// `latitude`.
    pub latitude: f64,
    /// `longitude`.
    pub longitude: f64,
    /// `flow`.
    pub flow: Option<String>,
}

/// The idempotency key of a write.
#[derive(Debug, Clone, Copy)]
pub struct WriteKey<'a> {
    /// The `Idempotency-Key` header.
    pub key: &'a str,
    /// An earlier call with this key was abandoned by its caller and may still hold the key
    /// upstream: a 409 is then most likely that request, and waiting gets its outcome.
    pub resumes: bool,
}

impl<'a> From<&'a str> for WriteKey<'a> {
    fn from(key: &'a str) -> Self {
        Self {
            key,
            resumes: false,
        }
    }
}

/// The OMS REST client. Cheap to clone.
#[derive(Clone, Debug)]
pub struct OmsClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: HttpClient,
    /// Sends each request on a new connection (no pooling): the retry after a 421.
    fresh_http: HttpClient,
    base: Url,
    auth: Arc<TokenSource>,
    config: Settings,
    health: watch::Receiver<UpstreamHealth>,
    budget: RetryBudget,
    breaker: Arc<CircuitBreaker>,
    metrics: Arc<UpstreamMetrics>,
    context: Arc<dyn CallContext>,
}

// === impl OmsClient ===

impl OmsClient {
    /// A client for the OMS at `base_url` (e.g. `https://sandbox-api.polygon.technology/v0.9`),
    /// recording into `metrics`, lending each request what `context` knows of its call.
    pub fn new(
        base_url: &str,
        credentials: Credentials,
        config: Settings,
        metrics: Arc<UpstreamMetrics>,
        context: Arc<dyn CallContext>,
    ) -> Result<Self, String> {
        let shown = redact::url(base_url);
        let mut base = Url::parse(base_url.trim_end_matches('/'))
            .map_err(|e| format!("invalid OMS base URL `{shown}`: {e}"))?;
        if base.cannot_be_a_base() {
            return Err(format!("invalid OMS base URL `{shown}`"));
        }
        // OMS authenticates the API key and secret, never URL user information: dropped here, so
        // no request URL, error or Debug print can carry a password written into the URL.
        let _ = base.set_password(None);
        let _ = base.set_username("");
        // Path segments are appended to the base, so make sure it ends in exactly one slash.
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        check_cleartext(&base)?;
        let mut roots = Vec::new();
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read the upstream CA file {}: {e}", path.display()))?;
            roots =
                transport::pem_certificates(&pem).map_err(|e| format!("{} {e}", path.display()))?;
        }
        // Never downgrade from https. No redirect is followed: a 3xx from OMS is an error to
        // report, not a hop to take with a payment request in hand.
        let https_only = base.scheme() == "https";
        let http = HttpClient::new(https_only, &config, &roots, 64)?;
        // For the retry of a 421 Misdirected Request: a client that keeps no idle connection,
        // so its request goes out on a new one.
        let fresh_http = HttpClient::new(https_only, &config, &roots, 0)?;
        let breaker = Arc::new(CircuitBreaker::new(
            config.breaker_threshold,
            config.breaker_cooldown,
            config.breaker_max_cooldown,
        ));
        let token_url = base
            .join("auth/token")
            .map_err(|e| format!("invalid OMS base URL: {e}"))?;
        let token_url = ::http::Uri::try_from(token_url.as_str())
            .map_err(|e| format!("invalid OMS base URL: {e}"))?;
        let auth = Arc::new(TokenSource::new(
            http.clone(),
            token_url,
            credentials,
            config.request_timeout,
            breaker.clone(),
            metrics.clone(),
            context.clone(),
        ));
        let health = auth.health();
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                fresh_http,
                base,
                auth,
                budget: RetryBudget::new(config.retry_budget_ratio, config.retry_budget_floor),
                breaker,
                config,
                health,
                metrics,
                context,
            }),
        })
    }

    /// Whether the gateway can currently reach OMS with its credentials.
    pub fn health(&self) -> watch::Receiver<UpstreamHealth> {
        self.inner.health.clone()
    }

    /// The circuit breaker's state: Open while OMS is failing persistently.
    pub fn circuit(&self) -> watch::Receiver<CircuitState> {
        self.inner.breaker.subscribe()
    }

    /// While the circuit is open, probes OMS (`GET /cash-ins?limit=1`) each time the cool-down
    /// ends, so the circuit closes again even when no caller is sending.
    pub async fn probe_while_open(self) {
        let mut state = self.circuit();
        let mut backoff = self.inner.config.breaker_cooldown;
        loop {
            if *state.borrow_and_update() == CircuitState::Closed && state.changed().await.is_err()
            {
                return;
            }
            let Some(until) = self.inner.breaker.open_until() else {
                continue;
            };
            tokio::time::sleep_until(until).await;
            let query = ListCashInsQuery {
                limit: 1,
                ..ListCashInsQuery::default()
            };
            let deadline = Instant::now() + self.inner.config.request_timeout;
            match self.list_cash_ins(&query, deadline).await {
                Ok(_) => backoff = self.inner.config.breaker_cooldown,
                Err(err) => {
                    // Whatever failed (the probe, its token exchange, or admission because a
                    // caller holds the probe slot), wait longer before the next try, so a
                    // failing OMS is never probed in a loop.
                    tracing::debug!(error = %err, backoff_ms = backoff.as_millis() as u64, "circuit probe failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.inner.config.breaker_max_cooldown);
                }
            }
        }
    }

    /// What OMS has sent that the gateway does not know: the client reports unknown fields
    /// itself; the application reports the enum values it does not map.
    pub fn drift(&self) -> &drift::Drift {
        self.inner.metrics.drift()
    }

    /// The token source, for the background refresher and for counting exchanges.
    pub fn token_source(&self) -> Arc<TokenSource> {
        self.inner.auth.clone()
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }
}

/// Refuses a plain-http base URL unless it names a loopback host: the API secret and bearer
/// tokens would otherwise cross the network in cleartext.
fn check_cleartext(base: &Url) -> Result<(), String> {
    if base.scheme() != "http" {
        return Ok(());
    }
    // An IPv6 host comes bracketed (`[::1]`).
    let host = base.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        return Ok(());
    }
    Err(format!(
        "refusing OMS base URL `{}`: plain http would send the OMS API secret and access tokens \
         in cleartext; use https (with --upstream-ca-file for a private CA), or plain http only to \
         a loopback address (127.0.0.1, ::1, localhost)",
        redact::url(base.as_str())
    ))
}

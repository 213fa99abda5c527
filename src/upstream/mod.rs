//! The OMS REST client: authenticated, idempotent, deadline-bound calls with retries, and HTTP
//! failures decoded into [`UpstreamError`].
//!
//! Every call runs inside the caller's deadline (retries, backoff and token exchange included);
//! dropping the future (a cancelled gRPC call) drops the HTTP request. A keyed write sends the
//! same `Idempotency-Key` on every attempt. A 401 earns one fresh token exchange and one more
//! attempt; a second 401 is [`UpstreamError::AuthFailed`]. Reads and keyed writes are retried on
//! connect failures, resets, timeouts, 429, 502, 503 and 504 with full-jitter exponential backoff,
//! honouring `Retry-After`, never past the deadline. This module knows nothing of protobuf.

pub mod auth;
pub mod breaker;
pub mod budget;
pub mod model;

use crate::config::UpstreamSettings;
use crate::error::{HttpFailure, UpstreamError};
use auth::{Credentials, TokenSource};
use breaker::{Admission, CircuitBreaker, CircuitState};
use budget::RetryBudget;
use model::{CashInDto, CashInPageDto, CashLocationDto, CashLocationListDto, CreateCashInBody};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use std::{sync::Arc, time::Duration};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

/// Answers larger than this are refused as UPSTREAM_BAD_RESPONSE rather than buffered.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(2);

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

/// One REST request, described once and sent as many times as the retry policy allows.
struct Call<'a> {
    operation: &'static str,
    method: Method,
    url: Url,
    body: Option<Vec<u8>>,
    idempotency_key: Option<&'a str>,
    /// See [`WriteKey::resumes`].
    resumes: bool,
    deadline: Instant,
}

/// The OMS REST client. Cheap to clone.
#[derive(Clone, Debug)]
pub struct OmsClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    /// Sends each request on a new connection (no pooling): the retry after a 421.
    fresh_http: reqwest::Client,
    base: Url,
    auth: Arc<TokenSource>,
    config: UpstreamSettings,
    health: watch::Receiver<UpstreamHealth>,
    budget: RetryBudget,
    breaker: Arc<CircuitBreaker>,
}

/// Releases the breaker's half-open probe if the attempt ends without a verdict (cancelled, or
/// cut by the caller's deadline).
struct ProbeGuard<'a> {
    breaker: &'a CircuitBreaker,
    armed: bool,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.breaker.release_probe();
        }
    }
}

// === impl OmsClient ===

impl OmsClient {
    /// A client for the OMS at `base_url` (e.g. `https://sandbox-api.polygon.technology/v0.9`).
    pub fn new(
        base_url: &str,
        credentials: Credentials,
        config: UpstreamSettings,
    ) -> Result<Self, String> {
        let mut base = Url::parse(base_url.trim_end_matches('/'))
            .map_err(|e| format!("invalid OMS base URL `{base_url}`: {e}"))?;
        if base.cannot_be_a_base() {
            return Err(format!("invalid OMS base URL `{base_url}`"));
        }
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
            roots = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("{} holds no PEM certificates: {e}", path.display()))?;
            if roots.is_empty() {
                return Err(format!("{} holds no PEM certificates", path.display()));
            }
        }
        let http = http_client(&base, &config, &roots, 64)?;
        // For the retry of a 421 Misdirected Request: a client that keeps no idle connection,
        // so its request goes out on a new one.
        let fresh_http = http_client(&base, &config, &roots, 0)?;
        let (health_tx, health_rx) = watch::channel(UpstreamHealth::Starting);
        let breaker = Arc::new(CircuitBreaker::new(
            config.breaker_threshold,
            config.breaker_cooldown,
            config.breaker_max_cooldown,
        ));
        let token_url = base
            .join("auth/token")
            .map_err(|e| format!("invalid OMS base URL: {e}"))?;
        let auth = Arc::new(TokenSource::new(
            http.clone(),
            token_url,
            credentials,
            config.request_timeout,
            breaker.clone(),
            health_tx,
        ));
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                fresh_http,
                base,
                auth,
                budget: RetryBudget::new(config.retry_budget_ratio, config.retry_budget_floor),
                breaker,
                config,
                health: health_rx,
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

    /// `POST /cash-ins`.
    pub async fn create_cash_in(
        &self,
        body: &CreateCashInBody,
        idempotency_key: WriteKey<'_>,
        deadline: Instant,
    ) -> Result<CashInDto, UpstreamError> {
        self.post(
            "POST /cash-ins",
            &["cash-ins"],
            Some(body),
            idempotency_key,
            deadline,
        )
        .await
    }

    /// `GET /cash-ins/{id}`.
    pub async fn get_cash_in(
        &self,
        id: &str,
        deadline: Instant,
    ) -> Result<CashInDto, UpstreamError> {
        self.send(Call {
            operation: "GET /cash-ins/{id}",
            method: Method::GET,
            url: self.url(&["cash-ins", id]),
            body: None,
            idempotency_key: None,
            resumes: false,
            deadline,
        })
        .await
    }

    /// `GET /cash-ins`.
    pub async fn list_cash_ins(
        &self,
        query: &ListCashInsQuery,
        deadline: Instant,
    ) -> Result<CashInPageDto, UpstreamError> {
        let mut url = self.url(&["cash-ins"]);
        {
            let mut pairs = url.query_pairs_mut();
            let optional = [
                ("customer", &query.customer),
                ("status", &query.status),
                ("createdAfter", &query.created_after),
                ("createdBefore", &query.created_before),
                ("startingAfter", &query.starting_after),
            ];
            for (name, value) in optional {
                if let Some(value) = value {
                    pairs.append_pair(name, value);
                }
            }
            pairs.append_pair("limit", &query.limit.to_string());
        }
        self.send(Call {
            operation: "GET /cash-ins",
            method: Method::GET,
            url,
            body: None,
            idempotency_key: None,
            resumes: false,
            deadline,
        })
        .await
    }

    /// `POST /cash-ins/{id}/refresh` (no body).
    pub async fn refresh_cash_in(
        &self,
        id: &str,
        idempotency_key: WriteKey<'_>,
        deadline: Instant,
    ) -> Result<CashInDto, UpstreamError> {
        let segments = ["cash-ins", id, "refresh"];
        self.post(
            "POST /cash-ins/{id}/refresh",
            &segments,
            None::<&()>,
            idempotency_key,
            deadline,
        )
        .await
    }

    /// `GET /cash-locations`.
    pub async fn list_cash_locations(
        &self,
        query: &ListCashLocationsQuery,
        deadline: Instant,
    ) -> Result<Vec<CashLocationDto>, UpstreamError> {
        let mut url = self.url(&["cash-locations"]);
        {
            let mut pairs = url.query_pairs_mut();
            pairs.append_pair("provider", &query.provider);
            pairs.append_pair("latitude", &query.latitude.to_string());
            pairs.append_pair("longitude", &query.longitude.to_string());
            if let Some(flow) = &query.flow {
                pairs.append_pair("flow", flow);
            }
        }
        let list: CashLocationListDto = self
            .send(Call {
                operation: "GET /cash-locations",
                method: Method::GET,
                url,
                body: None,
                idempotency_key: None,
                resumes: false,
                deadline,
            })
            .await?;
        Ok(list.into_vec())
    }

    /// A POST with a JSON body (or none) and an idempotency key, for the sandbox endpoints.
    async fn post<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        segments: &[&str],
        body: Option<&impl serde::Serialize>,
        idempotency_key: impl Into<WriteKey<'_>>,
        deadline: Instant,
    ) -> Result<T, UpstreamError> {
        let key = idempotency_key.into();
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| UpstreamError::BadResponse(format!("cannot encode the request: {e}")))?;
        self.send(Call {
            operation,
            method: Method::POST,
            url: self.url(segments),
            body,
            idempotency_key: Some(key.key),
            resumes: key.resumes,
            deadline,
        })
        .await
    }

    /// `POST /cash-ins/simulate/barcode-auth` (OMS sandbox only).
    pub async fn simulate_barcode_auth(
        &self,
        body: &model::BarcodeAuthBody,
        idempotency_key: &str,
        deadline: Instant,
    ) -> Result<model::SimulationResultDto, UpstreamError> {
        let segments = ["cash-ins", "simulate", "barcode-auth"];
        self.post(
            "POST /cash-ins/simulate/barcode-auth",
            &segments,
            Some(body),
            idempotency_key,
            deadline,
        )
        .await
    }

    /// `POST /cash-ins/simulate/auth-commit` (OMS sandbox only).
    pub async fn simulate_auth_commit(
        &self,
        body: &model::AuthCommitBody,
        idempotency_key: &str,
        deadline: Instant,
    ) -> Result<model::SimulationResultDto, UpstreamError> {
        let segments = ["cash-ins", "simulate", "auth-commit"];
        self.post(
            "POST /cash-ins/simulate/auth-commit",
            &segments,
            Some(body),
            idempotency_key,
            deadline,
        )
        .await
    }

    /// `POST /sandbox/cash-ins/{id}/expire` (embedded sandbox only).
    pub async fn sandbox_expire(
        &self,
        id: &str,
        idempotency_key: &str,
        deadline: Instant,
    ) -> Result<CashInDto, UpstreamError> {
        let segments = ["sandbox", "cash-ins", id, "expire"];
        self.post(
            "POST /sandbox/cash-ins/{id}/expire",
            &segments,
            None::<&()>,
            idempotency_key,
            deadline,
        )
        .await
    }

    /// `POST /sandbox/cash-ins/{id}/fail` (embedded sandbox only).
    pub async fn sandbox_fail(
        &self,
        id: &str,
        body: &model::FailBody,
        idempotency_key: &str,
        deadline: Instant,
    ) -> Result<CashInDto, UpstreamError> {
        let segments = ["sandbox", "cash-ins", id, "fail"];
        self.post(
            "POST /sandbox/cash-ins/{id}/fail",
            &segments,
            Some(body),
            idempotency_key,
            deadline,
        )
        .await
    }

    /// Sends `call`, retrying as the module documentation says, and decodes a 2xx body as `T`.
    async fn send<T: DeserializeOwned>(&self, mut call: Call<'_>) -> Result<T, UpstreamError> {
        call.deadline = answer_by(call.deadline);
        let span = tracing::info_span!(
            "oms_call",
            operation = call.operation,
            idempotency_key = call.idempotency_key,
            attempts = tracing::field::Empty,
            http_status = tracing::field::Empty,
        );
        async {
            let retryable_call = call.method == Method::GET || call.idempotency_key.is_some();
            let max_attempts = if retryable_call { self.inner.config.max_attempts } else { 1 };
            let mut attempt = 0u32;
            let mut reauthenticated = false;
            let mut new_connection = false;
            self.inner.budget.record_request();
            loop {
                attempt += 1;
                tracing::Span::current().record("attempts", attempt);
                let outcome = self.attempt(&call, &mut reauthenticated, new_connection).await;
                let err = match outcome {
                    Ok(bytes) => {
                        return serde_json::from_slice::<T>(&bytes).map_err(|e| {
                            UpstreamError::BadResponse(format!("{}: {e}", call.operation))
                        });
                    }
                    Err(err) => err,
                };
                // A 409 on a retry (or on a call resuming an abandoned one) is most likely our own
                // earlier request still holding the key upstream; waiting and asking again gets
                // its outcome.
                let own_conflict =
                    (attempt > 1 || call.resumes) && err.http_status() == Some(409);
                if attempt >= max_attempts || !(err.is_retryable() || own_conflict) {
                    return Err(err);
                }
                // 421 Misdirected Request: the connection went to the wrong server (RFC 9110
                // 15.5.20); the same request on a new connection is the prescribed retry.
                new_connection = err.http_status() == Some(421);
                let backoff = if new_connection {
                    Duration::ZERO
                } else {
                    full_jitter(attempt)
                };
                let wait = err.retry_after().map_or(backoff, |after| after.max(backoff));
                if Instant::now() + wait >= call.deadline {
                    return Err(err);
                }
                // Retries may add only a fraction of the traffic: an outage is not amplified.
                if !self.inner.budget.try_retry() {
                    tracing::debug!(error = %err, "retry budget exhausted; not retrying");
                    return Err(err);
                }
                tracing::debug!(attempt, wait_ms = wait.as_millis() as u64, error = %err, "retrying OMS call");
                tokio::time::sleep(wait).await;
            }
        }
        .instrument(span)
        .await
    }

    /// One attempt, plus at most one re-authentication per call, on a new connection when
    /// `new_connection`. Returns the 2xx body.
    async fn attempt(
        &self,
        call: &Call<'_>,
        reauthenticated: &mut bool,
        new_connection: bool,
    ) -> Result<Vec<u8>, UpstreamError> {
        let http = if new_connection {
            &self.inner.fresh_http
        } else {
            &self.inner.http
        };
        loop {
            let now = Instant::now();
            if now >= call.deadline {
                return Err(UpstreamError::DeadlineExceeded);
            }
            // Admission first: while the circuit is open a call fails fast, even one that would
            // need a token exchange.
            let mut probe = match self.inner.breaker.admit() {
                Admission::Refused(wait) => return Err(UpstreamError::CircuitOpen(wait)),
                Admission::Probe => Some(ProbeGuard {
                    breaker: &self.inner.breaker,
                    armed: true,
                }),
                Admission::Allowed => None,
            };
            let token = match self.inner.auth.token_for_call(call.deadline).await {
                Ok(token) => token,
                Err(failure) => {
                    // The exchange counted its own failure; a probe that met one reopens the
                    // circuit (with a longer cool-down) like any failed probe.
                    if let Some(guard) = probe.as_mut()
                        && failure.error.is_outage()
                    {
                        self.inner.breaker.on_failure(true);
                        guard.armed = false;
                    }
                    return Err(failure.error);
                }
            };
            let attempt_deadline = call.deadline.min(now + self.inner.config.request_timeout);
            let mut request = http
                .request(call.method.clone(), call.url.clone())
                .bearer_auth(token.bearer())
                .header(reqwest::header::ACCEPT, "application/json");
            if let Some(key) = call.idempotency_key {
                request = request.header("Idempotency-Key", key);
            }
            if let Some(body) = &call.body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            let exchange = async {
                let response = request.send().await.map_err(classify_transport)?;
                let status = response.status();
                tracing::Span::current().record("http_status", status.as_u16());
                if status.is_success() {
                    crate::audit::note_upstream_request_id(response.headers());
                    return read_body(response).await.map(Ok);
                }
                let api_secret = self.inner.auth.api_secret();
                let secrets = [token.bearer(), api_secret.expose()];
                Ok(Err((
                    status,
                    failure_from_response(response, &secrets).await,
                )))
            };
            let outcome = match tokio::time::timeout_at(attempt_deadline, exchange).await {
                Ok(outcome) => outcome,
                Err(_) if attempt_deadline == call.deadline => Err(UpstreamError::DeadlineExceeded),
                Err(_) => Err(UpstreamError::Timeout(self.inner.config.request_timeout)),
            };
            // What the outcome says about OMS's health; the caller's own deadline says nothing.
            let healthy = match &outcome {
                Ok(Ok(_)) => {
                    self.inner.auth.report_accepted();
                    Some(true)
                }
                Ok(Err((status, _))) => {
                    Some(!(status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS))
                }
                Err(UpstreamError::DeadlineExceeded) => None,
                Err(_) => Some(false),
            };
            match healthy {
                Some(true) => self.inner.breaker.on_success(),
                Some(false) => self.inner.breaker.on_failure(probe.is_some()),
                None => {}
            }
            if let Some(guard) = probe.as_mut() {
                guard.armed = healthy.is_none();
            }
            let result = outcome?;
            match result {
                Ok(body) => return Ok(body),
                Err((StatusCode::UNAUTHORIZED, failure)) => {
                    if *reauthenticated {
                        self.inner.auth.report_rejected(&token);
                        return Err(UpstreamError::AuthFailed {
                            message: failure.message,
                            request_id: failure.request_id,
                        });
                    }
                    // Tokens can be revoked or expire early: exchange once and try again.
                    tracing::info!("OMS answered 401; exchanging a fresh token");
                    *reauthenticated = true;
                    self.inner.auth.invalidate(&token);
                }
                Err((_, failure)) => return Err(UpstreamError::Http(Box::new(failure))),
            }
        }
    }
}

/// The REST client's HTTP settings; `max_idle` 0 makes every request use a new connection.
fn http_client(
    base: &Url,
    config: &UpstreamSettings,
    roots: &[reqwest::Certificate],
    max_idle: usize,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder();
    for root in roots {
        builder = builder.add_root_certificate(root.clone());
    }
    builder
        // Never downgrade from https, and never follow a redirect with a payment request in
        // hand: a 3xx from OMS is an error to report, not a hop to take.
        .https_only(base.scheme() == "https")
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(config.connect_timeout)
        .pool_idle_timeout(config.pool_idle_timeout)
        .pool_max_idle_per_host(max_idle)
        .tcp_nodelay(true)
        .user_agent(concat!("oms-gateway/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
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
        "refusing OMS base URL `{base}`: plain http would send the OMS API secret and access tokens \
         in cleartext; use https (with --upstream-ca-file for a private CA), or plain http only to \
         a loopback address (127.0.0.1, ::1, localhost)"
    ))
}

/// The most a call's upstream work is cut short of the caller's deadline.
const DEADLINE_HEADROOM: Duration = Duration::from_millis(100);

/// When the upstream work of a call due at `deadline` must give up: a little before it (a fifth
/// of the time left, at most [`DEADLINE_HEADROOM`]), so the gateway's DEADLINE_EXCEEDED, with its
/// details, reaches the caller before the caller's own timer and tonic's server-side
/// `grpc-timeout` layer fire; both of those end the call as a bare CANCELLED "Timeout expired".
fn answer_by(deadline: Instant) -> Instant {
    let left = deadline.saturating_duration_since(Instant::now());
    deadline - (left / 5).min(DEADLINE_HEADROOM)
}

/// Exponential backoff with full jitter: uniform in [0, min(cap, base × 2^(attempt−1))].
fn full_jitter(attempt: u32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let ceiling = exp.min(BACKOFF_CAP);
    ceiling.mul_f64(fastrand::f64())
}

/// Classifies a reqwest error that happened before a response arrived.
fn classify_transport(err: reqwest::Error) -> UpstreamError {
    // The error's Display may include the URL; never a header, so no token can leak here.
    let text = error_chain(&err);
    if err.is_connect() {
        UpstreamError::Connect(text)
    } else if err.is_timeout() {
        UpstreamError::Timeout(Duration::ZERO)
    } else {
        UpstreamError::Transport(text)
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// Reads a body, refusing more than [`MAX_RESPONSE_BYTES`].
async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, UpstreamError> {
    if response
        .content_length()
        .is_some_and(|len| len > MAX_RESPONSE_BYTES as u64)
    {
        return Err(UpstreamError::BadResponse(format!(
            "the response body is larger than {MAX_RESPONSE_BYTES} bytes"
        )));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(classify_transport)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(UpstreamError::BadResponse(format!(
                "the response body is larger than {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Decodes a non-2xx answer. OMS's error body is unpublished: the message is looked for where
/// common APIs put it, and a body that is not JSON is kept (shortened) as the message. What OMS
/// says reaches callers and logs, so `secrets` (the credentials the request carried) are cut out
/// first, in case OMS quotes them back.
async fn failure_from_response(response: reqwest::Response, secrets: &[&str]) -> HttpFailure {
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut request_id = header("x-request-id")
        .or_else(|| header("request-id"))
        .map(|id| redact(&id, secrets));
    let retry_after = header("retry-after").and_then(|v| parse_retry_after(&v));
    let body = read_body(response).await.unwrap_or_default();
    let body = redact(&String::from_utf8_lossy(&body), secrets).into_bytes();
    let json: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    let text_at = |pointers: &[&str]| {
        json.as_ref().and_then(|json| {
            pointers
                .iter()
                .find_map(|p| json.pointer(p).and_then(|v| v.as_str()).map(str::to_owned))
        })
    };
    let message = text_at(&[
        "/error/message",
        "/message",
        "/error",
        "/detail",
        "/title",
        "/errors/0/message",
    ])
    .or_else(|| {
        let text = String::from_utf8_lossy(&body).trim().to_owned();
        (!text.is_empty() && json.is_none()).then(|| text.chars().take(300).collect())
    })
    .unwrap_or_else(|| {
        StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("error")
            .to_owned()
    });
    let code = text_at(&["/error/code", "/code", "/error/type", "/type"]);
    if request_id.is_none() {
        request_id = text_at(&["/requestId", "/request_id", "/error/requestId"]);
    }
    let mut field_errors = Vec::new();
    if let Some(json) = &json {
        for pointer in ["/error/details", "/errors", "/details"] {
            if let Some(items) = json.pointer(pointer).and_then(|v| v.as_array()) {
                for item in items {
                    let field = ["field", "param", "path"]
                        .iter()
                        .find_map(|k| item.get(*k).and_then(|v| v.as_str()));
                    let message = item.get("message").and_then(|v| v.as_str());
                    if let (Some(field), Some(message)) = (field, message) {
                        field_errors.push((field.to_owned(), message.to_owned()));
                    }
                }
                break;
            }
        }
    }
    HttpFailure {
        status,
        message,
        code,
        request_id,
        retry_after,
        field_errors,
    }
}

/// `text` with every occurrence of each non-empty secret replaced by `[redacted]`.
fn redact(text: &str, secrets: &[&str]) -> String {
    secrets
        .iter()
        .filter(|secret| !secret.is_empty())
        .fold(text.to_owned(), |text, secret| {
            text.replace(secret, "[redacted]")
        })
}

/// `Retry-After` as delay-seconds (HTTP-dates are rare from APIs and are ignored).
fn parse_retry_after(value: &str) -> Option<Duration> {
    let seconds: f64 = value.trim().parse().ok()?;
    (seconds.is_finite() && (0.0..=3600.0).contains(&seconds))
        .then(|| Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_within_its_ceiling() {
        for attempt in 1..40 {
            let wait = full_jitter(attempt);
            assert!(wait <= BACKOFF_CAP, "attempt {attempt}: {wait:?}");
        }
    }

    #[test]
    fn retry_after_takes_seconds_only() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }
}

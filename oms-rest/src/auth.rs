//! The OMS access token: exchanged from the API key and secret at `POST /auth/token`, cached,
//! renewed before it expires, and exchanged again after a 401.
//!
//! Invariants: at most one exchange runs at a time however many calls need a token (the one in
//! flight is kept in a slot; a call that needs a token waits for it, or starts it when there is
//! none, and everyone who waited for a failed exchange gets that failure instead of queuing
//! another); a 401 only invalidates the token generation that earned it, so a storm of 401s on
//! one stale token causes one exchange, not one per call. The token and the secret are
//! [`Secret`]s and never printed.
//!
//! An exchange belongs to no caller: it runs as a task of its own, bounded by its own timeout
//! ([`crate::Settings::request_timeout`]), and callers wait for it only as long as their deadlines
//! allow (the caller that started it included), so it always ends with OMS's answer or that
//! timeout, never at one caller's deadline. Health ([`UpstreamHealth`]) follows what OMS says: an
//! exchange's outcome, a rejected fresh token, and any authenticated 2xx (which proves the
//! credentials work). Exchange failures that say OMS is unwell (no answer, 5xx, 429) count for the
//! circuit breaker; one that reached its timeout opens it at once (it held every call for that
//! long). While the circuit is open the exchange in flight is the probe: a call that needs a token
//! fails fast (UNAVAILABLE, with a retry hint) instead of waiting for it, and the first call after
//! a successful exchange closes the circuit. The background refresher waits longer than an exchange
//! may take, so it always sees how its exchange ended. OMS's `expiresIn` is clamped, so a token is
//! renewed at least every few seconds and at most hourly.

use crate::breaker::CircuitBreaker;
use crate::failure::{classify_transport, failure_from_response, read_body, request_id};
use crate::metrics::UpstreamMetrics;
use crate::transport::{self, HttpClient, RequestBody};
use crate::{CallContext, Secret, TraceHeaders, UpstreamError, UpstreamHealth, model};
use std::sync::{
    Arc, RwLock,
    atomic::{AtomicU64, Ordering},
};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::Instrument;

/// The token lifetime assumed when OMS does not say (`expiresIn` is documented as 3600).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// The lifetime OMS's `expiresIn` is clamped to: 0 must not make every call exchange, and
/// u64::MAX must not overflow a clock or keep a token forever.
const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(5);
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// How much longer than an exchange may take the background refresher waits for one, so it
/// always sees the exchange's own outcome.
const REFRESHER_SLACK: Duration = Duration::from_secs(1);
/// The retry hint of a call refused while the circuit is open and the exchange is its probe
/// (the breaker's own hint while a probe is out).
const PROBE_OUT_RETRY: Duration = Duration::from_millis(100);

/// How the exchange in flight ended: `None` until it has.
type Outcome = Option<Result<Arc<Token>, UpstreamError>>;

/// What a call that needs a token found.
enum Pending {
    /// A fresh token (an exchange just stored it).
    Ready(Arc<Token>),
    /// The exchange in flight, and whether this call started it.
    Exchange {
        outcome: watch::Receiver<Outcome>,
        started: bool,
    },
}

/// How long a token is used, from OMS's `expiresIn` (clamped; see [`MIN_TOKEN_LIFETIME`]):
/// renewed a minute early, or a fifth of the lifetime early for short-lived tokens.
fn refresh_after(expires_in: Option<u64>) -> Duration {
    let lifetime = expires_in
        .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs)
        .clamp(MIN_TOKEN_LIFETIME, MAX_TOKEN_LIFETIME);
    let margin = Duration::from_secs(60).min(lifetime / 5);
    lifetime - margin
}

/// The OMS API key and secret. Debug shows neither.
#[derive(Clone)]
pub struct Credentials {
    /// The API key (`sk_...`); never printed, as the secret.
    pub api_key: String,
    /// The API secret.
    pub api_secret: Secret,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("api_key", &"[redacted]")
            .field("api_secret", &"[redacted]")
            .finish()
    }
}

/// A cached access token.
#[derive(Debug)]
pub struct Token {
    value: Secret,
    /// `Bearer <value>`, built once per token, marked sensitive (its Debug shows no value, and
    /// HTTP/2's header compression never indexes it).
    authorization: http::HeaderValue,
    /// When the gateway stops using it and exchanges a new one (before OMS's expiry).
    refresh_at: Instant,
    generation: u64,
}

impl Token {
    /// The bearer value, to cut it out of what OMS says.
    pub fn bearer(&self) -> &str {
        self.value.expose()
    }

    /// The `Authorization` header value.
    pub fn authorization(&self) -> &http::HeaderValue {
        &self.authorization
    }

    /// When the token should be replaced.
    pub fn refresh_at(&self) -> Instant {
        self.refresh_at
    }

    fn is_fresh(&self) -> bool {
        Instant::now() < self.refresh_at
    }
}

/// Hands out a valid token, exchanging one when needed.
pub struct TokenSource {
    http: HttpClient,
    token_url: http::Uri,
    /// Replaced whole when a secret file changes; the next exchange uses the new value.
    credentials: RwLock<Arc<Credentials>>,
    exchange_timeout: Duration,
    current: RwLock<Option<Arc<Token>>>,
    /// The exchange in flight, if any: its outcome, shared by every call that waits for it. Left
    /// (emptied) by the exchange once its token, if any, is stored.
    in_flight: std::sync::Mutex<Option<watch::Receiver<Outcome>>>,
    generation: AtomicU64,
    exchanges: AtomicU64,
    /// Wakes the background refresher (after OMS rejected a fresh token).
    refresh_now: Notify,
    breaker: Arc<CircuitBreaker>,
    health: watch::Sender<UpstreamHealth>,
    metrics: Arc<UpstreamMetrics>,
    context: Arc<dyn CallContext>,
}

/// Why a call got no token.
#[derive(Debug)]
pub struct TokenFailure {
    /// What went wrong.
    pub error: UpstreamError,
    /// Whether this call started the failed exchange (rather than waiting for another's).
    pub exchanged: bool,
}

// === impl TokenSource ===

impl TokenSource {
    /// A token source whose health starts [`UpstreamHealth::Starting`].
    pub(crate) fn new(
        http: HttpClient,
        token_url: http::Uri,
        credentials: Credentials,
        exchange_timeout: Duration,
        breaker: Arc<CircuitBreaker>,
        metrics: Arc<UpstreamMetrics>,
        context: Arc<dyn CallContext>,
    ) -> Self {
        Self {
            http,
            token_url,
            credentials: RwLock::new(Arc::new(credentials)),
            exchange_timeout,
            current: RwLock::new(None),
            in_flight: std::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
            exchanges: AtomicU64::new(0),
            refresh_now: Notify::new(),
            breaker,
            health: watch::channel(UpstreamHealth::Starting).0,
            metrics,
            context,
        }
    }

    /// Whether the gateway can currently reach OMS with its credentials, as exchanges and
    /// answers tell.
    pub(crate) fn health(&self) -> watch::Receiver<UpstreamHealth> {
        self.health.subscribe()
    }

    /// How many exchanges have succeeded since start.
    pub fn exchanges(&self) -> u64 {
        self.exchanges.load(Ordering::Relaxed)
    }

    fn cached(&self) -> Option<Arc<Token>> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current.as_ref().filter(|t| t.is_fresh()).cloned()
    }

    /// A fresh token: the cached one, or the result of the one exchange in flight, or a new
    /// exchange. Waits no longer than `deadline`, even while the circuit is open (the refresher).
    pub async fn token(self: &Arc<Self>, deadline: Instant) -> Result<Arc<Token>, UpstreamError> {
        match self.pending() {
            Pending::Ready(token) => Ok(token),
            Pending::Exchange { outcome, .. } => wait(outcome, deadline).await,
        }
    }

    /// [`token`](Self::token) for a call, saying whether a failure came from an exchange this
    /// call started. While the circuit is open the exchange is the probe, and the call does not
    /// wait for it: CircuitOpen at once.
    pub async fn token_for_call(
        self: &Arc<Self>,
        deadline: Instant,
    ) -> Result<Arc<Token>, TokenFailure> {
        let (outcome, started) = match self.pending() {
            Pending::Ready(token) => return Ok(token),
            Pending::Exchange { outcome, started } => (outcome, started),
        };
        let failed = |error| TokenFailure {
            error,
            exchanged: started,
        };
        if self.breaker.open_until().is_some() {
            return Err(failed(UpstreamError::CircuitOpen(PROBE_OUT_RETRY)));
        }
        wait(outcome, deadline).await.map_err(failed)
    }

    /// The cached token, or the exchange in flight, or a new one started.
    fn pending(self: &Arc<Self>) -> Pending {
        if let Some(token) = self.cached() {
            return Pending::Ready(token);
        }
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        // The exchange that just left the slot stored its token first.
        if let Some(token) = self.cached() {
            return Pending::Ready(token);
        }
        // An exchange whose task is gone (the runtime is stopping) is no longer in flight.
        if let Some(outcome) = in_flight.as_ref().filter(|o| o.has_changed().is_ok()) {
            return Pending::Exchange {
                outcome: outcome.clone(),
                started: false,
            };
        }
        let (sender, outcome) = watch::channel(None);
        *in_flight = Some(outcome.clone());
        drop(in_flight);
        // In the trace of the call that needed the token (a refresh in the background: its own),
        // read here, in the call's task.
        let span = tracing::info_span!(
            "oms_token_exchange",
            otel.kind = "client",
            url = %self.token_url,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
            http_status = tracing::field::Empty,
            upstream_request_id = tracing::field::Empty,
        );
        let trace = self.context.trace_headers(&span);
        let source = Arc::clone(self);
        tokio::spawn(async move {
            let result = source.exchange(trace.as_ref(), span).await;
            *source.in_flight.lock().unwrap_or_else(|e| e.into_inner()) = None;
            sender.send_replace(Some(result));
        });
        Pending::Exchange {
            outcome,
            started: true,
        }
    }

    fn credentials(&self) -> Arc<Credentials> {
        self.credentials
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The API secret, only so that an answer quoting it can be redacted.
    pub(crate) fn api_secret(&self) -> Secret {
        self.credentials().api_secret.clone()
    }

    /// Replaces the API key and secret (a secret file changed); the token in use stays until it
    /// is due, and the next exchange uses the new credentials.
    pub fn set_credentials(&self, credentials: Credentials) {
        *self.credentials.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(credentials);
    }

    /// Forgets `used` after OMS answered 401 to it, unless a newer token already replaced it.
    pub fn invalidate(&self, used: &Token) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current
            .as_ref()
            .is_some_and(|t| t.generation == used.generation)
        {
            *current = None;
        }
    }

    /// Reports that OMS rejected `used`, a fresh token: the credentials may be bad or revoked.
    /// The token is dropped and the refresher woken, so health turns SERVING again as soon as an
    /// exchange (or any call) succeeds, instead of at the next scheduled renewal.
    pub fn report_rejected(&self, used: &Token) {
        self.invalidate(used);
        self.health.send_replace(UpstreamHealth::AuthFailed);
        self.refresh_now.notify_one();
    }

    /// Reports an authenticated 2xx: OMS accepts the gateway's credentials.
    pub fn report_accepted(&self) {
        if *self.health.borrow() != UpstreamHealth::Serving {
            self.health.send_if_modified(|health| {
                let changed = *health != UpstreamHealth::Serving;
                *health = UpstreamHealth::Serving;
                changed
            });
        }
    }

    /// One exchange, bounded by its own timeout, whatever its callers' deadlines; what it says
    /// about OMS goes to health and the breaker.
    async fn exchange(
        &self,
        trace: Option<&TraceHeaders>,
        span: tracing::Span,
    ) -> Result<Arc<Token>, UpstreamError> {
        let result = tokio::time::timeout(
            self.exchange_timeout,
            self.request_token(trace).instrument(span.clone()),
        )
        .await
        .unwrap_or(Err(UpstreamError::Timeout(self.exchange_timeout)));
        let _enter = span.enter();
        self.metrics.token_exchange(&result);
        match result {
            Ok((dto, authorization)) => Ok(self.accept(dto, authorization)),
            Err(err) => {
                self.record_failure(&err);
                Err(err)
            }
        }
    }

    /// `POST /auth/token` with the current credentials.
    async fn request_token(
        &self,
        trace: Option<&TraceHeaders>,
    ) -> Result<(model::TokenDto, http::HeaderValue), UpstreamError> {
        let credentials = self.credentials();
        let body = model::TokenRequestDto {
            api_key: &credentials.api_key,
            api_secret: credentials.api_secret.expose(),
        };
        let span = tracing::Span::current();
        let body = serde_json::to_vec(&body)
            .map_err(|e| UpstreamError::BadResponse(format!("cannot encode the request: {e}")))?;
        let mut request = http::Request::new(RequestBody::new(body.into()));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = self.token_url.clone();
        let headers = request.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        headers.insert(
            http::header::ACCEPT,
            http::HeaderValue::from_static("application/json"),
        );
        headers.insert(http::header::USER_AGENT, transport::USER_AGENT);
        transport::insert_trace_headers(headers, trace);
        let response = self.http.send(request).await.map_err(classify_transport)?;
        let status = response.status().as_u16();
        span.record("http_status", status);
        let secrets = [credentials.api_secret.expose()];
        if let Some(id) = request_id(response.headers(), &secrets) {
            span.record("upstream_request_id", id);
        }
        if !(200..300).contains(&status) {
            let failure = failure_from_response(response, &secrets).await;
            return Err(if status == 401 || status == 403 {
                UpstreamError::AuthFailed {
                    message: failure.message,
                    request_id: failure.request_id,
                }
            } else {
                UpstreamError::Http(Box::new(failure))
            });
        }
        let bytes = read_body(response).await?;
        // Decoded as every answer is: a failure names the path and the kinds, never the value
        // (here, what OMS meant as a token).
        let dto = crate::decode::decode::<model::TokenDto>("POST /auth/token", &bytes)?;
        let mut authorization =
            http::HeaderValue::try_from(format!("Bearer {}", dto.access_token)).map_err(|_| {
                UpstreamError::BadResponse(
                    "POST /auth/token: the access token holds characters an HTTP header cannot carry"
                        .into(),
                )
            })?;
        authorization.set_sensitive(true);
        Ok((dto, authorization))
    }

    /// Caches a token OMS issued, and health turns SERVING.
    fn accept(&self, dto: model::TokenDto, authorization: http::HeaderValue) -> Arc<Token> {
        let refresh_after = refresh_after(dto.expires_in);
        let token = Arc::new(Token {
            value: Secret::new(dto.access_token),
            authorization,
            refresh_at: Instant::now() + refresh_after,
            generation: self.generation.fetch_add(1, Ordering::Relaxed) + 1,
        });
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(token.clone());
        self.exchanges.fetch_add(1, Ordering::Relaxed);
        self.health.send_replace(UpstreamHealth::Serving);
        tracing::info!(
            generation = token.generation,
            expires_in_s = dto.expires_in,
            refresh_after_s = refresh_after.as_secs(),
            "exchanged a new OMS access token"
        );
        token
    }

    /// What a failed exchange tells: the breaker counts an outage (one that hung until the
    /// timeout opens it), health says which failure.
    fn record_failure(&self, err: &UpstreamError) {
        if err.is_outage() {
            self.breaker
                .on_shared_failure(matches!(err, UpstreamError::Timeout(_)));
        }
        let health = match err {
            UpstreamError::AuthFailed { .. } => {
                tracing::error!(error = %err, "OMS rejected the gateway's API key and secret");
                UpstreamHealth::AuthFailed
            }
            _ => {
                tracing::warn!(error = %err, "OMS token exchange failed");
                UpstreamHealth::Unreachable
            }
        };
        self.health.send_replace(health);
    }

    /// Keeps a token fresh in the background so callers rarely wait for an exchange, and so
    /// health reflects whether OMS accepts the gateway's credentials.
    pub async fn keep_fresh(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(250);
        loop {
            // Longer than the exchange may take: it ends with OMS's answer or its own timeout,
            // and a hung endpoint counts as the outage it is.
            let deadline = Instant::now() + self.exchange_timeout + REFRESHER_SLACK;
            match self.token(deadline).await {
                Ok(token) => {
                    backoff = Duration::from_millis(250);
                    tokio::select! {
                        () = tokio::time::sleep_until(token.refresh_at()) => {}
                        () = self.refresh_now.notified() => {}
                    }
                }
                Err(_) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(15));
                }
            }
        }
    }
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("token_url", &self.token_url)
            .field("api_key", &"[redacted]")
            .field("exchanges", &self.exchanges())
            .finish_non_exhaustive()
    }
}

/// The outcome of the exchange `outcome` follows, waited for until `deadline`.
async fn wait(
    mut outcome: watch::Receiver<Outcome>,
    deadline: Instant,
) -> Result<Arc<Token>, UpstreamError> {
    let ended = tokio::time::timeout_at(deadline, async {
        outcome
            .wait_for(Option::is_some)
            .await
            .map(|ended| ended.clone())
    })
    .await;
    match ended {
        Err(_) => Err(UpstreamError::DeadlineExceeded),
        Ok(Ok(Some(result))) => result,
        Ok(Ok(None) | Err(_)) => Err(UpstreamError::Transport(
            "the OMS token exchange stopped before it finished".into(),
        )),
    }
}

//! Sending one REST call: the retry loop (budget, backoff with full jitter, `Retry-After`, a
//! new connection after a 421, the caller's deadline over everything) and one attempt (circuit
//! breaker admission, token, request, verdict for the breaker and for health, one
//! re-authentication after a 401).

use crate::auth::Token;
use crate::breaker::{Admission, CircuitBreaker};
use crate::decode::decode_observed;
use crate::failure::{classify_transport, failure_from_response, read_body, request_id};
use crate::observe::Answer;
use crate::transport::{self, HttpClient, RequestBody};
use crate::{HttpFailure, OmsClient, TraceHeaders, UpstreamError, UpstreamFailure};
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, StatusCode, Uri};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument;
use url::Url;

const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(2);

/// One REST request, described once and sent as many times as the retry policy allows.
pub(crate) struct Call<'a> {
    pub(crate) operation: &'static str,
    pub(crate) method: Method,
    pub(crate) url: Url,
    pub(crate) body: Option<Bytes>,
    pub(crate) idempotency_key: Option<&'a str>,
    /// See [`crate::WriteKey::resumes`].
    pub(crate) resumes: bool,
    pub(crate) deadline: Instant,
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
    /// Sends `call`, retrying as the module documentation says, and decodes a 2xx body as `T`.
    pub(crate) async fn send<T: Answer>(&self, mut call: Call<'_>) -> Result<T, UpstreamFailure> {
        let operation = call.operation;
        call.deadline = answer_by(call.deadline);
        // The request line's URI, parsed once for every attempt (a Url is always a valid URI).
        let uri = Uri::try_from(call.url.as_str()).map_err(|e| UpstreamFailure {
            operation,
            error: UpstreamError::Transport(format!("cannot send to {}: {e}", call.url)),
        })?;
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
                let outcome = self
                    .attempt(&call, &uri, attempt, &mut reauthenticated, new_connection)
                    .await;
                let err = match outcome {
                    Ok(bytes) => {
                        let drift = self.inner.metrics.drift();
                        return decode_observed(call.operation, &bytes, drift);
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
                    self.inner.metrics.retry_budget_exhausted();
                    tracing::debug!(error = %err, "retry budget exhausted; not retrying");
                    return Err(err);
                }
                tracing::debug!(attempt, wait_ms = wait.as_millis() as u64, error = %err, "retrying OMS call");
                self.inner.metrics.retry();
                tokio::time::sleep(wait).await;
            }
        }
        .instrument(span)
        .await
        .map_err(|error| UpstreamFailure { operation, error })
    }

    /// One attempt (number `number` of the call), plus at most one re-authentication per call,
    /// on a new connection when `new_connection`. Returns the 2xx body.
    async fn attempt(
        &self,
        call: &Call<'_>,
        uri: &Uri,
        number: u32,
        reauthenticated: &mut bool,
        new_connection: bool,
    ) -> Result<Bytes, UpstreamError> {
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
            let (mut probe, token) = self.admit_with_token(call.deadline).await?;
            let attempt_deadline = call.deadline.min(now + self.inner.config.request_timeout);
            // Each HTTP request has its span, a child of the call's; OMS's request is its child.
            let span = tracing::info_span!(
                "oms_attempt",
                otel.kind = "client",
                operation = call.operation,
                attempt = number,
                reauthenticated = *reauthenticated,
                trace_id = tracing::field::Empty,
                span_id = tracing::field::Empty,
                http_status = tracing::field::Empty,
                upstream_request_id = tracing::field::Empty,
                error = tracing::field::Empty,
            );
            let trace = self.inner.context.trace_headers(&span);
            let call_span = tracing::Span::current();
            let exchange = self
                .exchange(
                    http,
                    request(call, uri, &token, trace.as_ref())?,
                    &token,
                    &call_span,
                )
                .instrument(span);
            let sent = Instant::now();
            let outcome = match tokio::time::timeout_at(attempt_deadline, exchange).await {
                Ok(outcome) => outcome,
                Err(_) if attempt_deadline == call.deadline => Err(UpstreamError::DeadlineExceeded),
                Err(_) => Err(UpstreamError::Timeout(self.inner.config.request_timeout)),
            };
            self.inner
                .metrics
                .request(call.operation, &outcome, sent.elapsed());
            self.inner.context.request_ended();
            let healthy = verdict(&outcome);
            match healthy {
                Some(true) => self.inner.breaker.on_success(),
                Some(false) => self.inner.breaker.on_failure(probe.is_some()),
                None => {}
            }
            if let Some(guard) = probe.as_mut() {
                guard.armed = healthy.is_none();
            }
            match outcome? {
                Ok(body) => {
                    self.inner.auth.report_accepted();
                    return Ok(body);
                }
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

    /// The breaker's admission, then a token. Admission first: while the circuit is open a call
    /// fails fast, even one that would need a token exchange.
    async fn admit_with_token(
        &self,
        deadline: Instant,
    ) -> Result<(Option<ProbeGuard<'_>>, Arc<Token>), UpstreamError> {
        let mut probe = match self.inner.breaker.admit() {
            Admission::Refused(wait) => return Err(UpstreamError::CircuitOpen(wait)),
            Admission::Probe => Some(ProbeGuard {
                breaker: &self.inner.breaker,
                armed: true,
            }),
            Admission::Allowed => None,
        };
        match self.inner.auth.token_for_call(deadline).await {
            Ok(token) => Ok((probe, token)),
            Err(failure) => {
                // The exchange counted its own failure; a probe that met one reopens the circuit
                // (with a longer cool-down) like any failed probe.
                if let Some(guard) = probe.as_mut()
                    && failure.error.is_outage()
                {
                    self.inner.breaker.on_failure(true);
                    guard.armed = false;
                }
                Err(failure.error)
            }
        }
    }

    /// Sends `request` and reads the answer: the 2xx body, or the status and decoded failure
    /// (with the credentials the request carried cut out of what OMS said).
    async fn exchange(
        &self,
        http: &HttpClient,
        request: http::Request<RequestBody>,
        token: &Token,
        call_span: &tracing::Span,
    ) -> Result<Result<Bytes, (StatusCode, HttpFailure)>, UpstreamError> {
        let attempt_span = tracing::Span::current();
        let response = http.send(request).await.map_err(|e| {
            let err = classify_transport(e);
            attempt_span.record("error", tracing::field::display(&err));
            err
        })?;
        let status = response.status();
        attempt_span.record("http_status", status.as_u16());
        call_span.record("http_status", status.as_u16());
        let api_secret = self.inner.auth.api_secret();
        let secrets = [token.bearer(), api_secret.expose()];
        if let Some(id) = request_id(response.headers(), &secrets) {
            attempt_span.record("upstream_request_id", id.as_str());
            self.inner.context.request_id(&id, status.is_success());
        }
        if status.is_success() {
            return read_body(response).await.map(Ok);
        }
        Ok(Err((
            status,
            failure_from_response(response, &secrets).await,
        )))
    }
}

/// The HTTP request of one attempt of `call` (to `uri`), carrying the attempt's trace context.
/// Every value is checked before it goes out: the idempotency key where the services qualify it
/// (printable ASCII, at most 255 characters, else its SHA-256), the trace context by `telemetry`
/// (hex, or the caller's `tracestate`, which is dropped if it cannot travel as a header).
fn request(
    call: &Call<'_>,
    uri: &Uri,
    token: &Token,
    trace: Option<&TraceHeaders>,
) -> Result<http::Request<RequestBody>, UpstreamError> {
    const JSON: HeaderValue = HeaderValue::from_static("application/json");
    let body = call.body.clone().unwrap_or_default();
    let mut request = http::Request::new(RequestBody::new(body));
    *request.method_mut() = call.method.clone();
    *request.uri_mut() = uri.clone();
    let headers = request.headers_mut();
    headers.insert(header::AUTHORIZATION, token.authorization().clone());
    headers.insert(header::ACCEPT, JSON);
    headers.insert(header::USER_AGENT, transport::USER_AGENT);
    transport::insert_trace_headers(headers, trace);
    if let Some(key) = call.idempotency_key {
        let key = HeaderValue::try_from(key).map_err(|_| {
            UpstreamError::Transport("the idempotency key cannot travel as an HTTP header".into())
        })?;
        headers.insert(transport::IDEMPOTENCY_KEY, key);
    }
    if call.body.is_some() {
        headers.insert(header::CONTENT_TYPE, JSON);
    }
    Ok(request)
}

/// What an attempt's outcome says about OMS's health, for the breaker: an answer that is no 5xx
/// or 429 is healthy; no answer is not; the caller's own deadline says nothing.
fn verdict<T>(
    outcome: &Result<Result<T, (StatusCode, HttpFailure)>, UpstreamError>,
) -> Option<bool> {
    match outcome {
        Ok(Ok(_)) => Some(true),
        Ok(Err((status, _))) => {
            Some(!(status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS))
        }
        Err(UpstreamError::DeadlineExceeded) => None,
        Err(_) => Some(false),
    }
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
}

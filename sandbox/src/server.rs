//! The HTTP face of the sandbox: the axum router, route resolution, and the pipeline every
//! request goes through.
//!
//! All requests enter through one axum fallback so that matched and unmatched requests alike
//! pass the same steps in the same order: read the body → journal it and draw its faults
//! (scripted first; the random plan's generator advances either way) → plan: revoke tokens →
//! injected answer (a scripted or planned status, or a reset before any effect) → resolve the
//! route (404/405) → bearer token (401) → Idempotency-Key (400/409/422 or replay; skipped when
//! deduplication is off) → injected pause (a delay, or a hold at a gate) → handler → remember the
//! outcome for replays → answer with `x-request-id`, or reset the connection instead
//! (`reset_after`). (A request a pause fault claims but that never reaches its handler is paused
//! just the same, at the end.)
//!
//! `GET`/`PUT /sandbox/faults`, the fault plan's own control, is never faulted.
//! Per-route axum handlers would answer 404/405 and extractor rejections before any of this ran,
//! and those answers would then be missing from the journal and not be JSON.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::response::Response;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use http::request::Parts;
use http::{HeaderName, HeaderValue, Method, StatusCode};

use super::auth::bearer_token;
use super::clock::now_ms;
use super::conn::Connection;
use super::error::ApiError;
use super::fault_plan::{Decision, PlannedAnswer};
use super::faults::{FaultAction, Gate};
use super::handlers;
use super::idempotency::{Begin, fingerprint};
use super::journal::{CLIENT_CLOSED, CONNECTION_RESET, RecordedRequest};
use super::routes::{FAULTS_PATH, Route, resolve};
use super::state::{Sandbox, lock};

/// Bodies above this are refused (413) without being parsed.
const MAX_BODY_BYTES: usize = 1 << 20;
const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// The sandbox's router: everything goes through [`entry`].
pub(crate) fn router(sandbox: Arc<Sandbox>) -> Router {
    Router::new().fallback(entry).with_state(sandbox)
}

/// A finished answer, before it becomes an HTTP response.
struct Reply {
    status: StatusCode,
    body: Vec<u8>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Reply {
    fn json(status: StatusCode, value: &serde_json::Value) -> Reply {
        Reply {
            status,
            body: serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec()),
            headers: Vec::new(),
        }
    }

    fn error(e: ApiError) -> Reply {
        Reply {
            status: e.status,
            body: serde_json::to_vec(&e.body()).unwrap_or_else(|_| b"{}".to_vec()),
            headers: e.headers,
        }
    }

    fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let request_id = format!("req_{:016x}{:08x}", fastrand::u64(..), fastrand::u32(..));
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            headers.insert(REQUEST_ID, v);
        }
        // Later headers win, so a fault can override even the content type.
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        response
    }
}

/// Marks the journal entry with the answered status, or 499 if the request is dropped first.
struct JournalEntry<'a> {
    sandbox: &'a Sandbox,
    id: u64,
    status: u16,
}

impl Drop for JournalEntry<'_> {
    fn drop(&mut self) {
        lock(&self.sandbox.journal).set_status(self.id, self.status);
    }
}

/// An Idempotency-Key held in flight; released if the request is dropped before completing.
struct Reservation<'a> {
    sandbox: &'a Sandbox,
    scope: String,
    key: String,
    done: bool,
}

impl Reservation<'_> {
    fn complete(mut self, reply: &Reply) {
        lock(&self.sandbox.idempotency).complete(
            &self.scope,
            &self.key,
            reply.status.as_u16(),
            &reply.body,
        );
        self.done = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.done {
            lock(&self.sandbox.idempotency).release(&self.scope, &self.key);
        }
    }
}

/// The faults drawn for one request.
#[derive(Default)]
struct Injected {
    scripted: Option<FaultAction>,
    planned: Option<Decision>,
}

impl Injected {
    /// The journal's name for them (see `RecordedRequest::fault`).
    fn label(&self) -> Option<String> {
        match (&self.scripted, &self.planned) {
            (Some(FaultAction::Respond { status, .. }), _) => Some(format!("scripted:{status}")),
            (Some(FaultAction::Delay(d)), _) => Some(format!("scripted:delay={d:?}")),
            (Some(FaultAction::Hold(_)), _) => Some("scripted:hold".to_owned()),
            (Some(FaultAction::HoldAnswer(_)), _) => Some("scripted:hold-answer".to_owned()),
            (Some(FaultAction::Reset), _) => Some("scripted:reset".to_owned()),
            (None, Some(decision)) => Some(decision.label()),
            (None, None) => None,
        }
    }
}

/// How an injected fault makes a request wait before it is handled.
enum Pause {
    For(std::time::Duration),
    Until(Gate),
}

impl Pause {
    async fn wait(self) {
        match self {
            Pause::For(d) => tokio::time::sleep(d).await,
            Pause::Until(gate) => gate.pass().await,
        }
    }
}

/// How the exchange ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// Send the reply.
    Answer,
    /// Reset the connection; the request had no effect.
    ResetBefore,
    /// Reset the connection; the request was handled (the reply is what it would have said).
    ResetAfter,
}

async fn entry(State(sandbox): State<Arc<Sandbox>>, request: Request) -> Response {
    let connection = request
        .extensions()
        .get::<ConnectInfo<Connection>>()
        .map(|ConnectInfo(connection)| connection.clone());
    let peer = connection.as_ref().map(|c| c.peer);
    let kill = connection.map(|c| c.switch);
    let (parts, body) = request.into_parts();
    let body = to_bytes(body, MAX_BODY_BYTES).await;
    let header = |name: &HeaderName| {
        parts
            .headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let record = RecordedRequest {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        authorization: header(&AUTHORIZATION),
        idempotency_key: header(&IDEMPOTENCY_KEY),
        content_type: header(&CONTENT_TYPE),
        traceparent: header(&HeaderName::from_static("traceparent")),
        tracestate: header(&HeaderName::from_static("tracestate")),
        body: body
            .as_ref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default(),
        status: 0,
        fault: None,
        peer,
    };
    let (id, injected) = admit(&sandbox, record);
    let mut journal_entry = JournalEntry {
        sandbox: &sandbox,
        id,
        status: CLIENT_CLOSED,
    };
    let (reply, ending) = process(&sandbox, &parts, body.ok().as_deref(), injected).await;
    journal_entry.status = reply.status.as_u16();
    if ending != Ending::Answer {
        let Some(kill) = kill else {
            // Only `start` serves the router, always with kill switches; without one, say so
            // rather than pretend.
            tracing::warn!("sandbox: cannot reset a connection without a kill switch");
            journal_entry.status = StatusCode::BAD_GATEWAY.as_u16();
            return Reply::error(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "connection_reset",
                "injected fault: the connection would have been reset",
            ))
            .into_response();
        };
        if ending == Ending::ResetBefore {
            journal_entry.status = CONNECTION_RESET;
        }
        tracing::debug!(method = %parts.method, path = parts.uri.path(), ?ending, "sandbox: injected connection reset");
        // The response below is never written: the connection fails its next I/O.
        kill.trip();
    }
    drop(journal_entry);
    reply.into_response()
}

/// Journals the request and draws its faults, under the journal lock so that the journal's
/// order is the order in which the plan's generator advanced.
fn admit(sandbox: &Sandbox, mut record: RecordedRequest) -> (u64, Injected) {
    let mut journal = lock(&sandbox.journal);
    let injected = if record.path == FAULTS_PATH {
        Injected::default()
    } else {
        let scripted = lock(&sandbox.faults).take(&record.method, &record.path);
        let planned = lock(&sandbox.plan).decide(&record.path, scripted.is_some());
        Injected { scripted, planned }
    };
    record.fault = injected.label();
    (journal.record(record), injected)
}

async fn process(
    sandbox: &Sandbox,
    parts: &Parts,
    body: Option<&[u8]>,
    injected: Injected,
) -> (Reply, Ending) {
    let mut delay = match injected.scripted {
        Some(FaultAction::Respond {
            status,
            body,
            headers,
        }) => return (fault_reply(status, body, &headers), Ending::Answer),
        Some(FaultAction::Reset) => return (reset_reply(), Ending::ResetBefore),
        Some(FaultAction::Delay(d)) => Some(Pause::For(d)),
        Some(FaultAction::Hold(gate)) => Some(Pause::Until(gate)),
        Some(FaultAction::HoldAnswer(gate)) => {
            let reply = answer(sandbox, parts, body, &mut None).await;
            gate.pass().await;
            return (reply, Ending::Answer);
        }
        None => None,
    };
    let mut ending = Ending::Answer;
    if let Some(plan) = injected.planned {
        if plan.revoke {
            lock(&sandbox.tokens).revoke_all();
        }
        delay = delay.or(plan.latency.map(Pause::For));
        let early = match plan.answer {
            Some(PlannedAnswer::Status(status)) => {
                Some((planned_error(status, None), Ending::Answer))
            }
            Some(PlannedAnswer::TooManyRequests(retry_after)) => Some((
                planned_error(StatusCode::TOO_MANY_REQUESTS, Some(retry_after)),
                Ending::Answer,
            )),
            Some(PlannedAnswer::ResetBefore) => Some((reset_reply(), Ending::ResetBefore)),
            Some(PlannedAnswer::ResetAfter) => {
                ending = Ending::ResetAfter;
                None
            }
            None => None,
        };
        if let Some(early) = early {
            if let Some(pause) = delay {
                pause.wait().await;
            }
            return early;
        }
    }
    let reply = answer(sandbox, parts, body, &mut delay).await;
    // A delayed request that never reached its handler (401, 409, a replay, …) is still
    // answered late: the fault delays the answer, whatever it turns out to be.
    if let Some(pause) = delay {
        pause.wait().await;
    }
    (reply, ending)
}

/// What a reset before any effect would have answered. Never sent (see `entry`); it only says
/// what happened if it ever were.
fn reset_reply() -> Reply {
    Reply::error(ApiError::new(
        StatusCode::BAD_GATEWAY,
        "connection_reset",
        "injected fault: connection reset",
    ))
}

/// The answer of a planned status fault: an OMS-shaped error, with no effect.
fn planned_error(status: StatusCode, retry_after: Option<std::time::Duration>) -> Reply {
    let mut e = ApiError::new(
        status,
        "injected_fault",
        format!("injected fault: HTTP {}", status.as_u16()),
    );
    if let Some(retry_after) = retry_after {
        // Whole seconds (the header has no finer unit), rounded up so a client that honours
        // it never comes back early.
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        e.headers
            .push((http::header::RETRY_AFTER, HeaderValue::from(seconds)));
    }
    Reply::error(e)
}

/// Everything after faults. `delay` is taken (and waited) once the request holds its
/// Idempotency-Key and is about to run.
async fn answer(
    sandbox: &Sandbox,
    parts: &Parts,
    body: Option<&[u8]>,
    delay: &mut Option<Pause>,
) -> Reply {
    let path = parts.uri.path();
    let Some(body) = body else {
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        return Reply::error(match declared {
            Some(n) if n <= MAX_BODY_BYTES => {
                ApiError::invalid_json("the request body could not be read")
            }
            _ => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
            ),
        });
    };

    let route = match resolve(&parts.method, path) {
        Ok(route) => route,
        Err(e) => return Reply::error(e),
    };

    // Auth comes before idempotency and validation: an unauthenticated caller learns nothing.
    let api_key = if route == Route::Token {
        None
    } else {
        let token = bearer_token(
            parts
                .headers
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
        );
        let key = token.and_then(|t| lock(&sandbox.tokens).check(t, now_ms()).map(str::to_owned));
        match key {
            Some(key) => Some(key),
            None => return Reply::error(ApiError::unauthorized()),
        }
    };

    let reservation = match (&api_key, parts.method == Method::POST) {
        (Some(scope), true) => match reserve(sandbox, parts, scope, body) {
            Ok(r) => r,
            Err(reply) => return reply,
        },
        _ => None,
    };

    // The delay runs with the key reserved, like a slow real server: a retry that gives up
    // waiting and resends meanwhile sees 409, not a second execution.
    if let Some(pause) = delay.take() {
        pause.wait().await;
    }

    let reply = match handlers::handle(sandbox, &route, &parts.uri, body) {
        Ok((status, value)) => Reply::json(status, &value),
        Err(e) => Reply::error(e),
    };
    if let Some(r) = reservation {
        r.complete(&reply);
    }
    reply
}

/// Checks the Idempotency-Key and reserves it (nothing to reserve when deduplication is off),
/// or produces the answer that replaces handling.
fn reserve<'a>(
    sandbox: &'a Sandbox,
    parts: &Parts,
    scope: &str,
    body: &[u8],
) -> Result<Option<Reservation<'a>>, Reply> {
    let key = match parts.headers.get(&IDEMPOTENCY_KEY).map(HeaderValue::to_str) {
        // An empty header is as good as none.
        None | Some(Ok("")) => {
            return Err(Reply::error(ApiError::new(
                StatusCode::BAD_REQUEST,
                "idempotency_key_required",
                "POST requests require an Idempotency-Key header",
            )));
        }
        Some(Ok(k)) if k.len() <= MAX_IDEMPOTENCY_KEY_CHARS => k,
        Some(_) => {
            return Err(Reply::error(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_idempotency_key",
                format!(
                    "the Idempotency-Key header must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} visible ASCII characters"
                ),
            )));
        }
    };
    let fp = fingerprint(parts.method.as_str(), parts.uri.path(), body);
    let begin = lock(&sandbox.idempotency).begin(scope, key, &fp);
    match begin {
        Begin::Proceed => Ok(Some(Reservation {
            sandbox,
            scope: scope.to_owned(),
            key: key.to_owned(),
            done: false,
        })),
        Begin::Untracked => Ok(None),
        Begin::Replay { status, body } => Err(Reply {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            body,
            headers: vec![(REPLAYED, HeaderValue::from_static("true"))],
        }),
        Begin::InUse => {
            let mut e = ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_in_use",
                "a request with this Idempotency-Key is still being processed; retry later",
            );
            e.headers
                .push((http::header::RETRY_AFTER, HeaderValue::from_static("1")));
            Err(Reply::error(e))
        }
        Begin::Reused => Err(Reply::error(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was already used with a different request",
        ))),
    }
}

/// The answer a `FaultAction::Respond` scripts. Unusable statuses (informational or out of
/// range) become 500 rather than confusing the HTTP stack; unusable headers are skipped.
fn fault_reply(status: u16, body: String, headers: &[(String, String)]) -> Reply {
    let status = StatusCode::from_u16(status)
        .ok()
        .filter(|s| !s.is_informational())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = headers
        .iter()
        .filter_map(|(name, value)| {
            Some((
                HeaderName::from_bytes(name.as_bytes()).ok()?,
                HeaderValue::from_str(value).ok()?,
            ))
        })
        .collect();
    Reply {
        status,
        body: body.into_bytes(),
        headers,
    }
}

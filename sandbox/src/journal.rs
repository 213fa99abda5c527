//! The request journal: every request the sandbox received, in arrival order, with the status
//! it answered, so tests can assert on what the gateway actually sent (headers, bodies, retries).
//!
//! An entry is written when the request arrives and its status filled in when the answer is
//! ready; a request whose caller went away before the answer keeps status 499 ("client closed
//! request", nginx's convention), so the journal never hides an attempt. A request whose
//! connection the sandbox reset on purpose before answering keeps [`CONNECTION_RESET`].
//!
//! Entries hold credentials as sent (tests assert on them), so their `Debug` redacts them.

use std::fmt;

/// One request as the sandbox saw it.
///
/// The fields are exactly what was sent; `Debug` redacts the bearer token and the body of a
/// token exchange (which carries the API secret).
#[derive(Clone)]
pub struct RecordedRequest {
    /// Upper-case method, e.g. `POST`.
    pub method: String,
    /// The path without the query string, e.g. `/cash-ins/ci_…/refresh`.
    pub path: String,
    /// The raw query string, if any (without the `?`).
    pub query: Option<String>,
    /// The `Authorization` header as sent.
    pub authorization: Option<String>,
    /// The `Idempotency-Key` header as sent.
    pub idempotency_key: Option<String>,
    /// The `Content-Type` header as sent.
    pub content_type: Option<String>,
    /// The W3C `traceparent` header as sent.
    pub traceparent: Option<String>,
    /// The W3C `tracestate` header as sent.
    pub tracestate: Option<String>,
    /// The body, lossily decoded as UTF-8.
    pub body: String,
    /// The status the sandbox answered (499 if the caller went away first, 0 while in flight,
    /// [`CONNECTION_RESET`] if an injected fault reset the connection instead of answering; after
    /// a `reset_after` fault it is the status the request would have been answered with).
    pub status: u16,
    /// The injected fault that hit this request, if any: `scripted:503`, `scripted:delay=300ms`,
    /// `scripted:hold`, `scripted:reset`, or from a [`FaultPlan`](super::FaultPlan) `500` …
    /// `504`, `429`, `reset_before`, `reset_after`, `latency=…`, `revoke`, joined with `+` when
    /// several hit (`503+revoke`).
    pub fault: Option<String>,
    /// The client's address of the connection the request came on: requests on one connection
    /// share it, a new connection has a new port.
    pub peer: Option<std::net::SocketAddr>,
}

/// The status recorded for a request abandoned by its caller before it was answered.
pub(crate) const CLIENT_CLOSED: u16 = 499;

/// The status recorded for a request whose connection an injected fault reset before it had any
/// effect (no HTTP status was sent). Outside the HTTP range on purpose.
pub const CONNECTION_RESET: u16 = 1000;

impl fmt::Debug for RecordedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keep the scheme (a test may care that it is `Bearer`), never the credential.
        let authorization = self
            .authorization
            .as_deref()
            .map(|a| match a.trim().split_once(' ') {
                Some((scheme, _)) => format!("{scheme} [redacted]"),
                None => "[redacted]".to_owned(),
            });
        let body: &dyn fmt::Debug = if self.path.starts_with("/auth/token") {
            &"[redacted]"
        } else {
            &self.body
        };
        f.debug_struct("RecordedRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("authorization", &authorization)
            .field("idempotency_key", &self.idempotency_key)
            .field("content_type", &self.content_type)
            .field("traceparent", &self.traceparent)
            .field("tracestate", &self.tracestate)
            .field("body", body)
            .field("status", &self.status)
            .field("fault", &self.fault)
            .field("peer", &self.peer)
            .finish()
    }
}

/// The most entries kept: a long-running sandbox (`cargo run`) must not grow without bound, so
/// the oldest entries are dropped beyond this.
const MAX_ENTRIES: usize = 50_000;

/// Entries in arrival order, each tagged with an id so a late status update finds its entry even
/// after a `clear_journal` shifted everything.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    next_id: u64,
    entries: std::collections::VecDeque<(u64, RecordedRequest)>,
}

// === impl Journal ===

impl Journal {
    /// Appends an entry and returns the id to complete it with.
    pub(crate) fn record(&mut self, request: RecordedRequest) -> u64 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.pop_front();
        }
        self.entries.push_back((id, request));
        id
    }

    /// Fills in the answered status; a no-op if the entry was cleared meanwhile.
    pub(crate) fn set_status(&mut self, id: u64, status: u16) {
        // Recent entries are at the end, so search backwards.
        if let Some((_, entry)) = self.entries.iter_mut().rev().find(|(i, _)| *i == id) {
            entry.status = status;
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<RecordedRequest> {
        self.entries.iter().map(|(_, r)| r.clone()).collect()
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }

    /// Entries with this method (case-insensitive; `""` or `"*"` for any) under this path prefix.
    pub(crate) fn count(&self, method: &str, path_prefix: &str) -> usize {
        let any_method = method.is_empty() || method == "*";
        self.entries
            .iter()
            .filter(|(_, r)| any_method || r.method.eq_ignore_ascii_case(method))
            .filter(|(_, r)| r.path.starts_with(path_prefix))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str) -> RecordedRequest {
        RecordedRequest {
            method: method.into(),
            path: path.into(),
            query: None,
            authorization: None,
            idempotency_key: None,
            content_type: None,
            traceparent: None,
            tracestate: None,
            body: String::new(),
            status: 0,
            fault: None,
            peer: None,
        }
    }

    #[test]
    fn statuses_land_on_their_entry_even_across_a_clear() {
        let mut j = Journal::default();
        let a = j.record(req("POST", "/auth/token"));
        j.clear();
        let b = j.record(req("GET", "/cash-ins/ci_1"));
        j.set_status(a, 200);
        j.set_status(b, 404);
        let snap = j.snapshot();
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].status, 404);
        assert_eq!(j.count("get", "/cash-ins"), 1);
        assert_eq!(j.count("*", "/"), 1);
        assert_eq!(j.count("POST", "/"), 0);
    }

    #[test]
    fn debug_redacts_tokens_and_the_token_exchange_body() {
        let exchange = RecordedRequest {
            body: r#"{"apiKey":"sk_x","apiSecret":"very-secret"}"#.into(),
            ..req("POST", "/auth/token")
        };
        let call = RecordedRequest {
            authorization: Some("Bearer sdbx_at_abc123".into()),
            body: r#"{"customerId":"cst_1"}"#.into(),
            ..req("POST", "/cash-ins")
        };
        let printed = format!("{exchange:?} {call:?} {exchange:#?}");
        assert!(!printed.contains("very-secret"), "{printed}");
        assert!(!printed.contains("sdbx_at_abc123"), "{printed}");
        assert!(
            printed.contains(r#"authorization: Some("Bearer [redacted]")"#),
            "{printed}"
        );
        assert!(printed.contains(r#"body: "[redacted]""#), "{printed}");
        assert!(
            printed.contains("cst_1"),
            "other bodies are kept: {printed}"
        );
        // The fields themselves stay as sent.
        assert_eq!(call.authorization.as_deref(), Some("Bearer sdbx_at_abc123"));
        assert!(exchange.body.contains("very-secret"));
        let odd = RecordedRequest {
            authorization: Some("token-without-scheme".into()),
            ..req("GET", "/cash-ins")
        };
        assert!(!format!("{odd:?}").contains("token-without-scheme"));
    }
}

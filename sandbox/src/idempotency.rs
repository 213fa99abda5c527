//! Idempotency-Key records, following the IETF Idempotency-Key draft as OMS-style APIs do.
//!
//! A record is scoped by (API key, Idempotency-Key) and remembers a fingerprint of the request
//! (method, path and the body normalised as JSON, so whitespace and key order do not matter).
//! While the first request runs the record is *in flight* (a second one gets 409); once it
//! completes with a 2xx or a 4xx other than 409/429 the response is kept and replayed verbatim
//! for the same fingerprint, and a different fingerprint gets 422. Anything else (5xx, 409, 429,
//! a dropped request) releases the key so the caller's retry can run for real.
//!
//! Deduplication can be switched off (`SandboxHandle::set_idempotency`): every request then
//! proceeds and nothing is recorded, as if OMS ignored the key.

use std::collections::HashMap;

use serde_json::Value;

#[derive(Debug)]
enum Record {
    InFlight {
        fingerprint: String,
    },
    Done {
        fingerprint: String,
        status: u16,
        body: Vec<u8>,
    },
}

impl Record {
    fn fingerprint(&self) -> &str {
        match self {
            Record::InFlight { fingerprint } | Record::Done { fingerprint, .. } => fingerprint,
        }
    }
}

/// What to do with a request carrying an Idempotency-Key.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Begin {
    /// First use (or a released key): handle it; the key is now in flight.
    Proceed,
    /// Deduplication is off: handle it, and record nothing (no `complete` or `release` to do).
    Untracked,
    /// Seen and finished: answer exactly this again, with no new effect.
    Replay { status: u16, body: Vec<u8> },
    /// The first request with this key is still being handled.
    InUse,
    /// The key was used for a different request.
    Reused,
}

/// Every idempotency record, keyed by (API key, Idempotency-Key).
///
/// Records are kept for the sandbox's lifetime: it lives as long as a test or a demo, and a
/// replay that silently stopped working after some TTL would only make tests flaky.
#[derive(Debug)]
pub(crate) struct IdempotencyStore {
    records: HashMap<(String, String), Record>,
    /// Off: every request proceeds and nothing is recorded.
    enabled: bool,
}

impl Default for IdempotencyStore {
    fn default() -> Self {
        IdempotencyStore {
            records: HashMap::new(),
            enabled: true,
        }
    }
}

// === impl IdempotencyStore ===

impl IdempotencyStore {
    /// Turns deduplication on or off (see the module docs).
    pub(crate) fn set_enabled(&mut self, enabled: bool) {
        self.enabled = enabled;
    }

    pub(crate) fn begin(&mut self, scope: &str, key: &str, fingerprint: &str) -> Begin {
        if !self.enabled {
            return Begin::Untracked;
        }
        let id = (scope.to_owned(), key.to_owned());
        match self.records.get(&id) {
            // A mismatched body is a caller bug whether or not the first request is done, so it
            // outranks "in use".
            Some(r) if r.fingerprint() != fingerprint => Begin::Reused,
            Some(Record::InFlight { .. }) => Begin::InUse,
            Some(Record::Done { status, body, .. }) => Begin::Replay {
                status: *status,
                body: body.clone(),
            },
            None => {
                self.records.insert(
                    id,
                    Record::InFlight {
                        fingerprint: fingerprint.to_owned(),
                    },
                );
                Begin::Proceed
            }
        }
    }

    /// Records the outcome of an in-flight request: kept for replay if storable, else released.
    pub(crate) fn complete(&mut self, scope: &str, key: &str, status: u16, body: &[u8]) {
        let id = (scope.to_owned(), key.to_owned());
        let Some(Record::InFlight { fingerprint }) = self.records.remove(&id) else {
            return;
        };
        if storable(status) {
            self.records.insert(
                id,
                Record::Done {
                    fingerprint,
                    status,
                    body: body.to_vec(),
                },
            );
        }
    }

    /// Forgets an in-flight record (the request was abandoned before it had an outcome).
    pub(crate) fn release(&mut self, scope: &str, key: &str) {
        let id = (scope.to_owned(), key.to_owned());
        if matches!(self.records.get(&id), Some(Record::InFlight { .. })) {
            self.records.remove(&id);
        }
    }
}

/// Whether a response is final enough to replay: 2xx and 4xx, except 409 and 429, which say
/// "try again later" and would be wrong to repeat forever.
pub(crate) fn storable(status: u16) -> bool {
    (200..300).contains(&status) || ((400..500).contains(&status) && status != 409 && status != 429)
}

/// The request identity an Idempotency-Key is bound to.
pub(crate) fn fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    let body = if body.is_empty() {
        String::new()
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(v) => {
                let mut out = String::from("json:");
                canonical_json(&v, &mut out);
                out
            }
            Err(_) => format!("raw:{}", String::from_utf8_lossy(body)),
        }
    };
    format!("{} {path}\n{body}", method.to_ascii_uppercase())
}

/// Writes JSON with object keys sorted and no whitespace. (serde_json's map is only sorted when
/// nobody in the dependency tree enabled `preserve_order`, so the order is made explicit here.)
fn canonical_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push(':');
                canonical_json(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&serde_json::to_string(scalar).unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_after_completion_with_the_same_request() {
        let mut s = IdempotencyStore::default();
        let fp = fingerprint("POST", "/cash-ins", br#"{"a":1,"b":[1,2]}"#);
        assert_eq!(s.begin("sk", "k1", &fp), Begin::Proceed);
        s.complete("sk", "k1", 201, b"{\"id\":\"ci_1\"}");
        // Same JSON, different whitespace and key order: the same request.
        let again = fingerprint("POST", "/cash-ins", b"{ \"b\": [1, 2], \"a\": 1 }");
        assert_eq!(
            s.begin("sk", "k1", &again),
            Begin::Replay {
                status: 201,
                body: b"{\"id\":\"ci_1\"}".to_vec()
            }
        );
    }

    #[test]
    fn a_different_request_under_the_same_key_is_rejected() {
        let mut s = IdempotencyStore::default();
        let fp = fingerprint("POST", "/cash-ins", br#"{"a":1}"#);
        assert_eq!(s.begin("sk", "k1", &fp), Begin::Proceed);
        let other = fingerprint("POST", "/cash-ins", br#"{"a":2}"#);
        assert_eq!(s.begin("sk", "k1", &other), Begin::Reused);
        s.complete("sk", "k1", 201, b"{}");
        assert_eq!(s.begin("sk", "k1", &other), Begin::Reused);
        let other_path = fingerprint("POST", "/cash-ins/ci_1/refresh", br#"{"a":1}"#);
        assert_eq!(s.begin("sk", "k1", &other_path), Begin::Reused);
    }

    #[test]
    fn in_flight_key_answers_in_use_until_released() {
        let mut s = IdempotencyStore::default();
        let fp = fingerprint("POST", "/cash-ins/ci_1/refresh", b"");
        assert_eq!(s.begin("sk", "k1", &fp), Begin::Proceed);
        assert_eq!(s.begin("sk", "k1", &fp), Begin::InUse);
        s.release("sk", "k1");
        assert_eq!(s.begin("sk", "k1", &fp), Begin::Proceed);
    }

    #[test]
    fn server_errors_and_conflicts_are_not_stored() {
        let mut s = IdempotencyStore::default();
        let fp = fingerprint("POST", "/x", b"");
        for status in [500, 503, 409, 429] {
            assert_eq!(s.begin("sk", "k", &fp), Begin::Proceed);
            s.complete("sk", "k", status, b"{}");
        }
        assert_eq!(s.begin("sk", "k", &fp), Begin::Proceed);
        s.complete("sk", "k", 400, b"{\"error\":{}}");
        assert!(matches!(
            s.begin("sk", "k", &fp),
            Begin::Replay { status: 400, .. }
        ));
    }

    #[test]
    fn switched_off_every_request_proceeds_and_nothing_is_recorded() {
        let mut s = IdempotencyStore::default();
        let fp = fingerprint("POST", "/cash-ins", br#"{"a":1}"#);
        let other = fingerprint("POST", "/cash-ins", br#"{"a":2}"#);
        assert_eq!(s.begin("sk", "done", &fp), Begin::Proceed);
        s.complete("sk", "done", 201, b"{}");
        s.set_enabled(false);
        // The same request again, another body, the same key twice at once: each one runs.
        assert_eq!(s.begin("sk", "done", &fp), Begin::Untracked);
        assert_eq!(s.begin("sk", "done", &other), Begin::Untracked);
        assert_eq!(s.begin("sk", "k", &fp), Begin::Untracked);
        assert_eq!(s.begin("sk", "k", &fp), Begin::Untracked);
        s.set_enabled(true);
        // Nothing was recorded while off; what was recorded before applies again.
        assert_eq!(s.begin("sk", "k", &other), Begin::Proceed);
        assert!(matches!(
            s.begin("sk", "done", &fp),
            Begin::Replay { status: 201, .. }
        ));
        assert_eq!(s.begin("sk", "done", &other), Begin::Reused);
    }

    #[test]
    fn keys_are_scoped_per_api_key() {
        let mut s = IdempotencyStore::default();
        let fp = fingerprint("POST", "/x", b"");
        assert_eq!(s.begin("sk_a", "k", &fp), Begin::Proceed);
        assert_eq!(s.begin("sk_b", "k", &fp), Begin::Proceed);
    }

    #[test]
    fn fingerprints_separate_json_from_raw_and_empty() {
        assert_ne!(
            fingerprint("POST", "/x", b""),
            fingerprint("POST", "/x", b"\"\"")
        );
        assert_ne!(
            fingerprint("POST", "/x", b"{}"),
            fingerprint("POST", "/x", b"{")
        );
        assert_eq!(
            fingerprint("post", "/x", b"{}"),
            fingerprint("POST", "/x", b" {} ")
        );
    }
}

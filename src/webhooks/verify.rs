//! Verification of a webhook delivery: the Standard Webhooks scheme (standardwebhooks.com),
//! which the `whsec_` prefix of OMS's signing secrets comes from. OMS's documentation names the
//! `Webhook-Signature` header and the `whsec_` secret but does not publish the scheme, so it sits
//! behind the one small [`Verifier`] trait: another scheme is another implementation.
//!
//! Standard Webhooks: headers `webhook-id`, `webhook-timestamp` (Unix seconds) and
//! `webhook-signature` (space-separated `v1,<base64 HMAC-SHA256>` entries, several while a
//! sender rotates its secret); the signed content is `{id}.{timestamp}.{body}`; the key is the
//! base64 after `whsec_`. Comparison is constant-time (`ring::hmac::verify`). A delivery whose
//! timestamp is more than [`TOLERANCE`] away from now is refused (a replay outside the window in
//! which ids are remembered). Nothing here logs; a secret never leaves [`StandardWebhooks`].

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use ring::hmac;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How far a delivery's timestamp may be from now (either way).
pub const TOLERANCE: Duration = Duration::from_secs(5 * 60);
/// The longest `webhook-id` accepted (they are remembered for replay protection).
const MAX_ID_LEN: usize = 256;
/// The most entries a `webhook-signature` may list: a sender lists one per secret it signs
/// with (two during a rotation). Each entry costs an HMAC of the body (up to 64 KiB) per
/// configured secret, so the count is checked before any is computed: the admin listener takes
/// headers of hundreds of KiB, and 5,000 entries over a 60 KiB body hashed 300 MB.
pub const MAX_SIGNATURES: usize = 8;

/// A delivery that passed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The sender's delivery id (`webhook-id`): the same for every retry of one event.
    pub id: String,
}

/// Why a delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Missing or malformed headers, or no signature matches the body: HTTP 401.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// Signed, but the timestamp is outside the tolerance: HTTP 400.
    #[error("the webhook-timestamp is more than 5 minutes away from now")]
    Stale,
}

/// A webhook verification scheme.
pub trait Verifier: Send + Sync + 'static {
    /// Whether the delivery of `body` with `headers` at `now` is authentic and fresh.
    fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Verified, Rejection>;
}

/// The Standard Webhooks scheme with one or more secrets (every one is tried, so a receiver can
/// hold the old and the new secret across a rotation).
pub struct StandardWebhooks {
    keys: Vec<hmac::Key>,
}

impl std::fmt::Debug for StandardWebhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandardWebhooks")
            .field("secrets", &self.keys.len())
            .finish_non_exhaustive()
    }
}

// === impl StandardWebhooks ===

impl StandardWebhooks {
    /// The scheme with the secrets in `text`: `whsec_<base64>` entries separated by whitespace
    /// (one per line in the file). The error says which entry is wrong, never its content.
    pub fn from_secrets(text: &str) -> Result<Self, String> {
        let keys = text
            .split_whitespace()
            .enumerate()
            .map(|(n, entry)| {
                let encoded = entry.strip_prefix("whsec_").ok_or_else(|| {
                    format!("webhook secret {} does not start with `whsec_`", n + 1)
                })?;
                let raw = STANDARD.decode(encoded).map_err(|_| {
                    format!(
                        "webhook secret {} is not `whsec_` followed by base64",
                        n + 1
                    )
                })?;
                if raw.is_empty() {
                    return Err(format!("webhook secret {} is empty", n + 1));
                }
                Ok(hmac::Key::new(hmac::HMAC_SHA256, &raw))
            })
            .collect::<Result<Vec<_>, String>>()?;
        if keys.is_empty() {
            return Err("the webhook secret file holds no `whsec_` secret".to_owned());
        }
        Ok(Self { keys })
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

impl Verifier for StandardWebhooks {
    fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Verified, Rejection> {
        use Rejection::Unauthenticated;
        let id = header(headers, "webhook-id").ok_or(Unauthenticated("no webhook-id header"))?;
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(Unauthenticated(
                "the webhook-id header is empty or too long",
            ));
        }
        let stamp = header(headers, "webhook-timestamp")
            .ok_or(Unauthenticated("no webhook-timestamp header"))?;
        let seconds: u64 = stamp
            .parse()
            .map_err(|_| Unauthenticated("the webhook-timestamp is not Unix seconds"))?;
        let signatures = header(headers, "webhook-signature")
            .ok_or(Unauthenticated("no webhook-signature header"))?;
        if signatures.split_whitespace().nth(MAX_SIGNATURES).is_some() {
            return Err(Unauthenticated(
                "the webhook-signature header lists more than 8 signatures",
            ));
        }
        let mut content = Vec::with_capacity(id.len() + stamp.len() + body.len() + 2);
        content.extend_from_slice(id.as_bytes());
        content.push(b'.');
        content.extend_from_slice(stamp.as_bytes());
        content.push(b'.');
        content.extend_from_slice(body);
        let matches = signatures
            .split_whitespace()
            .filter_map(|entry| entry.strip_prefix("v1,"))
            .filter_map(|encoded| STANDARD.decode(encoded).ok())
            .any(|tag| {
                self.keys
                    .iter()
                    .any(|key| hmac::verify(key, &content, &tag).is_ok())
            });
        if !matches {
            return Err(Unauthenticated(
                "no v1 signature in webhook-signature matches the body with the configured secret",
            ));
        }
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        if now.abs_diff(seconds) > TOLERANCE.as_secs() {
            return Err(Rejection::Stale);
        }
        Ok(Verified { id: id.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks specification's published test vector (its reference libraries'
    /// tests use it): this secret, id, timestamp and body give this signature.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const STAMP: u64 = 1_614_265_330;
    const BODY: &str = r#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn headers(id: &str, stamp: u64, signature: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", id.parse().unwrap());
        headers.insert("webhook-timestamp", stamp.to_string().parse().unwrap());
        headers.insert("webhook-signature", signature.parse().unwrap());
        headers
    }

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn scheme(secrets: &str) -> StandardWebhooks {
        StandardWebhooks::from_secrets(secrets).unwrap()
    }

    /// The signature computed from first principles with ring, not through the verifier.
    fn sign(secret: &str, id: &str, stamp: u64, body: &str) -> String {
        let raw = STANDARD
            .decode(secret.strip_prefix("whsec_").unwrap())
            .unwrap();
        let key = hmac::Key::new(hmac::HMAC_SHA256, &raw);
        let tag = hmac::sign(&key, format!("{id}.{stamp}.{body}").as_bytes());
        format!("v1,{}", STANDARD.encode(tag.as_ref()))
    }

    #[test]
    fn the_published_test_vector_verifies_and_ring_computes_it() {
        assert_eq!(sign(SECRET, ID, STAMP, BODY), SIGNATURE);
        let verified =
            scheme(SECRET).verify(&headers(ID, STAMP, SIGNATURE), BODY.as_bytes(), at(STAMP));
        assert_eq!(verified, Ok(Verified { id: ID.to_owned() }));
    }

    #[test]
    fn openssl_computes_the_same_signature() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let raw = STANDARD
            .decode(SECRET.strip_prefix("whsec_").unwrap())
            .unwrap();
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let child = Command::new("openssl")
            .args([
                "dgst",
                "-sha256",
                "-mac",
                "HMAC",
                "-macopt",
                &format!("hexkey:{hex}"),
                "-binary",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            eprintln!("skipped: no openssl on PATH");
            return;
        };
        let stamp = STAMP + 17;
        let body = r#"{"event":"cash_in.completed","data":{"id":"ci_1"}}"#;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(format!("{ID}.{stamp}.{body}").as_bytes())
            .unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let signature = format!("v1,{}", STANDARD.encode(&out.stdout));
        assert_eq!(signature, sign(SECRET, ID, stamp, body));
        let verified =
            scheme(SECRET).verify(&headers(ID, stamp, &signature), body.as_bytes(), at(stamp));
        assert!(verified.is_ok(), "{verified:?}");
    }

    #[test]
    fn a_changed_body_or_a_wrong_secret_is_unauthenticated() {
        let h = headers(ID, STAMP, SIGNATURE);
        let tampered = scheme(SECRET).verify(&h, br#"{"test": 2432232315}"#, at(STAMP));
        assert!(matches!(tampered, Err(Rejection::Unauthenticated(_))));
        let other = "whsec_dGhlIG90aGVyIHNlY3JldCBvZiB0aGlzIHRlc3Q=";
        let wrong = scheme(other).verify(&h, BODY.as_bytes(), at(STAMP));
        assert!(matches!(wrong, Err(Rejection::Unauthenticated(_))));
        let mut missing = h.clone();
        missing.remove("webhook-signature");
        assert_eq!(
            scheme(SECRET).verify(&missing, BODY.as_bytes(), at(STAMP)),
            Err(Rejection::Unauthenticated("no webhook-signature header"))
        );
        let v2 = headers(ID, STAMP, &SIGNATURE.replace("v1,", "v2,"));
        assert!(
            scheme(SECRET)
                .verify(&v2, BODY.as_bytes(), at(STAMP))
                .is_err()
        );
    }

    #[test]
    fn a_timestamp_beyond_five_minutes_either_way_is_stale() {
        let h = headers(ID, STAMP, SIGNATURE);
        let s = scheme(SECRET);
        assert!(s.verify(&h, BODY.as_bytes(), at(STAMP + 300)).is_ok());
        assert!(s.verify(&h, BODY.as_bytes(), at(STAMP - 300)).is_ok());
        assert_eq!(
            s.verify(&h, BODY.as_bytes(), at(STAMP + 301)),
            Err(Rejection::Stale)
        );
        assert_eq!(
            s.verify(&h, BODY.as_bytes(), at(STAMP - 301)),
            Err(Rejection::Stale)
        );
    }

    #[test]
    fn any_of_several_signatures_and_any_of_several_secrets_will_do() {
        let old = "whsec_dGhlIG90aGVyIHNlY3JldCBvZiB0aGlzIHRlc3Q=";
        let both = format!("{} {SIGNATURE}", sign(old, ID, STAMP, BODY));
        assert!(
            scheme(SECRET)
                .verify(&headers(ID, STAMP, &both), BODY.as_bytes(), at(STAMP))
                .is_ok()
        );
        let signed_old = headers(ID, STAMP, &sign(old, ID, STAMP, BODY));
        let rotating = scheme(&format!("{SECRET}\n{old}\n"));
        assert!(
            rotating
                .verify(&signed_old, BODY.as_bytes(), at(STAMP))
                .is_ok()
        );
        assert!(
            scheme(SECRET)
                .verify(&signed_old, BODY.as_bytes(), at(STAMP))
                .is_err()
        );
    }

    #[test]
    fn a_bad_secret_file_says_which_entry_without_showing_it() {
        let err = StandardWebhooks::from_secrets("whsec_ok== notasecret").unwrap_err();
        assert!(
            err.contains("secret 1") || err.contains("secret 2"),
            "{err}"
        );
        assert!(!err.contains("notasecret"));
        assert!(StandardWebhooks::from_secrets("  \n").is_err());
        assert!(!format!("{:?}", scheme(SECRET)).contains("MfKQ"));
    }
}

//! Bearer tokens: the credential exchange behind `POST /auth/token` and the check every other
//! endpoint makes.
//!
//! Tokens are opaque random strings from the OS generator (not the seeded one: a seed makes codes
//! and ids reproducible, and nothing should make credentials guessable). Each remembers the API
//! key it was issued to, because idempotency records are scoped per key.

use std::collections::HashMap;
use std::fmt;

use super::clock::Millis;

struct Grant {
    api_key: String,
    expires_at: Millis,
}

/// Live tokens and the count of successful exchanges.
#[derive(Default)]
pub(crate) struct Tokens {
    live: HashMap<String, Grant>,
    exchanges: usize,
}

/// Counts only: the map's keys are live bearer tokens.
impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("live", &self.live.len())
            .field("exchanges", &self.exchanges)
            .finish()
    }
}

// === impl Tokens ===

impl Tokens {
    /// Issues a token for `api_key` valid until `expires_at`.
    pub(crate) fn issue(&mut self, api_key: &str, now: Millis, expires_at: Millis) -> String {
        // Expired grants are dead weight; dropping them here keeps the map bounded by the
        // number of tokens alive at once.
        self.live.retain(|_, g| g.expires_at > now);
        let token = format!(
            "sdbx_at_{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        self.live.insert(
            token.clone(),
            Grant {
                api_key: api_key.to_owned(),
                expires_at,
            },
        );
        self.exchanges += 1;
        token
    }

    /// The API key behind a live token, or `None` for unknown, expired or revoked tokens.
    pub(crate) fn check(&self, token: &str, now: Millis) -> Option<&str> {
        self.live
            .get(token)
            .filter(|g| g.expires_at > now)
            .map(|g| g.api_key.as_str())
    }

    pub(crate) fn revoke_all(&mut self) {
        self.live.clear();
    }

    pub(crate) fn exchanges(&self) -> usize {
        self.exchanges
    }
}

/// The token from an `Authorization: Bearer <token>` header (scheme case-insensitive).
pub(crate) fn bearer_token(header: Option<&str>) -> Option<&str> {
    let header = header?.trim();
    let (scheme, token) = header.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Compares secrets without an early exit, so response timing says nothing about how much of a
/// guess was right.
pub(crate) fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_expire_and_revoke() {
        let mut t = Tokens::default();
        let a = t.issue("sk_a", 0, 1_000);
        assert_eq!(t.check(&a, 999), Some("sk_a"));
        assert_eq!(t.check(&a, 1_000), None);
        let b = t.issue("sk_a", 0, 5_000);
        assert_ne!(a, b);
        t.revoke_all();
        assert_eq!(t.check(&b, 1), None);
        assert_eq!(t.exchanges(), 2);
        let c = t.issue("sk_a", 0, 5_000);
        assert!(!format!("{t:?}").contains(&c));
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(Some("Basic abc")), None);
        assert_eq!(bearer_token(Some("Bearer")), None);
        assert_eq!(bearer_token(None), None);
    }

    #[test]
    fn secret_comparison() {
        assert!(constant_time_eq("s3cret", "s3cret"));
        assert!(!constant_time_eq("s3cret", "s3cre"));
        assert!(!constant_time_eq("s3cret", "s3cres"));
        assert!(!constant_time_eq("", "x"));
        assert!(constant_time_eq("", ""));
    }
}

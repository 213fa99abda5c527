//! AIP-158 page tokens for ListCashIns: opaque to callers, and bound to the filters they were
//! issued for, so a token reused with other filters is INVALID_ARGUMENT instead of a silently
//! wrong page. A token carries the upstream's `nextCursor` and a fingerprint of the filters.
//! Tokens are not signed, so a caller can forge one: its length is checked before anything else
//! ([`MAX_PAGE_TOKEN_CHARS`]), and the cursor in it goes upstream only as a query value.

use crate::oms::MAX_CURSOR_BYTES;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

const VERSION: &str = "v1";

/// The longest page token accepted, in characters: the longest this gateway issues (the
/// version, the filters' fingerprint and a cursor of at most [`MAX_CURSOR_BYTES`], in base64),
/// 1,392 characters.
pub const MAX_PAGE_TOKEN_CHARS: usize =
    (VERSION.len() + 1 + 16 + 1 + MAX_CURSOR_BYTES).div_ceil(3) * 4;

/// Encodes a token for the page after `cursor`.
pub fn encode(filters: u64, cursor: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{VERSION}:{filters:016x}:{cursor}"))
}

/// Decodes a token, checking it was issued for `filters`. The error says what is wrong.
pub fn decode(token: &str, filters: u64) -> Result<String, &'static str> {
    if token.len() > MAX_PAGE_TOKEN_CHARS {
        return Err("is longer than any page token this gateway issues");
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| "is not a page token issued by this gateway")?;
    let text =
        String::from_utf8(bytes).map_err(|_| "is not a page token issued by this gateway")?;
    let mut parts = text.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(VERSION), Some(hash), Some(cursor)) if !cursor.is_empty() => {
            if hash != format!("{filters:016x}") {
                Err(
                    "was issued for different filters; send the same customer_id, status and created_* as the first page",
                )
            } else {
                Ok(cursor.to_owned())
            }
        }
        _ => Err("is not a page token issued by this gateway"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::fingerprint;

    #[test]
    fn tokens_round_trip_and_are_bound_to_their_filters() {
        let filters = fingerprint(&["cst_1", "pending", "", ""]);
        let token = encode(filters, "ci_123");
        assert_eq!(decode(&token, filters), Ok("ci_123".to_owned()));
        assert!(decode(&token, fingerprint(&["cst_2", "pending", "", ""])).is_err());
        assert!(decode("garbage!", filters).is_err());
        assert_ne!(fingerprint(&["ab", "c"]), fingerprint(&["a", "bc"]));
    }

    #[test]
    fn the_longest_token_issued_is_accepted_and_one_longer_is_not() {
        let filters = fingerprint(&["cst_1", "", "", ""]);
        let cursor = "c".repeat(MAX_CURSOR_BYTES);
        let longest = encode(filters, &cursor);
        assert!(longest.len() <= MAX_PAGE_TOKEN_CHARS, "{}", longest.len());
        assert_eq!(MAX_PAGE_TOKEN_CHARS, 1392, "as documented");
        assert_eq!(decode(&longest, filters), Ok(cursor));
        let forged = encode(filters, &"c".repeat(100_000));
        assert_eq!(
            decode(&forged, filters),
            Err("is longer than any page token this gateway issues")
        );
    }
}

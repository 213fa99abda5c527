//! A caller's identity carries its kind in its spelling, so that no kind can pass for another:
//! a URI (a SPIFFE ID, from a certificate's URI SAN or a mesh header) is written as it is
//! (`spiffe://cluster.local/ns/checkout/sa/checkout`); a DNS name (a certificate's DNS SAN, a
//! Linkerd identity) as `dns:payments.example.test`; a certificate's subject common name as
//! `cn:legacy-batch`. A CN or DNS name that looks like a URI still starts with `cn:`/`dns:`, so
//! it matches no URI rule of the policy, and a policy rule names the kind it admits.
//!
//! Every identity is bounded and free of control characters before it reaches a policy, an
//! idempotency key or a log line; URIs and DNS names are printable ASCII without spaces.

/// The longest identity, in characters, of any kind; longer names are no identity.
pub const MAX_IDENTITY_CHARS: usize = 1024;

/// The prefix of an identity taken from a DNS name.
pub const DNS_PREFIX: &str = "dns:";

/// The prefix of an identity taken from a certificate's subject common name.
pub const CN_PREFIX: &str = "cn:";

/// A URI identity (`scheme://…`), if `uri` is one.
pub fn uri(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once("://")?;
    let scheme_ok = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    (scheme_ok && !rest.is_empty() && visible_ascii(uri)).then(|| uri.to_owned())
}

/// A DNS-name identity (`dns:name`), if `name` is one.
pub fn dns(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'*'));
    ok.then(|| format!("{DNS_PREFIX}{name}"))
        .filter(|id| id.len() <= MAX_IDENTITY_CHARS)
}

/// A common-name identity (`cn:name`), if `name` is usable: not empty, no control character.
pub fn common_name(name: &str) -> Option<String> {
    let ok = !name.trim().is_empty() && !name.chars().any(char::is_control);
    ok.then(|| format!("{CN_PREFIX}{name}"))
        .filter(|id| id.chars().count() <= MAX_IDENTITY_CHARS)
}

/// Whether a policy's caller name (without its trailing `*`) says which kind it admits: a URI
/// (`scheme://…`, or a prefix of one), `dns:…` or `cn:…`.
pub fn names_a_kind(name: &str) -> bool {
    name.starts_with(DNS_PREFIX) || name.starts_with(CN_PREFIX) || name.contains("://")
}

fn visible_ascii(text: &str) -> bool {
    text.len() <= MAX_IDENTITY_CHARS && text.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_spelling() {
        assert_eq!(
            uri("spiffe://td/ns/a/sa/b").as_deref(),
            Some("spiffe://td/ns/a/sa/b")
        );
        assert_eq!(dns("a.example.test").as_deref(), Some("dns:a.example.test"));
        assert_eq!(
            common_name("zoë-payments").as_deref(),
            Some("cn:zoë-payments")
        );
        // A URI-shaped CN or DNS name is still a CN or DNS name.
        assert_eq!(
            common_name("spiffe://td/ns/a/sa/b").as_deref(),
            Some("cn:spiffe://td/ns/a/sa/b")
        );
    }

    #[test]
    fn unusable_names_are_no_identity() {
        for bad in [
            "",
            "spiffe://",
            "://x",
            "1x://y",
            "spiffe://a b",
            "spiffe://a\u{7f}",
        ] {
            assert_eq!(uri(bad), None, "{bad:?}");
        }
        for bad in ["", "a b", "a/b", "spiffe://x", "é.example"] {
            assert_eq!(dns(bad), None, "{bad:?}");
        }
        for bad in ["", "  ", "a\nb", "a\u{1b}[31m"] {
            assert_eq!(common_name(bad), None, "{bad:?}");
        }
        assert_eq!(
            uri(&format!("spiffe://{}", "a".repeat(MAX_IDENTITY_CHARS))),
            None
        );
    }
}

//! The `x-forwarded-client-cert` header, parsed by its grammar: elements separated by `,`, each
//! a list of `key=value` pairs separated by `;`, a value either bare (no `,`, `;`, `=` or `"`)
//! or double-quoted with `\"` (and `\\`) as its only escapes. The caller is the `URI` of the
//! last element, the one the sidecar in front of us appended; every earlier element may have
//! come from the caller itself (Envoy's `APPEND_FORWARD`).
//!
//! Nothing is guessed: a header that does not parse completely (an unbalanced quote, a stray
//! escape, an empty element or pair, a quote in the middle of a value) is refused whole, and so
//! is a last element with no `URI` or with more than one. Refusing is what keeps a caller's own
//! prefix from swallowing the sidecar's element: with an unterminated quote in the prefix, the
//! quotes of the whole header no longer balance.

/// The longest header value parsed; longer values are refused before any work.
pub const MAX_XFCC_BYTES: usize = 16 * 1024;

/// The `URI` of the last element of `value`, if `value` parses completely and that element
/// names exactly one `URI`.
pub fn last_uri(value: &str) -> Option<String> {
    if value.len() > MAX_XFCC_BYTES {
        return None;
    }
    let elements = parse(value)?;
    let last = elements.last()?;
    let mut uris = last
        .iter()
        .filter(|(key, _)| key.eq_ignore_ascii_case("uri"))
        .map(|(_, value)| value);
    let uri = uris.next()?;
    if uris.next().is_some() || uri.is_empty() {
        return None;
    }
    Some(uri.clone())
}

/// One element: its pairs, values unquoted.
type Element<'a> = Vec<(&'a str, String)>;

/// Every element of `value`, or `None` if any part of it breaks the grammar.
fn parse(value: &str) -> Option<Vec<Element<'_>>> {
    let bytes = value.as_bytes();
    let mut elements = vec![Vec::new()];
    let mut at = 0;
    loop {
        // key: one or more ASCII letters (By, Hash, Cert, Chain, Subject, URI, DNS).
        let start = at;
        while at < bytes.len() && bytes[at].is_ascii_alphabetic() {
            at += 1;
        }
        if at == start || bytes.get(at) != Some(&b'=') {
            return None;
        }
        let key = &value[start..at];
        at += 1;
        let parsed = if bytes.get(at) == Some(&b'"') {
            quoted(value, &mut at)?
        } else {
            let start = at;
            while at < bytes.len() && !matches!(bytes[at], b',' | b';' | b'=' | b'"' | b'\\') {
                at += 1;
            }
            value[start..at].to_owned()
        };
        elements.last_mut()?.push((key, parsed));
        match bytes.get(at) {
            None => return Some(elements),
            Some(b';') => {}
            Some(b',') => elements.push(Vec::new()),
            // `=`, a quote or a backslash inside a bare value, or text after a closing quote.
            Some(_) => return None,
        }
        at += 1;
    }
}

/// The quoted value starting at `bytes[*at] == '"'`, unescaped; `*at` ends past the closing
/// quote. `None` for an unterminated quote or an escape of anything but `"` and `\`.
fn quoted(value: &str, at: &mut usize) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = String::new();
    let mut i = *at + 1;
    let mut run = i;
    loop {
        match bytes.get(i)? {
            b'"' => {
                out.push_str(&value[run..i]);
                *at = i + 1;
                return Some(out);
            }
            b'\\' => {
                let escaped = *bytes.get(i + 1)?;
                if escaped != b'"' && escaped != b'\\' {
                    return None;
                }
                out.push_str(&value[run..i]);
                out.push(escaped as char);
                i += 2;
                run = i;
            }
            _ => i += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIDECAR: &str = "By=spiffe://cluster.local/ns/gw/sa/gw;Hash=0a1b;Subject=\"CN=x, O=y\";URI=spiffe://cluster.local/ns/attacker/sa/attacker";

    #[test]
    fn the_uri_of_the_last_element_is_the_caller() {
        let header = format!("By=a;Hash=1;URI=spiffe://cluster.local/ns/checkout/sa/c,{SIDECAR}");
        assert_eq!(
            last_uri(&header).as_deref(),
            Some("spiffe://cluster.local/ns/attacker/sa/attacker")
        );
        assert_eq!(
            last_uri(SIDECAR).as_deref(),
            Some("spiffe://cluster.local/ns/attacker/sa/attacker")
        );
    }

    #[test]
    fn an_open_quote_in_the_callers_prefix_refuses_the_whole_header() {
        let header = format!("URI=spiffe://cluster.local/ns/checkout/sa/c;Subject=\",{SIDECAR}");
        assert_eq!(last_uri(&header), None);
        // The same with a sidecar element that quotes nothing.
        let header = "URI=spiffe://cluster.local/ns/checkout/sa/c;Subject=\",By=b;Hash=1;URI=spiffe://x/attacker";
        assert_eq!(last_uri(header), None);
    }

    #[test]
    fn what_breaks_the_grammar_is_refused() {
        for bad in [
            "",
            ",URI=spiffe://a",
            "URI=spiffe://a,",
            "URI=spiffe://a,,URI=spiffe://b",
            "URI=spiffe://a;;Hash=1",
            "URI=spiffe://a;",
            "Subject=\"x\\y\";URI=spiffe://a",
            "Subject=\"x\"y;URI=spiffe://a",
            "Subject=x\"y\";URI=spiffe://a",
            "Subject=\"unterminated;URI=spiffe://a",
            "URI=spiffe://a=b",
            "=x;URI=spiffe://a",
            " URI=spiffe://a",
            "Hash=1",
            "URI=spiffe://a;URI=spiffe://b",
            "URI=",
            "URI=\"\"",
        ] {
            assert_eq!(last_uri(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn quoted_values_unescape() {
        assert_eq!(
            last_uri(r#"Subject="a\"b\\c";URI="spiffe://a""#).as_deref(),
            Some("spiffe://a")
        );
        assert_eq!(
            last_uri(r#"uri="spiffe://q\"uote""#).as_deref(),
            Some("spiffe://q\"uote")
        );
    }

    #[test]
    fn an_oversized_header_is_refused_before_parsing() {
        let header = format!("Hash={};URI=spiffe://a", "0".repeat(MAX_XFCC_BYTES));
        assert_eq!(last_uri(&header), None);
    }
}

//! The W3C Trace Context headers (https://www.w3.org/TR/trace-context/): parsing and printing
//! `traceparent`, checking `tracestate` before it is passed on, and new random ids. Enough to
//! propagate a caller's trace to OMS without any OpenTelemetry SDK, so the path without OTLP
//! export costs a parse and a format per call.
//!
//! A `traceparent` that breaks the spec (not version `00` with exactly four fields, ids not
//! lower-case hex of the right length, an all-zero id, version `ff`) is ignored: the call starts
//! a new trace, as the spec prescribes. A later version is read by its first four fields, also as
//! the spec prescribes.

use std::fmt;

/// A trace id: 16 bytes, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

/// A span id: 8 bytes, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub [u8; 8]);

/// A parsed `traceparent`: the trace, the sender's span, and the trace flags (bit 0: sampled).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TraceParent {
    /// The trace this call belongs to.
    pub trace_id: TraceId,
    /// The span of whoever sent the header (the parent of ours).
    pub parent_id: SpanId,
    /// The trace flags, reduced to those the spec defines: `sampled` ([`SAMPLED`]).
    pub flags: u8,
}

/// The one trace flag the W3C spec defines.
pub const SAMPLED: u8 = 0x01;

/// The longest `tracestate` passed on (the spec's limit for what a vendor must propagate).
const MAX_TRACESTATE: usize = 512;

// === impl TraceId, SpanId ===

impl TraceId {
    /// A new random trace id.
    pub fn random() -> Self {
        loop {
            let id = fastrand::u128(..).to_be_bytes();
            if id != [0; 16] {
                return Self(id);
            }
        }
    }
}

impl SpanId {
    /// A new random span id.
    pub fn random() -> Self {
        loop {
            let id = fastrand::u64(..).to_be_bytes();
            if id != [0; 8] {
                return Self(id);
            }
        }
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        hex(f, &self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        hex(f, &self.0)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        hex(f, &self.0)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        hex(f, &self.0)
    }
}

/// Writes `bytes` (at most 16) as lower-case hex in one `write_str`: a `{:02x}` per byte costs
/// ten times as much, on every upstream attempt.
fn hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 32];
    for (i, b) in bytes.iter().take(16).enumerate() {
        buf[2 * i] = DIGITS[usize::from(b >> 4)];
        buf[2 * i + 1] = DIGITS[usize::from(b & 0x0f)];
    }
    let digits = &buf[..2 * bytes.len().min(16)];
    f.write_str(std::str::from_utf8(digits).map_err(|_| fmt::Error)?)
}

// === impl TraceParent ===

impl TraceParent {
    /// Parses a `traceparent` header value; `None` if it breaks the spec.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim_matches([' ', '\t']);
        let mut fields = value.split('-');
        let version = fields.next()?;
        let trace_id = fields.next()?;
        let parent_id = fields.next()?;
        let flags = fields.next()?;
        let version = parse_hex::<1>(version)?[0];
        // Version ff is invalid; version 00 has exactly four fields; a later version may add
        // fields after a dash.
        if version == 0xff || (version == 0 && fields.next().is_some()) {
            return None;
        }
        let trace_id = parse_hex::<16>(trace_id)?;
        let parent_id = parse_hex::<8>(parent_id)?;
        // Only `sampled` is defined: other bits are not ours to pass on (a caller's `ff` goes on
        // as `01`).
        let flags = parse_hex::<1>(flags)?[0] & SAMPLED;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id: TraceId(trace_id),
            parent_id: SpanId(parent_id),
            flags,
        })
    }
}

/// Prints the header value, always in version `00`.
impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id, self.parent_id, self.flags
        )
    }
}

/// Exactly `2 × N` lower-case hex digits (the spec forbids upper case).
fn parse_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let bytes = text.as_bytes();
    if bytes.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// The `tracestate` to pass on, if it is one: at most 512 characters of visible ASCII, spaces
/// and tabs, with at most 32 list members. Vendors' entries are opaque to us, so a value that
/// fits is passed on unchanged; anything else is dropped, never repaired.
pub fn tracestate(value: &str) -> Option<&str> {
    let value = value.trim_matches([' ', '\t']);
    let printable = value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
    let members = value.split(',').filter(|m| !m.trim().is_empty()).count();
    (!value.is_empty() && value.len() <= MAX_TRACESTATE && printable && members <= 32)
        .then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specs_example_parses_and_prints_back() {
        let parent = TraceParent::parse(SPEC_EXAMPLE).expect("valid");
        assert_eq!(
            parent.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(parent.parent_id.to_string(), "00f067aa0ba902b7");
        assert_eq!(parent.flags, 1);
        assert_eq!(parent.to_string(), SPEC_EXAMPLE);
    }

    #[test]
    fn what_breaks_the_spec_is_ignored() {
        for bad in [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            // All-zero ids.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // Upper case, wrong lengths, not hex.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            // Version ff, and version 00 with a fifth field.
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-00",
            "garbage",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_later_version_is_read_by_its_first_four_fields() {
        let future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes";
        let parent = TraceParent::parse(future).expect("readable");
        assert_eq!(parent.to_string(), SPEC_EXAMPLE);
    }

    #[test]
    fn tracestate_is_passed_on_unchanged_or_dropped() {
        assert_eq!(tracestate("congo=t61rcWkgMzE"), Some("congo=t61rcWkgMzE"));
        assert_eq!(
            tracestate("rojo=00f067aa0ba902b7, congo=t61rcWkgMzE"),
            Some("rojo=00f067aa0ba902b7, congo=t61rcWkgMzE")
        );
        assert_eq!(tracestate(""), None);
        assert_eq!(tracestate(&"a".repeat(513)), None);
        assert_eq!(tracestate("a=1\nb=2"), None);
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert_eq!(tracestate(&many.join(",")), None);
    }

    #[test]
    fn random_ids_are_never_zero_and_differ() {
        let (a, b) = (TraceId::random(), TraceId::random());
        assert_ne!(a, b);
        assert_ne!(a.0, [0; 16]);
        assert_ne!(SpanId::random().0, [0; 8]);
    }
}

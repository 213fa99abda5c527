//! Wall-clock time for the sandbox: Unix milliseconds internally, RFC 3339 with whole seconds on
//! the wire.
//!
//! The documentation shows every timestamp in whole seconds (`2026-03-16T18:30:00Z`), so that
//! is what the sandbox writes. Timers (a code's lapse, a delivery's completion) keep
//! milliseconds, so short test lifetimes work; the instants the API shows (`createdAt`,
//! `updatedAt`, `completedAt`) are stored already cut to the second ([`whole_second`]), so a
//! filter compares against exactly what a client was shown. Formatting and parsing lean on
//! `prost_types::Timestamp`, which the crate already carries, instead of a calendar crate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub(crate) type Millis = i64;

/// Now, in Unix milliseconds. A clock before 1970 reads as the epoch rather than panicking.
pub(crate) fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A duration in milliseconds, saturating (a `Duration::MAX` TTL means "never").
pub(crate) fn duration_ms(d: Duration) -> Millis {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// RFC 3339 UTC in whole seconds, as the docs write them: `2026-03-16T18:30:00Z`. A fraction is
/// cut, never rounded up, so an expiry is never shown later than it is.
pub(crate) fn format_ms(ms: Millis) -> String {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: 0,
    }
    .to_string()
}

/// `ms` cut to its whole second: the instants the API shows are stored this way.
pub(crate) fn whole_second(ms: Millis) -> Millis {
    ms - ms.rem_euclid(1000)
}

/// Parses an RFC 3339 date-time into nanoseconds since the epoch (nanoseconds so that an
/// inclusive bound like `…00.0005Z` compares correctly against millisecond timestamps).
///
/// A bare date is refused (the filters are documented as date-times). A `+` offset that arrived
/// unescaped in a query string has become a space by the time we see it; it is put back.
pub(crate) fn parse_rfc3339_nanos(s: &str) -> Option<i128> {
    if !s.contains(['T', 't']) {
        return None;
    }
    let parsed = s.parse::<prost_types::Timestamp>().ok().or_else(|| {
        let (head, tail) = s.rsplit_once(' ')?;
        format!("{head}+{tail}")
            .parse::<prost_types::Timestamp>()
            .ok()
    })?;
    Some(i128::from(parsed.seconds) * 1_000_000_000 + i128::from(parsed.nanos))
}

/// A millisecond instant as nanoseconds, for comparing with [`parse_rfc3339_nanos`].
pub(crate) fn ms_to_nanos(ms: Millis) -> i128 {
    i128::from(ms) * 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_whole_seconds_as_the_docs_show() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_ms(1_773_685_800_123), "2026-03-16T18:30:00Z");
        assert_eq!(format_ms(1_773_685_800_999), "2026-03-16T18:30:00Z");
        assert_eq!(format_ms(1_773_685_800_000), "2026-03-16T18:30:00Z");
        assert_eq!(whole_second(1_773_685_800_999), 1_773_685_800_000);
    }

    #[test]
    fn parses_offsets_fractions_and_query_mangled_plus() {
        let z = parse_rfc3339_nanos("2026-03-16T18:30:00Z");
        assert_eq!(z, Some(ms_to_nanos(1_773_685_800_000)));
        assert_eq!(parse_rfc3339_nanos("2026-03-16T20:30:00+02:00"), z);
        assert_eq!(parse_rfc3339_nanos("2026-03-16T20:30:00 02:00"), z);
        assert_eq!(
            parse_rfc3339_nanos("2026-03-16T18:30:00.5Z"),
            Some(ms_to_nanos(1_773_685_800_500))
        );
        assert_eq!(parse_rfc3339_nanos("2026-03-16"), None);
        assert_eq!(parse_rfc3339_nanos("yesterday"), None);
        assert_eq!(parse_rfc3339_nanos(""), None);
    }
}

//! The gRPC services, one file each: validate the request, build the operation's input, call
//! it. This module holds what every handler shares: the call's deadline (from the caller's
//! `grpc-timeout`, else the configured default, so nothing waits without bound). Every mutating
//! RPC takes the one path of `mutation.rs` (idempotency key from `keys.rs`, idempotency layer,
//! publish to watchers, audit line, key echo, status).

pub mod cash_in;
pub mod cash_location;
pub mod keys;
pub mod mutation;
pub mod page_token;
pub mod sandbox;
pub mod watch_route;

use crate::arrival::Arrival;
use std::time::Duration;
use tokio::time::Instant;
use tonic::metadata::MetadataMap;

/// The caller's `grpc-timeout` as a duration (gRPC over HTTP/2 spec: up to 8 digits and a unit).
pub fn grpc_timeout(metadata: &MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// When the call must be finished: the caller's deadline, else `default_deadline`, counted from
/// the call's arrival ([`Arrival`], where tonic starts its own timer), else from now.
pub fn deadline<T>(request: &tonic::Request<T>, default_deadline: Duration) -> Instant {
    let arrived = request
        .extensions()
        .get::<Arrival>()
        .map_or_else(Instant::now, |arrival| Instant::from_std(arrival.0));
    arrived + grpc_timeout(request.metadata()).unwrap_or(default_deadline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        let mut md = MetadataMap::new();
        for (text, expected) in [
            ("5S", Duration::from_secs(5)),
            ("250m", Duration::from_millis(250)),
            ("2M", Duration::from_secs(120)),
            ("1H", Duration::from_secs(3600)),
            ("100u", Duration::from_micros(100)),
            ("99999999n", Duration::from_nanos(99_999_999)),
        ] {
            md.insert("grpc-timeout", text.parse().unwrap());
            assert_eq!(grpc_timeout(&md), Some(expected), "{text}");
        }
        for bad in ["S", "5", "123456789S", "5X", "-5S"] {
            md.insert("grpc-timeout", bad.parse().unwrap());
            assert_eq!(grpc_timeout(&md), None, "{bad}");
        }
    }
}

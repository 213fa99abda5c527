//! The gRPC services, one file each: validate the request, call the upstream, convert the
//! answer. This module holds what every handler shares: the call's deadline (from the caller's
//! `grpc-timeout`, else the configured default, so nothing waits without bound) and the
//! idempotency key of a mutating call (field, else `idempotency-key` metadata, else a fresh
//! UUIDv4), which is echoed in the response or error metadata `idempotency-key`.

pub mod cash_in;
pub mod cash_location;
pub mod page_token;
pub mod sandbox;

use crate::error::GatewayError;
use crate::validate::{self, Violations};
use std::time::Duration;
use tokio::time::Instant;
use tonic::metadata::{MetadataMap, MetadataValue};

/// Metadata key carrying the idempotency key, in requests and responses.
pub const IDEMPOTENCY_KEY_METADATA: &str = "idempotency-key";

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

/// When the call must be finished: the caller's deadline, else `default_deadline` from now.
pub fn deadline(metadata: &MetadataMap, default_deadline: Duration) -> Instant {
    Instant::now() + grpc_timeout(metadata).unwrap_or(default_deadline)
}

/// Picks the idempotency key of a mutating call and records its violations: the request field
/// wins over the `idempotency-key` metadata; absent both, a fresh UUIDv4.
pub fn idempotency_key(field: &str, metadata: &MetadataMap, v: &mut Violations) -> String {
    if !field.is_empty() {
        // The field itself is validated with the rest of the request.
        return field.to_owned();
    }
    match metadata
        .get(IDEMPOTENCY_KEY_METADATA)
        .map(|value| value.to_str())
    {
        Some(Ok(key)) if !key.is_empty() => {
            validate::idempotency_key(v, "idempotency-key (metadata)", key);
            key.to_owned()
        }
        Some(Err(_)) => {
            v.add(
                "idempotency-key (metadata)",
                "must be printable ASCII (space to `~`)",
            );
            String::new()
        }
        _ => uuid::Uuid::new_v4().to_string(),
    }
}

/// The `Idempotency-Key` sent upstream for `key` from `caller`. Keys are scoped per caller, but
/// every caller reaches OMS with the gateway's one set of credentials, i.e. one OMS key space: sent
/// as given, caller B's key would replay caller A's cash-in (or be refused as reused). So a
/// caller's key is qualified by its identity, length-prefixed so that no two (caller, key) pairs
/// meet. Deterministic, so a retry after a restart still replays upstream. A call without a caller
/// identity sends its key as given. A qualified key beyond OMS's 255 characters is replaced by a
/// stable 128-bit FNV-1a digest of it (`h1:` and 32 hex digits, which no qualified key starts with).
pub fn upstream_idempotency_key(caller: &str, key: &str) -> String {
    if caller.is_empty() {
        return key.to_owned();
    }
    let qualified = format!("{}:{caller}:{key}", caller.len());
    if qualified.len() <= validate::MAX_IDEMPOTENCY_KEY_CHARS {
        return qualified;
    }
    let mut hash: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for byte in qualified.bytes() {
        hash ^= u128::from(byte);
        hash = hash.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    format!("h1:{hash:032x}")
}

/// Puts the key used into response or error metadata, so a caller can retry with it.
pub fn echo_idempotency_key(metadata: &mut MetadataMap, key: &str) {
    if let Ok(value) = MetadataValue::try_from(key) {
        metadata.insert(IDEMPOTENCY_KEY_METADATA, value);
    }
}

/// Converts a handler's error into a status carrying the idempotency key that was used.
pub fn status_with_key(err: GatewayError, key: &str) -> tonic::Status {
    let mut status = tonic::Status::from(err);
    if !key.is_empty() {
        echo_idempotency_key(status.metadata_mut(), key);
    }
    status
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

    #[test]
    fn upstream_keys_are_scoped_per_caller() {
        assert_eq!(upstream_idempotency_key("", "k-1"), "k-1");
        assert_eq!(upstream_idempotency_key("svc-a", "k-1"), "5:svc-a:k-1");
        assert_ne!(
            upstream_idempotency_key("a:b", "c"),
            upstream_idempotency_key("a", "b:c")
        );
        let long = "k".repeat(255);
        let hashed = upstream_idempotency_key("svc-a", &long);
        assert!(hashed.starts_with("h1:") && hashed.len() == 35, "{hashed}");
        assert_eq!(hashed, upstream_idempotency_key("svc-a", &long));
        assert_ne!(hashed, upstream_idempotency_key("svc-b", &long));
    }

    #[test]
    fn the_field_key_wins_over_metadata_and_absent_both_a_uuid_is_made() {
        let mut md = MetadataMap::new();
        let mut v = Violations::default();
        md.insert(IDEMPOTENCY_KEY_METADATA, "from-metadata".parse().unwrap());
        assert_eq!(idempotency_key("from-field", &md, &mut v), "from-field");
        assert_eq!(idempotency_key("", &md, &mut v), "from-metadata");
        let generated = idempotency_key("", &MetadataMap::new(), &mut v);
        assert!(uuid::Uuid::parse_str(&generated).is_ok());
        assert!(v.finish().is_ok());
    }
}

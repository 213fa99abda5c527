//! The idempotency key of a mutating call: picked from the request (the field, else the
//! `idempotency-key` metadata; absent both, the call is INVALID_ARGUMENT), qualified by caller
//! and operation into the key OMS receives, and echoed in the response or error metadata
//! `idempotency-key`, beside `oms-idempotency-key`: the exact key OMS received.

use crate::error::GatewayError;
use crate::validate::{self, Violations};
use tonic::metadata::{MetadataMap, MetadataValue};

pub use crate::idempotency::KEY_METADATA as IDEMPOTENCY_KEY_METADATA;

/// Response and error metadata key carrying the `Idempotency-Key` header exactly as sent to OMS,
/// for teams that reconcile against OMS directly.
pub const OMS_IDEMPOTENCY_KEY_METADATA: &str = "oms-idempotency-key";

/// What a mutating call without a key is told.
const KEY_REQUIRED: &str = "required: set the `idempotency_key` field (or the `idempotency-key` \
call metadata) to a key naming this one operation, e.g. your order id, and send the same key when \
you retry it; without a key, a retried call could create a second cash-in";

/// Picks the idempotency key of a mutating call and records its violations: the request field
/// wins over the `idempotency-key` metadata; absent both, the call is refused. A key the gateway
/// made up would differ on every retry of the RPC (by a client, a gRPC retry policy or a mesh
/// proxy), and each retry would then create another cash-in or kill the code just shown.
pub fn idempotency_key(field: &str, metadata: &MetadataMap, violations: &mut Violations) -> String {
    if !field.is_empty() {
        // The field itself is validated with the rest of the request.
        return field.to_owned();
    }
    match metadata
        .get(IDEMPOTENCY_KEY_METADATA)
        .map(|value| value.to_str())
    {
        Some(Ok(key)) if !key.is_empty() => {
            validate::idempotency_key(violations, "idempotency-key (metadata)", key);
            key.to_owned()
        }
        Some(Err(_)) => {
            violations.add(
                "idempotency-key (metadata)",
                "must be printable ASCII (space to `~`)",
            );
            String::new()
        }
        _ => {
            violations.add("idempotency_key", KEY_REQUIRED);
            String::new()
        }
    }
}

/// The mutating operations whose idempotency key OMS receives, each a key space of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyedOperation {
    /// CreateCashIn (`POST /cash-ins`).
    CreateCashIn,
    /// RefreshCashIn (`POST /cash-ins/{id}/refresh`).
    RefreshCashIn,
}

// === impl KeyedOperation ===

impl KeyedOperation {
    /// The RPC's name (CashInService's), also the idempotency layer's name of the operation.
    pub fn rpc(self) -> &'static str {
        match self {
            Self::CreateCashIn => "CreateCashIn",
            Self::RefreshCashIn => "RefreshCashIn",
        }
    }

    /// What the qualified key begins with: nothing for CreateCashIn (its keys are the ones every
    /// earlier release sent, so a create retried across an upgrade still replays at OMS), a
    /// lowercase word and a colon for the others. Never a digit (a create's key begins with
    /// one) nor `h1:` (a hashed key).
    fn prefix(self) -> &'static str {
        match self {
            Self::CreateCashIn => "",
            Self::RefreshCashIn => "refresh:",
        }
    }
}

/// The `Idempotency-Key` sent upstream for `key` of `operation` from `caller` (empty:
/// anonymous). Keys are scoped per caller, but every caller reaches OMS with the gateway's one
/// set of credentials, i.e. one OMS key space: sent as given, caller B's key would replay caller
/// A's cash-in (or be refused as reused), and a refresh keyed like the create before it would be
/// refused as a reuse of the create's key. So every key, anonymous ones included, is sent
/// qualified as `{operation prefix}{bytes of caller}:{caller}:{key}` (a create: `5:svc-a:k-1`;
/// anonymous: `0::k-1`; a refresh: `refresh:5:svc-a:k-1`): the prefix names the operation and
/// the length says where the caller ends, so the encoding is injective and no two (caller,
/// operation, key) triples meet, whatever the caller or the key contains. OMS takes 1 to 255
/// printable ASCII characters; a qualified key that is longer, or holds anything else (a
/// certificate CN `zoë-payments`, a tab), is sent as `h1:` and the SHA-256 of the qualified key
/// in hex (67 characters), which no qualified key begins with. Deterministic, so a retry after a
/// restart still replays upstream.
pub fn upstream_idempotency_key(operation: KeyedOperation, caller: &str, key: &str) -> String {
    let qualified = format!("{}{}:{caller}:{key}", operation.prefix(), caller.len());
    let sendable = qualified.len() <= validate::MAX_IDEMPOTENCY_KEY_CHARS
        && qualified.bytes().all(|b| (0x20..=0x7e).contains(&b));
    if sendable {
        return qualified;
    }
    format!("h1:{}", crate::digest::sha256_hex(qualified.as_bytes()))
}

/// Puts the caller's key and the key OMS received into response or error metadata, so a caller
/// can retry with the one and reconcile against OMS with the other. Only a valid key is echoed
/// (at most 255 printable characters, so the two stay small beside any status): an invalid one
/// is the caller's own input, refused, and may be anything the message size allows.
pub fn echo_idempotency_keys(metadata: &mut MetadataMap, key: &str, upstream_key: &str) {
    if !validate::is_idempotency_key(key) {
        return;
    }
    for (name, value) in [
        (IDEMPOTENCY_KEY_METADATA, key),
        (OMS_IDEMPOTENCY_KEY_METADATA, upstream_key),
    ] {
        if value.is_empty() {
            continue;
        }
        if let Ok(value) = MetadataValue::try_from(value) {
            metadata.insert(name, value);
        }
    }
}

/// Converts a handler's error into a status carrying the keys that were used. A request refused
/// by validation never reached OMS, so it carries no `oms-idempotency-key`.
pub fn status_with_keys(err: GatewayError, key: &str, upstream_key: &str) -> tonic::Status {
    let upstream_key = if matches!(err, GatewayError::Invalid { .. }) {
        ""
    } else {
        upstream_key
    };
    let mut status = tonic::Status::from(err);
    if !key.is_empty() {
        echo_idempotency_keys(status.metadata_mut(), key, upstream_key);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_keys_are_scoped_per_caller_and_operation() {
        use KeyedOperation::{CreateCashIn as Create, RefreshCashIn as Refresh};
        let key = upstream_idempotency_key;
        assert_eq!(key(Create, "", "k-1"), "0::k-1");
        assert_eq!(key(Create, "svc-a", "k-1"), "5:svc-a:k-1");
        assert_eq!(key(Refresh, "svc-a", "k-1"), "refresh:5:svc-a:k-1");
        // The collision found in review: an anonymous key shaped like svc-a's qualified one.
        assert_ne!(key(Create, "", "5:svc-a:k-1"), key(Create, "svc-a", "k-1"));
        assert_ne!(key(Create, "a:b", "c"), key(Create, "a", "b:c"));
        assert_ne!(key(Create, "", "refresh:0::k"), key(Refresh, "", "k"));
        let long = "k".repeat(255);
        let hashed = key(Create, "svc-a", &long);
        assert!(hashed.starts_with("h1:") && hashed.len() == 67, "{hashed}");
        assert_eq!(hashed, key(Create, "svc-a", &long));
        assert_ne!(hashed, key(Create, "svc-b", &long));
        assert_ne!(hashed, key(Refresh, "svc-a", &long));
    }

    #[test]
    fn a_key_oms_would_refuse_is_sent_hashed_in_printable_ascii() {
        let printable = |k: &str| k.bytes().all(|b| (0x20..=0x7e).contains(&b)) && k.len() <= 255;
        for caller in ["zoë-payments", "tab\there", "CN=é,O=x", &"x".repeat(300)] {
            for op in [KeyedOperation::CreateCashIn, KeyedOperation::RefreshCashIn] {
                let sent = upstream_idempotency_key(op, caller, "order-1");
                assert!(sent.starts_with("h1:") && printable(&sent), "{sent:?}");
                assert_eq!(sent, upstream_idempotency_key(op, caller, "order-1"));
                assert_ne!(sent, upstream_idempotency_key(op, caller, "order-2"));
            }
        }
        assert_ne!(
            upstream_idempotency_key(KeyedOperation::CreateCashIn, "zoë-payments", "k"),
            upstream_idempotency_key(KeyedOperation::RefreshCashIn, "zoë-payments", "k")
        );
    }

    /// Every triple of a small alphabet that includes the separators, the prefixes' letters and
    /// a non-ASCII letter, encoded: no two meet.
    #[test]
    fn no_two_caller_operation_key_triples_meet() {
        let words = [
            "", "0", "5", ":", "::", "0:", "a", "a:", ":a", "h1:", "refresh:", "é", "1:é",
        ];
        let mut seen = std::collections::HashMap::new();
        for op in [KeyedOperation::CreateCashIn, KeyedOperation::RefreshCashIn] {
            for caller in words {
                for key in words {
                    let sent = upstream_idempotency_key(op, caller, key);
                    if let Some(other) = seen.insert(sent.clone(), (op, caller, key)) {
                        panic!("{sent:?}: {other:?} and {:?}", (op, caller, key));
                    }
                }
            }
        }
    }

    #[test]
    fn the_field_key_wins_over_metadata_and_absent_both_the_call_is_refused() {
        let mut md = MetadataMap::new();
        let mut violations = Violations::default();
        md.insert(IDEMPOTENCY_KEY_METADATA, "from-metadata".parse().unwrap());
        assert_eq!(
            idempotency_key("from-field", &md, &mut violations),
            "from-field"
        );
        assert_eq!(idempotency_key("", &md, &mut violations), "from-metadata");
        assert!(violations.finish().is_ok());
        let mut violations = Violations::default();
        assert_eq!(
            idempotency_key("", &MetadataMap::new(), &mut violations),
            ""
        );
        assert!(violations.finish().is_err());
    }
}

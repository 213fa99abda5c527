//! The gateway's one hash: SHA-256 (from ring, already in the tree through rustls), for every
//! fingerprint it keeps (an idempotent request's, the filters a page token is bound to) and for
//! idempotency keys too long to send qualified. Collision-resistant, so two different requests
//! under one idempotency key, or two filter sets, never pass for the same.

use ring::digest::{Context, SHA256};

/// A 64-bit fingerprint of `parts`: the first 8 bytes of the SHA-256 of each part, length
/// prefixed, so `("ab", "c")` and `("a", "bc")` differ.
pub fn fingerprint<P: AsRef<[u8]>>(parts: &[P]) -> u64 {
    let mut context = Context::new(&SHA256);
    for part in parts {
        let part = part.as_ref();
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part);
    }
    let digest = context.finish();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(first)
}

/// The SHA-256 of `bytes` in lowercase hex (64 characters).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let digest = ring::digest::digest(&SHA256, bytes);
    let mut hex = String::with_capacity(64);
    for byte in digest.as_ref() {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_length_prefixed_and_the_hex_is_sha256() {
        assert_ne!(fingerprint(&["ab", "c"]), fingerprint(&["a", "bc"]));
        assert_eq!(fingerprint(&["a"]), fingerprint(&["a"]));
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

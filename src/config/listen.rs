//! Listen addresses (`--listen`, `--health-listen`, `--admin-listen`, the sandbox's `--listen`):
//! an IP socket address as is (`0.0.0.0:50051`, `[::1]:50051`), or `host:port` with the host
//! name resolved when the flag is parsed (`localhost:50051`), its first IPv4 address taken, else
//! its first address: one socket per flag, as with an IP. A name that does not resolve, or an
//! address without a port, is an error naming the flag.

use std::net::{SocketAddr, ToSocketAddrs};

/// Parses a listen address; see the module documentation.
pub(super) fn address(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!(
            "`{text}` is not an address with a port, such as 127.0.0.1:50051 or localhost:50051"
        ));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!(
            "`{text}` is not an address with a port, such as 127.0.0.1:50051 or localhost:50051"
        ));
    }
    let resolved: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
        .collect();
    resolved
        .iter()
        .find(|addr| addr.is_ipv4())
        .or(resolved.first())
        .copied()
        .ok_or_else(|| format!("`{host}` resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_host_names_resolve() {
        assert_eq!(
            address("0.0.0.0:50051"),
            Ok(SocketAddr::from(([0, 0, 0, 0], 50051)))
        );
        assert_eq!(
            address("[::1]:50051"),
            Ok(SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 50051)))
        );
        // Before: `--listen localhost:50051` was "invalid socket address syntax".
        assert_eq!(
            address("localhost:50051"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 50051)))
        );
        for bad in [
            "localhost",
            ":50051",
            "localhost:http",
            "localhost:70000",
            "",
        ] {
            assert!(address(bad).unwrap_err().contains("with a port"), "{bad}");
        }
        assert!(
            address("no-such-host.invalid:1")
                .unwrap_err()
                .starts_with("cannot resolve `no-such-host.invalid`")
        );
    }
}

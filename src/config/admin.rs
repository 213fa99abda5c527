//! The admin HTTP listener's settings: where `/metrics`, `/healthz` and `/readyz` are served,
//! or `none` for no admin listener at all.

use clap::Args;
use std::net::SocketAddr;

/// Where the admin listener binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminListen {
    /// No admin listener (`--admin-listen none`).
    Off,
    /// Listen here (port 0: an ephemeral port, see `RunningGateway::admin_addr`).
    On(SocketAddr),
}

/// Parses `--admin-listen`: a socket address, or `none`.
fn parse_admin_listen(text: &str) -> Result<AdminListen, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("none") {
        return Ok(AdminListen::Off);
    }
    super::listen::address(text)
        .map(AdminListen::On)
        .map_err(|e| format!("{e}; or `none` for no admin listener"))
}

/// The admin HTTP listener (metrics and probes). Its default port, 50053, follows the gRPC port
/// (50051) and the usual probe port (50052, `--health-listen`), and is none of the Prometheus
/// ecosystem's defaults (Prometheus 9090, node_exporter 9100, the exporters' 9100–9999), so a
/// gateway starts next to a local Prometheus or an exporter.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct AdminSettings {
    /// Admin HTTP listener: Prometheus `/metrics`, `/healthz` (process up) and `/readyz` (200 when
    /// grpc.health "" is SERVING, else 503); `none` turns it off. Serves no gRPC and no secret.
    #[arg(
        id = "admin_listen",
        long = "admin-listen",
        env = "OMS_GATEWAY_ADMIN_LISTEN",
        default_value = "127.0.0.1:50053",
        value_parser = parse_admin_listen
    )]
    pub listen: AdminListen,
}

impl Default for AdminSettings {
    fn default() -> Self {
        super::flag_defaults()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_listener_is_an_address_or_none() {
        // Before: 127.0.0.1:9090, Prometheus's own port: the start failed next to a local one.
        assert_eq!(
            AdminSettings::default().listen,
            AdminListen::On(SocketAddr::from(([127, 0, 0, 1], 50053)))
        );
        assert_eq!(parse_admin_listen("none"), Ok(AdminListen::Off));
        assert_eq!(
            parse_admin_listen("0.0.0.0:9090"),
            Ok(AdminListen::On(SocketAddr::from(([0, 0, 0, 0], 9090))))
        );
        assert!(parse_admin_listen("9090").unwrap_err().contains("none"));
        assert_eq!(
            parse_admin_listen("localhost:0"),
            Ok(AdminListen::On(SocketAddr::from(([127, 0, 0, 1], 0))))
        );
    }
}

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
    text.parse().map(AdminListen::On).map_err(|_| {
        format!("`{text}` is neither a socket address such as 127.0.0.1:9090 nor `none`")
    })
}

/// The admin HTTP listener (metrics and probes).
#[derive(Debug, Clone, PartialEq, Args)]
pub struct AdminSettings {
    /// Admin HTTP listener: Prometheus `/metrics`, `/healthz` (process up) and `/readyz` (200 when
    /// grpc.health "" is SERVING, else 503); `none` turns it off. Serves no gRPC and no secret.
    #[arg(
        id = "admin_listen",
        long = "admin-listen",
        env = "OMS_GATEWAY_ADMIN_LISTEN",
        default_value = "127.0.0.1:9090",
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
        assert_eq!(
            AdminSettings::default().listen,
            AdminListen::On(SocketAddr::from(([127, 0, 0, 1], 9090)))
        );
        assert_eq!(parse_admin_listen("none"), Ok(AdminListen::Off));
        assert_eq!(
            parse_admin_listen("0.0.0.0:9090"),
            Ok(AdminListen::On(SocketAddr::from(([0, 0, 0, 0], 9090))))
        );
        assert!(parse_admin_listen("9090").unwrap_err().contains("none"));
    }
}

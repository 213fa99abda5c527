//! Who may call the gateway: the settings of TLS on the gRPC port, of where a caller's identity
//! comes from, and of the authorization policy.

use super::flag_defaults;
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// Who may call the gateway: TLS on the gRPC port, where the caller's identity comes from, and
/// what each caller may call (see `docs/security.md`).
#[derive(Debug, Clone, PartialEq, Args)]
pub struct SecuritySettings {
    /// PEM certificate chain the gRPC port presents (TLS 1.2+, ALPN h2); re-read when it changes.
    #[arg(long = "tls-cert", env = "OMS_GATEWAY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert; re-read when it changes.
    #[arg(long = "tls-key", env = "OMS_GATEWAY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: require a client certificate signed by it (mTLS); the caller is the
    /// certificate's SPIFFE URI SAN, else its first DNS SAN (`dns:name`), else its subject CN
    /// (`cn:name`).
    #[arg(
        long = "tls-client-ca",
        env = "OMS_GATEWAY_TLS_CLIENT_CA",
        requires = "tls_cert"
    )]
    pub tls_client_ca: Option<PathBuf>,
    /// Trust this header, set by a mesh sidecar that terminates mTLS, for the caller's identity:
    /// x-forwarded-client-cert (Istio/Envoy; the URI= of its last element, the header refused
    /// whole unless it parses) or l5d-client-id (Linkerd). Safe only when every inbound
    /// connection passes the sidecar and the mesh sanitizes the header (Istio SANITIZE_SET).
    #[arg(
        long = "caller-identity-header",
        env = "OMS_GATEWAY_CALLER_IDENTITY_HEADER",
        value_enum,
        conflicts_with = "tls_client_ca"
    )]
    pub caller_identity_header: Option<IdentityHeader>,
    /// TOML authorization policy: which callers may call which methods; everything else is
    /// denied. Re-read when it changes.
    #[arg(long = "authz-policy", env = "OMS_GATEWAY_AUTHZ_POLICY")]
    pub authz_policy: Option<PathBuf>,
    /// Allow listening beyond loopback without a way to identify callers. Anyone who reaches the
    /// port can then call every RPC.
    #[arg(
        long = "insecure-allow-unauthenticated",
        env = "OMS_GATEWAY_INSECURE_ALLOW_UNAUTHENTICATED"
    )]
    pub insecure_allow_unauthenticated: bool,
    /// How often the certificate, key, CA, policy and secret files are checked for changes (they
    /// are also re-read on SIGHUP).
    #[arg(long = "reload-interval", env = "OMS_GATEWAY_RELOAD_INTERVAL", default_value = "2s", value_parser = super::ranges::positive_duration)]
    pub reload_interval: Duration,
    /// Longest TLS handshake; a slower client is disconnected.
    #[arg(long = "tls-handshake-timeout", env = "OMS_GATEWAY_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = super::ranges::positive_duration)]
    pub handshake_timeout: Duration,
    /// Most TLS handshakes in progress at once; past it, new connections wait in the accept
    /// queue until one ends (1 to 65536).
    #[arg(long = "tls-max-handshakes", env = "OMS_GATEWAY_TLS_MAX_HANDSHAKES", default_value = "1024", value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_handshakes: u32,
}

impl Default for SecuritySettings {
    fn default() -> Self {
        flag_defaults()
    }
}

/// The mesh header that carries the caller's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IdentityHeader {
    /// Istio/Envoy `x-forwarded-client-cert`: the `URI=` of its last element.
    #[value(name = "x-forwarded-client-cert")]
    ForwardedClientCert,
    /// Linkerd `l5d-client-id`.
    #[value(name = "l5d-client-id")]
    LinkerdClientId,
}

// === impl IdentityHeader ===

impl IdentityHeader {
    /// The header's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::ForwardedClientCert => "x-forwarded-client-cert",
            Self::LinkerdClientId => "l5d-client-id",
        }
    }
}

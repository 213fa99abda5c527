//! Real TLS for the gateway's own listener: a throwaway CA (rcgen), a server certificate for
//! `localhost` and 127.0.0.1, client certificates naming a caller by SPIFFE URI SAN, DNS SAN or
//! CN, PEM files in a per-test directory, and tonic TLS/mTLS channels to a gateway.

use oms_gateway::config::GatewaySettings;
use oms_gateway::server::{self, RunningGateway};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// How a client certificate names its holder.
#[derive(Debug, Clone)]
pub enum Name {
    /// A URI SAN (a SPIFFE ID), plus a DNS SAN and a CN that must lose to it.
    Spiffe(String),
    /// A DNS SAN (first of two), plus a CN that must lose to it.
    Dns(String),
    /// Only a subject CN.
    Cn(String),
}

/// A PEM certificate and its PEM key.
#[derive(Debug, Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// A throwaway certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server(&self) -> Pem {
        let key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("server params");
        params.is_ca = IsCa::ExplicitNoCa;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer).expect("server cert");
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A client certificate naming its holder as `name` says.
    pub fn client(&self, name: &Name) -> Pem {
        let key = KeyPair::generate().expect("client key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params.is_ca = IsCa::ExplicitNoCa;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let dns = |n: &str| SanType::DnsName(n.try_into().expect("DNS name"));
        match name {
            Name::Spiffe(uri) => {
                params.subject_alt_names = vec![
                    dns("loser.example.test"),
                    SanType::URI(uri.as_str().try_into().expect("URI")),
                ];
                params
                    .distinguished_name
                    .push(DnType::CommonName, "loser-cn");
            }
            Name::Dns(first) => {
                params.subject_alt_names = vec![dns(first), dns("second.example.test")];
                params
                    .distinguished_name
                    .push(DnType::CommonName, "loser-cn");
            }
            Name::Cn(cn) => params
                .distinguished_name
                .push(DnType::CommonName, cn.as_str()),
        }
        let cert = params.signed_by(&key, &self.issuer).expect("client cert");
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// A fresh directory for one test's PEM and policy files.
pub fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "oms-gateway-{test}-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Writes `contents` to `dir/name` atomically (a rename, as cert-manager's symlink swap is).
pub fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, contents).expect("write");
    std::fs::rename(&tmp, &path).expect("rename");
    path
}

/// The test config serving TLS with `server` (and mTLS against `client_ca` when given), with a
/// short reload interval.
pub fn tls_config(dir: &Path, server: &Pem, client_ca: Option<&str>) -> GatewaySettings {
    let mut config = super::test_config();
    config.security.tls_cert = Some(write(dir, "server.pem", &server.cert));
    config.security.tls_key = Some(write(dir, "server-key.pem", &server.key));
    config.security.tls_client_ca = client_ca.map(|ca| write(dir, "client-ca.pem", ca));
    config.security.reload_interval = Duration::from_millis(100);
    config
}

/// A TLS channel to `gateway` trusting `ca_pem`, presenting `client` if given.
pub async fn channel(
    gateway: &RunningGateway,
    ca_pem: &str,
    client: Option<&Pem>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some(client) = client {
        tls = tls.identity(Identity::from_pem(&client.cert, &client.key));
    }
    Endpoint::from_shared(format!("https://127.0.0.1:{}", gateway.addr().port()))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
}

/// Starts a gateway and waits (at most 10 s) until its upstream token exchange succeeded.
pub async fn start(config: GatewaySettings) -> RunningGateway {
    let gateway = server::start(config).await.expect("gateway starts");
    super::eventually(
        Duration::from_secs(10),
        "the first token exchange",
        async || gateway.token_exchanges() > 0,
    )
    .await;
    gateway
}

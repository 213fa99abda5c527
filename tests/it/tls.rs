//! The upstream over real TLS: a rustls server with a certificate for `localhost`, issued by a
//! throwaway CA, terminates TLS in front of a sandbox; the gateway reaches it at
//! `https://localhost:PORT`, trusting that CA through `upstream.ca_file` (`--upstream-ca-file`).
//! A gateway without the CA refuses the connection (UNAVAILABLE), so verification is real.

use crate::common;

use oms_gateway::config::Secret;
use oms_sandbox::{self as sandbox, SandboxSettings};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, pki_types::PrivateKeyDer};

/// A CA and a `localhost` certificate it signed: (CA PEM, leaf DER, leaf key).
fn certificates() -> (
    String,
    rustls::pki_types::CertificateDer<'static>,
    PrivateKeyDer<'static>,
) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    (ca.pem(), leaf.der().clone(), PrivateKeyDer::from(leaf_key))
}

/// Accepts TLS on a loopback port and relays each connection's bytes to `upstream`.
async fn tls_front(
    upstream: std::net::SocketAddr,
    cert: rustls::pki_types::CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) -> (u16, tokio::task::JoinHandle<()>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (port, task)
}

async fn sandbox_behind_tls() -> (
    sandbox::SandboxHandle,
    u16,
    String,
    tokio::task::JoinHandle<()>,
) {
    let sandbox = sandbox::start(SandboxSettings {
        api_key: "sk_sdbx_tls".into(),
        api_secret: "tls-secret".into(),
        ..SandboxSettings::default()
    })
    .await
    .unwrap();
    let (ca_pem, cert, key) = certificates();
    let (port, front) = tls_front(sandbox.addr(), cert, key).await;
    (sandbox, port, ca_pem, front)
}

/// The test config pointed at the TLS front on `port`, trusting `ca_file`, one attempt per call.
fn tls_upstream_config(
    port: u16,
    ca_file: Option<std::path::PathBuf>,
) -> oms_gateway::config::GatewaySettings {
    let mut config = common::remote_config(
        &format!("https://localhost:{port}"),
        "sk_sdbx_tls",
        "tls-secret",
    );
    config.upstream.ca_file = ca_file;
    config.upstream.max_attempts = 1;
    config
}

#[tokio::test]
async fn the_whole_flow_runs_over_tls_to_a_verified_upstream() {
    let (sandbox, port, ca_pem, front) = sandbox_behind_tls().await;
    let dir = std::env::temp_dir().join(format!("oms-gateway-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();

    let gateway = common::start_with(tls_upstream_config(port, Some(ca_file))).await;
    let created = common::create_cash_in(&gateway, "cst_tls1").await;
    assert!(created.id.starts_with("ci_"));
    let mut client = gateway.cash_ins();
    let fetched = client
        .get_cash_in(oms_gateway::proto::v1::GetCashInRequest {
            cash_in_id: created.id.clone(),
        })
        .await
        .expect("GetCashIn over TLS")
        .into_inner()
        .cash_in
        .unwrap();
    assert_eq!(fetched.id, created.id);
    // Every call went through the TLS front: the sandbox saw them, from the relay.
    assert!(sandbox.count("POST", "/cash-ins") >= 1);
    assert!(sandbox.count("GET", "/cash-ins/") >= 1);
    gateway.gateway.shutdown().await;
    front.abort();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn an_upstream_certificate_from_an_unknown_ca_is_refused() {
    let (sandbox, port, _ca_pem, front) = sandbox_behind_tls().await;
    let gateway = common::start_unchecked(tls_upstream_config(port, None)).await;
    let status = gateway
        .locations()
        .list_cash_locations(common::guide_point())
        .await
        .expect_err("the certificate is not trusted");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let info = common::error_info(&status);
    assert_eq!(info.reason, "UPSTREAM_UNREACHABLE");
    assert_eq!(
        sandbox.token_exchanges(),
        0,
        "no request got through the TLS front"
    );
    assert_ne!(
        gateway.health_status("").await,
        tonic_health::ServingStatus::Serving as i32
    );
    front.abort();
}

// === No API secret in cleartext ===

// Before: any http:// URL was accepted, so the API secret could cross a network in cleartext.
#[tokio::test]
async fn plain_http_to_a_host_that_is_not_loopback_refuses_to_start() {
    for url in [
        "http://oms.internal.example/v0.9",
        "http://10.1.2.3:8080/v0.9",
    ] {
        let mut config = common::test_config();
        config.oms_base_url = Some(url.into());
        config.oms_api_key = Some(Secret::new("sk_live_x"));
        config.oms_api_secret = Some(Secret::new("cleartext-secret"));
        let message = match oms_gateway::server::start(config).await {
            Ok(_) => panic!("{url}: started"),
            Err(err) => err.to_string(),
        };
        assert!(
            message.contains("cleartext")
                && message.contains("https")
                && message.contains("loopback"),
            "{url}: {message}"
        );
        assert!(!message.contains("cleartext-secret"));
    }
}

#[tokio::test]
async fn plain_http_to_loopback_is_accepted() {
    let sandbox = common::start_remote_sandbox("loopback-secret").await;
    let port = sandbox.addr().port();
    for host in ["localhost", "127.0.0.1", "[::1]"] {
        let url = format!("http://{host}:{port}");
        let config = common::remote_config(&url, common::REMOTE_API_KEY, "loopback-secret");
        match oms_gateway::server::start(config).await {
            Ok(gateway) => gateway.shutdown().await,
            Err(err) => panic!("{url}: {err}"),
        }
    }
}

//! The probe port (`--health-listen`) of the built binary, as the kubelet's native gRPC probes
//! use it: plaintext grpc.health.v1 while the gRPC port requires mTLS, nothing else served
//! there, and through a drain readiness ("") failing while liveness (`liveness`) holds.

use crate::common;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};
use tonic_health::ServingStatus;

const BIN: &str = env!("CARGO_BIN_EXE_oms-gateway");

/// The gateway process; killed if the test ends before it exits.
struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary (no `OMS_*` of the test's environment) and waits for its startup line.
fn start(args: &[String]) -> Gateway {
    let mut command = Command::new(BIN);
    for (name, _) in std::env::vars() {
        if name.starts_with("OMS_") {
            command.env_remove(name);
        }
    }
    let mut child = command
        // Port 0 for the admin listener: other tests start gateways at the same time.
        .args(["--admin-listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the gateway");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let gateway = Gateway(child);
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("a startup line within 30 s");
    assert!(line.contains("serving gRPC"), "{line}");
    gateway
}

async fn plaintext(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("a plaintext connection")
}

async fn serving(channel: &Channel, service: &str) -> bool {
    common::health_check(channel, service).await.ok() == Some(ServingStatus::Serving as i32)
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A CA and a `localhost` server certificate it signed, as PEM files in a fresh directory:
/// (directory, ca.crt, tls.crt, tls.key).
fn certificate_files() -> (PathBuf, PathBuf, PathBuf, PathBuf) {
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
    let dir = std::env::temp_dir().join(format!(
        "oms-gateway-probe-{}-{}",
        std::process::id(),
        common::free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let files = (dir.join("ca.crt"), dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&files.0, ca.pem()).unwrap();
    std::fs::write(&files.1, leaf.pem()).unwrap();
    std::fs::write(&files.2, leaf_key.serialize_pem()).unwrap();
    (dir, files.0, files.1, files.2)
}

#[tokio::test]
async fn the_probe_port_answers_health_in_plaintext_while_the_grpc_port_requires_mtls() {
    let (dir, ca, cert, key) = certificate_files();
    let (grpc, probe) = (common::free_port(), common::free_port());
    let _gateway = start(&[
        format!("--listen=127.0.0.1:{grpc}"),
        format!("--health-listen=127.0.0.1:{probe}"),
        format!("--tls-cert={}", cert.display()),
        format!("--tls-key={}", key.display()),
        format!("--tls-client-ca={}", ca.display()),
    ]);
    let channel = plaintext(loopback(probe)).await;
    assert!(serving(&channel, "liveness").await);
    common::eventually(Duration::from_secs(10), "\"\" SERVING", async || {
        serving(&channel, "").await
    })
    .await;
    let other =
        oms_gateway::proto::v1::cash_location_service_client::CashLocationServiceClient::new(
            channel.clone(),
        )
        .list_cash_locations(common::guide_point())
        .await
        .expect_err("only health on the probe port");
    assert_eq!(other.code(), tonic::Code::Unimplemented, "{other:?}");
    // The gRPC port itself speaks only TLS: a plaintext health check there fails.
    let over_plaintext = match Endpoint::from_shared(format!("http://127.0.0.1:{grpc}"))
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect()
        .await
    {
        Ok(channel) => common::health_check(&channel, "").await.is_ok(),
        Err(_) => false,
    };
    assert!(!over_plaintext, "the mTLS port answered in plaintext");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn while_draining_readiness_fails_and_liveness_holds() {
    let (grpc, probe) = (common::free_port(), common::free_port());
    let mut gateway = start(&[
        format!("--listen=127.0.0.1:{grpc}"),
        format!("--health-listen=127.0.0.1:{probe}"),
        "--drain-delay=2s".to_owned(),
        "--shutdown-grace=2s".to_owned(),
    ]);
    let channel = plaintext(loopback(probe)).await;
    common::eventually(Duration::from_secs(10), "\"\" SERVING", async || {
        serving(&channel, "").await
    })
    .await;
    let signalled = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &gateway.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success());
    common::eventually(Duration::from_secs(1), "\"\" NOT_SERVING", async || {
        common::health_check(&channel, "").await.ok() == Some(ServingStatus::NotServing as i32)
    })
    .await;
    assert!(
        serving(&channel, "liveness").await,
        "liveness during the drain"
    );
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "checked within the drain"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = gateway.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the gateway did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
}

//! The probe port (`--health-listen`): grpc.health.v1 alone, in plaintext, for probes that cannot
//! speak TLS: the kubelet's native gRPC probes have no TLS settings, so with mTLS on the gRPC port
//! they need a port of their own. It serves the gRPC port's own health state (one reporter), plus
//! [`LIVENESS`], SERVING from start to exit, so a liveness probe restarts neither a pod whose OMS
//! is down nor one that is draining. Nothing else is served there, so no caller identity is
//! needed: health is open on the gRPC port too.

use std::net::SocketAddr;
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::pb::health_server::{Health, HealthServer};

/// The health service name that is SERVING for as long as the process serves.
pub(crate) const LIVENESS: &str = "liveness";

/// Serves `health` on `listener` until the task is aborted (at the end of the shutdown, after
/// the gRPC port: probes keep their answers through the drain).
pub(crate) fn serve(
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    health: HealthServer<impl Health>,
) -> JoinHandle<()> {
    tracing::info!(%addr, "probe port listening (grpc.health.v1 only, plaintext)");
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(async move {
        let served = Server::builder()
            .add_service(health)
            .serve_with_incoming(incoming)
            .await;
        if let Err(err) = served {
            tracing::error!(%addr, error = %err, "probe port failed");
        }
    })
}

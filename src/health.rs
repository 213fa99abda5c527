//! grpc.health.v1 on the gRPC port (and on the probe port, `health_port.rs`, when one is set):
//! "" and every served service report NOT_SERVING until the gateway has exchanged a token with
//! the upstream, SERVING while exchanges succeed, and NOT_SERVING again while the upstream is
//! unreachable or rejects the gateway's credentials, and from the moment draining begins. Each
//! service also turns NOT_SERVING while the circuit is open (its calls would fail fast). The
//! admin listener's `/readyz` asks the same statuses.

use crate::health_port;
use crate::shutdown::{Shutdown, Signal};
use crate::start::{Bound, StartError};
use oms_rest::breaker::CircuitState;
use oms_rest::{OmsClient, UpstreamHealth};
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health as HealthApi, HealthServer};
use tonic_health::server::{HealthReporter, HealthService};

/// The health service of the gRPC port, and the same statuses for `/readyz`.
pub struct Health<S: HealthApi> {
    /// Served on the gRPC port.
    pub service: HealthServer<S>,
    /// Asked by the admin listener.
    pub readiness: HealthService,
}

/// grpc.health.v1 for `services`, NOT_SERVING until the first token exchange, kept current by
/// tasks `shutdown` owns (the token refresher, the circuit prober and `follow`); also served
/// alone on the probe port (`--health-listen`, bound as `probe_port`) when one is set.
pub async fn start(
    client: &OmsClient,
    services: Vec<&'static str>,
    shutdown: &mut Shutdown,
    probe_port: Option<Bound>,
) -> Result<Health<impl HealthApi>, StartError> {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(health_port::LIVENESS, ServingStatus::Serving)
        .await;
    let readiness = HealthService::from_health_reporter(reporter.clone());
    let not_serving = ServingStatus::NotServing;
    set(&reporter, &services, not_serving, not_serving).await;
    shutdown.spawn(client.token_source().keep_fresh());
    shutdown.spawn(client.clone().probe_while_open());
    shutdown.spawn(follow(
        reporter,
        services,
        client.clone(),
        shutdown.signal(),
    ));
    if let Some((listener, addr)) = probe_port {
        shutdown.adopt([health_port::serve(listener, addr, service.clone())]);
    }
    Ok(Health { service, readiness })
}

/// Keeps the statuses current: "" follows the credentials (a token exchange succeeded) and
/// draining; each service also turns NOT_SERVING while the circuit is open.
async fn follow(
    reporter: HealthReporter,
    services: Vec<&'static str>,
    client: OmsClient,
    mut shutdown: Signal,
) {
    let mut health = client.health();
    let mut circuit = client.circuit();
    loop {
        let serving = *health.borrow_and_update() == UpstreamHealth::Serving;
        let draining = shutdown.is_draining();
        let open = *circuit.borrow_and_update() == CircuitState::Open;
        let server = if serving && !draining {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        let per_service = if open {
            ServingStatus::NotServing
        } else {
            server
        };
        set(&reporter, &services, server, per_service).await;
        tokio::select! {
            changed = health.changed() => if changed.is_err() { break },
            changed = shutdown.changed() => if !changed { break },
            changed = circuit.changed() => if changed.is_err() { break },
        }
    }
}

async fn set(
    reporter: &HealthReporter,
    services: &[&'static str],
    server: ServingStatus,
    per_service: ServingStatus,
) {
    reporter.set_service_status("", server).await;
    for service in services {
        reporter.set_service_status(*service, per_service).await;
    }
}

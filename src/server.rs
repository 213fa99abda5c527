//! Assembles and runs the gateway: caller security (`security::load`), the upstream (the real
//! OMS, or the embedded sandbox started here), the gRPC services, grpc.health.v1 (`health`),
//! server reflection v1 and v1alpha, the admin listener and the HTTP/2 server settings; and
//! stops it in order (`shutdown`). Wiring only. Used by `main.rs` and, in-process, by the tests.

use crate::admin::{self, AdminServer};
pub use crate::check::{Report as CheckReport, check_config};
use crate::config::{GatewaySettings, ServerSettings};
use crate::metrics::{Metrics, grpc::GrpcMetricsLayer};
use crate::oms::Oms;
use crate::proto::v1::{self as pb, cash_in_service_server};
use crate::proto::v1::{cash_location_service_server, sandbox_service_server};
use crate::quota::Quotas;
use crate::redis::SharedState;
pub use crate::runtime::build as runtime;
use crate::security::{self, Security, tls};
use crate::service::watch_route::CashInRoutes;
use crate::service::{cash_in::CashIns, cash_location::CashLocations, sandbox::SandboxSimulator};
use crate::shutdown::{self, Shutdown};
pub use crate::start::StartError;
use crate::start::{Bound, Listeners};
use crate::telemetry::TraceContextLayer;
use crate::watch::WatchHub;
use crate::{coalesce, connect, health, idempotency::IdempotencyLayer, reflection};
use crate::{limits::LoadShedLayer, runtime::BusyPollLayer};
use oms_rest::OmsClient;
use oms_rest::drift::Drift;
use oms_sandbox::SandboxHandle;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::{net::SocketAddr, time::Duration};
use tokio::task::JoinHandle;
use tonic::transport::{Server, server::TcpIncoming};

/// A running gateway.
pub struct RunningGateway {
    addr: SocketAddr,
    upstream_url: String,
    sandbox: Option<SandboxHandle>,
    client: OmsClient,
    hub: WatchHub,
    settings: ServerSettings,
    shutdown: Shutdown,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    admin: Option<AdminServer>,
}

// === impl RunningGateway ===

impl RunningGateway {
    /// The address the gRPC server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The upstream base URL, as it may be shown (any password masked).
    pub fn upstream_url(&self) -> &str {
        &self.upstream_url
    }

    /// The embedded sandbox, when the gateway started one.
    pub fn sandbox(&self) -> Option<&SandboxHandle> {
        self.sandbox.as_ref()
    }

    /// How many token exchanges with the upstream have succeeded.
    pub fn token_exchanges(&self) -> u64 {
        self.client.token_source().exchanges()
    }

    /// The address of the admin listener (metrics, probes), unless `--admin-listen none`.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(AdminServer::addr)
    }

    /// The watch hub, for its counters.
    pub fn watch_hub(&self) -> &WatchHub {
        &self.hub
    }

    /// Graceful shutdown: health turns NOT_SERVING and watch streams end with UNAVAILABLE at
    /// once; calls keep being served for the drain delay (so the mesh can stop routing here);
    /// then the listener closes and in-flight calls get the grace period to finish; then the
    /// embedded sandbox stops.
    pub async fn shutdown(mut self) {
        self.shutdown.drain();
        tracing::info!(
            drain_delay_ms = self.settings.drain_delay.as_millis() as u64,
            "draining: health is NOT_SERVING"
        );
        // The listener closes itself when the drain delay has passed (see `start`); in-flight
        // calls then have the grace period.
        let (drain, grace) = (self.settings.drain_delay, self.settings.shutdown_grace);
        shutdown::server_stopped(self.server, drain + grace).await;
        self.shutdown.stop();
        if let Some(admin) = self.admin.take() {
            admin.shutdown(Duration::from_secs(2)).await;
        }
        if let Some(sandbox) = self.sandbox.take() {
            sandbox.shutdown().await;
        }
    }
}

/// Starts the gateway (and the embedded sandbox when no upstream is configured) and returns
/// once it is listening. Health turns SERVING when the first token exchange succeeds.
pub async fn start(config: GatewaySettings) -> Result<RunningGateway, StartError> {
    // Every task started from here on is the shutdown's, so a start that fails leaves none.
    let mut shutdown = Shutdown::new();
    let Security { tls, callers } = security::load(config.listen, &config.security, &mut shutdown)?;
    let listeners = Listeners::bind(&config).await?;
    let (metrics, mut registry) = Metrics::registered();
    let (sandbox, base_url, client) =
        connect::connect_upstream(&config, &metrics, &mut shutdown).await?;
    let (reflection_v1, reflection_v1alpha) = reflection::services()?;

    let oms = Oms::new(client.clone());
    oms.register_metrics(&mut registry);
    let shared = SharedState::connect(&config.redis, &mut registry).map_err(StartError::Config)?;
    let quotas = Quotas::layer(callers.policy(), shared.as_ref(), &mut registry);
    let hub = WatchHub::assemble(&oms, &config, shared.as_ref(), &mut registry);
    let webhooks = crate::webhooks::assemble(&config, &hub, &shared, &mut registry)
        .map_err(StartError::Config)?;
    let Services {
        cash_ins,
        cash_locations,
        sandbox: sandbox_service,
        idempotency,
    } = Services::new(&config, &oms, &hub, &shutdown, sandbox.as_ref(), &shared);
    idempotency.register_metrics(&mut registry);
    let served = Services::names(sandbox.as_ref());
    let health = health::start(&client, served, &mut shutdown, listeners.health).await?;
    let shed = LoadShedLayer::new(config.server.max_concurrent_calls);
    shed.register_metrics(&mut registry);
    let drift = metrics.upstream.drift().clone();
    let notes = (&sandbox, shared.clone(), drift, hub.clone());
    let (readiness, health) = (health.readiness, health.service);
    let admin = (listeners.admin, registry);
    let admin = start_admin(&config, admin, readiness, webhooks, notes)?;

    let (listener, addr) = listeners.grpc;
    let router = Server::builder()
        .max_concurrent_streams(Some(config.server.max_streams_per_connection))
        .http2_max_header_list_size(Some(crate::limits::MAX_REQUEST_HEADER_BYTES))
        .layer(GrpcMetricsLayer::new(metrics))
        .layer((BusyPollLayer::start(&config.runtime), shed))
        .layer((callers, TraceContextLayer, quotas))
        // Pings keep idle connections (and long watch streams) alive through NATs and proxies,
        // and detect dead peers.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(cash_ins)
        .add_service(cash_locations)
        .add_optional_service(sandbox_service);
    let closing = shutdown.signal().closing(config.server.drain_delay);
    let server = match tls {
        Some(shared) => tokio::spawn(router.serve_with_incoming_shutdown(
            tls::incoming(listener, shared, (&config.security).into()),
            closing,
        )),
        None => tokio::spawn(router.serve_with_incoming_shutdown(
            // The listener is ours (for the ephemeral port), so nodelay is set here: the
            // builder's tcp_nodelay does not apply to an incoming stream, and Nagle costs ~40 ms
            // per call.
            coalesce::incoming(TcpIncoming::from(listener).with_nodelay(Some(true))),
            closing,
        )),
    };
    log_listening(&config, addr, &base_url, sandbox.as_ref());
    Ok(RunningGateway {
        addr,
        upstream_url: base_url,
        sandbox,
        client,
        hub,
        settings: config.server.clone(),
        shutdown,
        server,
        admin,
    })
}

/// The admin listener (metrics, probes, webhooks; it says when
/// the upstream is the embedded sandbox), then the sandbox's webhooks (`--sandbox-webhook-url`)
/// pointed at their receiver.
fn start_admin(
    config: &GatewaySettings,
    (socket, registry): (Option<Bound>, Registry),
    readiness: tonic_health::server::HealthService,
    webhooks: Option<Arc<crate::webhooks::Webhooks>>,
    (sandbox, fleet, drift, hub): (
        &Option<SandboxHandle>,
        Option<SharedState>,
        Arc<Drift>,
        WatchHub,
    ),
) -> Result<Option<AdminServer>, StartError> {
    let upstream = match sandbox {
        Some(_) => admin::Upstream::EmbeddedSandbox,
        None => admin::Upstream::Oms,
    };
    let admin = admin::start(
        socket,
        registry,
        readiness,
        webhooks,
        (upstream, fleet, drift, hub),
    );
    let addr = admin.as_ref().map(AdminServer::addr);
    crate::webhooks::wire_sandbox(&config.webhooks, sandbox.as_ref(), addr)
        .map_err(StartError::Config)?;
    Ok(admin)
}

/// The one line that says the gateway is up, and how it is set up.
fn log_listening(
    config: &GatewaySettings,
    addr: SocketAddr,
    upstream: &str,
    sandbox: Option<&SandboxHandle>,
) {
    tracing::info!(
        %addr,
        upstream,
        sandbox = sandbox.is_some(),
        // `security::load` refuses one of the two alone.
        tls = config.security.tls_cert.is_some(),
        mtls = config.security.tls_client_ca.is_some(),
        caller_identity_header = config.security.caller_identity_header.map(|h| h.name()),
        authz_policy = config.security.authz_policy.is_some(),
        "gateway listening"
    );
}

/// The gateway's own gRPC services, with their message size limits.
struct Services {
    cash_ins: CashInRoutes,
    cash_locations: cash_location_service_server::CashLocationServiceServer<CashLocations>,
    /// Only with the embedded sandbox.
    sandbox: Option<sandbox_service_server::SandboxServiceServer<SandboxSimulator>>,
    /// The idempotency layer of CashInService, for its metrics.
    idempotency: Arc<IdempotencyLayer<pb::CashIn>>,
}

impl Services {
    fn new(
        config: &GatewaySettings,
        oms: &Oms,
        hub: &WatchHub,
        shutdown: &Shutdown,
        sandbox: Option<&SandboxHandle>,
        shared: &Option<SharedState>,
    ) -> Self {
        let default_deadline = config.upstream.default_deadline;
        let max_message = config.server.max_message_bytes;
        let idempotency = Arc::new(
            IdempotencyLayer::new(config.idempotency.window, config.idempotency.max_entries)
                .with_fleet(shared.as_ref()),
        );
        hub.end_streams_on(shutdown.draining_flag());
        let cash_ins = CashIns::new(
            oms.clone(),
            default_deadline,
            hub.clone(),
            idempotency.clone(),
        );
        Self {
            cash_ins: CashInRoutes::new(cash_ins, max_message),
            cash_locations: CashLocations::new(oms.clone(), default_deadline).server(max_message),
            sandbox: sandbox.map(|_| {
                SandboxSimulator::new(oms.clone(), hub.clone(), default_deadline)
                    .server(max_message)
            }),
            idempotency,
        }
    }

    /// The names of the services served (SandboxService with the embedded `sandbox`), whose
    /// health is reported besides "".
    fn names(sandbox: Option<&SandboxHandle>) -> Vec<&'static str> {
        let sandbox = sandbox.map(|_| sandbox_service_server::SERVICE_NAME);
        let always = [
            cash_in_service_server::SERVICE_NAME,
            cash_location_service_server::SERVICE_NAME,
        ];
        always.into_iter().chain(sandbox).collect()
    }
}

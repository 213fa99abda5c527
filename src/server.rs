//! Assembles and runs the gateway: the upstream (the real OMS, or the embedded sandbox started
//! here), the gRPC services, grpc.health.v1, server reflection v1 and v1alpha, and the HTTP/2
//! server settings. Used by `main.rs` and, in-process, by the tests.
//!
//! Health: "" and every service report NOT_SERVING until the gateway has exchanged a token with
//! the upstream, SERVING while exchanges succeed, and NOT_SERVING again while the upstream is
//! unreachable or rejects the gateway's credentials.

use crate::admin::{self, AdminServer};
use crate::config::{GatewaySettings, ServerSettings};
use crate::metrics::{Metrics, grpc::GrpcMetricsLayer};
use crate::oms::Oms;
use crate::proto::{
    self,
    v1::{cash_in_service_server, cash_location_service_server, sandbox_service_server},
};
use crate::redis::SharedState;
pub use crate::runtime::build as runtime;
use crate::security::{self, CallerLayer, reload, tls};
use crate::service::watch_route::CashInRoutes;
use crate::service::{cash_in::CashIns, cash_location::CashLocations, sandbox::SandboxSimulator};
pub use crate::start::StartError;
use crate::start::bind;
use crate::telemetry::TraceContextLayer;
use crate::watch::WatchHub;
use crate::{coalesce, connect, health_port, idempotency::IdempotencyLayer};
use crate::{limits::LoadShedLayer, runtime::BusyPollLayer};
use oms_rest::breaker::CircuitState;
use oms_rest::{OmsClient, UpstreamHealth};
use oms_sandbox::SandboxHandle;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::{net::SocketAddr, time::Duration};
use tokio::{
    sync::{oneshot, watch},
    task::JoinHandle,
};
use tonic::transport::{Server, server::TcpIncoming};
use tonic_health::ServingStatus;

/// The gRPC services whose health is reported, besides "" (and SandboxService when registered).
const SERVICES: &[&str] = &[
    cash_in_service_server::SERVICE_NAME,
    cash_location_service_server::SERVICE_NAME,
];

/// A running gateway.
pub struct RunningGateway {
    addr: SocketAddr,
    upstream_url: String,
    sandbox: Option<SandboxHandle>,
    client: OmsClient,
    hub: WatchHub,
    stopping: watch::Sender<bool>,
    settings: ServerSettings,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    background: Vec<JoinHandle<()>>,
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
        self.stopping.send_replace(true);
        tracing::info!(
            drain_delay_ms = self.settings.drain_delay.as_millis() as u64,
            "draining: health is NOT_SERVING"
        );
        tokio::time::sleep(self.settings.drain_delay).await;
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match tokio::time::timeout(self.settings.shutdown_grace, &mut self.server).await {
            Ok(Ok(Ok(()))) => tracing::info!("all calls finished; stopped"),
            Ok(Ok(Err(err))) => tracing::error!(error = %err, "gRPC server failed"),
            Ok(Err(err)) => tracing::error!(error = %err, "gRPC server task failed"),
            Err(_) => {
                tracing::warn!(
                    "calls still running after the shutdown grace period; stopping anyway"
                );
                self.server.abort();
            }
        }
        for task in &self.background {
            task.abort();
        }
        if let Some(admin) = self.admin.take() {
            admin.shutdown(Duration::from_secs(2)).await;
        }
        if let Some(sandbox) = self.sandbox.take() {
            sandbox.shutdown().await;
        }
    }

    /// Runs until `signal` resolves, then shuts down.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        tracing::info!("shutting down");
        self.shutdown().await;
    }
}

/// Starts the gateway (and the embedded sandbox when no upstream is configured) and returns
/// once it is listening. Health turns SERVING when the first token exchange succeeds.
pub async fn start(config: GatewaySettings) -> Result<RunningGateway, StartError> {
    let mut reloaders = Vec::new();
    let (tls_config, caller_layer) = caller_security(&config, &mut reloaders)?;

    let (metrics, mut registry) = Metrics::registered();
    let (sandbox, base_url, client) =
        connect::connect_upstream(&config, &metrics, &mut reloaders).await?;

    let (stopping, stopping_rx) = watch::channel(false);
    let (health_service, readiness, mut background) =
        serve_health(&client, sandbox.is_some(), stopping_rx, &config.server).await?;
    background.append(&mut reloaders);
    let (reflection_v1, reflection_v1alpha) = reflection_services()?;

    let oms = Oms::new(client.clone());
    oms.register_metrics(&mut registry);
    let shared = SharedState::connect(&config.redis).map_err(StartError::Config)?;
    let hub = WatchHub::assemble(&oms, &config, shared.as_ref(), &mut registry);
    let webhooks = webhook_endpoint(&config, &hub, &shared, &mut registry)?;
    let Services {
        cash_ins,
        cash_locations,
        sandbox: sandbox_service,
        idempotency,
    } = Services::new(&config, &oms, &hub, &stopping, sandbox.is_some(), &shared);
    idempotency.register_metrics(&mut registry);
    let shed = LoadShedLayer::new(config.server.max_concurrent_calls);
    shed.register_metrics(&mut registry);
    let notes = (&sandbox, shared.clone());
    let admin = start_admin(&config, registry, readiness, webhooks, notes).await?;

    let (listener, addr) = bind(config.listen).await?;
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let router = Server::builder()
        .max_concurrent_streams(Some(config.server.max_streams_per_connection))
        .http2_max_header_list_size(Some(crate::limits::MAX_REQUEST_HEADER_BYTES))
        .layer(GrpcMetricsLayer::new(metrics))
        .layer((BusyPollLayer::start(&config.runtime), shed))
        .layer((caller_layer, TraceContextLayer))
        // Pings keep idle connections (and long watch streams) alive through NATs and proxies,
        // and detect dead peers.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(cash_ins)
        .add_service(cash_locations)
        .add_optional_service(sandbox_service);
    let shutdown_signal = async move {
        let _ = shutdown_rx.await;
    };
    let tls_enabled = tls_config.is_some();
    let server = match tls_config {
        Some(shared) => tokio::spawn(router.serve_with_incoming_shutdown(
            tls::incoming(listener, shared, (&config.security).into()),
            shutdown_signal,
        )),
        None => tokio::spawn(router.serve_with_incoming_shutdown(
            // The listener is ours (for the ephemeral port), so nodelay is set here: the
            // builder's tcp_nodelay does not apply to an incoming stream, and Nagle costs ~40 ms
            // per call.
            coalesce::incoming(TcpIncoming::from(listener).with_nodelay(Some(true))),
            shutdown_signal,
        )),
    };
    log_listening(&config, addr, &base_url, sandbox.is_some(), tls_enabled);
    Ok(RunningGateway {
        addr,
        upstream_url: base_url,
        sandbox,
        client,
        hub,
        stopping,
        settings: config.server.clone(),
        shutdown: Some(shutdown_tx),
        server,
        background,
        admin,
    })
}

/// The webhook endpoint, when `--webhook-secret-file` is given, its metrics registered with
/// `registry`; it needs the admin listener it is served on.
fn webhook_endpoint(
    config: &GatewaySettings,
    hub: &WatchHub,
    shared: &Option<SharedState>,
    registry: &mut Registry,
) -> Result<Option<std::sync::Arc<crate::webhooks::Webhooks>>, StartError> {
    if config.webhooks.secret_file.is_some()
        && config.admin.listen == crate::config::AdminListen::Off
    {
        return Err(StartError::Config(
            "--webhook-secret-file serves POST /webhooks/oms on the admin listener, but --admin-listen is none".to_owned(),
        ));
    }
    let webhooks = crate::webhooks::from_settings(&config.webhooks, hub, shared)
        .map_err(StartError::Config)?;
    if let Some(webhooks) = &webhooks {
        webhooks.register_metrics(registry);
    }
    Ok(webhooks)
}

/// The admin listener (metrics, probes, webhooks; it says when
/// the upstream is the embedded sandbox), then the sandbox's webhooks (`--sandbox-webhook-url`)
/// pointed at their receiver.
async fn start_admin(
    config: &GatewaySettings,
    registry: Registry,
    readiness: tonic_health::server::HealthService,
    webhooks: Option<Arc<crate::webhooks::Webhooks>>,
    (sandbox, fleet): (&Option<SandboxHandle>, Option<SharedState>),
) -> Result<Option<AdminServer>, StartError> {
    let (listen, notes) = (config.admin.listen, (sandbox.is_some(), fleet));
    let admin = admin::start(listen, registry, readiness, webhooks, notes).await?;
    let addr = admin.as_ref().map(AdminServer::addr);
    crate::webhooks::wire_sandbox(&config.webhooks, sandbox.as_ref(), addr)
        .map_err(StartError::Config)?;
    Ok(admin)
}

/// The TLS configuration and the caller layer (identity, policy), their reloaders pushed to
/// `reloaders`.
fn caller_security(
    config: &GatewaySettings,
    reloaders: &mut Vec<JoinHandle<()>>,
) -> Result<(Option<tls::SharedConfig>, CallerLayer), StartError> {
    // Security first: a configuration that would expose the port refuses to start before
    // anything else happens.
    security::check_listen(config.listen, &config.security).map_err(StartError::Config)?;
    let tls_config = reload::load_tls(&config.security, reloaders)?;
    let policy = reload::load_authz_policy(&config.security, reloaders)?;
    Ok((tls_config, CallerLayer::new(&config.security, policy)))
}

/// grpc.health.v1, NOT_SERVING until the first token exchange, kept current by background
/// tasks (the token refresher, the circuit prober and `follow_health`), returned with it; also
/// served alone on the probe port (`--health-listen`) when one is set.
async fn serve_health(
    client: &OmsClient,
    with_sandbox: bool,
    stopping: watch::Receiver<bool>,
    settings: &ServerSettings,
) -> Result<
    (
        tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
        tonic_health::server::HealthService,
        Vec<JoinHandle<()>>,
    ),
    StartError,
> {
    let mut services: Vec<&'static str> = SERVICES.to_vec();
    if with_sandbox {
        services.push(sandbox_service_server::SERVICE_NAME);
    }
    let (reporter, health_service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(health_port::LIVENESS, ServingStatus::Serving)
        .await;
    // The admin listener's /readyz asks the same statuses.
    let readiness = tonic_health::server::HealthService::from_health_reporter(reporter.clone());
    set_health(
        &reporter,
        &services,
        ServingStatus::NotServing,
        ServingStatus::NotServing,
    )
    .await;
    let mut background = vec![
        tokio::spawn(client.token_source().keep_fresh()),
        tokio::spawn(client.clone().probe_while_open()),
        tokio::spawn(follow_health(reporter, services, client.clone(), stopping)),
    ];
    if let Some(listen) = settings.health_listen {
        let (listener, addr) = bind(listen).await?;
        background.push(health_port::serve(listener, addr, health_service.clone()));
    }
    Ok((health_service, readiness, background))
}

/// The one line that says the gateway is up, and how it is set up.
fn log_listening(
    config: &GatewaySettings,
    addr: SocketAddr,
    upstream: &str,
    sandbox: bool,
    tls: bool,
) {
    tracing::info!(
        %addr,
        upstream,
        sandbox,
        tls,
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
    idempotency: Arc<IdempotencyLayer<proto::v1::CashIn>>,
}

impl Services {
    fn new(
        config: &GatewaySettings,
        oms: &Oms,
        hub: &WatchHub,
        stopping: &watch::Sender<bool>,
        with_sandbox: bool,
        shared: &Option<SharedState>,
    ) -> Self {
        let default_deadline = config.upstream.default_deadline;
        let max_message = config.server.max_message_bytes;
        let idempotency = Arc::new(
            IdempotencyLayer::new(config.idempotency.window, config.idempotency.max_entries)
                .with_fleet(shared.as_ref()),
        );
        hub.end_streams_on(stopping.subscribe());
        let cash_ins = CashIns::new(
            oms.clone(),
            default_deadline,
            hub.clone(),
            idempotency.clone(),
        );
        Self {
            cash_ins: CashInRoutes::new(cash_ins, max_message),
            cash_locations: cash_location_service_server::CashLocationServiceServer::new(
                CashLocations::new(oms.clone(), default_deadline),
            )
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_message),
            sandbox: with_sandbox.then(|| {
                sandbox_service_server::SandboxServiceServer::new(SandboxSimulator::new(
                    oms.clone(),
                    hub.clone(),
                    default_deadline,
                ))
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_message)
            }),
            idempotency,
        }
    }
}

/// Server reflection v1 and v1alpha (grpcurl 1.8 speaks only v1alpha; newer tools v1). The
/// health descriptors are registered too, so `grpcurl ... grpc.health.v1.Health/Check` works
/// with no proto files.
fn reflection_services() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    StartError,
> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let v1 = reflection()
        .build_v1()
        .map_err(|e| StartError::Reflection(e.to_string()))?;
    let v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| StartError::Reflection(e.to_string()))?;
    Ok((v1, v1alpha))
}

/// Keeps grpc.health.v1 current: "" follows the credentials (a token exchange succeeded) and
/// draining; each service also turns NOT_SERVING while the circuit is open (its calls would fail
/// fast).
async fn follow_health(
    reporter: tonic_health::server::HealthReporter,
    services: Vec<&'static str>,
    client: OmsClient,
    mut stopping: watch::Receiver<bool>,
) {
    let mut health = client.health();
    let mut circuit = client.circuit();
    loop {
        let serving = *health.borrow_and_update() == UpstreamHealth::Serving;
        let draining = *stopping.borrow_and_update();
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
        set_health(&reporter, &services, server, per_service).await;
        tokio::select! {
            changed = health.changed() => if changed.is_err() { break },
            changed = stopping.changed() => if changed.is_err() { break },
            changed = circuit.changed() => if changed.is_err() { break },
        }
    }
}

async fn set_health(
    reporter: &tonic_health::server::HealthReporter,
    services: &[&'static str],
    server: ServingStatus,
    per_service: ServingStatus,
) {
    reporter.set_service_status("", server).await;
    for service in services {
        reporter.set_service_status(*service, per_service).await;
    }
}

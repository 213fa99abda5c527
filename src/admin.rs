//! The admin HTTP listener (HTTP/1.1, axum): `/metrics` (Prometheus text, or OpenMetrics when
//! the `Accept` header asks for `application/openmetrics-text`), `/healthz` (the process is up:
//! always 200) and `/readyz` (grpc.health.v1 `""`, asked of the same health service the gRPC
//! port serves: 200 when SERVING, 503 otherwise; further lines say when the upstream is the
//! embedded sandbox, whether Redis answers, where cash-ins' deliveries come from (webhooks,
//! OMS's transaction read, or nothing yet), and, once there is any, how much upstream drift has
//! been seen: fields and enum values OMS sent that the gateway does not know), for probes and
//! scrapers that speak no gRPC.
//!
//! A route is one line in [`router`]. The listener starts and stops with the gateway: bound in
//! `server::start` with the other listeners (a bind failure stops the start), shut down gracefully after the gRPC
//! listener. It serves no gRPC, reads no caller identity and shows nothing secret: metrics carry
//! method names, codes and counts only.

use crate::start::Bound;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use oms_rest::drift::{Drift, DriftSummary};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic_health::pb::health_server::Health;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
use tonic_health::server::HealthService;

/// Which OMS the gateway talks to, as probes and scrapers are told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upstream {
    /// A configured OMS.
    Oms,
    /// The embedded sandbox (its deposit codes are not real).
    EmbeddedSandbox,
}

/// What the routes read.
#[derive(Clone)]
pub struct AdminState {
    /// The gateway's metrics registry.
    pub registry: Arc<Registry>,
    /// The health service of the gRPC port (the same statuses).
    pub health: Arc<HealthService>,
    /// Which OMS (the embedded sandbox is said in `/readyz`'s body).
    pub upstream: Upstream,
    /// The fleet's shared state, when `--redis-url` is set (whether Redis answers is said in
    /// `/readyz`'s body; it does not decide readiness: without Redis a replica works alone).
    pub fleet: Option<crate::redis::SharedState>,
    /// What OMS sent that the gateway does not know (summed up in `/readyz`'s body; it does not
    /// decide readiness: the gateway serves what it knows).
    pub drift: Arc<Drift>,
    /// Where deliveries come from (said in `/readyz`'s body; it does not decide readiness).
    pub hub: crate::watch::WatchHub,
}

/// `/readyz`'s second line when the upstream is the embedded sandbox.
const SANDBOX_LINE: &str =
    "upstream: the embedded OMS sandbox, not OMS (deposit codes are not real)\n";

/// The admin routes.
pub fn router(state: AdminState) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(state): State<AdminState>, headers: HeaderMap) -> impl IntoResponse {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("application/openmetrics-text"));
    let content_type = if openmetrics {
        crate::metrics::OPENMETRICS_TEXT
    } else {
        crate::metrics::PROMETHEUS_TEXT
    };
    let body = crate::metrics::render(&state.registry, openmetrics);
    ([(header::CONTENT_TYPE, content_type)], body)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AdminState>) -> (StatusCode, String) {
    let request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    let serving = match state.health.check(request).await {
        Ok(response) => response.into_inner().status == ServingStatus::Serving as i32,
        Err(_) => false,
    };
    let (status, first) = if serving {
        (StatusCode::OK, "SERVING\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "NOT_SERVING\n")
    };
    let sandbox = match state.upstream {
        Upstream::EmbeddedSandbox => SANDBOX_LINE,
        Upstream::Oms => "",
    };
    let fleet = match &state.fleet {
        Some(fleet) if fleet.is_up() => "redis: up (state shared with the fleet)\n",
        Some(_) => "redis: down (this replica works alone until Redis answers)\n",
        None => "",
    };
    let drift = match state.drift.summary() {
        none if none == DriftSummary::default() => String::new(),
        seen => format!("{seen}\n"),
    };
    let deliveries = state.hub.delivery_sources();
    (
        status,
        format!("{first}{sandbox}{fleet}{deliveries}\n{drift}"),
    )
}

/// A running admin listener.
#[derive(Debug)]
pub struct AdminServer {
    addr: SocketAddr,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl AdminServer {
    /// Serves `router` on `listener` (bound at `addr`).
    pub fn start((listener, addr): Bound, router: axum::Router) -> Self {
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stop.await;
                })
                .await;
            if let Err(err) = served {
                tracing::error!(error = %err, "admin listener failed");
            }
        });
        tracing::info!(%addr, "admin listener (metrics, probes) listening");
        Self {
            addr,
            shutdown,
            task,
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets requests in progress finish (at most `grace`), then stops.
    pub async fn shutdown(mut self, grace: std::time::Duration) {
        let _ = self.shutdown.send(());
        if tokio::time::timeout(grace, &mut self.task).await.is_err() {
            self.task.abort();
        }
    }
}

/// Starts the admin listener on `socket` (`--admin-listen`, bound at start; none when off),
/// serving `registry` with the `oms_gateway_sandbox` gauge (1 with the embedded sandbox) added,
/// `/readyz` from `health` (with `drift` summed up), and `POST /webhooks/oms` when `webhooks` is
/// on.
pub fn start(
    socket: Option<Bound>,
    mut registry: Registry,
    health: HealthService,
    webhooks: Option<Arc<crate::webhooks::Webhooks>>,
    (upstream, fleet, drift, hub): (
        Upstream,
        Option<crate::redis::SharedState>,
        Arc<Drift>,
        crate::watch::WatchHub,
    ),
) -> Option<AdminServer> {
    let socket = socket?;
    let gauge: Gauge = Gauge::default();
    gauge.set(i64::from(upstream == Upstream::EmbeddedSandbox));
    registry.register(
        "oms_gateway_sandbox",
        "1 when the gateway serves its embedded OMS sandbox (not OMS: its deposit codes are not real), else 0",
        gauge,
    );
    let state = AdminState {
        registry: Arc::new(registry),
        health: Arc::new(health),
        upstream,
        fleet,
        drift,
        hub,
    };
    let mut routes = router(state);
    if let Some(webhooks) = webhooks {
        routes = routes.merge(crate::webhooks::router(webhooks));
    }
    Some(AdminServer::start(socket, routes))
}

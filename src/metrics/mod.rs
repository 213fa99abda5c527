//! The gateway's Prometheus metrics: one [`Metrics`] per gateway, shared by `Arc` with what
//! records (the gRPC layer in [`grpc`]; the REST client's own families, which `oms-rest` defines,
//! registered here and handed to the client), and a [`Live`] collector that reads,
//! at scrape time, the state other modules already keep (watch streams and pollers, calls in
//! flight and shed, idempotency outcomes, the circuit). [`render`] writes the registry in the
//! Prometheus text format, or OpenMetrics when asked.
//!
//! Names follow go-grpc-middleware for the gRPC server families (its dashboards work as they
//! are) and Prometheus's conventions otherwise: units in names, `_total` on counters, HELP on
//! every family. Recording is cheap: label values are `&'static str` (or small integers), the
//! per-method handles are resolved once, a family lookup takes a read lock and no allocation.

pub mod grpc;
pub mod methods;

use crate::idempotency::IdempotencyLayer;
use crate::limits::LoadShedLayer;
use crate::proto::v1 as pb;
use crate::watch::WatchHub;
use oms_rest::breaker::CircuitState;
use oms_rest::metrics::UpstreamMetrics;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::fmt::Write as _;
use std::sync::Arc;
use tokio::sync::watch;

/// Latency buckets, in seconds: Prometheus's default buckets, which go-grpc-middleware uses.
const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct OutcomeLabels {
    pub(crate) outcome: &'static str,
}

/// The metrics one gateway records. Built with [`Metrics::new`], which registers them.
pub struct Metrics {
    /// The gRPC server families, recorded by [`grpc::GrpcMetricsLayer`].
    pub grpc: grpc::GrpcMetrics,
    /// The REST client's families (`oms_upstream_*`), recorded by the client.
    pub upstream: Arc<UpstreamMetrics>,
}

// === impl Metrics ===

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// The gateway's metrics, and a registry holding them.
    pub fn registered() -> (Arc<Self>, Registry) {
        let mut registry = Registry::default();
        let metrics = Arc::new(Self::new(&mut registry));
        (metrics, registry)
    }

    /// The gateway's metrics, registered with `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        Self {
            grpc: grpc::GrpcMetrics::new(registry),
            upstream: Arc::new(UpstreamMetrics::register(registry)),
        }
    }
}

/// The state other modules keep, read at each scrape: nothing is recorded for it on the call
/// path.
pub struct Live {
    /// Watch streams, pollers and polls.
    hub: WatchHub,
    /// Calls in flight and shed.
    shed: LoadShedLayer,
    /// The idempotency layer's outcomes.
    idempotency: Arc<IdempotencyLayer<pb::CashIn>>,
    /// The circuit breaker's state.
    circuit: watch::Receiver<CircuitState>,
    /// The webhook endpoint's counts, when it is on.
    webhooks: Option<Arc<crate::webhooks::Webhooks>>,
}

impl Live {
    /// The collector of these modules' state.
    pub fn new(
        hub: WatchHub,
        shed: LoadShedLayer,
        idempotency: Arc<IdempotencyLayer<pb::CashIn>>,
        circuit: watch::Receiver<CircuitState>,
    ) -> Self {
        Self {
            hub,
            shed,
            idempotency,
            circuit,
            webhooks: None,
        }
    }

    /// The same collector, also reading the webhook endpoint's counts.
    pub fn with_webhooks(mut self, webhooks: Option<Arc<crate::webhooks::Webhooks>>) -> Self {
        self.webhooks = webhooks;
        self
    }
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").finish_non_exhaustive()
    }
}

pub(crate) fn encode_gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(value);
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

pub(crate) fn encode_counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let counter = ConstCounter::new(value);
    counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let counts = self.idempotency.counts();
        let outcomes = [
            ("led", counts.led),
            ("shared", counts.shared),
            ("replayed", counts.replayed),
            ("key_reused", counts.key_reused),
        ];
        let counter = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "oms_gateway_idempotency",
            "Mutating calls by how the idempotency layer answered: led (went upstream), shared (joined a call in flight), replayed (a stored outcome), key_reused (refused: same key, other request).",
            None,
            counter.metric_type(),
        )?;
        for (outcome, value) in outcomes {
            ConstCounter::new(value).encode(family.encode_family(&OutcomeLabels { outcome })?)?;
        }
        let circuit = match *self.circuit.borrow() {
            CircuitState::Closed => 0,
            CircuitState::Open => 1,
        };
        encode_gauge(
            &mut encoder,
            "oms_upstream_circuit_state",
            "The circuit breaker in front of OMS: 0 closed (calls flow), 1 open (calls fail fast).",
            circuit,
        )?;
        encode_gauge(
            &mut encoder,
            "oms_gateway_watch_streams",
            "Open watch streams.",
            gauge(self.hub.streams()),
        )?;
        encode_gauge(
            &mut encoder,
            "oms_gateway_watch_pollers",
            "Running pollers (one per watched cash-in or customer, shared by its streams).",
            gauge(self.hub.watched()),
        )?;
        encode_counter(
            &mut encoder,
            "oms_gateway_watch_polls",
            "Polls of OMS made by the watch pollers.",
            self.hub.polls(),
        )?;
        crate::webhooks::encode_metrics(&mut encoder, &self.hub, self.webhooks.as_deref())?;
        encode_gauge(
            &mut encoder,
            "oms_gateway_calls_in_flight",
            "Calls holding a slot under --max-concurrent-calls (health checks are not counted).",
            gauge(self.shed.in_flight()),
        )?;
        encode_counter(
            &mut encoder,
            "oms_gateway_shed",
            "Calls shed with RESOURCE_EXHAUSTED at --max-concurrent-calls.",
            self.shed.shed(),
        )
    }
}

/// The content type of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The content type of the OpenMetrics text format.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `registry` in OpenMetrics (`openmetrics`) or in the Prometheus text format.
pub fn render(registry: &Registry, openmetrics: bool) -> String {
    let mut text = String::with_capacity(16 * 1024);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    if openmetrics {
        text
    } else {
        to_prometheus_text(&text)
    }
}

/// The Prometheus text format (0.0.4) of an OpenMetrics exposition from prometheus-client: a
/// counter family is named with its `_total` suffix (as its samples are), and the `# UNIT` and
/// `# EOF` lines, which that format lacks, go. Gauges and histograms read the same in both.
fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if line.starts_with("# HELP ") {
            if let Some(previous) = help.replace(line) {
                out.push_str(previous);
                out.push('\n');
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some(name) = rest.strip_suffix(" counter")
        {
            if let Some(help) = help.take() {
                let text = help.strip_prefix("# HELP ").unwrap_or(help);
                let text = text.strip_prefix(name).unwrap_or(text);
                let _ = writeln!(out, "# HELP {name}_total{text}");
            }
            let _ = writeln!(out, "# TYPE {name}_total counter");
            continue;
        }
        if let Some(help) = help.take() {
            out.push_str(help);
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::{counter::Counter, family::Family};
    use prometheus_client::registry::Unit;

    #[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
    struct OperationLabels {
        operation: &'static str,
    }

    #[test]
    fn counters_are_named_with_total_in_the_prometheus_text_format() {
        let mut registry = Registry::default();
        let counter = Counter::<u64>::default();
        counter.inc();
        registry.register("calls", "Calls", counter);
        let waits = Family::<OperationLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        waits
            .get_or_create(&OperationLabels { operation: "op" })
            .observe(0.2);
        registry.register_with_unit("wait", "Wait", Unit::Seconds, waits);
        let text = render(&registry, false);
        assert!(
            text.starts_with(
                "# HELP calls_total Calls.\n# TYPE calls_total counter\ncalls_total 1\n"
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE wait_seconds histogram\n"), "{text}");
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        let open = render(&registry, true);
        assert!(open.contains("# TYPE calls counter\n") && open.ends_with("# EOF\n"));
    }
}

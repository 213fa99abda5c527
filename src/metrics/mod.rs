//! The gateway's Prometheus metrics: one [`Metrics`] per gateway, shared by `Arc` with what
//! records (the gRPC layer in [`grpc`]; the REST client's own families, which `oms-rest` defines,
//! registered here and handed to the client), the helpers with which each feature writes the
//! collectors that read its own state at scrape time ([`scrape`]; the feature registers them
//! when it is assembled, so this module imports no feature), the process families and the build
//! info ([`process`]), and [`render`], which writes the registry in the Prometheus text format, or
//! OpenMetrics when asked.
//!
//! Names follow go-grpc-middleware for the gRPC server families (its dashboards work as they
//! are) and Prometheus's conventions otherwise: units in names, `_total` on counters, HELP on
//! every family. Recording is cheap: label values are `&'static str` (or small integers), the
//! per-method handles are resolved once, a family lookup takes a read lock and no allocation.

pub mod grpc;
pub mod methods;
mod process;
pub mod scrape;

use oms_rest::metrics::UpstreamMetrics;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::fmt::Write as _;
use std::sync::Arc;

/// One set of latency buckets for the gRPC and the REST families (Prometheus's defaults).
use oms_rest::metrics::latency_histogram;

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
        process::register(registry);
        Self {
            grpc: grpc::GrpcMetrics::new(registry),
            upstream: Arc::new(UpstreamMetrics::register(registry)),
        }
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
    use prometheus_client::encoding::EncodeLabelSet;
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

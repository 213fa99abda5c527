//! The webhook endpoint's metrics, read at scrape time: webhook deliveries by outcome and the
//! cash-ins re-read from OMS for them. Registered when the endpoint is assembled (so only when
//! it is on); the cash-ins' deliveries learned are the watch hub's (`watch/metrics.rs`).

use super::Webhooks;
use crate::metrics::scrape;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Reads the endpoint's counts at each scrape.
struct WebhookMetrics(Arc<Webhooks>);

impl std::fmt::Debug for WebhookMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookMetrics").finish_non_exhaustive()
    }
}

impl Webhooks {
    /// Registers the endpoint's metrics with `registry`.
    pub fn register_metrics(self: &Arc<Self>, registry: &mut Registry) {
        registry.register_collector(Box::new(WebhookMetrics(self.clone())));
    }
}

impl Collector for WebhookMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> scrape::Encoded {
        let webhooks = &self.0;
        scrape::counter(
            &mut encoder,
            "oms_gateway_webhook_reads",
            "Cash-ins re-read from OMS because a webhook named them (coalesced).",
            webhooks.hub.webhook_reads(),
        )?;
        let counts = webhooks.counts();
        let load = |value: &std::sync::atomic::AtomicU64| value.load(Ordering::Relaxed);
        scrape::outcomes(
            &mut encoder,
            "oms_gateway_webhooks",
            "OMS webhook deliveries by outcome: accepted (a cash-in re-read), replayed (webhook-id already processed), ignored (an event not acted on), refused (401/400).",
            &[
                ("accepted", load(&counts.accepted)),
                ("replayed", load(&counts.replayed)),
                ("ignored", load(&counts.ignored)),
                ("refused", load(&counts.refused)),
            ],
        )
    }
}

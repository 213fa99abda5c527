//! The idempotency layer's metrics: mutating calls by how the layer answered them, read at
//! scrape time from the layer's own counters, registered when the layer is assembled.

use super::{Counters, IdempotencyLayer};
use crate::metrics::scrape;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Reads the layer's counters at each scrape.
#[derive(Debug)]
struct Answers(Arc<Counters>);

impl<T> IdempotencyLayer<T> {
    /// Registers the layer's metrics with `registry`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(Answers(self.counters.clone())));
    }
}

impl Collector for Answers {
    fn encode(&self, mut encoder: DescriptorEncoder) -> scrape::Encoded {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        scrape::outcomes(
            &mut encoder,
            "oms_gateway_idempotency",
            "Mutating calls by how the idempotency layer answered: led (went upstream), shared (joined a call in flight), replayed (a stored outcome), key_reused (refused: same key, other request).",
            &[
                ("led", load(&self.0.led)),
                ("shared", load(&self.0.joined)),
                ("replayed", load(&self.0.replayed)),
                ("key_reused", load(&self.0.conflicts)),
            ],
        )
    }
}

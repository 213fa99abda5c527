//! The quotas' metrics, read at scrape time: `oms_gateway_quota_refused_total{quota,limit}`
//! (calls and streams refused, by the policy's quota name and the limit) and
//! `oms_gateway_quota_usage{quota,limit}` (what this replica's callers hold now, summed per quota:
//! `concurrent_calls`, `watch_streams`, `watched_resources`). Label values are the policy's
//! names (at most 64 per policy, each a short lowercase label) and the four limits' names; an
//! identity is never a label.

use super::Quotas;
use crate::metrics::scrape::Encoded;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::sync::{Arc, Weak};

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Labels {
    quota: String,
    limit: &'static str,
}

/// Registers the collector (holding no clone, so the registry keeps nothing alive).
pub(super) fn register(quotas: &Quotas, registry: &mut Registry) {
    registry.register_collector(Box::new(QuotaMetrics(Arc::downgrade(&quotas.inner))));
}

#[derive(Debug)]
struct QuotaMetrics(Weak<super::Inner>);

impl Collector for QuotaMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Encoded {
        let Some(inner) = self.0.upgrade() else {
            return Ok(());
        };
        let mut refused: Vec<(Labels, u64)> = inner
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|((quota, limit), n)| {
                let labels = Labels {
                    quota: quota.to_string(),
                    limit,
                };
                (labels, *n)
            })
            .collect();
        refused.sort_by(|a, b| (&a.0.quota, a.0.limit).cmp(&(&b.0.quota, b.0.limit)));
        let counter = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "oms_gateway_quota_refused",
            "Calls and watch streams refused by the caller's quota (the policy's [[quota]]), by quota and limit.",
            None,
            counter.metric_type(),
        )?;
        for (labels, n) in &refused {
            ConstCounter::new(*n).encode(family.encode_family(labels)?)?;
        }
        let gauge = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "oms_gateway_quota_usage",
            "What the callers of each quota hold on this replica now: unary calls in flight, open watch streams, distinct watched resources.",
            None,
            gauge.metric_type(),
        )?;
        let names = ["concurrent_calls", "watch_streams", "watched_resources"];
        for (quota, values) in inner.local.usage() {
            for (limit, value) in names.into_iter().zip(values) {
                let labels = Labels {
                    quota: quota.to_string(),
                    limit,
                };
                let value = i64::try_from(value).unwrap_or(i64::MAX);
                ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
